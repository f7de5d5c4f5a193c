"""`dreamdoom collect` and `dreamdoom agent ...` subcommands."""

from __future__ import annotations

import argparse
import sys


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 160x120, got {text!r}") from None
    return w, h


def cmd_collect(args: argparse.Namespace) -> int:
    from agent.collect import CollectConfig, main

    return main(
        CollectConfig(
            out=args.out,
            scenario=args.scenario,
            policy=args.policy,
            episodes=args.episodes,
            workers=args.workers,
            seed=args.seed,
            max_steps=args.max_steps,
            frame_skip=args.frame_skip,
            resolution=args.resolution,
            skill=args.skill,
            record=not args.no_record,
        )
    )


def cmd_train(args: argparse.Namespace) -> int:
    from agent.ppo import PPOConfig, main

    if args.steps < 1 or args.envs < 1:
        print(f"error: --steps and --envs must be positive: {args.steps}, {args.envs}", file=sys.stderr)
        return 2
    cfg = PPOConfig(
        scenario=args.scenario,
        steps=args.steps,
        envs=args.envs,
        seed=args.seed,
        hold=args.hold,
        sticky=args.sticky,
        max_episode_steps=args.max_episode_steps,
        frame_skip=args.frame_skip,
        skill=args.skill,
        n_steps=args.n_steps,
        learning_rate=args.lr,
        ent_coef=args.ent_coef,
        checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes,
        threads=args.threads,
        vec=args.vec,
        device=args.device,
        batch_size=min(256, args.n_steps * args.envs),
    )
    return main(cfg, args.out, args.record, args.resume, progress=not args.no_progress)


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.bench import main

    return main(args)


def register(sub: argparse._SubParsersAction) -> None:
    from agent.env import SCENARIOS

    p = sub.add_parser("collect", help="play a policy in VizDoom and record a dataset")
    p.add_argument("--scenario", default="e1m1", choices=sorted(SCENARIOS))
    p.add_argument("--policy", default="random", help="random | scripted | path of a trained policy .zip")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="processes, each writing its own shard")
    p.add_argument("--out", required=True, help="dataset folder (shards are added to it)")
    p.add_argument("--seed", type=int, default=None, help="episode seeds (default: a new one each run)")
    p.add_argument("--max-steps", type=int, default=0, help="cut episodes at this many steps (0: no cut)")
    p.add_argument("--frame-skip", type=int, default=2, help="tics per recorded frame (35 tics = 1 s)")
    p.add_argument("--resolution", type=parse_resolution, default=(160, 120), help="160x120 or 320x240")
    p.add_argument("--skill", type=int, default=3, choices=range(1, 6))
    p.add_argument(
        "--no-record", action="store_true", help="play without writing (to measure recording cost)"
    )
    p.set_defaults(func=cmd_collect)

    agent = sub.add_parser("agent", help="train the PPO agent").add_subparsers(
        dest="agent_command", required=True, metavar="AGENT_COMMAND"
    )
    p = agent.add_parser("train", help="train PPO, recording every episode it plays")
    p.add_argument("--scenario", default="e1m1", choices=sorted(SCENARIOS))
    p.add_argument("--steps", type=int, default=300_000, help="agent decisions over all envs")
    p.add_argument("--envs", type=int, default=8, help="parallel envs")
    p.add_argument("--out", required=True, help="run folder: policy.zip, checkpoints/, tb/, summary.json")
    p.add_argument("--record", default=None, metavar="DIR", help="dataset folder for every episode played")
    p.add_argument("--resume", action="store_true", help="continue the run in --out up to --steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hold", type=int, default=2, help="env steps (frames) each decision is held for")
    p.add_argument("--sticky", type=float, default=0.25, help="chance the previous decision is kept")
    p.add_argument("--max-episode-steps", type=int, default=0, help="cut episodes at N env steps (0: no cut)")
    p.add_argument("--frame-skip", type=int, default=2, help="tics per env step")
    p.add_argument("--skill", type=int, default=3, choices=range(1, 6))
    p.add_argument("--n-steps", type=int, default=128, help="decisions per env per PPO rollout")
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument(
        "--checkpoint-minutes", type=float, default=2.0, help="minutes between saves of policy.zip (0: none)"
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=50_000, help="steps between kept snapshots (0: none)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--vec", default="dummy", choices=("dummy", "subproc"), help="envs in one process, or one each"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (the policy network)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs)")
    p.set_defaults(func=cmd_train)

    p = agent.add_parser("bench", help="frames/s of raw VizDoom, of play, and of play with recording")
    p.add_argument("--scenario", default="e1m1", choices=sorted(SCENARIOS))
    p.add_argument("--policy", default="random", help="random | scripted | path of a trained policy .zip")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--frames", type=int, default=6000, help="frames per mode, over all workers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
