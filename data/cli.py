"""`dreamdoom data ...` subcommands, and the stub used for commands not built yet."""

from __future__ import annotations

import argparse
import json
import sys

NOT_BUILT = 2  # exit code of a command that does not exist yet


def not_built(name: str):
    def run(args: argparse.Namespace) -> int:
        print(f"dreamdoom {name}: not built yet", file=sys.stderr)
        return NOT_BUILT

    return run


def cmd_info(args: argparse.Namespace) -> int:
    from data.dataset import Dataset
    from data.info import format_summary, summarize

    summary = summarize(Dataset(args.path), verify=args.verify)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 1 if summary["bad_episodes"] or summary["skipped_shards"] else 0


def cmd_view(args: argparse.Namespace) -> int:
    from data.dataset import Dataset
    from data.video import contact_sheet, write_png, write_video

    ds = Dataset(args.path)
    if not 0 <= args.episode < len(ds):
        print(f"{args.path}: episode {args.episode} out of range (dataset has {len(ds)})", file=sys.stderr)
        return 2
    ep = ds.load(args.episode)
    if str(args.out).lower().endswith(".png"):
        write_png(contact_sheet(ep.frames, count=args.tiles, scale=args.scale), args.out)
        shown = min(args.tiles, len(ep))
        print(f"wrote {shown} of {len(ep)} frames of {ds.episodes[args.episode].path} to {args.out}")
        return 0
    n = write_video(ep.frames, args.out, fps=ds.manifest.fps, scale=args.scale)
    print(f"wrote {n} frames ({n / ds.manifest.fps:.1f} s) of {ds.episodes[args.episode].path} to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect datasets").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND"
    )
    p = data.add_parser("info", help="episodes, frames, action histogram, bytes per frame")
    p.add_argument("path", help="dataset folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--verify", action="store_true", help="decode every frame and check every file's checksum")
    p.set_defaults(func=cmd_info)
    p = data.add_parser("view", help="one episode to an mp4 video or a png contact sheet")
    p.add_argument("path", help="dataset folder")
    p.add_argument("--episode", type=int, default=0, help="index in the dataset's episode list")
    p.add_argument("--out", required=True, help="output .mp4 (video) or .png (contact sheet of frames)")
    p.add_argument("--tiles", type=int, default=8, help="frames in a .png contact sheet")
    p.add_argument("--scale", type=int, default=2, help="integer upscale factor")
    p.set_defaults(func=cmd_view)
    p = data.add_parser("coverage", help="top-down picture of the positions a dataset visits")
    from data.coverage import add_arguments as add_coverage_arguments

    add_coverage_arguments(p)
