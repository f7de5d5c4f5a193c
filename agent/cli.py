"""`dreamdoom collect` and `dreamdoom agent ...` subcommands."""

from __future__ import annotations

import argparse


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 160x120, got {text!r}") from None
    return w, h


def cmd_collect(args: argparse.Namespace) -> int:
    from agent.collect import CollectConfig, main

    return main(CollectConfig(out=args.out, scenario=args.scenario, policy=args.policy, episodes=args.episodes,
                              workers=args.workers, seed=args.seed, max_steps=args.max_steps,
                              frame_skip=args.frame_skip, resolution=args.resolution, skill=args.skill,
                              record=not args.no_record))


def register(sub: argparse._SubParsersAction) -> None:
    from agent.env import SCENARIOS
    from data.cli import not_built

    p = sub.add_parser("collect", help="play a policy in VizDoom and record a dataset")
    p.add_argument("--scenario", default="e1m1", choices=sorted(SCENARIOS))
    p.add_argument("--policy", default="random", help="random | scripted | path of a trained policy .zip")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="processes, each writing its own shard")
    p.add_argument("--out", required=True, help="dataset folder (shards are added to it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="cut episodes at this many steps (0: no cut)")
    p.add_argument("--frame-skip", type=int, default=2, help="tics per recorded frame (35 tics = 1 s)")
    p.add_argument("--resolution", type=parse_resolution, default=(160, 120), help="160x120 or 320x240")
    p.add_argument("--skill", type=int, default=3, choices=range(1, 6))
    p.add_argument("--no-record", action="store_true", help="play without writing (to measure recording cost)")
    p.set_defaults(func=cmd_collect)

    agent = sub.add_parser("agent", help="train the PPO agent").add_subparsers(dest="agent_command", required=True,
                                                                             metavar="AGENT_COMMAND")
    agent.add_parser("train", help="train PPO, recording every episode it plays").set_defaults(
        func=not_built("agent train"))
