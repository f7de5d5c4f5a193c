"""`dreamdoom wm curve`: learning curves of runs, from the snapshots `wm train --keep-every` kept.

Each snapshot is judged one step ahead from the same real starts of held-out play, in seconds, so a curve of a
dozen points costs less than one `wm eval`:
- structure: the scene's edge correlation with the real next frame under the recorded action, beside
  copy-last (the real last frame) and the ceiling (the autoencoder's reconstruction of the next frame);
- turn response: from each start, one step under "turn fast right" and one under "turn fast left", nothing
  else pressed; the dream's view motion from the real last frame (world_model/motion.py) right minus left,
  over the engine's (its recorded fast turns in the same held-out play, nothing else pressed: median right
  minus median left) is the turn gain, and the share of starts whose right minus left has the engine's sign
  (by more than control.MIN_PX) is the right-way share, both by control.motion_figures as in `wm eval`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.cli_args import MAX_SEED, UsageError, arg
from data.dataset import Dataset
from data.durable import write_atomic
from world_model.evaluation.control import engine_turn_motion, motion_figures, turn_response
from world_model.evaluation.metrics import scene_edge_corr
from world_model.evaluation.motion import view_shift
from world_model.evaluation.rollout import Dreamer, HeldOut, load_heldout
from world_model.model.checkpoint import WorldModelCheckpoint, load_world_model


@dataclass
class Starts:
    """The real starts every snapshot is judged from: target frame indices into `held`."""

    held: HeldOut
    targets: torch.Tensor  # (N,)
    engine: dict  # engine_turn_motion

    @classmethod
    def build(cls, ck: WorldModelCheckpoint, heldout: str, count: int, seed: int, device) -> Starts:
        ds = Dataset(heldout)
        ck.world.check(ds.world, "the runs' checkpoints", f"--heldout {heldout}")
        held = load_heldout(ds, list(ds.episodes), [], ck, device, limit=10**6)
        windows = held.windows
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(windows), generator=gen)[: min(count, len(windows))]
        return cls(held, windows.targets[pick.sort().values], engine_turn_motion(held, ds.action_spec))


@torch.no_grad()
def score(ck: WorldModelCheckpoint, starts: Starts, device, seed: int = 0, batch: int = 32) -> dict:
    """One snapshot's one-step figures from `starts` (see the module's docstring)."""
    spec, held = ck.action_spec, starts.held
    dreamer = Dreamer(ck, device, ck.diffusion.sampling_steps)
    edge, copy, ceil, right, left, dream_rec, engine_rec = [], [], [], [], [], [], []
    for i in range(0, len(starts.targets), batch):
        t = starts.targets[i : i + batch]
        idx = t.numpy()
        context, acts = held.context(t)
        real, last = held.frames[idx], held.frames[idx - 1]
        pred = dreamer.decode(dreamer.predict(context, acts, seed + i))
        edge.append(scene_edge_corr(pred, real))
        copy.append(scene_edge_corr(last, real))
        ceil.append(scene_edge_corr(dreamer.decode(held.latents_at(idx)), real))
        dream_rec.append(view_shift(last, pred))
        engine_rec.append(view_shift(last, real))
        r, lf = turn_response(dreamer, context, acts, last, spec, seed + i)
        right.append(r)
        left.append(lf)
    eng = starts.engine
    engine_diff = None if eng["right"] is None or eng["left"] is None else eng["right"] - eng["left"]
    motion = motion_figures(
        *(np.concatenate(x) for x in (right, left)),
        engine_diff,
        *(np.concatenate(x) for x in (dream_rec, engine_rec)),
    )
    return {
        "edge_corr": float(np.concatenate(edge).mean()),
        "copy_last": float(np.concatenate(copy).mean()),
        "ceiling": float(np.concatenate(ceil).mean()),
        **{k: motion[k] for k in ("dream_right_px", "dream_left_px", "turn_gain", "right_way_share")},
        "recorded_motion_correlation": motion["recorded"]["correlation"],  # dream vs engine, recorded actions
        "starts": len(starts.targets),
    }


def snapshots(run: Path) -> list[Path]:
    """A run's kept snapshots, oldest first."""
    return sorted((run / "snapshots").glob("step-*"))


def run_curve(runs: dict[str, Path], heldout: str, count: int = 64, seed: int = 0, device=None) -> dict:
    """{name: [point, ...]} over every snapshot of each run: each point a `score`, its step and samples."""
    device = torch.device(device or "cpu")
    starts, out = None, {}
    for name, run in runs.items():
        points = []
        for snap in snapshots(run):
            ck = load_world_model(snap, device)
            if starts is None:  # every run of a curve shares the autoencoder: the starts are encoded once
                starts = Starts.build(ck, heldout, count, seed, device)
            point = score(ck, starts, device, seed)
            point.update(step=ck.step, samples=ck.config.get("samples_seen"))
            points.append(point)
            print(
                f"{name} step {ck.step}: edge corr {point['edge_corr']:.3f} (copy {point['copy_last']:.3f}), "
                f"turn gain {_f(point['turn_gain'])}, right way {_f(point['right_way_share'], '.0%')}",
                flush=True,
            )
        out[name] = points
    return {"engine": None if starts is None else starts.engine, "runs": out}


def _f(x, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def format_curve(curve: dict) -> str:
    eng = curve["engine"] or {}
    lines = [
        f"Engine, held-out fast turns in place: right {_f(eng.get('right'))} px "
        f"({eng.get('right_frames', 0)} frames), left {_f(eng.get('left'))} px "
        f"({eng.get('left_frames', 0)}).",
        "",
        "| run | samples | scene edge corr 1 step (copy / ceiling) | turn gain | right way "
        "| dream right / left px |",
        "|---|---|---|---|---|---|",
    ]
    for name, points in curve["runs"].items():
        for p in points:
            lines.append(
                f"| {name} | {p['samples']:,} | {p['edge_corr']:.3f} "
                f"({p['copy_last']:.3f} / {p['ceiling']:.3f}) "
                f"| {_f(p['turn_gain'])} | {_f(p['right_way_share'], '.0%')} "
                f"| {p['dream_right_px']:+.1f} / {p['dream_left_px']:+.1f} |"
            )
    return "\n".join(lines) + "\n"


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
PANELS = (  # (title, figure of a point, y range)
    ("turn gain", lambda p: p["turn_gain"], (-0.2, 1.2)),
    ("right-way share", lambda p: p["right_way_share"], (0.0, 1.0)),
    ("edge corr 1 step minus copy-last", lambda p: p["edge_corr"] - p["copy_last"], (-0.3, 0.3)),
)


def write_curve_png(curve: dict, path: Path) -> None:
    """Three panels against samples seen, one line per run."""
    from PIL import Image, ImageDraw

    pw, ph, pad = 300, 200, 36
    img = Image.new("RGB", (len(PANELS) * (pw + pad) + pad, ph + 2 * pad + 16 * len(curve["runs"])), "white")
    draw = ImageDraw.Draw(img)
    xmax = max((p["samples"] or 0 for ps in curve["runs"].values() for p in ps), default=1) or 1
    for k, (title, fig, (lo, hi)) in enumerate(PANELS):
        x0, y0 = pad + k * (pw + pad), pad
        draw.rectangle([x0, y0, x0 + pw, y0 + ph], outline=(0, 0, 0))
        draw.text((x0, y0 - 14), title, fill=(0, 0, 0))
        draw.text((x0 - 30, y0 - 4), f"{hi:g}", fill=(90, 90, 90))
        draw.text((x0 - 30, y0 + ph - 8), f"{lo:g}", fill=(90, 90, 90))
        draw.text((x0 + pw - 60, y0 + ph + 4), f"{xmax:,} samples", fill=(90, 90, 90))
        if lo < 0 < hi:
            yz = y0 + ph * (hi - 0) / (hi - lo)
            draw.line([x0, yz, x0 + pw, yz], fill=(200, 200, 200))
        for j, points in enumerate(curve["runs"].values()):
            xy = [
                (x0 + pw * (p["samples"] or 0) / xmax, y0 + ph * (hi - min(hi, max(lo, fig(p)))) / (hi - lo))
                for p in points
                if fig(p) is not None
            ]
            colour = COLOURS[j % len(COLOURS)]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for x, y in xy:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    for j, name in enumerate(curve["runs"]):
        draw.text((pad, ph + 2 * pad + 16 * j), f"— {name}", fill=COLOURS[j % len(COLOURS)])
    img.save(path)


def write_curve(curve: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "curve.json", json.dumps(curve, indent=2).encode())
    write_atomic(out / "curve.md", format_curve(curve).encode())
    write_curve_png(curve, out / "curve.png")


@dataclass
class CurveArgs:
    run: tuple[str, ...] = arg(
        help="NAME=RUN_DIR of a run trained with --keep-every (repeat for several)",
        nargs="+",
        metavar="NAME=RUN",
    )
    heldout: str = arg(help="held-out dataset of the runs' world: every episode of it gives starts")
    out: str = arg(help="folder for curve.json, curve.md and curve.png")
    starts: int = arg(64, "real starts each snapshot is judged from", ge=1)
    device: str | None = arg(None, "cpu or cuda (default: cpu)")
    seed: int = arg(0, "seed of the starts and the sampling", ge=0, le=MAX_SEED)


def main_curve(args: CurveArgs) -> dict:
    runs = {}
    for item in args.run:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise UsageError(f"--run {item!r}: want NAME=RUN_DIR")
        if name in runs:
            raise UsageError(f"--run {item!r}: the name {name!r} is given twice")
        if not snapshots(Path(path)):
            raise UsageError(f"--run {item!r}: {path}/snapshots holds no snapshot (train with --keep-every)")
        runs[name] = Path(path)
    curve = run_curve(runs, args.heldout, args.starts, args.seed, args.device)
    write_curve(curve, Path(args.out))
    print(format_curve(curve), end="")
    print(f"curve -> {Path(args.out) / 'curve.png'}")
    return curve
