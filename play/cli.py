"""The `dreamdoom` command: each package registers its own subcommands; this file only assembles them."""

from __future__ import annotations

import argparse
import os
import sys

from play import pipeline

# The user's own choice of SDL video driver, read before anything else can change the environment.
_USER_VIDEO_DRIVER = os.environ.get("SDL_VIDEODRIVER")


def register(sub: argparse._SubParsersAction) -> None:
    from play.app import add_play_arguments, cmd_play

    p = sub.add_parser(
        "play",
        help="play the generated game in a window (or headless to a video)",
        description="Play the learned game: keyboard W/S/A/D (arrows), mouse or arrow keys to "
        "turn, click or Ctrl to fire, E or Space to use. H HUD, R reset, [ ] denoising steps, "
        "P pause, M mirror (the real engine beside the dream), F5 record, F12 screenshot, "
        "Esc quit.",
    )
    add_play_arguments(p)
    p.set_defaults(func=lambda args: cmd_play(args, _USER_VIDEO_DRIVER))
    pipeline.register(sub)


def _replay_engines():
    from play.engine import ReplayEngines

    return ReplayEngines()


def build_parser() -> argparse.ArgumentParser:
    import agent.cli
    import data.cli
    import world_model.cli

    parser = argparse.ArgumentParser(prog="dreamdoom", description="Playable neural Doom.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    agent.cli.register(sub)
    data.cli.register(sub)
    # wm eval judges control against the real engine; world_model cannot import it, so it is given here.
    world_model.cli.register(sub, engine_factory=_replay_engines)
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
