"""`dreamdoom collect`: roll out a policy in N processes, each writing its own shard of one dataset.

Every episode is written atomically when it ends, so Ctrl-C or a kill keeps every finished episode.
Shard names carry a random part, so collectors started at the same moment into one folder keep every
episode. Each worker leads its own process group with its VizDoom engine in it, and dies with the
collector (a parent-death signal), taking the engine down too: no engine outlives its collector.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing as mp
import os
import queue as queue_lib
import secrets
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agent.env import PR_SET_PDEATHSIG, SCENARIOS, DoomEnv, EnvConfig
from agent.policies import env_needs, make_policy
from data.cli_args import MAX_SEED, arg
from data.dataset import MANIFEST_NAME, ShardWriter, default_recorder, new_shard_name
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
    # Episode i is played with seed (seed, i): reproducible whatever the worker count. None draws a fresh
    # seed, so a rerun (after a crash, say) records new episodes instead of copies of the old ones.
    seed: int | None = arg(None, "seed of the episodes (default: a new one each run)", ge=0, le=MAX_SEED)
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
    seed: int | None = None  # the seed played (drawn when none was given)

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


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in "ZX":  # zombies and the dead hold nothing
            found.append(int(entry.name))
    return found


def _kill_group_except_self() -> None:
    """SIGKILL this worker's process group but itself: the VizDoom engine, which ignores SIGTERM."""
    for pid in _group_members(os.getpgrp()):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _die_with_group(signum, frame) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the engine and this worker, at once


def _bind_to_collector(collector: int) -> None:
    """Make this worker and its engine die with the collector, whatever kills it (even SIGKILL)."""
    os.setpgrp()  # a group of our own: the engine VizDoom starts joins it, the collector's Ctrl-C does not
    signal.signal(signal.SIGTERM, _die_with_group)
    atexit.register(_kill_group_except_self)  # an exception that skips env.close() leaves no engine
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the per-step parent check below still applies
        pass
    if os.getppid() != collector:  # it died before the signal was armed
        _die_with_group(signal.SIGTERM, None)


def _worker(
    worker_id: int, episode_ids: list[int], cfg: CollectConfig, shard: str, messages, collector: int
) -> None:
    _bind_to_collector(collector)

    def report(n: int) -> None:
        if os.getppid() != collector:  # the collector was killed: stop instead of playing on as an orphan
            _die_with_group(signal.SIGTERM, None)
        messages.put(("steps", n))

    env = None
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
    except BaseException as e:  # noqa: BLE001 (reported to the parent, which decides)
        messages.put(("error", worker_id, one_line(e), traceback.format_exc()))
        raise SystemExit(1) from None
    finally:
        if env is not None:
            env.close()


def check_out(out: Path) -> None:
    """Refuse, before any engine starts, an --out that is not a dataset folder or cannot be written."""
    if out.exists() and not out.is_dir():
        raise CollectError(f"{out}: is a file, not a dataset folder; choose another --out", CollectStats())
    for foreign in ("config.json", "policy.zip"):  # a checkpoint or a run folder, not a dataset
        if (out / foreign).exists():
            raise CollectError(f"{out}: holds {foreign}, so it is not a dataset folder", CollectStats())
    if (out / MANIFEST_NAME).exists():
        raise CollectError(
            f"{out}: is a shard itself; pass the dataset folder above it, shards are added there",
            CollectStats(),
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CollectError(f"{out}: cannot create the dataset folder ({e})", CollectStats()) from e
    if not os.access(out, os.W_OK):
        raise CollectError(f"{out}: not writable", CollectStats())


def _drain(queues: list) -> list[tuple]:
    """Every message the workers' queues hold now, queue by queue."""
    out = []
    for q in queues:
        while True:
            try:
                out.append(q.get_nowait())
            except queue_lib.Empty:
                break
    return out


def collect(cfg: CollectConfig, progress: bool = True) -> CollectStats:
    """Run the workers, show progress, and return what was written."""
    # Fail fast, in this process, on a bad scenario or policy spec (a worker error is harder to read).
    EnvConfig(scenario=cfg.scenario).scenario_spec()
    make_policy(cfg.policy) if cfg.policy in ("random", "scripted") else None
    out = Path(cfg.out)
    if cfg.record:
        check_out(out)
    if cfg.seed is None:
        cfg = replace(cfg, seed=secrets.randbits(31))
    workers = max(1, min(cfg.workers, cfg.episodes))
    name = new_shard_name(f"{policy_tag(cfg.policy)}-s{cfg.seed}")
    shards = [str(out / f"{name}-w{w:02d}") for w in range(workers)]
    ctx = mp.get_context("spawn")  # VizDoom and torch are safer in fresh processes than forked ones
    # One queue per worker: a worker killed while it holds its queue's lock (kill -9, the OOM killer) can
    # only jam its own queue, never the others' (a shared queue would leave the survivors unable to exit).
    queues = [ctx.Queue() for _ in range(workers)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(w, list(range(w, cfg.episodes, workers)), cfg, shards[w], queues[w], os.getpid()),
            daemon=True,
        )
        for w in range(workers)
    ]
    stats = CollectStats(shards=shards if cfg.record else [], seed=cfg.seed)
    bar = tqdm(
        total=cfg.episodes,
        unit="ep",
        disable=not progress,
        dynamic_ncols=True,
        desc=f"collect {cfg.scenario}/{policy_tag(cfg.policy)}",
    )
    steps, errors, tracebacks = 0, [], []
    start = time.perf_counter()
    for p in procs:
        p.start()
    try:
        finished = ready = 0
        while finished < workers and not errors:
            batch = _drain(queues)
            if not batch:
                if any(p.is_alive() for p in procs):
                    time.sleep(0.05)
                    continue
                batch = _drain(queues)  # what the last workers sent before they exited
                if not batch:
                    break
            for msg in batch:
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
                    errors.append(f"worker {msg[1]} failed: {msg[2]}")
                    tracebacks.append(f"worker {msg[1]}:\n{msg[3]}")
        if finished < workers and not errors:  # killed from outside (OOM, kill -9): say so, do not exit 0
            codes = {w: p.exitcode for w, p in enumerate(procs) if p.exitcode}
            errors.append(
                f"worker(s) died without finishing (exit codes {codes}); finished episodes are kept"
            )
    except KeyboardInterrupt:
        errors.append("interrupted: finished episodes are kept, the ones in progress are dropped")
    finally:
        stats.seconds = time.perf_counter() - start
        bar.close()
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
            try:  # the engine of a worker that was killed outright is still in the worker's group
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if errors:
        raise CollectError("; ".join(errors), stats, "\n".join(tracebacks))
    return stats


MAX_MESSAGE = 300  # characters of an exception's message in the one line that reports it


def one_line(e: BaseException) -> str:
    """`Type: message` of an exception on one line, cut to MAX_MESSAGE characters."""
    text = " ".join(traceback.format_exception_only(type(e), e)[-1].split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


class CollectError(RuntimeError):
    """What went wrong in one line; `tracebacks` holds the failing workers' (shown with --debug)."""

    def __init__(self, message: str, stats: CollectStats, tracebacks: str = ""):
        super().__init__(message)
        self.stats = stats
        self.tracebacks = tracebacks


def summary_line(stats: CollectStats, cfg: CollectConfig) -> str:
    where = f" -> {cfg.out}" if cfg.record else " (not recorded)"
    size = f", {stats.bytes / 1e6:.1f} MB, {stats.bytes_per_frame / 1e3:.1f} KB/frame" if cfg.record else ""
    return (
        f"collected {stats.episodes} episodes (seed {stats.seed}), {stats.frames:,} frames in "
        f"{stats.seconds:.1f} s: "
        f"{stats.fps:.0f} frames/s with {max(1, min(cfg.workers, cfg.episodes))} workers "
        f"({stats.fps_per_cpu:.0f} frames per worker CPU-second){size}{where}"
    )


def main(cfg: CollectConfig, debug: bool = False) -> int:
    print("collect config:", asdict(cfg), file=sys.stderr)
    try:
        stats = collect(cfg)
    except CollectError as e:
        print(summary_line(e.stats, cfg), file=sys.stderr)
        if debug and e.tracebacks:
            print(e.tracebacks, file=sys.stderr)
        print(f"dreamdoom collect: {e}", file=sys.stderr)
        return 130 if str(e).startswith("interrupted") else 1
    print(summary_line(stats, cfg))
    return 0
