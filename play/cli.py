"""The `dreamdoom` command: each package registers its own subcommands; this file assembles them and is
the one place where errors become messages.

A problem with what the user gave (an option, a file, a dataset, a checkpoint) ends the command with
one line, `dreamdoom <command>: <message>`, and exit code 2. Anything else is a bug and keeps its
traceback; `--debug` shows the traceback for every error.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from pathlib import Path

from data.cli_args import Parser
from play import pipeline

# The user's own choice of SDL video driver, read before anything else can change the environment.
_USER_VIDEO_DRIVER = os.environ.get("SDL_VIDEODRIVER")
USAGE_ERROR = 2
INTERRUPTED = 130
READER_GONE = 128 + 13  # as a process ended by SIGPIPE: the shell's status of `cat big | head`
DEBUG_FLAG = "--debug"

# The project's error classes, each raised with a message that names the file or option. An error can
# only come from a module that was imported, so the handler looks them up in sys.modules rather than
# importing torch or VizDoom just to name them.
USER_ERRORS = (
    ("data.cli_args", "UsageError"),
    ("data.actions", "ActionContractError"),
    ("data.dataset", "DatasetError"),
    ("data.episode", "EpisodeError"),
    ("data.world", "WorldMismatch"),
    ("agent.env", "ScenarioError"),
    ("agent.ppo_config", "PolicyError"),
    ("world_model.model.config", "ConfigError"),
    ("world_model.model.checkpoint", "CheckpointError"),
    ("world_model.training.latents", "LatentCacheError"),
    ("play.app", "PlayError"),
    ("play.script", "ScriptError"),
    ("play.web_runtime", "RuntimeFilesError"),
)
# Errors of the machine rather than of a path: the user can act on them too.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
# Where a missing or unreadable file is a broken install rather than a user's mistake: our packages and the
# Python environment (a user's datasets and runs may well sit in the repository, beside the packages).
INSTALL_DIRS = tuple(
    Path(__file__).resolve().parents[1] / p for p in ("data", "agent", "world_model", "play")
)
INSTALL_DIRS += (Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve())


def user_error_message(e: BaseException) -> str | None:
    """The one-line message for an error the user caused, or None for a bug."""
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return str(e)
    if isinstance(e, OSError) and e.strerror:
        if e.errno in USER_ERRNOS:
            return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
        name = e.filename
        path = Path(os.fsdecode(name)).resolve() if isinstance(name, str | bytes | os.PathLike) else None
        if path is not None and not any(path.is_relative_to(d) for d in INSTALL_DIRS):
            also = f" -> {e.filename2}" if e.filename2 else ""
            return f"{e.filename}{also}: {e.strerror}"
    return None


def _play_options() -> tuple[type, ...]:
    from play.app import PlayArgs

    return (PlayArgs,)


def _play(args: argparse.Namespace) -> int:
    from play.app import cmd_play

    return cmd_play(args, _USER_VIDEO_DRIVER)


def _web_options() -> tuple[type, ...]:
    from play.web import WebArgs

    return (WebArgs,)


def _web(args: argparse.Namespace) -> int:
    from play.web import cmd_web

    return cmd_web(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "play",
        help="play the generated game in a window (or headless to a video)",
        description="Play the learned game: keyboard W/S/A/D (arrows), mouse or arrow keys to "
        "turn, click or Ctrl to fire, E or Space to use. H HUD, R reset, [ ] denoising steps, "
        "P pause, M mirror (the real engine beside the dream), F5 record, F12 screenshot, "
        "Esc quit.",
        options=_play_options,
    )
    p.set_defaults(func=_play)
    sub.add_parser(
        "web",
        help="write the dream as a web page that runs the model in the browser (--serve: serve it)",
        description="Write a static page that plays the dream in a browser: the model as ONNX on ONNX "
        "Runtime Web (WASM, WebGPU where the browser has it), the same keys, mouse turning and HUD as "
        "play. --serve serves it on localhost with the COOP/COEP headers WebAssembly threads need.",
        options=_web_options,
    ).set_defaults(func=_web)
    pipeline.register(sub, main)


def _replay_engines():
    from play.engine import ReplayEngines

    return ReplayEngines()


def build_parser() -> argparse.ArgumentParser:
    import agent.cli
    import data.cli
    import world_model.cli

    parser = Parser(prog="dreamdoom", description="Playable neural Doom.")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of any error (anywhere)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    agent.cli.register(sub)
    data.cli.register(sub)
    # wm eval judges control against the real engine; world_model cannot import it, so it is given here.
    world_model.cli.register(sub, engine_factory=_replay_engines)
    register(sub)
    return parser


def command_name(args: argparse.Namespace) -> str:
    words = [args.command] + [getattr(args, f"{args.command}_command", None) or ""]
    return " ".join(w for w in words if w)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]  # accepted anywhere on the line
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad command line (already reported in one line), or --help
        return e.code if isinstance(e.code, int) else USAGE_ERROR
    args.debug = debug  # for commands that run others (pipeline)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a reader gone early is caught below
        return code
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:
        message = user_error_message(e)
        if message is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"dreamdoom {command_name(args)}: {message}", file=sys.stderr)
        return USAGE_ERROR


def _reader_gone() -> int:
    """The reader of our output left early (`dreamdoom data info DIR | head -3`): end quietly, as `cat` does.
    Python flushes stdout again at exit; pointing it at /dev/null keeps that flush from raising a second
    time (Python's signal docs, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return READER_GONE


if __name__ == "__main__":
    sys.exit(main())
