"""`dreamdoom data ...` subcommands: info, view, coverage."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from data.cli_args import JsonOutput, UsageError, arg, build

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")  # what ffmpeg writes H.264 into
SEARCH_DEPTH = 3  # folder levels under a dataset root searched for a shard before saying "not a dataset"


def dataset_folder(path: str, option: str = "") -> str:
    """`path` if a dataset can be there: a folder with a shard (manifest.json) within SEARCH_DEPTH levels.

    Looks level by level and stops at the first level that holds a shard, so an unrelated tree (a home
    folder, a repository) is refused after a few folders instead of being walked to the end."""
    from data.dataset import MANIFEST_NAME

    root = Path(path)
    option = f"{option} " if option else ""
    if not root.exists():
        raise UsageError(f"{option}{path}: no such folder")
    if not root.is_dir():
        raise UsageError(f"{option}{path}: a file, not a dataset folder")
    level = [root]
    for _ in range(SEARCH_DEPTH + 1):
        if any((folder / MANIFEST_NAME).is_file() for folder in level):
            return path
        nxt = []
        for folder in level:
            try:
                nxt += [p for p in folder.iterdir() if p.is_dir()]
            except OSError:  # unreadable subfolder: not ours to judge here
                continue
        level = nxt
    raise UsageError(
        f"{option}{path}: not a dataset (no {MANIFEST_NAME} in it or in its subfolders "
        f"{SEARCH_DEPTH} levels down); collect one with `dreamdoom collect --out {path}`"
    )


def _check_parents(p: Path, option: str) -> None:
    """The nearest existing folder above `p` must be a folder (`file.txt/out` cannot be made)."""
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {p}: {parent} is a file, not a folder")
            return


def output_folder(path: str, option: str = "--out") -> str:
    """`path` if a folder can be written there (it may exist already)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {path}: a file, not a folder")
    _check_parents(p, option)
    return path


def output_file(path: str, option: str = "--out", suffixes: tuple[str, ...] = ()) -> str:
    """`path` if a file can be written there: not a folder, with one of `suffixes` when given."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: a folder; give a file name")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: want a {' or '.join(suffixes)} file")
    _check_parents(p, option)
    return path


@dataclass
class InfoArgs:
    path: str = arg(help="dataset folder", positional=True)
    verify: bool = arg(False, "decode every frame and check every file's checksum")


@dataclass
class ViewArgs:
    path: str = arg(help="dataset folder", positional=True)
    out: str = arg(help="output .mp4 (video) or .png (contact sheet of frames)")
    episode: int = arg(0, "index in the dataset's episode list", ge=0)
    tiles: int = arg(8, "frames in a .png contact sheet", ge=1, le=256)
    scale: int = arg(2, "integer upscale factor", ge=1, le=16)


def cmd_info(args: argparse.Namespace) -> int:
    from data.dataset import Dataset
    from data.info import format_summary, summarize

    a, out = build(InfoArgs, args), build(JsonOutput, args)
    summary = summarize(Dataset(dataset_folder(a.path)), verify=a.verify)
    print(json.dumps(summary, indent=2) if out.json else format_summary(summary))
    return 1 if summary["bad_episodes"] or summary["skipped_shards"] else 0


def cmd_view(args: argparse.Namespace) -> int:
    a = build(ViewArgs, args)
    output_file(a.out, suffixes=(*VIDEO_SUFFIXES, ".png"))
    from data.dataset import Dataset
    from data.video import contact_sheet, write_png, write_video

    ds = Dataset(dataset_folder(a.path))
    if a.episode >= len(ds):
        raise UsageError(f"--episode {a.episode}: out of range ({a.path} has {len(ds)} episodes)")
    ep = ds.load(a.episode)
    name = ds.episodes[a.episode].path
    if a.out.lower().endswith(".png"):
        write_png(contact_sheet(ep.frames, count=a.tiles, scale=a.scale), a.out)
        print(f"wrote {min(a.tiles, len(ep))} of {len(ep)} frames of {name} to {a.out}")
        return 0
    n = write_video(ep.frames, a.out, fps=ds.manifest.fps, scale=a.scale)
    print(f"wrote {n} frames ({n / ds.manifest.fps:.1f} s) of {name} to {a.out}")
    return 0


def cmd_coverage(args: argparse.Namespace) -> int:
    import sys

    from data.coverage import CoverageArgs, coverage_picture, format_coverage, parse_bounds

    a, out = build(CoverageArgs, args), build(JsonOutput, args)
    output_file(a.out, suffixes=(".png",))
    try:
        bounds = parse_bounds(a.bounds) if a.bounds else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if bounds and not (bounds[0] < bounds[2] and bounds[1] < bounds[3]):
        raise UsageError(f"--bounds {a.bounds}: want xmin < xmax and ymin < ymax")
    cov = coverage_picture(dataset_folder(a.path), a.out, a.cell, a.units_per_pixel, bounds)
    d = cov.to_dict()
    if not a.per_episode:
        d.pop("per_episode")
    print(json.dumps(d, indent=2) if out.json else format_coverage(cov))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


def _coverage_args() -> type:
    from data.coverage import CoverageArgs

    return CoverageArgs


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect datasets").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND"
    )
    p = data.add_parser(
        "info",
        help="episodes, frames, action histogram, bytes per frame",
        options=lambda: (InfoArgs, JsonOutput),
    )
    p.set_defaults(func=cmd_info)
    p = data.add_parser(
        "view", help="one episode to an mp4 video or a png contact sheet", options=lambda: (ViewArgs,)
    )
    p.set_defaults(func=cmd_view)
    p = data.add_parser(
        "coverage",
        help="top-down picture of the positions a dataset visits",
        options=lambda: (_coverage_args(), JsonOutput),
    )
    p.set_defaults(func=cmd_coverage)
