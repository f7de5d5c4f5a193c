"""`dreamdoom wm ...` subcommands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from data.cli import not_built

    wm = sub.add_parser("wm", help="world model: train, evaluate, benchmark").add_subparsers(
        dest="wm_command", required=True, metavar="WM_COMMAND")
    for name, help_ in [("train-ae", "train the autoencoder"), ("train", "train the DiT"),
                        ("eval", "evaluate a checkpoint"), ("bench", "benchmark WorldModelEnv.step")]:
        wm.add_parser(name, help=help_).set_defaults(func=not_built(f"wm {name}"))
