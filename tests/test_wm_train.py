"""Training, resume, DDP, evaluation and the `dreamdoom wm` commands: tiny budgets, real VizDoom data."""

import hashlib
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from data.actions import DEFAULT_ACTIONS
from data.dataset import Dataset
from play.cli import main
from world_model.model.checkpoint import CheckpointError, load_world_model, make_untrained_checkpoint
from world_model.model.env import WorldModelEnv
from world_model.training.latents import LatentCache, LatentCacheError
from world_model.training.train import TrainArgs, train


def tiny_args(dataset, ae, out, **kw) -> TrainArgs:
    return TrainArgs(data=str(dataset), ae=str(ae), out=str(out), preset="tiny", **kw)


def test_commands_end_to_end(dataset, ae, tmp_path, capsys):
    assert json.loads((ae / "config.json").read_text())["summary"]["heldout_psnr"] > 0
    cache = tmp_path / "latents.safetensors"
    assert main(["wm", "encode", "--data", str(dataset), "--ae", str(ae), "--out", str(cache)]) == 0
    run = tmp_path / "run"
    assert (
        main(
            [
                "wm",
                "train",
                "--data",
                str(dataset),
                "--ae",
                str(ae),
                "--preset",
                "tiny",
                "--out",
                str(run),
                "--steps",
                "6",
                "--ckpt-every",
                "3",
                "--cache",
                str(cache),
            ]
        )
        == 0
    )
    trained = load_world_model(run / "ckpt")
    assert trained.step == 6
    # the world it dreams, from the data's manifests
    assert (trained.world.scenario, trained.world.map, trained.world.frame_skip) == ("basic", "MAP01", 2)
    assert any((run / "tb").iterdir())
    report_dir = tmp_path / "report"
    assert (
        main(
            [
                "wm",
                "eval",
                "--ckpt",
                str(run / "ckpt"),
                "--data",
                str(dataset),
                "--out",
                str(report_dir),
                "--transitions",
                "8",
                "--rollouts",
                "2",
                "--horizon",
                "10",
                "--control-cases",
                "2",
                "--all-episodes",  # the longest episode has room for a 16-step control case
                "--probe-data",
                str(dataset),
                "--stability-frames",
                "24",
                "--probe-steps",
                "5",
            ]
        )
        == 0
    )
    report = json.loads((report_dir / "report.json").read_text())
    view, ro = report["view"], report["view"]["rollout"]
    assert ro["horizon"] == 10 and set(ro["edge_corr"]) == {"1", "2", "4", "8", "10"}
    for metric in ("edge_corr", "psnr", "ssim"):
        tf = view["teacher_forced"][metric]
        assert set(tf) == {"model", "copy_last", "floor", "ceiling", "blur", "opposite_action"}
        assert all(v == v for v in tf.values())  # not NaN
        assert set(ro[metric]["10"]) == {"model", "copy_last", "floor", "ceiling", "blur"}
    assert set(report["status_bar"]["teacher_forced"]["psnr"]) == {"model", "copy_last", "ceiling"}
    assert set(report["probe"]["position_error"]["10"]) == {"model", "real", "copy_last"}
    # basic's episodes were written by collect, so the engine replays them exactly
    assert report["control"]["replay_exact"] == 1.0 and report["control"]["cases"] >= 1
    assert -1 <= report["control"]["action_response"] <= 1
    assert report["stability"]["frames"] == 24 and len(report["stability"]["edge_corr_per_10s"]) >= 1
    motion = report["control"]["motion"]
    one, cases = motion["one_step"], motion["cases"]
    assert one["starts"] >= 1 and cases["cases"] == report["control"]["cases"]
    for m in (one, cases):
        assert {"dream_right_px", "dream_left_px", "turn_gain", "right_way_share", "recorded"} <= set(m)
    # held fast turns move the engine's view: the right turn right, the left turn left, over 16 steps
    assert cases["engine_right_px"] > 10 > -10 > cases["engine_left_px"]
    assert report["timing_s"]["motion"] >= 0
    printed = capsys.readouterr().out
    assert "scene edge correlation" in printed and "rollout h=10" in printed and "action response" in printed
    assert "control by image motion" in printed and "over 2 cases of 16 steps" in printed
    assert (report_dir / "side_by_side.mp4").stat().st_size > 0 and (
        report_dir / "contact_sheet.png"
    ).exists()
    assert (
        main(
            ["wm", "bench", "--ckpt", str(run / "ckpt"), "--steps", "1,2", "--frames", "3", "--json"]
            + ["--start", str(dataset)]
        )
        == 0
    )
    bench = json.loads(capsys.readouterr().out)
    assert bench["world"]["scenario"] == "basic" and bench["start"] == str(dataset)
    modes = ["eager", "captured"] if torch.cuda.is_available() else ["eager"]
    assert [(s["sampling_steps"], s["mode"]) for s in bench["settings"]] == [
        (n, m) for n in (1, 2) for m in modes
    ]
    assert bench["device_name"]
    assert all(s["fps"] > 0 and s["p99_ms"] >= s["median_ms"] for s in bench["settings"])


def test_resume_continues_step_count_optimizer_and_ema(dataset, ae, tmp_path):
    out = tmp_path / "run"
    train(tiny_args(dataset, ae, out, steps=4, ckpt_every=100))
    saved_ema = load_file(str(out / "ckpt" / "dit_ema.safetensors"))
    same = train(tiny_args(dataset, ae, out, steps=4, resume=True))  # nothing left to do: state as loaded
    for name, value in same["ema"].state_dict().items():
        assert torch.equal(value, saved_ema[name])
    raw = load_file(str(out / "ckpt" / "dit.safetensors"))
    assert any(not torch.equal(raw[n], saved_ema[n]) for n in raw)  # the EMA is its own thing
    train(tiny_args(dataset, ae, out, steps=8, resume=True))
    ck = load_world_model(out / "ckpt")
    assert ck.step == 8
    opt = torch.load(out / "ckpt" / "optimizer.pt", weights_only=True)
    assert {int(s["step"]) for s in opt["state"].values()} == {8}


@pytest.mark.parametrize("prediction", ["x0", "edm"])
def test_a_parameterisation_trains_is_saved_and_plays(dataset, ae, tmp_path, prediction):
    out = tmp_path / "run"
    summary = train(tiny_args(dataset, ae, out, steps=3, prediction=prediction))
    assert np.isfinite(summary["final_loss"])
    ck = load_world_model(out / "ckpt")
    assert ck.config["diffusion"]["prediction"] == prediction and ck.process.prediction == prediction
    env = WorldModelEnv(ck)
    env.reset(Dataset(dataset).load(0).frames[:3])
    assert env.step(DEFAULT_ACTIONS.noop()).shape == (*ck.resolution[::-1], 3)
    with pytest.raises(
        CheckpointError, match=f"trained with --prediction {prediction}, cannot resume it with v"
    ):
        train(tiny_args(dataset, ae, out, steps=4, resume=True, prediction="v"))


def test_cooldown_decays_the_lr_over_the_end_of_the_run(dataset, ae, tmp_path):
    def last_lr(out):
        return torch.load(out / "ckpt" / "optimizer.pt", weights_only=True)["param_groups"][0]["lr"]

    train(tiny_args(dataset, ae, tmp_path / "flat", steps=8))
    assert last_lr(tmp_path / "flat") == pytest.approx(1e-3)  # the tiny preset's lr, no warmup
    # The last of 8 steps is taken at progress 7/8, a quarter of the way through a 0.5 cooldown.
    train(tiny_args(dataset, ae, tmp_path / "cool", steps=8, cooldown=0.5))
    assert last_lr(tmp_path / "cool") == pytest.approx(1e-3 * (1 / 8) / 0.5)
    # On resume the cooldown covers the new part of the run only: 4 more steps, last at progress 3/4.
    train(tiny_args(dataset, ae, tmp_path / "flat", steps=12, resume=True, cooldown=0.5))
    assert last_lr(tmp_path / "flat") == pytest.approx(1e-3 * (1 / 4) / 0.5)
    with pytest.raises(ValueError, match="--cooldown"):
        train(tiny_args(dataset, ae, tmp_path / "bad", steps=2, cooldown=1.5))


def test_a_cache_that_no_longer_fits_its_data_is_encoded_again(dataset, ae, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    out = tmp_path / "run"
    train(tiny_args(data, ae, out, steps=1))
    before = LatentCache.load(out / "latents.safetensors")
    train(tiny_args(data, ae, out, steps=2, resume=True))  # same data: the cache is kept
    assert "encoding it again" not in capsys.readouterr().out
    shard = next(p for p in data.iterdir() if (p / "manifest.json").exists())
    extra = shard / f"ep_{len(list(shard.glob('ep_*.npz'))):06d}.npz"
    shutil.copy(next(shard.glob("ep_*.npz")), extra)  # the dataset grows by one episode
    train(tiny_args(data, ae, out, steps=3, resume=True))
    assert "the dataset changed since it was encoded; encoding it again" in capsys.readouterr().out
    after = LatentCache.load(out / "latents.safetensors")
    assert len(after.lengths) == len(before.lengths) + 1
    extra.unlink()
    with pytest.raises(LatentCacheError, match="latents.safetensors: this latent cache does not fit"):
        train(tiny_args(data, ae, out, steps=4, resume=True, cache=str(out / "latents.safetensors")))


def test_resume_without_checkpoint_and_mismatched_data_are_clear_errors(dataset, ae, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        train(tiny_args(dataset, ae, tmp_path / "none", steps=2, resume=True))
    other = make_untrained_checkpoint(tmp_path / "small", preset="tiny", resolution=(32, 24))
    assert (
        main(["wm", "eval", "--ckpt", str(other), "--data", str(dataset), "--out", str(tmp_path / "r")]) == 2
    )
    assert "checkpoint resolution (32, 24) but the data is (160, 120)" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="'autoencoder' checkpoint, expected 'world_model'"):
        load_world_model(ae)


def _ddp_worker(rank: int, world: int, port: int, dataset: str, ae: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    result = train(
        TrainArgs(
            data=dataset,
            ae=ae,
            out=out,
            preset="tiny",
            steps=3,
            minutes=10,  # a time budget: the ranks agree on the clock through an all-reduce
            cooldown=0.5,
            device="cpu",
            cache=os.path.join(out, "latents.safetensors"),
        )
    )
    digest = hashlib.sha256()
    for p in result["model"].parameters():
        digest.update(p.detach().numpy().tobytes())
    with open(os.path.join(out, f"rank{rank}.sha"), "w") as f:
        f.write(digest.hexdigest())
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_keep_weights_equal(dataset, ae, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    out.mkdir()
    mp.start_processes(
        _ddp_worker, args=(2, port, str(dataset), str(ae), str(out)), nprocs=2, start_method="spawn"
    )
    hashes = {(out / f"rank{r}.sha").read_text() for r in range(2)}
    assert len(hashes) == 1
    ck = load_world_model(out / "ckpt")
    assert ck.step == 3 and ck.config["samples_seen"] == 3 * ck.train.batch_size * 2


def windows_on(device: str):
    from data.actions import DEFAULT_ACTIONS
    from data.windows import LatentWindows

    g = torch.Generator().manual_seed(0)
    n = 40
    latents = torch.randn((n, 4, 3, 4), generator=g).half()
    actions = torch.stack([torch.randint(s, (n,), generator=g) for s in DEFAULT_ACTIONS.sizes], dim=1)
    starts, lengths = torch.tensor([0, 15, 18]), torch.tensor([15, 3, 22])
    return LatentWindows(
        latents.to(device), actions.to(device), starts, lengths, [0, 1, 2], 4, DEFAULT_ACTIONS.noop()
    )


def test_windows_are_gathered_on_the_device_of_the_latents():
    # The meta device checks placement on any machine: a CPU index tensor anywhere in gather would fail.
    batch = windows_on("meta").sample(6, torch.Generator().manual_seed(1))
    assert [(x.device.type, tuple(x.shape)) for x in batch] == [
        ("meta", (6, 4, 3, 4)),
        ("meta", (6, 4, 4, 3, 4)),
        ("meta", (6, 5, 5)),
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_windows_gathered_on_the_gpu_equal_those_on_the_cpu():
    cpu = windows_on("cpu").sample(16, torch.Generator().manual_seed(1))
    gpu = windows_on("cuda").sample(16, torch.Generator().manual_seed(1))
    for a, b in zip(cpu, gpu, strict=True):
        assert b.is_cuda and torch.equal(a, b.cpu())
