"""`dreamdoom collect`: roll out a policy in N processes, each writing its own shard of one dataset.

Every episode is written atomically when it ends, so Ctrl-C or a kill keeps every finished episode.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_lib
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agent.env import SCENARIOS, DoomEnv, EnvConfig
from agent.policies import env_needs, make_policy
from data.cli_args import MAX_SEED, arg
from data.dataset import ShardWriter, default_recorder
from data.episode import EpisodeRecorder

REPORT_EVERY = 64  # steps between progress messages from a worker


@dataclass
class CollectConfig:
    """What to collect and where."""

    out: str = arg(help="dataset folder; each worker adds its own shard folder in it")
    scenario: str = arg("e1m1", "scenario to play", choices=sorted(SCENARIOS))
    policy: str = arg("random", "random | scripted | path of a trained policy .zip")
    episodes: int = arg(10, "episodes to play", ge=1)
    workers: int = arg(2, "processes, each writing its own shard", ge=1, le=256)
    # episode i is played with seed (seed, i): reproducible whatever the worker count
    seed: int = arg(0, "seed of the episodes", ge=0, le=MAX_SEED)
    max_steps: int = arg(0, "cut episodes at this many steps (0: the scenario's timeout)", ge=0)
    frame_skip: int = arg(2, "tics per recorded frame (35 tics = 1 s)", ge=1, le=35)
    resolution: tuple[int, int] = arg((160, 120), "160x120 or 320x240")
    skill: int = arg(3, "Doom skill", ge=1, le=5)
    # False: play without writing (measures what recording costs)
    record: bool = arg(True, "play without writing (to measure recording cost)")
    extra: dict = field(default_factory=dict)  # recorded into the manifest's recorder entry


@dataclass
class CollectStats:
    episodes: int = 0
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # summed over workers: frames per CPU-second holds up on a busy machine
    shards: list = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def fps_per_cpu(self) -> float:
        return self.frames / self.cpu_seconds if self.cpu_seconds else 0.0

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes / self.frames if self.frames else 0.0


def policy_tag(policy: str) -> str:
    return policy if policy in ("random", "scripted") else "ppo-" + Path(policy).stem


def play_episode(
    env: DoomEnv,
    policy,
    seed: tuple[int, int],
    max_steps: int,
    recorder: EpisodeRecorder | None = None,
    on_steps=None,
) -> tuple[int, str]:
    """Play one episode, streaming it into `recorder` if given; returns (steps, how it ended)."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=int(rng.integers(2**31 - 1)))
    policy.reset(rng)
    end, t = "max_steps", 0
    while True:
        action = policy.act(obs, info)
        if recorder is not None:
            recorder.add(info["frame"], action, info["variables"])
        obs, reward, terminated, truncated, info = env.step(action)
        t += 1
        finished = terminated or truncated or (max_steps and t >= max_steps)
        if recorder is not None:
            recorder.set_outcome(reward, finished)
        if on_steps and t % REPORT_EVERY == 0:
            on_steps(REPORT_EVERY)
        if finished:
            end = "terminated" if terminated else "truncated" if truncated else end
            break
    if on_steps:
        on_steps(t % REPORT_EVERY)
    return t, end


def cpu_seconds_with_children() -> float:
    """CPU time of this process plus its live children (VizDoom runs its engine as a child process)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:  # VizDoom starts its engine from another thread: read the children of every thread
        tasks = Path(f"/proc/{os.getpid()}/task").iterdir()
        children = [pid for task in tasks for pid in (task / "children").read_text().split()]
    except OSError:
        return total
    for pid in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _worker(worker_id: int, episode_ids: list[int], cfg: CollectConfig, shard: str, messages) -> None:
    parent = os.getppid()

    def report(n: int) -> None:
        if os.getppid() != parent:  # the collector was killed: stop instead of playing on as an orphan
            os._exit(1)
        messages.put(("steps", n))

    try:
        policy = make_policy(cfg.policy)
        env_cfg = env_needs(
            policy,
            EnvConfig(
                scenario=cfg.scenario,
                resolution=tuple(cfg.resolution),
                frame_skip=cfg.frame_skip,
                skill=cfg.skill,
            ),
        )
        env = DoomEnv(env_cfg)
        writer = None
        # From here on: the cost of playing and recording, not of imports and the engine's start.
        cpu_start = cpu_seconds_with_children()
        messages.put(("ready", worker_id))
        if cfg.record:
            who = default_recorder(
                policy.name, source=cfg.policy, worker=worker_id, skill=cfg.skill, **cfg.extra
            )
            writer = ShardWriter(shard, env_cfg.manifest(who))
        recorder = EpisodeRecorder(env.spec_actions) if writer else None
        for i in episode_ids:
            steps, end = play_episode(env, policy, (cfg.seed, i), cfg.max_steps, recorder, on_steps=report)
            if writer is None:
                messages.put(("episode", steps, 0))
            else:
                before = writer.bytes_written
                writer.write_recording(recorder, {"policy": policy.name, "seed": [cfg.seed, i], "end": end})
                messages.put(("episode", steps, writer.bytes_written - before))
        messages.put(("cpu", cpu_seconds_with_children() - cpu_start))
        env.close()
    except BaseException:  # noqa: BLE001 (reported to the parent, which decides)
        messages.put(("error", worker_id, traceback.format_exc()))
        raise SystemExit(1) from None


def collect(cfg: CollectConfig, progress: bool = True) -> CollectStats:
    """Run the workers, show progress, and return what was written."""
    # Fail fast, in this process, on a bad scenario or policy spec (a worker error is harder to read).
    EnvConfig(scenario=cfg.scenario).scenario_spec()
    make_policy(cfg.policy) if cfg.policy in ("random", "scripted") else None
    out = Path(cfg.out)
    workers = max(1, min(cfg.workers, cfg.episodes))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    shards = [str(out / f"{policy_tag(cfg.policy)}-s{cfg.seed}-{stamp}-w{w:02d}") for w in range(workers)]
    ctx = mp.get_context("spawn")  # VizDoom and torch are safer in fresh processes than forked ones
    messages = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(w, list(range(w, cfg.episodes, workers)), cfg, shards[w], messages),
            daemon=True,
        )
        for w in range(workers)
    ]
    stats = CollectStats(shards=shards if cfg.record else [])
    bar = tqdm(
        total=cfg.episodes,
        unit="ep",
        disable=not progress,
        dynamic_ncols=True,
        desc=f"collect {cfg.scenario}/{policy_tag(cfg.policy)}",
    )
    steps, errors = 0, []
    start = time.perf_counter()
    for p in procs:
        p.start()
    try:
        finished = ready = 0
        while finished < workers and not errors:
            try:
                msg = messages.get(timeout=0.5)
            except queue_lib.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if msg[0] == "ready":
                ready += 1
                if ready == workers:  # time the play, not process start-up
                    start = time.perf_counter()
            elif msg[0] == "steps":
                steps += msg[1]
                bar.set_postfix(
                    frames=steps, fps=f"{steps / (time.perf_counter() - start):.0f}", refresh=False
                )
            elif msg[0] == "episode":
                stats.episodes += 1
                stats.frames += msg[1]
                stats.bytes += msg[2]
                bar.update(1)
            elif msg[0] == "cpu":
                stats.cpu_seconds += msg[1]
                finished += 1
            elif msg[0] == "error":
                errors.append(f"worker {msg[1]} failed:\n{msg[2]}")
    except KeyboardInterrupt:
        errors.append("interrupted: finished episodes are kept, the ones in progress are dropped")
    finally:
        stats.seconds = time.perf_counter() - start
        bar.close()
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    if errors:
        raise CollectError("\n".join(errors), stats)
    return stats


class CollectError(RuntimeError):
    def __init__(self, message: str, stats: CollectStats):
        super().__init__(message)
        self.stats = stats


def summary_line(stats: CollectStats, cfg: CollectConfig) -> str:
    where = f" -> {cfg.out}" if cfg.record else " (not recorded)"
    size = f", {stats.bytes / 1e6:.1f} MB, {stats.bytes_per_frame / 1e3:.1f} KB/frame" if cfg.record else ""
    return (
        f"collected {stats.episodes} episodes, {stats.frames:,} frames in {stats.seconds:.1f} s: "
        f"{stats.fps:.0f} frames/s with {max(1, min(cfg.workers, cfg.episodes))} workers "
        f"({stats.fps_per_cpu:.0f} frames per worker CPU-second){size}{where}"
    )


def main(cfg: CollectConfig) -> int:
    print("collect config:", asdict(cfg), file=sys.stderr)
    try:
        stats = collect(cfg)
    except CollectError as e:
        print(summary_line(e.stats, cfg), file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 130 if str(e).startswith("interrupted") else 1
    print(summary_line(stats, cfg))
    return 0
