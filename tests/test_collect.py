import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from agent.collect import CollectConfig, collect
from data.dataset import Dataset
from data.video import read_video
from play.cli import main


def test_collect_two_workers_scripted(tmp_path):
    cfg = CollectConfig(
        out=str(tmp_path), scenario="e1m1", policy="scripted", episodes=3, workers=2, max_steps=40, seed=0
    )
    stats = collect(cfg, progress=False)
    assert stats.episodes == 3 and stats.frames == 120 and stats.bytes > 0
    ds = Dataset(tmp_path)
    assert len(ds.shards) == 2 and len(ds) == 3
    eps = [ep for _, ep in ds.iter_episodes(strict=True)]
    assert all(len(ep) == 40 and ep.dones[-1] and not ep.dones[:-1].any() for ep in eps)
    # The explorer walks: the player ends up somewhere else, and its actions are not all the same.
    ep = eps[0]
    start = ep.variables[0, [3, 4]]
    assert np.linalg.norm(ep.variables[-1, [3, 4]] - start) > 50
    assert len(np.unique(ep.actions, axis=0)) > 2
    # Episode i is played with seed (seed, i), whatever the number of workers.
    again = collect(
        CollectConfig(
            out=str(tmp_path / "again"), policy="scripted", episodes=1, workers=1, max_steps=40, seed=0
        ),
        progress=False,
    )
    assert again.episodes == 1
    first = [
        ep
        for ref, ep in ds.iter_episodes()
        if ref.path.name == "ep_000000.npz" and ref.shard.name.endswith("w00")
    ]
    assert np.array_equal(Dataset(tmp_path / "again").load(0).actions, first[0].actions)


def test_cli_collect_info_and_view(tmp_path, capsys):
    out = tmp_path / "ds"
    assert (
        main(
            [
                "collect",
                "--scenario",
                "basic",
                "--policy",
                "random",
                "--episodes",
                "2",
                "--workers",
                "1",
                "--max-steps",
                "30",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "collected 2 episodes" in capsys.readouterr().out
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2 and info["frames"] <= 60 and info["resolution"] == [160, 120]
    assert sum(info["action_histogram"]["turn"]) == info["frames"] and info["bytes_per_frame"] > 0
    assert main(["data", "info", str(out)]) == 0
    assert "KB/frame" in capsys.readouterr().out
    video = tmp_path / "ep.mp4"
    assert main(["data", "view", str(out), "--episode", "1", "--out", str(video), "--scale", "1"]) == 0
    frames = read_video(video)
    ep = Dataset(out).load(1)
    assert frames.shape == ep.frames.shape
    assert np.abs(frames.astype(int) - ep.frames).mean() < 12  # lossy codec, same pictures
    assert main(["data", "view", str(out), "--episode", "9", "--out", str(video)]) == 2
    sheet = tmp_path / "sheet.png"
    assert main(["data", "view", str(out), "--out", str(sheet), "--tiles", "4", "--scale", "1"]) == 0
    from PIL import Image

    assert Image.open(sheet).size == (4 * 160 + 3 * 2, 120)


def test_bad_arguments_are_clear(tmp_path, capsys):
    assert main(["collect", "--scenario", "nope", "--out", str(tmp_path)]) == 2
    assert main(["collect", "--policy", "nonsense", "--episodes", "1", "--out", str(tmp_path)]) != 0
    assert "--policy 'nonsense'" in capsys.readouterr().err


def test_killed_collector_leaves_only_complete_episodes(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "play.cli",
            "collect",
            "--scenario",
            "e1m1",
            "--policy",
            "random",
            "--episodes",
            "200",
            "--workers",
            "2",
            "--max-steps",
            "60",
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.rglob("ep_*.npz"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = list(out.rglob("ep_*.npz"))
    assert len(written) >= 3
    ds = Dataset(out)
    eps = [ep for _, ep in ds.iter_episodes(strict=True)]  # every visible episode is complete
    assert len(eps) == len(ds) >= 3 and all(len(ep) == 60 for ep in eps)


def test_bench_command_measures_three_modes(capsys):
    assert main(["agent", "bench", "--scenario", "basic", "--frames", "400", "--workers", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert all(result[k] > 0 for k in ("raw_fps", "play_fps", "record_fps", "bytes_per_frame"))
    assert -1 < result["recorder_cost"] < 1


def test_worker_cpu_time_counts_the_engine_process():
    from agent.collect import cpu_seconds_with_children
    from agent.env import make_env

    env = make_env("e1m1")
    env.reset(seed=0)
    total, own = cpu_seconds_with_children(), time.process_time()
    for _ in range(300):
        env.step(env.action_space.sample())
    total, own = cpu_seconds_with_children() - total, time.process_time() - own
    env.close()
    assert total > own * 1.3  # VizDoom renders in its own process, which the figure must include
