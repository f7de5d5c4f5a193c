"""`dreamdoom agent bench`: what recording costs. Frames/s over N processes of

raw       bare VizDoom `make_action` with random buttons (the engine alone),
play      the env and the policy, nothing kept (`collect --no-record`),
record    the same plus the recorder writing a dataset (`collect`).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from agent.collect import CollectConfig, collect
from agent.env import SCENARIOS, EnvConfig, make_game
from data.actions import DEFAULT_ACTIONS
from data.cli_args import arg


@dataclass
class BenchConfig:
    scenario: str = arg("e1m1", "scenario to play", choices=sorted(SCENARIOS))
    policy: str = arg("random", "random | scripted | path of a trained policy .zip")
    workers: int = arg(2, "processes", ge=1, le=256)
    frames: int = arg(6000, "frames per mode, over all workers", ge=1)
    frame_skip: int = arg(2, "tics per frame", ge=1, le=35)


def _raw_worker(cfg: BenchConfig, frames: int, seed: int, results) -> None:
    game = make_game(EnvConfig(scenario=cfg.scenario, frame_skip=cfg.frame_skip))
    rng = np.random.default_rng(seed)
    buttons = [
        DEFAULT_ACTIONS.to_buttons([rng.integers(n) for n in DEFAULT_ACTIONS.sizes]) for _ in range(256)
    ]
    game.new_episode()
    start = time.perf_counter()
    for i in range(frames):
        game.make_action(buttons[i % len(buttons)], cfg.frame_skip)
        game.get_state()
        if game.is_episode_finished():
            game.new_episode()
    results.put(time.perf_counter() - start)
    game.close()


def bench_raw(cfg: BenchConfig) -> float:
    """Frames/s of all workers together, timed inside each worker (process start excluded)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    per = cfg.frames // cfg.workers
    procs = [ctx.Process(target=_raw_worker, args=(cfg, per, w, results)) for w in range(cfg.workers)]
    for p in procs:
        p.start()
    seconds = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return per * cfg.workers / max(seconds)


def bench_collect(cfg: BenchConfig, record: bool) -> tuple[float, float, float]:
    """(frames/s, frames per worker CPU-second, bytes/frame) of `collect`, in episodes of 500 frames."""
    with tempfile.TemporaryDirectory() as out:
        stats = collect(
            CollectConfig(
                out=out,
                scenario=cfg.scenario,
                policy=cfg.policy,
                episodes=max(cfg.workers, cfg.frames // 500),
                workers=cfg.workers,
                max_steps=500,
                frame_skip=cfg.frame_skip,
                record=record,
            ),
            progress=False,
        )
    return stats.fps, stats.fps_per_cpu, stats.bytes_per_frame


def run(cfg: BenchConfig, as_json: bool = False) -> int:
    raw = bench_raw(cfg)
    play, play_cpu, _ = bench_collect(cfg, record=False)
    record, record_cpu, bpf = bench_collect(cfg, record=True)
    result = {
        "config": cfg.__dict__,
        "raw_fps": raw,
        "play_fps": play,
        "record_fps": record,
        "play_fps_per_cpu": play_cpu,
        "record_fps_per_cpu": record_cpu,
        # by CPU time, which other work on the machine does not change the way it changes wall time
        "recorder_cost": 1 - record_cpu / play_cpu,
        "cost_vs_raw": 1 - record / raw,
        "bytes_per_frame": bpf,
    }
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{cfg.scenario}, {cfg.workers} workers, policy {cfg.policy}, {cfg.frames} frames per mode:")
        print(f"  raw VizDoom   {raw:7.0f} frames/s")
        print(f"  env + policy  {play:7.0f} frames/s")
        print(
            f"  + recording   {record:7.0f} frames/s   "
            f"({100 * result['recorder_cost']:.0f}% fewer frames per CPU-second than env + policy, "
            f"{100 * result['cost_vs_raw']:.0f}% below raw; {bpf / 1e3:.1f} KB/frame on disk)"
        )
    return 0


def main(cfg: BenchConfig, as_json: bool = False) -> int:
    print("bench config:", cfg.__dict__, file=sys.stderr)
    return run(cfg, as_json)
