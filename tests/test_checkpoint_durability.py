"""Checkpoints lose nothing: a kill at any step of a save, an --out that holds something else, damaged or
non-finite weights."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import world_model.model.checkpoint as checkpoint
from data import durable
from world_model.model.checkpoint import (
    CheckpointError,
    check_out,
    find_checkpoint,
    load_autoencoder,
    load_optimizer_state,
    load_world_model,
    make_untrained_checkpoint,
    recover,
    save_autoencoder,
    save_world_model,
)
from world_model.training.train import TrainArgs, train

RES = (32, 24)


@pytest.fixture()
def ckpt(tmp_path):
    return make_untrained_checkpoint(tmp_path / "run" / "ckpt", preset="tiny", resolution=RES, seed=0)


def save(folder, ck, step, optimizer=None):
    save_world_model(
        folder,
        ck.ae,
        ck.dit,
        ck.dit,
        ck.diffusion,
        ck.train,
        ck.action_spec,
        ck.resolution,
        ck.frame_skip,
        step=step,
        optimizer=optimizer,
    )


class Killed(Exception):
    """Stands for a kill -9 between two steps of a save."""


# Every step of a save that touches the disk, in the order a save takes them: the checkpoint's files, then
# the folder's swap.
STEPS = (
    (checkpoint, "_save_tensors"),
    (checkpoint, "_save_object"),
    (durable, "write_atomic"),
    (durable, "_rename"),
    (durable.FolderStore, "remove"),
)


def kill_at(monkeypatch, n: int) -> list[str]:
    """Make the n-th disk step of the next save raise Killed (after the steps before it ran whole)."""
    taken: list[str] = []
    for owner, name in STEPS:
        real = getattr(owner, name)

        def step(*args, _real=real, _name=name, **kw):
            if len(taken) + 1 == n:
                raise Killed(f"killed before step {n} ({_name})")
            taken.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(owner, name, step)
    return taken


def test_a_kill_at_every_step_of_a_save_leaves_a_resumable_checkpoint(ckpt, monkeypatch):
    ck = load_world_model(ckpt, weights="dit")
    opt = torch.optim.AdamW(ck.dit.parameters())
    save(ckpt, ck, step=1, optimizer=opt)
    kills, old = 0, 1
    for n in range(1, 100):
        new = old + 1
        with monkeypatch.context() as m:
            taken = kill_at(m, n)
            try:
                save(ckpt, ck, step=new, optimizer=opt)
            except Killed:
                kills += 1
            else:
                break
        # What `wm eval`/`play` load now: a whole checkpoint, the old one or the new one.
        found = find_checkpoint(ckpt)
        assert found is not None, f"no whole checkpoint after a kill before step {n} ({taken})"
        step = json.loads((found / "config.json").read_text())["step"]
        assert step in (old, new)
        with pytest.warns(UserWarning) if found != ckpt else _nothing():
            assert load_world_model(ckpt).step == step
        # A run without --resume refuses instead of deleting it; --resume puts it back in place.
        with pytest.raises(CheckpointError, match="already holds"):
            check_out(ckpt, "world_model", replace=False)
        assert recover(ckpt) == ckpt and load_world_model(ckpt, weights="dit").step == step
        load_optimizer_state(ckpt)
        assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt"]  # no copies left to confuse
        old = step + 1
        save(ckpt, ck, step=old, optimizer=opt)  # the next periodic save after the resume
    assert kills >= len(STEPS) + 3, taken  # the swap really was cut at each of its steps
    assert load_world_model(ckpt).step == new


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_resume_after_a_kill_between_the_two_renames(ckpt, tmp_path):
    """The old window: `ckpt` gone, its old and new copies beside it. --resume finds the newest."""
    ck = load_world_model(ckpt, weights="dit")
    save(ckpt, ck, step=5)
    new = tmp_path / "new"
    save(new, ck, step=6)
    ckpt.rename(ckpt.with_name(".ckpt.old"))
    new.rename(ckpt.with_name(".ckpt.tmp"))
    assert not ckpt.exists() and find_checkpoint(ckpt) == ckpt.with_name(".ckpt.tmp")
    with pytest.raises(CheckpointError, match=r"already holds a 'world_model' checkpoint \(step 6\)"):
        train(TrainArgs(data="unused", ae="unused", out=str(ckpt.parent), preset="tiny"))
    assert recover(ckpt) == ckpt and load_world_model(ckpt).step == 6
    assert not ckpt.with_name(".ckpt.old").exists() and not ckpt.with_name(".ckpt.tmp").exists()


def test_out_never_replaces_what_it_did_not_create(ckpt, tmp_path):
    ck = load_world_model(ckpt)
    before = sorted(p.name for p in ckpt.iterdir())
    # train-ae --out <a world-model folder>: refused, with or without --overwrite; the DiT stays.
    for overwrite in (False, True):
        with pytest.raises(CheckpointError, match="holds a 'world_model' checkpoint"):
            check_out(ckpt, "autoencoder", overwrite)
    with pytest.raises(CheckpointError, match="refusing to replace it"):
        save_autoencoder(ckpt, ck.ae, RES, 2, ck.action_spec)
    assert sorted(p.name for p in ckpt.iterdir()) == before
    # --out <a file>: refused, the file untouched and not moved aside.
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    with pytest.raises(CheckpointError, match="is a file"):
        check_out(note, "autoencoder")
    with pytest.raises(CheckpointError, match="is a file"):
        save_autoencoder(note, ck.ae, RES, 2, ck.action_spec)
    assert note.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run"]
    # A folder of something else, and a folder that cannot be made: refused before any work.
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        check_out(tmp_path / "photos", "autoencoder", replace=True)
    with pytest.raises(CheckpointError, match="cannot create"):
        check_out(note / "ae", "autoencoder")
    # Its own kind: refused without --overwrite, allowed with it.
    ae_dir = tmp_path / "ae"
    save_autoencoder(ae_dir, ck.ae, RES, 2, ck.action_spec)
    with pytest.raises(CheckpointError, match="pass --overwrite"):
        check_out(ae_dir, "autoencoder")
    check_out(ae_dir, "autoencoder", replace=True)
    # wm train --out R without --resume: the step-N checkpoint in R/ckpt is kept, the run refused.
    with pytest.raises(CheckpointError, match="pass --resume"):
        train(TrainArgs(data="unused", ae="unused", out=str(ckpt.parent), preset="tiny"))
    with pytest.raises(CheckpointError, match="not a run folder"):
        train(TrainArgs(data="unused", ae="unused", out=str(ckpt), preset="tiny"))
    assert sorted(p.name for p in ckpt.iterdir()) == before


def test_cli_refuses_a_bad_out_before_training(ckpt, tmp_path, capsys):
    from play.cli import main

    data = tmp_path / "data" / "shard"  # passes the CLI's look for a dataset; the --out check comes first
    data.mkdir(parents=True)
    (data / "manifest.json").write_text("{}")
    before = {p: p.read_bytes() for p in ckpt.iterdir()}
    assert main(["wm", "train-ae", "--data", str(data.parent), "--out", str(ckpt)]) == 2
    assert "holds a 'world_model' checkpoint" in capsys.readouterr().err
    assert (
        main(["wm", "train", "--data", str(data.parent), "--ae", str(ckpt), "--out", str(ckpt.parent)]) == 2
    )
    assert "pass --resume" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in ckpt.iterdir()} == before


def test_damaged_and_non_finite_weights_are_errors_naming_the_file(ckpt, tmp_path):
    ck = load_world_model(ckpt)
    weights = ckpt / "dit_ema.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of the tensors
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"dit_ema\.safetensors: checksum mismatch"):
        load_world_model(ckpt)
    # NaN saved by a diverged run (its checksum is right): refused, naming the file and the tensor.
    with torch.no_grad():
        next(ck.dit.parameters()).view(-1)[0] = float("nan")
    save(tmp_path / "nan", ck, step=3)
    with pytest.raises(CheckpointError, match=r"dit_ema\.safetensors: non-finite weights"):
        load_world_model(tmp_path / "nan")
    # And in a checkpoint from before checksums, an inf is refused too.
    legacy = tmp_path / "legacy"
    shutil.copytree(ckpt, legacy)
    cfg = json.loads((legacy / "config.json").read_text())
    del cfg["files"]
    (legacy / "config.json").write_text(json.dumps(cfg))
    state = load_file(str(legacy / "autoencoder.safetensors"))
    name = next(k for k, t in state.items() if t.is_floating_point())
    state[name] = torch.full_like(state[name], float("inf"))
    save_file(state, str(legacy / "autoencoder.safetensors"))
    with pytest.raises(CheckpointError, match=rf"autoencoder\.safetensors: non-finite weights .* in {name}"):
        load_autoencoder(legacy)


def test_damaged_optimizer_state_is_an_error(ckpt):
    ck = load_world_model(ckpt, weights="dit")
    save(ckpt, ck, step=1, optimizer=torch.optim.AdamW(ck.dit.parameters()))
    path = ckpt / "optimizer.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"optimizer\.pt: checksum mismatch"):
        load_optimizer_state(ckpt)
