"""`dreamdoom pipeline`: collect -> agent -> autoencoder -> DiT -> eval, one command, resumable.

Each stage is an ordinary `dreamdoom` command run in this process; a stage that finished is recorded
in OUT/stages.json and skipped when the pipeline runs again. An interrupted stage is redone from
scratch, except the two long trainings (agent, DiT), which resume from their last checkpoint when they
saved one (and start again, keeping what their folder holds, such as the latent cache, when they did not).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from data.cli_args import UsageError, arg, build

# The scenarios `collect` knows, named here without importing VizDoom (agent/env.py SCENARIOS; a test
# checks the two agree).
SCENARIO_NAMES = ("basic", "deathmatch", "defend_the_center", "e1m1", "health_gathering")


@dataclass
class PipelineConfig:
    """How much of everything a pipeline preset makes."""

    wm_preset: str  # world-model preset: tiny | cpu | gpu
    scenario: str = "e1m1"
    scripted_episodes: int = 40  # scripted explorer episodes
    random_episodes: int = 10  # random-policy episodes
    episode_steps: int = 1000  # cap on collected episode length (frames)
    agent_steps: int = 300_000  # PPO agent steps, every episode recorded (0: no agent)
    agent_envs: int = 8
    agent_episodes: int = 20  # episodes of the trained agent collected after training
    ae_steps: int | None = None  # None: the world-model preset's
    dit_steps: int | None = None
    dit_cooldown: float = 0.2  # final fraction of the DiT run with a decaying lr
    workers: int = 2
    eval_rollouts: int = 8
    eval_horizon: int = 96
    eval_stability_frames: int = 2000  # the long dream run beside the engine
    eval_probe_steps: int | None = None  # None: the place probe's own default


PIPELINES: dict[str, PipelineConfig] = {
    # End to end in a couple of minutes on 2 CPU cores: checks that every stage fits the next.
    "tiny": PipelineConfig(
        wm_preset="tiny",
        scripted_episodes=3,
        random_episodes=1,
        episode_steps=80,
        agent_steps=512,
        agent_envs=2,
        agent_episodes=1,
        ae_steps=20,
        dit_steps=20,
        eval_rollouts=1,
        eval_horizon=16,
        eval_stability_frames=32,
        eval_probe_steps=30,
    ),
    # The CPU model: about four hours on 2 cores, most of it DiT training (the shipped default's 68k steps).
    "cpu": PipelineConfig(wm_preset="cpu", dit_steps=68_000),
    # The GPU model: more data and steps; run the collection on a machine with many cores.
    "gpu": PipelineConfig(
        wm_preset="gpu",
        scripted_episodes=400,
        random_episodes=100,
        episode_steps=2000,
        agent_steps=2_000_000,
        agent_envs=16,
        agent_episodes=200,
        workers=16,
    ),
}


@dataclass
class Stage:
    name: str
    argv: list[str]
    output: Path
    checkpoint: Path | None = None  # a training's policy.zip or checkpoint folder: what --resume continues

    def can_resume(self) -> bool:
        """Whether an interrupted run of this stage left a checkpoint to continue from."""
        if self.checkpoint is None:
            return False
        if self.checkpoint.suffix == ".zip":
            return self.checkpoint.is_file()
        # only here: the pipeline loads no torch to start
        from world_model.model.checkpoint import find_checkpoint

        return find_checkpoint(self.checkpoint) is not None


def stages(cfg: PipelineConfig, out: Path) -> list[Stage]:
    data = out / "data"
    collect = [
        "collect",
        "--scenario",
        cfg.scenario,
        "--workers",
        str(cfg.workers),
        "--max-steps",
        str(cfg.episode_steps),
    ]
    plan = [
        Stage(
            "collect-scripted",
            [
                *collect,
                "--policy",
                "scripted",
                "--episodes",
                str(cfg.scripted_episodes),
                "--seed",
                "1",
                "--out",
                str(data / "scripted"),
            ],
            data / "scripted",
        ),
        Stage(
            "collect-random",
            [
                *collect,
                "--policy",
                "random",
                "--episodes",
                str(cfg.random_episodes),
                "--seed",
                "2",
                "--out",
                str(data / "random"),
            ],
            data / "random",
        ),
    ]
    if cfg.agent_steps:
        plan += [
            Stage(
                "agent-train",
                [
                    "agent",
                    "train",
                    "--scenario",
                    cfg.scenario,
                    "--steps",
                    str(cfg.agent_steps),
                    "--envs",
                    str(cfg.agent_envs),
                    "--max-episode-steps",
                    str(cfg.episode_steps),
                    "--out",
                    str(out / "agent"),
                    "--record",
                    str(data / "agent-training"),
                ],
                out / "agent",
                checkpoint=out / "agent" / "policy.zip",
            ),
            Stage(
                "collect-agent",
                [
                    *collect,
                    "--policy",
                    str(out / "agent" / "policy.zip"),
                    "--episodes",
                    str(cfg.agent_episodes),
                    "--seed",
                    "3",
                    "--out",
                    str(data / "agent"),
                ],
                data / "agent",
            ),
        ]
    ae = ["wm", "train-ae", "--data", str(data), "--preset", cfg.wm_preset, "--out", str(out / "ae")]
    dit = [
        "wm",
        "train",
        "--data",
        str(data),
        "--ae",
        str(out / "ae"),
        "--preset",
        cfg.wm_preset,
        "--out",
        str(out / "dit"),
        "--cooldown",
        str(cfg.dit_cooldown),
    ]
    plan += [
        Stage("train-ae", ae + (["--steps", str(cfg.ae_steps)] if cfg.ae_steps else []), out / "ae"),
        Stage(
            "train-dit",
            dit + (["--steps", str(cfg.dit_steps)] if cfg.dit_steps else []),
            out / "dit",
            checkpoint=out / "dit" / "ckpt",
        ),
        Stage(
            "eval",
            [
                "wm",
                "eval",
                "--ckpt",
                str(out / "dit" / "ckpt"),
                "--data",
                str(data),
                "--rollouts",
                str(cfg.eval_rollouts),
                "--horizon",
                str(cfg.eval_horizon),
                "--stability-frames",
                str(cfg.eval_stability_frames),
                *(["--probe-steps", str(cfg.eval_probe_steps)] if cfg.eval_probe_steps else []),
                "--out",
                str(out / "eval"),
            ],
            out / "eval",
        ),
    ]
    return plan


@dataclass
class PipelineArgs:
    out: str = arg(help="folder for data, runs, checkpoint and report")
    preset: str = arg("tiny", "how much of everything", choices=sorted(PIPELINES))
    scenario: str = arg(
        "e1m1",
        "the world to collect, train and judge (a scenario of `dreamdoom collect`); the model records it",
        choices=SCENARIO_NAMES,
    )
    only: tuple[str, ...] | None = arg(None, "run only these stages (by name)", nargs="*")


def run(
    preset: str,
    out: Path,
    dreamdoom: Callable[[list[str]], int],
    only: list[str] | None = None,
    scenario: str = "e1m1",
) -> int:
    """Run the stages not done yet; `dreamdoom(argv) -> exit code` runs one command (the CLI's main)."""
    cfg = replace(PIPELINES[preset], scenario=scenario)
    names = [s.name for s in stages(cfg, out)]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise UsageError(f"--only {' '.join(unknown)}: no such stage; the stages are {', '.join(names)}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "stages.json"
    log = {"preset": preset, "config": asdict(cfg)}
    if log_path.exists():
        try:
            log = json.loads(log_path.read_text())
        except ValueError as e:
            raise UsageError(f"{log_path}: unreadable ({e}); delete it to run every stage again") from None
    if not isinstance(log, dict) or log.get("preset") != preset:
        made = log.get("preset") if isinstance(log, dict) else None
        raise UsageError(f"--preset {preset}: {out} was made with preset {made!r}; use another --out")
    made_in = log.get("config", {}).get("scenario", "e1m1")
    if made_in != scenario:
        raise UsageError(f"--scenario {scenario}: {out} was made for {made_in!r}; use another --out")
    done = log.setdefault("done", {})
    plan = stages(cfg, out)
    start = time.perf_counter()
    for i, stage in enumerate(plan, 1):
        header = f"[{i}/{len(plan)}] {stage.name}"
        if stage.name in done:
            print(f"{header}: done earlier ({done[stage.name]['seconds']:.0f} s), skipped", flush=True)
            continue
        if only and stage.name not in only:
            print(f"{header}: not asked for, skipped", flush=True)
            continue
        argv = list(stage.argv)
        if stage.can_resume():
            argv.append("--resume")
        elif stage.output.exists() and stage.checkpoint is None:  # what it left is incomplete: start over
            shutil.rmtree(stage.output)
        print(f"{header}: dreamdoom {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        rc = dreamdoom(argv)
        if rc:
            print(
                f"{header} failed (exit {rc}); fix it and run the same command again: finished stages are "
                "skipped",
                file=sys.stderr,
            )
            return rc
        done[stage.name] = {"seconds": time.perf_counter() - t0, "argv": argv}
        log_path.write_text(json.dumps(log, indent=2))
    total = sum(d["seconds"] for d in done.values())
    this_run = time.perf_counter() - start
    print(f"pipeline {preset} complete in {this_run:.0f} s this run ({total:.0f} s over all runs)")
    report = out / "eval" / "report.json"
    if report.exists():
        print(f"eval report: {report}")
    print(f"play it: dreamdoom play --ckpt {out / 'dit' / 'ckpt'}")
    return 0


def register(sub: argparse._SubParsersAction, dreamdoom: Callable[[list[str]], int]) -> None:
    """`dreamdoom pipeline`, running each stage through `dreamdoom(argv)`."""

    def cmd(args: argparse.Namespace) -> int:
        a = build(PipelineArgs, args)
        stage = (lambda argv: dreamdoom(["--debug", *argv])) if args.debug else dreamdoom
        return run(a.preset, Path(a.out), stage, list(a.only) if a.only else None, a.scenario)

    p = sub.add_parser(
        "pipeline",
        help="collect -> agent -> autoencoder -> DiT -> eval, resumable",
        options=lambda: (PipelineArgs,),
    )
    p.set_defaults(func=cmd)
