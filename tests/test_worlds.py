"""Worlds (DESIGN.md, contract 3): a checkpoint records what it dreams, from its training data's manifests,
and play, eval and bench take it from there and refuse another world with one line and exit 2."""

import json
import shutil

import pytest

from agent.env import SCENARIOS
from data.dataset import Dataset
from data.world import World, WorldMismatch
from play.app import EXAMPLE_INPUTS, PlayArgs, open_game
from play.cli import main
from play.pipeline import PIPELINES, SCENARIO_NAMES, run, stages
from world_model.model.checkpoint import load_world_model, make_untrained_checkpoint


def record(tmp_path_factory, scenario: str, seed: int):
    from agent.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp(f"world_{scenario}") / "data"
    cfg = CollectConfig(
        out=str(out), scenario=scenario, policy="random", episodes=2, workers=1, max_steps=24, seed=seed
    )
    collect(cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    return record(tmp_path_factory, "defend_the_center", 5)


@pytest.fixture(scope="module")
def e1m1(tmp_path_factory):
    return record(tmp_path_factory, "e1m1", 6)


@pytest.fixture(scope="module")
def old_ckpt(tmp_path_factory):
    """A checkpoint as they were made before worlds were recorded: no world in its config."""
    return make_untrained_checkpoint(tmp_path_factory.mktemp("old") / "ckpt")


@pytest.fixture(scope="module")
def arena_ckpt(tmp_path_factory):
    return make_untrained_checkpoint(
        tmp_path_factory.mktemp("arena") / "ckpt", scenario="defend_the_center", map_name="MAP01"
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    return err[-1]


def test_an_old_checkpoint_loads_as_e1m1_at_160x120_frame_skip_2(old_ckpt):
    assert "world" not in json.loads((old_ckpt / "config.json").read_text())
    w = load_world_model(old_ckpt).world
    assert (w.scenario, w.map, w.resolution, w.frame_skip) == ("e1m1", "E1M1", (160, 120), 2)


def test_the_world_of_a_dataset_is_its_manifests_and_a_mix_is_refused(arena, e1m1, tmp_path):
    w = Dataset(arena).world
    assert (w.scenario, w.map, w.resolution, w.frame_skip) == ("defend_the_center", "MAP01", (160, 120), 2)
    assert w == World.from_dict(w.to_dict(), "here")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for src in (arena, e1m1):
        shard = next(p.parent for p in src.rglob("manifest.json"))
        (mixed / f"{src.parent.name}-{shard.name}").symlink_to(shard)
    with pytest.raises(WorldMismatch, match="2 worlds") as e:
        _ = Dataset(mixed).world
    assert "defend_the_center" in str(e.value) and "e1m1" in str(e.value)


def test_differences_name_every_field_that_differs(arena, e1m1):
    a, b = Dataset(arena).world, Dataset(e1m1).world
    assert a.differences(b) == ["scenario", "map"]
    assert a.differences(a) == []
    with pytest.raises(WorldMismatch, match=r"--data x is e1m1 \(E1M1\).*dreams defend_the_center \(MAP01\)"):
        a.check(b, "the checkpoint c", "--data x")


def test_eval_refuses_data_and_probe_data_of_another_world(old_ckpt, arena, e1m1, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["wm", "eval", "--ckpt", str(old_ckpt), "--data", str(arena), "--out", str(out)]) == 2
    line = one_line_error(capsys)
    assert f"--data {arena} is defend_the_center (MAP01)" in line and "dreams e1m1 (E1M1)" in line
    argv = ["wm", "eval", "--ckpt", str(old_ckpt), "--data", str(e1m1), "--probe-data", str(arena)]
    assert main([*argv, "--out", str(out)]) == 2
    assert f"--probe-data {arena} is defend_the_center" in one_line_error(capsys)
    assert not (out / "report.json").exists()


def test_play_refuses_an_engine_or_start_of_another_world(old_ckpt, arena, tmp_path, capsys):
    headless = [
        "--headless",
        "--frames",
        "2",
        "--inputs",
        str(EXAMPLE_INPUTS),
        "--out",
        str(tmp_path / "p.mp4"),
    ]
    assert main(["play", "--ckpt", str(old_ckpt), "--scenario", "defend_the_center", *headless]) == 2
    line = one_line_error(capsys)
    assert "--scenario defend_the_center is defend_the_center (MAP01)" in line and "dreams e1m1" in line
    assert main(["play", "--ckpt", str(old_ckpt), "--start", str(arena), *headless]) == 2
    assert f"--start {arena} is defend_the_center" in one_line_error(capsys)
    assert not (tmp_path / "p.mp4").exists()


def test_play_starts_and_mirrors_the_world_of_the_checkpoint(arena_ckpt, tmp_path):
    session = open_game(PlayArgs(ckpt=str(arena_ckpt), mirror=True, threads=1))
    try:
        assert session.engine is not None and session.engine.scenario == "defend_the_center"
        assert session.context.scenario == "defend_the_center"
    finally:
        session.close()
    out = tmp_path / "arena.mp4"
    argv = ["play", "--ckpt", str(arena_ckpt), "--headless", "--mirror", "--frames", "3"]
    assert main([*argv, "--inputs", str(EXAMPLE_INPUTS), "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_bench_refuses_a_start_of_another_world(old_ckpt, arena, e1m1, capsys):
    argv = ["wm", "bench", "--ckpt", str(old_ckpt), "--steps", "1", "--frames", "1"]
    assert main([*argv, "--start", str(arena)]) == 2
    assert f"--start {arena} is defend_the_center" in one_line_error(capsys)
    assert main([*argv, "--start", str(e1m1)]) == 0
    assert "world: e1m1 (E1M1), frame_skip 2" in capsys.readouterr().out


def test_training_records_the_world_and_resume_refuses_another(dataset, ae, arena, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["wm", "train", "--ae", str(ae), "--preset", "tiny", "--out", str(run_dir), "--steps", "2"]
    assert main([*argv, "--data", str(dataset)]) == 0
    config = json.loads((run_dir / "ckpt" / "config.json").read_text())
    assert config["world"]["scenario"] == "basic" and config["world"]["map"] == "MAP01"
    exported = tmp_path / "exported"
    assert main(["wm", "export", "--ckpt", str(run_dir / "ckpt"), "--out", str(exported)]) == 0
    assert load_world_model(exported).world == load_world_model(run_dir / "ckpt").world
    assert (
        main([*argv, "--data", str(arena), "--resume", "--cache", str(tmp_path / "arena.safetensors")]) == 2
    )
    assert "is defend_the_center (MAP01)" in one_line_error(capsys)
    assert load_world_model(run_dir / "ckpt").step == 2  # the run is left as it was


def test_training_on_shards_of_two_worlds_is_refused(ae, arena, e1m1, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(arena, mixed / "a")
    shutil.copytree(e1m1, mixed / "b")
    argv = [
        "wm",
        "train",
        "--ae",
        str(ae),
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "1",
    ]
    assert main([*argv, "--data", str(mixed)]) == 2
    assert "shards of 2 worlds" in one_line_error(capsys)
    assert not (tmp_path / "run" / "ckpt").exists()


def test_pipeline_runs_every_stage_in_its_scenario_and_keeps_to_it(tmp_path):
    assert set(SCENARIO_NAMES) == set(SCENARIOS)
    out = tmp_path / "p"
    from dataclasses import replace

    plan = stages(replace(PIPELINES["tiny"], scenario="defend_the_center"), out)
    for stage in plan:
        if stage.argv[0] in ("collect", "agent"):
            assert stage.argv[stage.argv.index("--scenario") + 1] == "defend_the_center"
    calls = []
    assert (
        run("tiny", out, lambda argv: calls.append(argv) or 0, only=["collect-random"], scenario="basic") == 0
    )
    assert calls and calls[0][calls[0].index("--scenario") + 1] == "basic"
    from data.cli_args import UsageError

    with pytest.raises(UsageError, match="made for 'basic'"):
        run("tiny", out, lambda argv: 0, scenario="e1m1")
