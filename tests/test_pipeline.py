import json

import numpy as np

from data.dataset import Dataset
from play.cli import main
from play.pipeline import PIPELINES, stages


def test_tiny_pipeline_end_to_end_then_resumes(tmp_path, capsys):
    out = tmp_path / "pipe"
    assert main(["pipeline", "--preset", "tiny", "--out", str(out)]) == 0
    log = json.loads((out / "stages.json").read_text())
    names = [s.name for s in stages(PIPELINES["tiny"], out)]
    assert list(log["done"]) == names
    # Every policy's episodes landed in one dataset the world model trained on.
    policies = {ds.recorder.get("policy") for ds in Dataset(out / "data").shards.values()}
    assert {"scripted", "random"} <= policies and len(policies) >= 3
    report = json.loads((out / "eval" / "report.json").read_text())
    assert np.isfinite(report["view"]["teacher_forced"]["edge_corr"]["model"])
    from world_model.model.env import WorldModelEnv

    env = WorldModelEnv.from_checkpoint(out / "dit" / "ckpt")
    frames = Dataset(out / "data").load(0).frames[: env.context_len]
    env.reset(frames)
    assert env.step(env.action_spec.noop()).shape == frames.shape[1:]
    capsys.readouterr()
    # A second run finds every stage done and does nothing.
    assert main(["pipeline", "--preset", "tiny", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("skipped") == len(names)
    assert main(["pipeline", "--preset", "cpu", "--out", str(out)]) == 2


def test_tiny_pipeline_in_the_arena_makes_and_judges_a_model_of_the_arena(tmp_path, capsys):
    out = tmp_path / "arena"
    assert main(["pipeline", "--preset", "tiny", "--scenario", "defend_the_center", "--out", str(out)]) == 0
    assert {m.scenario for m in Dataset(out / "data").shards.values()} == {"defend_the_center"}
    from world_model.model.checkpoint import load_world_model

    assert load_world_model(out / "dit" / "ckpt").world.scenario == "defend_the_center"
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["control"]["motion"]["one_step"]["starts"] >= 1
    capsys.readouterr()
    assert main(["pipeline", "--preset", "tiny", "--out", str(out)]) == 2  # made for another world
    assert "made for 'defend_the_center'" in capsys.readouterr().err


def test_an_interrupted_training_resumes_only_from_a_checkpoint_it_saved(tmp_path):
    """A training killed before its first save is started again (keeping its folder: the latent cache), not
    run with --resume, which would stop the pipeline there."""
    from play.pipeline import run
    from world_model.model.checkpoint import make_untrained_checkpoint

    out = tmp_path / "pipe"
    ran: list[list[str]] = []

    def dreamdoom(argv: list[str]) -> int:
        ran.append(argv)
        return 0

    (out / "agent").mkdir(parents=True)  # killed before policy.zip was first saved
    (out / "dit").mkdir()
    (out / "dit" / "latents.safetensors").write_bytes(b"the encoded cache")  # killed before the first save
    assert run("tiny", out, dreamdoom, only=["agent-train", "train-dit"]) == 0
    assert [a[:2] for a in ran] == [["agent", "train"], ["wm", "train"]]
    assert not any("--resume" in a for a in ran)
    assert (out / "dit" / "latents.safetensors").exists()

    ran.clear()
    (out / "stages.json").unlink()
    (out / "agent" / "policy.zip").write_bytes(b"a saved policy")
    make_untrained_checkpoint(out / "dit" / "ckpt", preset="tiny")
    assert run("tiny", out, dreamdoom, only=["agent-train", "train-dit"]) == 0
    assert [a[-1] for a in ran] == ["--resume", "--resume"]
