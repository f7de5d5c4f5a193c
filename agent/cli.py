"""`dreamdoom collect` and `dreamdoom agent ...` subcommands."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from data.cli import dataset_folder, output_folder
from data.cli_args import JsonOutput, UsageError, arg, build


@dataclass
class RunArgs:
    """Where `agent train` writes, beside the PPOConfig of the run."""

    out: str = arg(help="run folder: policy.zip, checkpoints/, tb/, summary.json")
    record: str | None = arg(None, "dataset folder for every episode played", metavar="DIR")
    resume: bool = arg(False, "continue the run in --out up to --steps")
    progress: bool = arg(True, "no progress bar (logs)")


def check_policy(policy: str) -> None:
    """A trained policy must load here, before any worker starts (a worker's error is harder to read)."""
    if policy in ("random", "scripted"):
        return
    path = Path(policy)
    if path.suffix != ".zip" and not path.is_dir():
        raise UsageError(
            f"--policy {policy!r}: expected 'random', 'scripted' or the path of a trained policy .zip"
        )
    from agent.policy_io import load_policy

    load_policy(path)  # its config, action contract and weights; workers load it again


def check_resolution(size: tuple[int, int]) -> None:
    from agent.env import RESOLUTIONS

    if tuple(size) not in RESOLUTIONS:
        choices = ", ".join(f"{w}x{h}" for w, h in RESOLUTIONS)
        raise UsageError(f"--resolution {size[0]}x{size[1]}: VizDoom renders {choices}")


def check_fits_dataset(out: str, resolution: tuple[int, int], frame_skip: int, option: str = "--out") -> None:
    """Episodes added to an existing dataset must match its resolution and frame_skip (shards must agree)."""
    try:
        dataset_folder(out)
    except UsageError:  # not a dataset yet: anything goes
        return
    from data.dataset import Dataset

    m = Dataset(out).manifest
    if tuple(m.resolution) != tuple(resolution):
        have, want = "x".join(map(str, m.resolution)), "x".join(map(str, resolution))
        raise UsageError(
            f"--resolution {want}: {option} {out} holds {have} episodes; choose another {option}"
        )
    if m.frame_skip != frame_skip:
        raise UsageError(
            f"--frame-skip {frame_skip}: {option} {out} holds episodes of frame_skip {m.frame_skip}; "
            f"choose another {option}"
        )


def _collect_options() -> tuple[type, ...]:
    from agent.collect import CollectConfig

    return (CollectConfig,)


def cmd_collect(args: argparse.Namespace) -> int:
    from agent.collect import CollectConfig, main

    cfg = build(CollectConfig, args)
    output_folder(cfg.out)
    check_resolution(cfg.resolution)
    if cfg.record:
        check_fits_dataset(cfg.out, cfg.resolution, cfg.frame_skip)
    check_policy(cfg.policy)
    return main(cfg, debug=args.debug)


def _train_options() -> tuple[type, ...]:
    from agent.ppo_config import PPOConfig

    return (PPOConfig, RunArgs)


def cmd_train(args: argparse.Namespace) -> int:
    from agent.ppo_config import PPOConfig

    cfg, run = build(PPOConfig, args), build(RunArgs, args)
    output_folder(run.out)
    check_resolution(cfg.resolution)
    if run.record:
        output_folder(run.record, "--record")
        check_fits_dataset(run.record, cfg.resolution, cfg.frame_skip, "--record")
    if cfg.n_steps * cfg.envs < 2:
        raise UsageError(f"--n-steps {cfg.n_steps} x --envs {cfg.envs}: a PPO rollout needs at least 2 steps")
    if cfg.device != "auto":
        from data.cli_args import check_device

        check_device(cfg.device)
    from agent.policy_io import POLICY_NAME

    policy = Path(run.out) / POLICY_NAME
    if policy.exists() and not run.resume:
        raise UsageError(
            f"--out {run.out}: {policy} exists: pass --resume to continue that run, or choose another --out"
        )
    if run.resume and not policy.exists():
        raise UsageError(f"--resume: nothing to resume in {run.out} (no {policy})")
    if run.resume:  # its checksum, config, action contract and weights, before any engine starts
        from agent.policy_io import load_policy

        load_policy(policy)
    cfg.batch_size = min(cfg.batch_size, cfg.n_steps * cfg.envs)
    from agent.ppo import main

    return main(cfg, run.out, run.record, run.resume, progress=run.progress)


def _bench_options() -> tuple[type, ...]:
    from agent.bench import BenchConfig

    return (BenchConfig, JsonOutput)


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.bench import BenchConfig, main

    cfg = build(BenchConfig, args)
    if cfg.frames < cfg.workers:
        raise UsageError(f"--frames {cfg.frames}: fewer than --workers {cfg.workers}")
    check_policy(cfg.policy)
    return main(cfg, build(JsonOutput, args).json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect", help="play a policy in VizDoom and record a dataset", options=_collect_options
    )
    p.set_defaults(func=cmd_collect)

    agent = sub.add_parser("agent", help="train the PPO agent").add_subparsers(
        dest="agent_command", required=True, metavar="AGENT_COMMAND"
    )
    p = agent.add_parser("train", help="train PPO, recording every episode it plays", options=_train_options)
    p.set_defaults(func=cmd_train)
    p = agent.add_parser(
        "bench", help="frames/s of raw VizDoom, of play, and of play with recording", options=_bench_options
    )
    p.set_defaults(func=cmd_bench)
