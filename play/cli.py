"""The `dreamdoom` command: each package registers its own subcommands; this file only assembles them."""

from __future__ import annotations

import argparse
import sys

from data.cli import not_built


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("play", help="play the generated game in a window (or headless to a video)")
    p.add_argument("--ckpt", help="world-model checkpoint folder (default: the one shipped in the repo)")
    p.set_defaults(func=not_built("play"))
    p = sub.add_parser("pipeline", help="collect -> agent -> autoencoder -> DiT -> eval, resumable")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--out", required=True)
    p.set_defaults(func=not_built("pipeline"))


def build_parser() -> argparse.ArgumentParser:
    import agent.cli
    import data.cli
    import world_model.cli

    parser = argparse.ArgumentParser(prog="dreamdoom", description="Playable neural Doom.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    agent.cli.register(sub)
    data.cli.register(sub)
    world_model.cli.register(sub)
    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
