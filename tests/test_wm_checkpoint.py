"""Checkpoints and WorldModelEnv: round trips, clear errors, the env's contract."""

import json

import numpy as np
import pytest
import torch

from data.actions import DEFAULT_ACTIONS, ActionSpec
from data.windows import LatentWindows
from world_model.model.autoencoder import to_tensor
from world_model.model.checkpoint import (
    CheckpointError,
    check_data_fits,
    load_world_model,
    make_untrained_checkpoint,
    save_world_model,
)
from world_model.model.env import WorldModelEnv

RES = (32, 24)


@pytest.fixture()
def ckpt(tmp_path):
    return make_untrained_checkpoint(tmp_path / "ckpt", preset="tiny", resolution=RES, frame_skip=2, seed=0)


def frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, RES[1], RES[0], 3), dtype=np.uint8)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_untrained_checkpoint_drives_the_env(ckpt):
    env = WorldModelEnv.from_checkpoint(ckpt)
    assert env.action_spec == DEFAULT_ACTIONS
    assert env.frame_skip == 2 and env.resolution == RES and env.context_len == 2
    start = frames(5)
    assert np.array_equal(env.reset(start), start[-1])
    for steps in (1, 2, 3, 4):
        env.sampling_steps = steps
        out = env.step(DEFAULT_ACTIONS.make(move=1, turn=6))
        assert out.shape == (RES[1], RES[0], 3) and out.dtype == np.uint8
        assert set(env.last_timing) == {"dit_ms", "decode_ms", "total_ms"}
        assert env.last_timing["total_ms"] >= env.last_timing["dit_ms"] > 0
    env.reset(start[:1], actions=np.stack([DEFAULT_ACTIONS.make(attack=1)]))  # fewer than K: padded
    env.step(DEFAULT_ACTIONS.noop())


@pytest.mark.parametrize("n", [1, 2, 3, 5])  # fewer frames than K = 2, exactly K, more
def test_env_reset_builds_the_context_of_the_training_windows(ckpt, n):
    """reset(frames, actions) is a start at target frame n of an episode: the training windows' context."""
    env = WorldModelEnv.from_checkpoint(ckpt)
    k, start = env.context_len, frames(n, seed=n)
    actions = np.stack([DEFAULT_ACTIONS.make(move=i % 3, turn=i % 7) for i in range(n)])
    env.reset(start, actions)
    with torch.no_grad():
        latents = env.ae.encode(to_tensor(start))  # (n, C, h, w)
    # An episode of n + 1 frames whose last, not yet seen, is the target.
    latents = torch.cat([latents, torch.zeros_like(latents[:1])])
    taken = torch.as_tensor(np.concatenate([actions, DEFAULT_ACTIONS.noop()[None]]))
    one = torch.tensor([0])
    windows = LatentWindows(latents, taken, one, torch.tensor([n + 1]), one, k, DEFAULT_ACTIONS.noop())
    context, window_actions = windows.context_for(torch.tensor([n]), one)
    torch.testing.assert_close(env._ctx, context, atol=1e-5, rtol=1e-5)
    assert torch.equal(env._actions[:, :k], window_actions[:, :k])  # the last slot is step's action


def test_env_rejects_bad_input(ckpt):
    env = WorldModelEnv.from_checkpoint(ckpt)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(DEFAULT_ACTIONS.noop())
    with pytest.raises(ValueError, match="frames"):
        env.reset(np.zeros((2, 10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="actions"):
        env.reset(frames(3), actions=np.zeros((2, 5), np.int64))
    env.reset(frames(3))
    with pytest.raises(ValueError, match="out of range"):
        env.step(np.array([0, 0, 9, 0, 0]))
    with pytest.raises(ValueError, match="sampling_steps"):
        env.sampling_steps = 0


def test_env_context_rolls_and_is_deterministic_per_seed(ckpt):
    ck = load_world_model(ckpt)
    randomize(ck.dit, 1)
    outs = []
    for _ in range(2):
        env = WorldModelEnv(ck, seed=3)
        env.reset(frames(4))
        outs.append(np.stack([env.step(DEFAULT_ACTIONS.make(move=1)) for _ in range(4)]))
    assert np.array_equal(outs[0], outs[1])


def test_save_load_round_trip_gives_identical_outputs(ckpt, tmp_path):
    ck = load_world_model(ckpt)
    randomize(ck.dit, 2)
    randomize(ck.ae.decoder, 3)
    save_world_model(
        tmp_path / "again",
        ck.ae,
        ck.dit,
        ck.dit,
        ck.diffusion,
        ck.train,
        ck.action_spec,
        ck.resolution,
        ck.frame_skip,
        step=7,
    )
    back = load_world_model(tmp_path / "again")
    assert back.step == 7
    a, b = WorldModelEnv(ck, seed=0), WorldModelEnv(back, seed=0)
    start = frames(3, seed=1)
    a.reset(start)
    b.reset(start)
    for _ in range(3):
        action = DEFAULT_ACTIONS.make(turn=1)
        assert np.array_equal(a.step(action), b.step(action))


def test_bad_checkpoints_give_clear_errors(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_world_model(tmp_path / "missing")
    cfg_path = ckpt / "config.json"
    cfg = json.loads(cfg_path.read_text())

    cfg_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable checkpoint config"):
        load_world_model(ckpt)

    other = dict(cfg, action_contract=ActionSpec(turn_degrees_per_tic=(-5.0, 0.0, 5.0)).to_dict())
    cfg_path.write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match="action contract mismatch"):
        load_world_model(ckpt)

    bigger = dict(cfg, dit={**cfg["dit"], "hidden": 64})
    cfg_path.write_text(json.dumps(bigger))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_world_model(ckpt)

    cfg_path.write_text(json.dumps(cfg))
    (ckpt / "dit_ema.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"dit_ema\.safetensors: checksum mismatch"):
        load_world_model(ckpt)
    legacy = {k: v for k, v in cfg.items() if k != "files"}  # from before checksums were recorded
    cfg_path.write_text(json.dumps(legacy))
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_world_model(ckpt)


def test_checkpoint_must_fit_the_data(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    check_data_fits(cfg, RES, 2, DEFAULT_ACTIONS, "x")
    with pytest.raises(CheckpointError, match="resolution"):
        check_data_fits(cfg, (160, 120), 2, DEFAULT_ACTIONS, "x")
    with pytest.raises(CheckpointError, match="frame_skip"):
        check_data_fits(cfg, RES, 4, DEFAULT_ACTIONS, "x")
    with pytest.raises(CheckpointError, match="action contract"):
        check_data_fits(cfg, RES, 2, ActionSpec(turn_degrees_per_tic=(-5.0, 0.0, 5.0)), "x")


def test_a_config_that_does_not_fit_its_weights_names_the_tensor_and_the_field(tmp_path):
    """An edited config.json is an error that says what does not fit, not a state_dict dump."""
    import shutil
    from pathlib import Path

    default = Path(__file__).parents[1] / "checkpoints" / "e1m1"
    folder = tmp_path / "edited"
    shutil.copytree(default, folder)
    config = json.loads((folder / "config.json").read_text())
    config["dit"]["hidden"] = 96
    (folder / "config.json").write_text(json.dumps(config))
    fits = r"x_embedder\.weight is \(128, 160\) in the file but \(96, 160\)"
    with pytest.raises(CheckpointError, match=fits):
        load_world_model(folder)
    config["dit"]["hidden"] = "wide"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises((CheckpointError, ValueError), match=r"DiTConfig\.hidden = 'wide': want an integer"):
        load_world_model(folder)


def test_export_keeps_what_play_reads_and_samples_the_same(tmp_path, capsys):
    from play.cli import main

    src = make_untrained_checkpoint(tmp_path / "run" / "ckpt", preset="tiny", resolution=RES, seed=3)
    assert (src / "dit.safetensors").exists()
    out = tmp_path / "shipped"
    assert main(["wm", "export", "--ckpt", str(src), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "autoencoder.safetensors",
        "config.json",
        "dit_ema.safetensors",
    ]
    assert "MB" in capsys.readouterr().out
    a, b = load_world_model(src), load_world_model(out)
    for (ka, va), (kb, vb) in zip(a.dit.state_dict().items(), b.dit.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert b.config["files"].keys() == {"autoencoder.safetensors", "dit_ema.safetensors"}
    assert main(["wm", "export", "--ckpt", str(src), "--out", str(out)]) == 2  # not replaced unasked
    assert "--overwrite" in capsys.readouterr().err
    (src / "dit_ema.safetensors").write_bytes(b"damaged")
    assert main(["wm", "export", "--ckpt", str(src), "--out", str(tmp_path / "other")]) == 2
    assert "checksum mismatch" in capsys.readouterr().err


def test_export_writes_down_the_world_an_older_checkpoint_loads_as(tmp_path):
    """A checkpoint saved before worlds were recorded dreams E1M1; exported, its config.json says so."""
    from play.cli import main

    src = make_untrained_checkpoint(tmp_path / "old", preset="tiny", resolution=RES, seed=3)
    config = json.loads((src / "config.json").read_text())
    config.pop("world", None)
    (src / "config.json").write_text(json.dumps(config))
    assert main(["wm", "export", "--ckpt", str(src), "--out", str(tmp_path / "shipped")]) == 0
    world = json.loads((tmp_path / "shipped" / "config.json").read_text())["world"]
    assert world["scenario"] == "e1m1" and world["map"] == "E1M1"
    assert load_world_model(tmp_path / "shipped").world == load_world_model(src).world


def test_export_online_ships_the_online_weights_in_the_emas_place(dataset, ae, tmp_path):
    from safetensors.torch import load_file

    from play.cli import main
    from world_model.training.train import TrainArgs, train

    train(TrainArgs(data=str(dataset), ae=str(ae), out=str(tmp_path / "run"), preset="tiny", steps=2))
    src = tmp_path / "run" / "ckpt"
    ema = load_file(str(src / "dit_ema.safetensors"))
    out = tmp_path / "online"
    assert main(["wm", "export", "--online", "--ckpt", str(src), "--out", str(out)]) == 0
    online, shipped = load_file(str(src / "dit.safetensors")), load_file(str(out / "dit_ema.safetensors"))
    assert all(torch.equal(online[k], shipped[k]) for k in online)
    assert not all(torch.equal(online[k], ema[k]) for k in online)  # not the EMA, which lags behind
    assert json.loads((out / "config.json").read_text())["exported_weights"] == "online"
    assert load_world_model(out).step == load_world_model(src).step
