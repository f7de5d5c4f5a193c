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
    from world_model.env import WorldModelEnv

    env = WorldModelEnv.from_checkpoint(out / "dit" / "ckpt")
    frames = Dataset(out / "data").load(0).frames[: env.context_len]
    env.reset(frames)
    assert env.step(env.action_spec.noop()).shape == frames.shape[1:]
    capsys.readouterr()
    # A second run finds every stage done and does nothing.
    assert main(["pipeline", "--preset", "tiny", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("skipped") == len(names)
    assert main(["pipeline", "--preset", "cpu", "--out", str(out)]) == 2
