"""Map coverage of a dataset: distinct grid cells the player visited, and a top-down picture of where.

Positions are the POSITION_X/Y game variables (Doom map units; a corridor is ~128 wide). The picture
is a visit heat map on a dark background: the walls appear as the edge of where the player went, so a
user sees at a glance what part of the map the data covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data.cli_args import arg
from data.dataset import Dataset

CELL_SIZE = 64.0  # map units per side of a coverage grid cell
UNITS_PER_PIXEL = 8.0
MARGIN = 64.0  # map units of border around the visited area
BACKGROUND = (16, 16, 20)
START_COLOUR = (80, 220, 120)
TITLE_HEIGHT = 14  # pixels
# Heat colours from rarely to often visited (dark red -> orange -> pale yellow).
HEAT_STOPS = np.array(
    [[90, 20, 60], [190, 40, 40], [240, 130, 30], [250, 220, 90], [255, 255, 220]], np.float32
)


@dataclass
class CoverageArgs:
    """What `dreamdoom data coverage` draws."""

    path: str = arg(help="dataset folder", positional=True)
    out: str = arg(help="output .png")
    cell: float = arg(CELL_SIZE, "grid cell side in map units", gt=0)
    units_per_pixel: float = arg(UNITS_PER_PIXEL, "map units per pixel", gt=0)
    bounds: str | None = arg(None, "xmin,ymin,xmax,ymax in map units (same frame for several)")
    per_episode: bool = arg(False, "with --json: every episode's figures")


@dataclass
class EpisodeCoverage:
    name: str
    steps: int
    cells: int  # distinct grid cells visited
    kills: float
    items: float
    secrets: float


@dataclass
class Coverage:
    """Coverage of a set of episodes on one grid."""

    cell_size: float
    episodes: list[EpisodeCoverage] = field(default_factory=list)
    total_cells: int = 0  # distinct cells over all episodes

    def mean(self, key: str) -> float:
        return float(np.mean([getattr(e, key) for e in self.episodes])) if self.episodes else 0.0

    def to_dict(self) -> dict:
        return {
            "cell_size": self.cell_size,
            "episodes": len(self.episodes),
            "steps": int(sum(e.steps for e in self.episodes)),
            "total_cells": self.total_cells,
            "cells_per_episode": self.mean("cells"),
            "kills_per_episode": self.mean("kills"),
            "items_per_episode": self.mean("items"),
            "secrets_per_episode": self.mean("secrets"),
            "per_episode": [e.__dict__ for e in self.episodes],
        }


def grid_cells(xy: np.ndarray, cell_size: float = CELL_SIZE) -> set[tuple[int, int]]:
    """Distinct (i, j) grid cells of (T, 2) positions."""
    ij = np.floor(np.asarray(xy, np.float64) / cell_size).astype(np.int64)
    return set(map(tuple, np.unique(ij, axis=0).tolist())) if len(ij) else set()


def _gain(variable: np.ndarray) -> float:
    return float(variable[-1] - variable[0]) if len(variable) else 0.0


def measure(tracks: list[tuple[str, np.ndarray, np.ndarray]], cell_size: float = CELL_SIZE) -> Coverage:
    """Coverage of (name, positions (T, 2), [kills, items, secrets] counts (T, 3)) tracks."""
    cov, union = Coverage(cell_size), set()
    for name, xy, counts in tracks:
        cells = grid_cells(xy, cell_size)
        union |= cells
        kills, items, secrets = (_gain(counts[:, i]) for i in range(3))
        cov.episodes.append(EpisodeCoverage(name, len(xy), len(cells), kills, items, secrets))
    cov.total_cells = len(union)
    return cov


def load_tracks(dataset: Dataset) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Positions and kill/item/secret counts of every readable episode (frames are not decompressed)."""
    tracks = []
    for ref, ep in dataset.iter_episodes(keys=("variables",)):
        xy = np.stack([ep.variable("POSITION_X"), ep.variable("POSITION_Y")], axis=1)  # (T, 2)
        counts = np.stack(
            [ep.variable(v) for v in ("KILLCOUNT", "ITEMCOUNT", "SECRETCOUNT")], axis=1
        )  # (T, 3)
        tracks.append((f"{ref.shard.name}/{ref.path.name}", xy, counts))
    return tracks


def bounds_of(tracks: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of all positions plus a margin."""
    xy = np.concatenate([t[1] for t in tracks if len(t[1])])
    lo, hi = xy.min(axis=0) - MARGIN, xy.max(axis=0) + MARGIN
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _heat_colours(t: np.ndarray) -> np.ndarray:
    """(N,) values in [0, 1] -> (N, 3) uint8 colours along HEAT_STOPS."""
    x = np.clip(t, 0.0, 1.0) * (len(HEAT_STOPS) - 1)
    i = np.minimum(x.astype(np.int64), len(HEAT_STOPS) - 2)
    f = (x - i)[:, None]
    return (HEAT_STOPS[i] * (1 - f) + HEAT_STOPS[i + 1] * f).astype(np.uint8)


def render(
    tracks: list[tuple[str, np.ndarray, np.ndarray]],
    bounds: tuple[float, float, float, float] | None = None,
    units_per_pixel: float = UNITS_PER_PIXEL,
    title: str = "",
) -> Image.Image:
    """Top-down visit heat map of the tracks (north up), start positions in green."""
    if not any(len(t[1]) for t in tracks):
        raise ValueError("no positions to draw: the dataset has no readable steps")
    x0, y0, x1, y1 = bounds or bounds_of(tracks)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty bounds {(x0, y0, x1, y1)}: expected xmin < xmax and ymin < ymax")
    w, h = int(np.ceil((x1 - x0) / units_per_pixel)), int(np.ceil((y1 - y0) / units_per_pixel))
    visits = np.zeros((h, w), np.float64)
    for _, xy, _ in tracks:
        if len(xy) < 1:
            continue
        # Sample the path between consecutive positions so a fast player leaves a line, not dots.
        seg = np.diff(xy, axis=0, prepend=xy[:1])  # (T, 2)
        n = np.maximum(1, np.ceil(np.abs(seg).max(axis=1) / units_per_pixel)).astype(np.int64)  # (T,)
        k = np.repeat(np.arange(len(xy)), n)
        frac = (np.arange(len(k)) - np.repeat(np.cumsum(n) - n, n) + 1) / np.repeat(n, n)
        pts = xy[k] - seg[k] * (1 - frac)[:, None]  # (sum n, 2)
        px = ((pts[:, 0] - x0) / units_per_pixel).astype(np.int64)
        py = ((y1 - pts[:, 1]) / units_per_pixel).astype(np.int64)  # Doom's y points north: flip
        ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        np.add.at(visits, (py[ok], px[ok]), 1.0)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND
    seen = visits > 0
    img[seen] = _heat_colours(np.log1p(visits[seen]) / np.log1p(visits.max()))
    pic = Image.fromarray(img)
    draw = ImageDraw.Draw(pic)
    for _, xy, _ in tracks:
        if len(xy):
            sx, sy = (xy[0, 0] - x0) / units_per_pixel, (y1 - xy[0, 1]) / units_per_pixel
            draw.ellipse([sx - 2, sy - 2, sx + 2, sy + 2], fill=START_COLOUR)
    if not title:
        return pic
    # The title goes on a strip above the map, wide enough for it (the default font is 6 px a letter).
    canvas = Image.new("RGB", (max(w, 8 + 6 * len(title)), h + TITLE_HEIGHT), BACKGROUND)
    canvas.paste(pic, (0, TITLE_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=(230, 230, 230))
    return canvas


def parse_bounds(text: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--bounds must be xmin,ymin,xmax,ymax in map units, got {text!r}") from None
    return x0, y0, x1, y1


def coverage_picture(
    root: str | Path,
    out: str | Path,
    cell_size: float = CELL_SIZE,
    units_per_pixel: float = UNITS_PER_PIXEL,
    bounds: tuple[float, float, float, float] | None = None,
) -> Coverage:
    """Measure a dataset's coverage and write its top-down picture to `out` (.png)."""
    dataset = Dataset(root)
    tracks = load_tracks(dataset)
    if not tracks:
        raise ValueError(f"{root}: no readable episodes")
    cov = measure(tracks, cell_size)
    title = (
        f"{dataset.manifest.map}: {len(tracks)} episodes, {cov.total_cells} cells "
        f"({cov.mean('cells'):.0f}/episode, {cell_size:g} units)"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    render(tracks, bounds, units_per_pixel, title).save(out, optimize=True)
    return cov


def format_coverage(cov: Coverage) -> str:
    d = cov.to_dict()
    return (
        f"episodes {d['episodes']}, steps {d['steps']:,}; grid cells of {d['cell_size']:g} map units: "
        f"{d['total_cells']} over the dataset, {d['cells_per_episode']:.1f} per episode; per episode: "
        f"kills {d['kills_per_episode']:.2f}, items {d['items_per_episode']:.2f}, "
        f"secrets {d['secrets_per_episode']:.2f}"
    )
