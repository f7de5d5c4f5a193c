"""Bad input to every command, as a careless or hostile user gives it: each must end with exit code 2 and
one line that names the option or file, with no traceback, and leave every file already written as it was.

Most cases run `main(argv)` in this process (a bug there raises, failing the test); a few run the real
console entry in a subprocess, where a traceback would be visible on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_episode
from play.cli import main

NO_CUDA_DEVICE = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, str]:
    """A workspace holding good and bad inputs: a dataset, a checkpoint, damaged copies, plain files."""
    from agent.env import EnvConfig
    from agent.policy_io import META_NAME
    from agent.ppo_config import PPOConfig
    from data.actions import DEFAULT_ACTIONS
    from data.dataset import ShardWriter, default_recorder
    from world_model.model.checkpoint import make_untrained_checkpoint

    root = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(0)
    ds = root / "data"
    writer = ShardWriter(ds / "shard", EnvConfig(scenario="basic").manifest(default_recorder("test")))
    for _ in range(3):
        writer.write(make_episode(rng, steps=8, size=(160, 120)))
    ckpt = make_untrained_checkpoint(root / "ckpt", preset="tiny")
    no_ae = root / "ckpt_no_ae"
    shutil.copytree(ckpt, no_ae)
    (no_ae / "autoencoder.safetensors").unlink()
    cut_ae = root / "ckpt_cut_ae"
    shutil.copytree(ckpt, cut_ae)
    weights = (cut_ae / "autoencoder.safetensors").read_bytes()
    (cut_ae / "autoencoder.safetensors").write_bytes(weights[: len(weights) // 2])
    bad_recipe = root / "ckpt_bad_recipe"  # config.json edited by hand: 32 channels cannot split into 3 heads
    shutil.copytree(ckpt, bad_recipe)
    config = json.loads((bad_recipe / "config.json").read_text())
    config["dit"]["heads"] = 3
    (bad_recipe / "config.json").write_text(json.dumps(config))
    not_json = root / "ckpt_bad_config"
    shutil.copytree(ckpt, not_json)
    (not_json / "config.json").write_text("[1, 2]")
    one = root / "one_episode"
    ShardWriter(one / "shard", EnvConfig(scenario="basic").manifest(default_recorder("test"))).write(
        make_episode(rng, steps=8, size=(160, 120))
    )
    (root / "pipe_bad").mkdir()
    (root / "pipe_bad" / "stages.json").write_text("{")
    (root / "pipe_cpu").mkdir()
    (root / "pipe_cpu" / "stages.json").write_text('{"preset": "cpu"}')
    meta = {"config": PPOConfig().to_dict(), "action_contract": DEFAULT_ACTIONS.to_dict(), "num_timesteps": 0}
    with zipfile.ZipFile(root / "meta_only.zip", "w") as z:  # our JSON, but no weights
        z.writestr(META_NAME, json.dumps(meta))
    (root / "run_bad").mkdir()
    (root / "run_bad" / "policy.zip").write_bytes(b"not a zip")
    (root / "empty").mkdir()
    # An unrelated tree: a manifest.json deep down must not make it a dataset, nor be walked to.
    deep = root / "tree" / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    (deep / "manifest.json").write_text('{"not": "a dataset manifest"}')
    (root / "file.txt").write_text("a plain file\n")
    (root / "bogus.zip").write_bytes(b"PK not really a zip")
    (root / "nan.txt").write_text("10 fwd turn=nan\n")
    (root / "inf.txt").write_text("10 fwd turn=inf\n")
    (root / "long.txt").write_text("10 " + "x" * 10_000_000 + "\n")
    (root / "good.txt").write_text("4 fwd\n")
    (root / "run").mkdir()
    return {
        "ds": str(ds),
        "ckpt": str(ckpt),
        "no_ae": str(no_ae),
        "cut_ae": str(cut_ae),
        "bad_config": str(not_json),
        "bad_recipe": str(bad_recipe),
        "one": str(one),
        "pipe_bad": str(root / "pipe_bad"),
        "pipe_cpu": str(root / "pipe_cpu"),
        "run_bad": str(root / "run_bad"),
        "meta_only": str(root / "meta_only.zip"),
        "empty": str(root / "empty"),
        "tree": str(root / "tree"),
        "file": str(root / "file.txt"),
        "bogus_zip": str(root / "bogus.zip"),
        "nan": str(root / "nan.txt"),
        "inf": str(root / "inf.txt"),
        "long": str(root / "long.txt"),
        "good": str(root / "good.txt"),
        "run": str(root / "run"),
        "missing": str(root / "missing"),
        "root": str(root),
        "cuda": NO_CUDA_DEVICE,
    }


def snapshot(root: str) -> dict[str, str]:
    """Every file and folder under `root` with a digest of its content."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.join(folder, d)] = "dir"
        for f in files:
            p = os.path.join(folder, f)
            out[p] = hashlib.sha1(Path(p).read_bytes()).hexdigest()
    return out


# (command line, what the message must name). Paths are {ws keys}.
WM_TRAIN = "wm train --data {ds} --ae {ckpt} --out {run}/dit --preset tiny"
TRAIN_AE = "wm train-ae --data {ds} --out {run}/ae --preset tiny"
EVAL = "wm eval --ckpt {ckpt} --data {ds} --out {run}/eval"
HEADLESS = "play --ckpt {ckpt} --headless --frames 2 --out {run}/x.mp4 --inputs"
ENGINE_HEADLESS = "play --engine --headless --frames 2 --out {run}/x.mp4 --inputs"
VIEW = "data view {ds} --out {run}/v.mp4"
ABLATE = "wm ablate --data {ds} --ae {ckpt} --heldout {ds} --out {run}/ablate --preset tiny"
# (--set item, the rule it breaks) on the tiny preset: hidden 32, 2 heads, 10 noise buckets, 15x20 latents
RECIPE_CASES = [
    ("dit.hidden=-5", "DiTConfig.hidden = -5: must be at least 4"),
    ("dit.hidden=0", "DiTConfig.hidden = 0: must be at least 4"),
    ("dit.hidden=30", "DiTConfig.hidden = 30: must be a multiple of 4"),
    ("dit.heads=3", "DiTConfig.heads = 3: must divide hidden (32)"),
    ("dit.heads=0", "DiTConfig.heads = 0: must be at least 1"),
    ("dit.patch_size=7", "DiTConfig.patch_size = 7: the patch must fit the 15x20 latent grid"),
    ("dit.patch_size=3", "DiTConfig.patch_size = 3: the patch must fit"),
    ("dit.patch_size=16", "DiTConfig.patch_size = 16: the patch must fit"),
    ("dit.patch_size=0", "DiTConfig.patch_size = 0: must be at least 1"),
    ("dit.depth=0", "DiTConfig.depth = 0: must be at least 1"),
    ("dit.context_len=0", "DiTConfig.context_len = 0"),
    ("dit.mlp_ratio=0", "DiTConfig.mlp_ratio = 0: must be more than 0"),
    ("dit.mlp_ratio=NaN", "DiTConfig.mlp_ratio = nan: must be a finite number"),
    ("dit.noise_buckets=0", "DiTConfig.noise_buckets = 0"),
    (
        "dit.noise_buckets=1",
        "DiffusionConfig.sample_context_bucket = 1: must be below DiTConfig.noise_buckets",
    ),
    ("diffusion.sample_context_bucket=10", "DiffusionConfig.sample_context_bucket = 10: must be below"),
    ("diffusion.sample_context_bucket=-1", "DiffusionConfig.sample_context_bucket = -1: must be at least 0"),
    ("diffusion.sampling_steps=0", "DiffusionConfig.sampling_steps = 0: must be at least 1 and at most 64"),
    ("diffusion.sampling_steps=65", "DiffusionConfig.sampling_steps = 65"),
    ("diffusion.context_drop_prob=1.5", "DiffusionConfig.context_drop_prob = 1.5: must be at least 0 and at"),
    ("diffusion.action_drop_prob=-0.1", "DiffusionConfig.action_drop_prob = -0.1"),
    ("diffusion.context_noise_max=-1", "DiffusionConfig.context_noise_max = -1"),
    ("diffusion.latent_clip=-1", "DiffusionConfig.latent_clip = -1"),
    ("diffusion.guidance=-2", "DiffusionConfig.guidance = -2"),
    ("diffusion.action_guidance=Infinity", "DiffusionConfig.action_guidance = inf: must be a finite number"),
    ("diffusion.edm_sigma_min=10", "DiffusionConfig.edm_sigma_min = 10: must be below edm_sigma_max (5)"),
    ("diffusion.edm_sigma_max=0", "DiffusionConfig.edm_sigma_max = 0: must be more than 0"),
    ("diffusion.edm_rho=-7", "DiffusionConfig.edm_rho = -7"),
    ("diffusion.edm_p_mean=NaN", "DiffusionConfig.edm_p_mean = nan: must be a finite number"),
    ("diffusion.prediction=flow", "DiffusionConfig.prediction = 'flow': choose one of"),
    ("train.batch_size=0", "TrainConfig.batch_size = 0: must be at least 1"),
    ("train.steps=0", "TrainConfig.steps = 0"),
    ("train.lr=0", "TrainConfig.lr = 0: must be more than 0 and at most 1"),
    ("train.lr=NaN", "TrainConfig.lr = nan: must be a finite number"),
    ("train.weight_decay=-1", "TrainConfig.weight_decay = -1"),
    ("train.warmup=-1", "TrainConfig.warmup = -1"),
    ("train.ema_decay=1.5", "TrainConfig.ema_decay = 1.5"),
    ("train.grad_clip=0", "TrainConfig.grad_clip = 0"),
    ("train.ckpt_every=0", "TrainConfig.ckpt_every = 0"),
    ("train.log_every=0", "TrainConfig.log_every = 0"),
    ("train.seed=-1", "TrainConfig.seed = -1"),
    ("train.heldout_fraction=1", "TrainConfig.heldout_fraction = 1: must be at least 0 and at most 0.9"),
]
CASES: list[tuple[str, str]] = [
    # collect
    ("collect --out {run}/c --frame-skip 0", "--frame-skip"),
    ("collect --out {run}/c --frame-skip -2", "--frame-skip"),
    ("collect --out {run}/c --frame-skip 100000", "--frame-skip"),
    ("collect --out {run}/c --seed -1", "--seed"),
    ("collect --out {file}", "--out {file}: a file"),
    ("collect --out {file}/sub", "--out {file}/sub: {file} is a file"),
    ("collect --out {run}/c --episodes -1", "--episodes"),
    ("collect --out {run}/c --episodes 0", "--episodes"),
    ("collect --out {run}/c --episodes a", "--episodes"),
    ("collect --out {run}/c --max-steps -1", "--max-steps"),
    ("collect --out {run}/c --policy {missing}.zip", "{missing}.zip"),
    ("collect --out {run}/c --policy {bogus_zip}", "{bogus_zip}"),
    ("collect --out {run}/c --policy {ckpt}", "{ckpt}/policy.zip"),
    ("collect --out {run}/c --policy nonsense", "--policy 'nonsense'"),
    ("collect --out {run}/c --scenario nope", "--scenario"),
    ("collect --out {run}/c --resolution 100x100", "--resolution 100x100"),
    ("collect --out {run}/c --resolution big", "--resolution"),
    ("collect --out {run}/c --skill 9", "--skill"),
    ("collect --out {ds} --resolution 320x240", "--resolution 320x240: --out {ds} holds 160x120"),
    ("collect --out {ds} --frame-skip 4", "--frame-skip 4: --out {ds}"),
    ("agent train --out {run}/a --record {ds} --frame-skip 4", "--frame-skip 4: --record {ds}"),
    ("collect --out {run}/c --workers 0", "--workers"),
    ("collect --episodes 1", "--out"),
    # agent
    ("agent train --out {run}/a --n-steps 0", "--n-steps"),
    ("agent train --out {run}/a --n-steps 1 --envs 1", "--n-steps 1 x --envs 1"),
    ("agent train --out {run}/a --steps 0", "--steps"),
    ("agent train --out {run}/a --envs 0", "--envs"),
    ("agent train --out {run}/a --sticky 2", "--sticky"),
    ("agent train --out {run}/a --lr nan", "--lr"),
    ("agent train --out {run}/a --lr -1", "--lr"),
    ("agent train --out {run}/a --hold 0", "--hold"),
    ("agent train --out {run}/a --obs-size 8x8", "--obs-size"),
    ("agent train --out {run}/a --vec threads", "--vec"),
    ("agent train --out {file}", "--out {file}: a file"),
    ("agent train --out {run}/a --record {file}", "--record {file}: a file"),
    ("agent train --out {run}/a --device bogus", "--device 'bogus'"),
    ("agent train --out {run}/a --resume --scenario basic", "--resume: nothing to resume in {run}/a"),
    ("agent train --out {run_bad} --resume", "{run_bad}/policy.zip: unreadable policy file"),
    ("agent train --out {run_bad}", "--out {run_bad}: {run_bad}/policy.zip exists: pass --resume"),
    ("collect --out {run}/c --policy {run_bad}", "{run_bad}/policy.zip: unreadable policy file"),
    ("collect --out {run}/c --policy {meta_only}", "{meta_only}: policy weights missing"),
    ("agent bench --frames 0", "--frames"),
    ("agent bench --workers 0", "--workers"),
    ("agent bench --frames 1 --workers 2", "--frames 1"),
    ("agent bench --policy {missing}.zip", "{missing}.zip"),
    # data
    ("data info {empty}", "{empty}: not a dataset"),
    ("data info {tree}", "{tree}: not a dataset"),
    ("data info {missing}", "{missing}: no such folder"),
    ("data info {file}", "{file}: a file"),
    (VIEW + " --tiles 0", "--tiles"),
    (VIEW + " --scale -1", "--scale"),
    (VIEW + " --scale 0", "--scale"),
    (VIEW + " --episode 99", "--episode 99"),
    (VIEW + " --episode -1", "--episode"),
    ("data view {ds} --out {run}", "--out {run}: a folder"),
    ("data view {ds} --out {run}/v.txt", "--out {run}/v.txt"),
    ("data view {ds} --out {file}/v.mp4", "{file} is a file"),
    ("data view {empty} --out {run}/v.mp4", "{empty}: not a dataset"),
    ("data coverage {ds} --out {run}/c.png --cell 0", "--cell"),
    ("data coverage {ds} --out {run}/c.png --units-per-pixel -1", "--units-per-pixel"),
    ("data coverage {ds} --out {run}/c.png --bounds 1,2", "--bounds"),
    ("data coverage {ds} --out {run}/c.png --bounds 0,0,0,0", "--bounds 0,0,0,0"),
    ("data coverage {ds} --out {run}", "--out {run}: a folder"),
    ("data coverage {tree} --out {run}/c.png", "{tree}: not a dataset"),
    # wm train
    ("wm train --data {missing} --ae {ckpt} --out {run}/dit", "--data {missing}: no such folder"),
    ("wm train --data {tree} --ae {ckpt} --out {run}/dit", "--data {tree}: not a dataset"),
    ("wm train --data {ds} --ae {missing} --out {run}/dit", "--ae {missing}"),
    ("wm train --data {ds} --ae {empty} --out {run}/dit", "--ae {empty}: not a checkpoint folder"),
    ("wm train --data {ds} --ae {ckpt} --out {file}", "--out {file}: a file"),
    (WM_TRAIN + " --batch-size -4", "--batch-size"),
    (WM_TRAIN + " --batch-size 0", "--batch-size"),
    (WM_TRAIN + " --lr -1", "--lr"),
    (WM_TRAIN + " --lr nan", "--lr"),
    (WM_TRAIN + " --lr inf", "--lr"),
    (WM_TRAIN + " --ckpt-every 0", "--ckpt-every"),
    (WM_TRAIN + " --minutes 0", "--minutes"),
    (WM_TRAIN + " --steps 0", "--steps"),
    (WM_TRAIN + " --cooldown 2", "--cooldown"),
    (WM_TRAIN + " --device {cuda}", "--device {cuda}"),
    (WM_TRAIN + " --device bogus", "--device 'bogus'"),
    (WM_TRAIN + " --threads -1", "--threads"),
    (WM_TRAIN + " --seed 99999999999999999999", "--seed"),
    (WM_TRAIN + " --cache {run}", "--cache {run}"),
    ("wm train --data {ds} --ae {ckpt} --out {run}/dit --preset huge", "--preset"),
    # wm train --set, wm ablate --variant: the recipe's bounds and rules (world_model/model/config.py),
    # checked on the autoencoder's 15x20 latent grid before any data is read
    *[(f"{WM_TRAIN} --set {item}", f"--set '{item}': {why}") for item, why in RECIPE_CASES],
    (ABLATE + " --variant ok a:dit.heads=3", "--variant a: 'dit.heads=3': DiTConfig.heads = 3: must divide"),
    (ABLATE + " --variant a:dit.patch_size=7", "--variant a: 'dit.patch_size=7': DiTConfig.patch_size = 7"),
    (ABLATE + " --variant a:dit.depth=1 --variant a:dit.depth=2", "--variant 'a:dit.depth=2': the name 'a'"),
    ("wm bench --ckpt {bad_recipe} --frames 1", "{bad_recipe}/config.json: DiTConfig.heads = 3: must divide"),
    (
        "play --ckpt {bad_recipe} --headless --frames 2 --out {run}/x.mp4 --inputs {good}",
        "{bad_recipe}/config.json: DiTConfig.heads = 3",
    ),
    ("wm train --data {ds} --out {run}/dit", "--ae"),
    # wm train-ae, encode
    (TRAIN_AE + " --batch-size 0", "--batch-size"),
    (TRAIN_AE + " --crop 7", "--crop 7"),
    (TRAIN_AE + " --every 0", "--every"),
    (TRAIN_AE + " --max-frames 0", "--max-frames"),
    (TRAIN_AE + " --heldout 1.5", "--heldout"),
    (TRAIN_AE + " --steps -1", "--steps"),
    ("wm train-ae --data {file} --out {run}/ae", "--data {file}: a file"),
    ("wm train-ae --data {ds} --out {file}", "--out {file}: a file"),
    ("wm encode --data {ds} --ae {ckpt} --out {run}", "--out {run}: a folder"),
    ("wm encode --data {ds} --ae {ckpt} --out {run}/l.safetensors --heldout -0.1", "--heldout"),
    # wm eval, bench
    (EVAL + " --horizon 0", "--horizon"),
    (EVAL + " --transitions 0", "--transitions"),
    (EVAL + " --rollouts 0", "--rollouts"),
    (EVAL + " --episodes 0", "--episodes"),
    (EVAL + " --steps 0", "--steps"),
    ("wm eval --ckpt {missing} --data {ds} --out {run}/eval", "--ckpt {missing}"),
    ("wm eval --ckpt {no_ae} --data {ds} --out {run}/eval", "{no_ae}/autoencoder.safetensors"),
    ("wm eval --ckpt {cut_ae} --data {ds} --out {run}/eval", "{cut_ae}/autoencoder.safetensors"),
    ("wm eval --ckpt {ckpt} --data {ds} --out {file}", "--out {file}: a file"),
    ("wm eval --ckpt {ckpt} --data {one} --out {run}/eval", "--data {one}: fewer than 2 episodes"),
    ("wm bench --ckpt {ckpt} --steps a", "--steps"),
    ("wm bench --ckpt {ckpt} --steps 1,,x", "--steps"),
    ("wm bench --ckpt {ckpt} --steps 0", "--steps"),
    ("wm bench --ckpt {ckpt} --frames 0", "--frames"),
    ("wm bench --ckpt {ckpt} --seed 99999999999999999999", "--seed"),
    ("wm bench --ckpt {no_ae} --frames 1", "{no_ae}/autoencoder.safetensors"),
    ("wm bench --ckpt {cut_ae} --frames 1", "{cut_ae}/autoencoder.safetensors"),
    ("wm bench --ckpt {ckpt} --out {run}", "--out {run}: a folder"),
    ("wm bench --ckpt {bad_config}", "{bad_config}/config.json is not a checkpoint config"),
    ("wm export --ckpt {ckpt} --out /proc/dreamdoom-x", "/proc/dreamdoom-x: cannot be written in /proc"),
    ("wm eval --ckpt {bad_config} --data {ds} --out {run}/eval", "{bad_config}/config.json"),
    ("play --ckpt {bad_config} --headless", "{bad_config}/config.json"),
    # play
    (HEADLESS + " {good} --threads -1", "--threads"),
    (HEADLESS + " {good} --seed -1", "--seed"),
    (HEADLESS + " {good} --device bogus", "--device 'bogus'"),
    (HEADLESS + " {good} --device {cuda}", "--device {cuda}"),
    (HEADLESS + " {good} --stats {run}", "--stats {run}: a folder"),
    ("play --ckpt {ckpt} --bench 1 --bench-frames 0", "--bench-frames"),
    ("play --ckpt {ckpt} --bench 0,1", "--bench"),
    ("play --ckpt {ckpt} --bench fast", "--bench"),
    (HEADLESS + " {good} --sensitivity -1", "--sensitivity"),
    (HEADLESS + " {good} --skill 9", "--skill"),
    (HEADLESS + " {good} --steps 64", "--steps"),
    (HEADLESS + " {good} --steps 0", "--steps"),
    (HEADLESS + " {good} --scale 0", "--scale"),
    (HEADLESS + " {good} --filter blurry", "--filter"),
    (HEADLESS + " {good} --frames 0", "--frames"),
    (HEADLESS + " {nan}", "{nan}:1"),
    (HEADLESS + " {inf}", "{inf}:1"),
    (HEADLESS + " {long}", "{long}"),
    (HEADLESS + " /dev/zero", "/dev/zero"),
    (HEADLESS + " {missing}.txt", "{missing}.txt"),
    (HEADLESS + " {good} --record-dir {file}", "--record-dir {file}: a file"),
    (HEADLESS + " {good} --start {tree}", "--start {tree}: not a dataset"),
    (HEADLESS + " {good} --start {ds} --start-episode 99", "--start-episode 99: out of range ({ds} has 3"),
    ("play --ckpt {ckpt} --headless --frames 2 --inputs {good} --out {run}", "--out {run}: a folder"),
    ("play --ckpt {ckpt} --headless --out {run}/x.mp4", "--headless needs --frames, --inputs"),
    ("play --ckpt {empty} --headless", "{empty}: not a checkpoint folder"),
    ("play --ckpt {no_ae} --headless --frames 2 --inputs {good} --out {run}/x.mp4", "{no_ae}"),
    (ENGINE_HEADLESS + " {good} --mirror", "--mirror"),
    (ENGINE_HEADLESS + " {good} --scenario nope", "--scenario"),
    # pipeline and the command itself
    ("pipeline --preset huge --out {run}/p", "--preset"),
    ("pipeline --out {run}/p --only nostage", "--only nostage"),
    ("pipeline --out {file}", "--out {file}: a file"),
    ("pipeline --out {pipe_bad}", "{pipe_bad}/stages.json: unreadable"),
    ("pipeline --out {pipe_cpu} --preset tiny", "--preset tiny: {pipe_cpu} was made with preset 'cpu'"),
    ("nocommand", "nocommand"),
    (WM_TRAIN + " --bogus-option 1", "--bogus-option"),
]


def render(case: str, ws: dict[str, str]) -> list[str]:
    return [part.format(**ws) for part in case.split()]


@pytest.mark.parametrize("case,needle", CASES, ids=[c for c, _ in CASES])
def test_bad_input_gets_one_clear_line(case, needle, ws, capsys):
    before = snapshot(ws["root"])
    rc = main(render(case, ws))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("dreamdoom"), err
    assert needle.format(**ws) in lines[0], err
    assert len(lines[0]) < 600  # a huge input is never echoed whole
    assert snapshot(ws["root"]) == before


# Through the installed entry point, where an uncaught error would print a traceback.
SUBPROCESS_CASES = [
    ("collect --out {run}/c --frame-skip 0", "--frame-skip"),
    ("wm train --data {missing} --ae {ckpt} --out {run}/dit", "--data {missing}"),
    ("wm eval --ckpt {cut_ae} --data {ds} --out {run}/eval", "{cut_ae}/autoencoder.safetensors"),
    ("data info {tree}", "{tree}: not a dataset"),
    (HEADLESS + " {nan}", "{nan}:1"),
]


@pytest.mark.parametrize("case,needle", SUBPROCESS_CASES, ids=[c for c, _ in SUBPROCESS_CASES])
def test_real_command_prints_no_traceback(case, needle, ws):
    before = snapshot(ws["root"])
    proc = subprocess.run(
        [sys.executable, "-m", "play.cli", *render(case, ws)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle.format(**ws) in proc.stderr.strip().splitlines()[-1]
    assert snapshot(ws["root"]) == before


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_a_reader_that_leaves_early_ends_the_command_quietly(ws, json_flag):
    """`dreamdoom data info DIR | head -3`: once head has its lines, no BrokenPipe traceback."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line is written, so every write finds no reader
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "play.cli", "data", "info", ws["ds"], *json_flag],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(w)
    assert proc.stderr == "" and proc.returncode == 141, proc.stderr  # 141: as `cat` ended by SIGPIPE


def test_debug_shows_the_traceback(ws, capsys):
    assert main(["--debug", "data", "info", ws["empty"]]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("dreamdoom data info:")


def test_a_bug_keeps_its_traceback(monkeypatch, ws):
    import data.info

    def broken(ds, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(data.info, "summarize", broken)
    with pytest.raises(ZeroDivisionError):
        main(["data", "info", ws["ds"]])


def test_import_structure():
    """Rolling a policy out never loads the training code, the session no pygame, the pipeline no CLI, and
    a rejected command line no torch."""
    code = """
import sys
import play.pipeline
assert "play.cli" not in sys.modules
import play.session
assert "pygame" not in sys.modules
from play.cli import main
assert main(["collect", "--out", "x", "--frame-skip", "0"]) == 2
assert main(["data", "view", "d", "--out", "v.mp4", "--scale", "0"]) == 2
assert "torch" not in sys.modules
import agent.collect, agent.policy_io
assert "agent.ppo" not in sys.modules
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


COMMANDS = [
    "collect",
    "agent train",
    "agent bench",
    "data info",
    "data view",
    "data coverage",
    "wm train-ae",
    "wm encode",
    "wm train",
    "wm eval",
    "wm bench",
    "play",
    "pipeline",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_lists_its_options(command, capsys):
    assert main([*command.split(), "--help"]) == 0
    assert "--help" in capsys.readouterr().out


def test_help_shows_defaults_and_ranges(capsys):
    assert main(["collect", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "tics per recorded frame (35 tics = 1 s) (default 2; 1..35)" in text


def test_training_says_which_episodes_it_skipped(ws, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(ws["ds"], data)
    bad = sorted(data.glob("*/ep_*"))[1]
    bad.write_bytes(bad.read_bytes()[:100])  # cut short, as by a full disk
    cache = tmp_path / "latents.safetensors"
    assert main(["wm", "encode", "--data", str(data), "--ae", ws["ckpt"], "--out", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "encoded" in out and f"skipped 1 unreadable episode(s); the first: {bad}" in out
    args = ["wm", "train-ae", "--data", str(data), "--out", str(tmp_path / "ae"), "--preset", "tiny"]
    assert main([*args, "--steps", "1", "--decoder-steps", "0"]) == 0
    assert f"skipped 1 unreadable episode(s); the first: {bad}" in capsys.readouterr().out


def test_debug_reaches_the_commands_a_pipeline_runs(tmp_path, capsys):
    out = str(tmp_path / "p")
    assert main(["--debug", "pipeline", "--out", out, "--only", "train-ae"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and f"dreamdoom wm train-ae: --data {out}/data: no such folder" in err
    assert main(["pipeline", "--out", out, "--only", "train-ae"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_which_os_errors_are_the_users(tmp_path):
    import errno

    import play.cli
    from play.cli import user_error_message

    theirs = OSError(errno.EACCES, "Permission denied", str(tmp_path / "runs" / "x"))
    assert user_error_message(theirs) == f"{tmp_path / 'runs' / 'x'}: Permission denied"
    full = OSError(errno.ENOSPC, "No space left on device")
    assert user_error_message(full) == "No space left on device"
    ours = FileNotFoundError(errno.ENOENT, "No such file or directory", play.cli.__file__)
    assert user_error_message(ours) is None  # a file of the install: a bug, keeps its traceback
    in_repo = Path(play.cli.__file__).parents[1] / "datasets" / "demo"  # the README's own example
    assert user_error_message(PermissionError(errno.EACCES, "Permission denied", str(in_repo))) is not None
    assert user_error_message(OSError(errno.EBADF, "Bad file descriptor", 3)) is None
    assert user_error_message(RuntimeError("a bug")) is None


def test_bench_steps_bound_is_the_envs():
    from dataclasses import fields

    from world_model.cli import BenchArgs
    from world_model.model.env import MAX_SAMPLING_STEPS

    steps = next(f for f in fields(BenchArgs) if f.name == "steps")
    assert steps.metadata["cli"]["le"] == MAX_SAMPLING_STEPS


# (command line, option, what it holds): an option that takes a list adds up when given again.
REPEATED = [
    (
        "wm ablate --data d --ae a --heldout h --out o --variant a:dit.depth=1 --variant b:dit.depth=2 c",
        "variant",
        ("a:dit.depth=1", "b:dit.depth=2", "c"),
    ),
    (
        "wm train --data d --ae a --out o --set dit.depth=1 --set dit.heads=2",
        "set",
        ("dit.depth=1", "dit.heads=2"),
    ),
    (
        "pipeline --out o --only collect-random --only eval train-ae",
        "only",
        ("collect-random", "eval", "train-ae"),
    ),
    ("wm bench --ckpt c --steps 1,2 --steps 8", "steps", (1, 2, 8)),
    ("play --bench 1 --bench 2,4", "bench", (1, 2, 4)),
    ("wm train-ae --data d --out o --channels 8,16 --channels 32", "channels", (8, 16, 32)),
]
# ... while its first use replaces the default, and a scalar option keeps argparse's rule: the last one wins.
NOT_ADDED = [
    ("wm bench --ckpt c --steps 8", "steps", (8,)),
    ("wm bench --ckpt c --frames 3 --frames 5", "frames", 5),
    ("collect --out a --out b --episodes 2 --episodes 3", "episodes", 3),
]


def parsed(line: str, option: str):
    from play.cli import build_parser

    got = getattr(build_parser().parse_args(line.split()), option)
    return tuple(got) if isinstance(got, list) else got


@pytest.mark.parametrize("line, option, want", REPEATED, ids=[r[0] for r in REPEATED])
def test_a_list_option_given_twice_adds_up(line, option, want):
    assert parsed(line, option) == want


@pytest.mark.parametrize("line, option, want", NOT_ADDED, ids=[r[0] for r in NOT_ADDED])
def test_a_default_or_a_scalar_is_replaced_not_added_to(line, option, want):
    assert parsed(line, option) == want
