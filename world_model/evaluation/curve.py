"""`dreamdoom wm curve`: learning curves of runs, from the snapshots `wm train --keep-every` kept.

Each snapshot is judged one step ahead from the same real starts of held-out play, in seconds, so a curve of a
dozen points costs less than one `wm eval`:
- structure: the scene's edge correlation with the real next frame under the recorded action, beside
  copy-last (the real last frame) and the ceiling (the autoencoder's reconstruction of the next frame);
- turn response: from each start, one step under "turn fast right" and one under "turn fast left", nothing
  else pressed; the dream's view motion from the real last frame (world_model/evaluation/motion.py) right
  minus left, over the engine's (its recorded fast turns in the same held-out play, nothing else pressed:
  median right minus median left) is the turn gain, and the share of starts whose right minus left has the
  engine's sign (by more than control.MIN_PX) is the right-way share, both by control.motion_figures as in
  `wm eval`;
- rollouts: from real starts, the dream feeds on itself under the recorded actions; the scene's edge
  correlation 16 and 64 frames on, beside copy-last (the real start frame);
- hold, where an engine is given (`dreamdoom wm curve` gives one): a short stability run beside the engine
  (`--stability-frames`, 500 by default), its share of frames above the floor and when it first falls to
  the floor for a whole second, and its no-reference hold (world_model/evaluation/hold.py): the share of
  seconds that are a picture of the world.
A lever is picked by its rollout and hold curves, not by one step.
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
from world_model.evaluation.control import (
    EngineFactory,
    engine_turn_motion,
    evaluate_stability,
    motion_figures,
    turn_response,
)
from world_model.evaluation.hold import hold_meter
from world_model.evaluation.metrics import scene_edge_corr
from world_model.evaluation.motion import view_shift
from world_model.evaluation.rollout import Dreamer, HeldOut, load_heldout
from world_model.model.checkpoint import WorldModelCheckpoint, load_world_model

CURVE_HORIZONS = (16, 64)  # rollout horizons each snapshot is scored at (fewer where episodes are short)


@dataclass
class Starts:
    """The real starts every snapshot is judged from: target frame indices into `held`, rollout starts (each
    one's last real context frame) and the engine a stability run is beside."""

    held: HeldOut
    targets: torch.Tensor  # (N,)
    engine: dict  # engine_turn_motion
    rollout_last: torch.Tensor  # (R,) last real frame of each rollout's context
    horizon: int  # frames each rollout runs
    copy_last: dict  # horizon -> the real start frame's scene edge corr with the real frame then
    floor: float  # scene edge corr of a real frame of another episode: the stability run's floor
    engines: dict = None  # episode -> replay engine (none without an engine factory)
    spec: object = None  # the action contract
    fps: float = 17.5

    @classmethod
    def build(
        cls,
        ck: WorldModelCheckpoint,
        heldout: str,
        count: int,
        seed: int,
        device,
        rollouts: int = 16,
        engine_factory: EngineFactory | None = None,
    ) -> Starts:
        ds = Dataset(heldout)
        ck.world.check(ds.world, "the runs' checkpoints", f"--heldout {heldout}")
        held = load_heldout(ds, list(ds.episodes), [], ck, device, limit=10**6)
        windows = held.windows
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(windows), generator=gen)[: min(count, len(windows))]
        k = ck.dit_cfg.context_len
        # the longest horizon the longest episode holds after a full context
        horizon = max((h for h in CURVE_HORIZONS if h <= max(held.lengths) - k), default=0)
        last = []  # rollout starts spread over the episodes long enough, away from their first frames
        long_eps = [e for e, n in enumerate(held.lengths) if horizon and n - k >= horizon]
        for j in range(rollouts if long_eps else 0):
            e = long_eps[j % len(long_eps)]
            lo, hi = held.starts[e] + k - 1, held.starts[e] + held.lengths[e] - 1 - horizon
            last.append(lo + (hi - lo) * (j // len(long_eps) * 2 + 1) // (2 * -(-rollouts // len(long_eps))))
        rollout_last = torch.tensor(last, dtype=torch.long)
        copy = {}
        for h in CURVE_HORIZONS:
            if h <= horizon and len(last):
                idx = rollout_last.numpy()
                copy[h] = float(scene_edge_corr(held.frames[idx], held.frames[idx + h]).mean())
        targets = windows.targets[pick.sort().values]
        idx = targets.numpy()
        floor = (
            float(scene_edge_corr(held.other_episode_frames(idx), held.frames[idx]).mean())
            if held.has_floor
            else 0.0
        )
        engines = {}
        if engine_factory is not None:  # one engine is enough: the stability run starts in the first episode
            for e, (meta, manifest) in enumerate(zip(held.metas, held.manifests, strict=True)):
                engine = engine_factory(meta, manifest)
                if engine is not None:
                    engines[e] = engine
                    break
        return cls(
            held,
            targets,
            engine_turn_motion(held, ds.action_spec),
            rollout_last,
            horizon,
            copy,
            floor,
            engines,
            ds.action_spec,
            35.0 / ds.manifest.frame_skip,
        )


@torch.no_grad()
def score(
    ck: WorldModelCheckpoint,
    starts: Starts,
    device,
    seed: int = 0,
    batch: int = 32,
    stability_frames: int = 500,
) -> dict:
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
        **score_rollouts(dreamer, starts, seed, stability_frames),
    }


@torch.no_grad()
def score_rollouts(dreamer: Dreamer, starts: Starts, seed: int, stability_frames: int = 500) -> dict:
    """A snapshot's rollouts from `starts.rollout_last` (scene edge corr at CURVE_HORIZONS beside copy-last)
    and, where an engine is given, a short stability run with its no-reference hold."""
    held, out = starts.held, {}
    if len(starts.rollout_last):
        context, led_in = held.start_context(starts.rollout_last)
        acts = held.actions[
            starts.rollout_last[:, None] + torch.arange(starts.horizon)
        ]  # taken at each frame
        rollout = {}
        for h, gen in enumerate(dreamer.rollout(context, led_in, acts, seed + 10_000), start=1):
            if h in starts.copy_last:
                real = held.frames[(starts.rollout_last + h).numpy()]
                rollout[str(h)] = {
                    "model": float(scene_edge_corr(gen, real).mean()),
                    "copy_last": starts.copy_last[h],
                }
        out["rollout"] = rollout
    if starts.engines and stability_frames:
        stab = evaluate_stability(
            dreamer,
            held,
            starts.engines,
            starts.spec,
            stability_frames,
            starts.floor,
            starts.fps,
            seed + 20_000,
            hold_meter(dreamer.ck, held, dreamer),
        )
        stab.pop("_samples", None)
        hold = stab.get("hold", {})
        out["stability"] = {
            "frames": stability_frames,
            "share_above_floor": stab.get("share_above_floor"),
            "first_lost_frame": stab.get("first_lost_frame"),
            "mean_edge_corr": stab.get("mean_edge_corr"),
            "seconds_held": hold.get("share_of_seconds_held"),
            "first_second_not_held": hold.get("first_second_not_held"),
            "sharpness_last_s": (hold.get("sharpness_per_s") or [None])[-1],
            "grid_edges_last_s": (hold.get("grid_edges_per_s") or [None])[-1],
            "outside_range_last_s": (hold.get("outside_range_per_s") or [None])[-1],
        }
    return out


def snapshots(run: Path) -> list[Path]:
    """A run's kept snapshots, oldest first."""
    return sorted((run / "snapshots").glob("step-*"))


def run_curve(
    runs: dict[str, Path],
    heldout: str,
    count: int = 64,
    seed: int = 0,
    device=None,
    rollouts: int = 16,
    stability_frames: int = 500,
    engine_factory: EngineFactory | None = None,
) -> dict:
    """{name: [point, ...]} over every snapshot of each run: each point a `score`, its step and samples.
    `engine_factory` (meta, manifest) -> replay engine gives the stability runs their engine."""
    device = torch.device(device or "cpu")
    starts, out = None, {}
    for name, run in runs.items():
        points = []
        for snap in snapshots(run):
            ck = load_world_model(snap, device)
            if starts is None:  # every run of a curve shares the autoencoder: the starts are encoded once
                starts = Starts.build(ck, heldout, count, seed, device, rollouts, engine_factory)
            point = score(ck, starts, device, seed, stability_frames=stability_frames)
            point.update(step=ck.step, samples=ck.config.get("samples_seen"))
            points.append(point)
            print(
                f"{name} step {ck.step}: edge corr {point['edge_corr']:.3f} (copy {point['copy_last']:.3f}), "
                f"turn gain {_f(point['turn_gain'])}, right way {_f(point['right_way_share'], '.0%')}"
                + _rollout_text(point),
                flush=True,
            )
        out[name] = points
    return {"engine": None if starts is None else starts.engine, "runs": out}


def _rollout_text(p: dict) -> str:
    """The rollout and hold figures of a point, for its printed line and the table."""
    text = "".join(
        f"; h{h} {r['model']:.3f} (copy {r['copy_last']:.3f})" for h, r in p.get("rollout", {}).items()
    )
    st = p.get("stability")
    if st:
        text += (
            f"; {st['frames']} frames: above the floor {_f(st['share_above_floor'], '.0%')}, "
            f"seconds held {_f(st['seconds_held'], '.0%')}"
        )
    return text


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
        "| dream right / left px | rollout h16 / h64 (copy) | stability: above the floor, seconds held |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, points in curve["runs"].items():
        for p in points:
            r, st = p.get("rollout", {}), p.get("stability") or {}
            rollout = " / ".join(f"{r[h]['model']:.3f} ({r[h]['copy_last']:.3f})" for h in r) or "-"
            lines.append(
                f"| {name} | {p['samples']:,} | {p['edge_corr']:.3f} "
                f"({p['copy_last']:.3f} / {p['ceiling']:.3f}) "
                f"| {_f(p['turn_gain'])} | {_f(p['right_way_share'], '.0%')} "
                f"| {p['dream_right_px']:+.1f} / {p['dream_left_px']:+.1f} | {rollout} "
                f"| {_f(st.get('share_above_floor'), '.0%')}, {_f(st.get('seconds_held'), '.0%')} |"
            )
    return "\n".join(lines) + "\n"


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
PANELS = (  # (title, figure of a point, y range)
    ("turn gain", lambda p: p["turn_gain"], (-0.2, 1.2)),
    ("right-way share", lambda p: p["right_way_share"], (0.0, 1.0)),
    ("edge corr 1 step minus copy-last", lambda p: p["edge_corr"] - p["copy_last"], (-0.3, 0.3)),
    ("rollout edge corr at 16 frames", lambda p: _at(p, "16"), (-0.1, 0.6)),
    ("rollout edge corr at 64 frames", lambda p: _at(p, "64"), (-0.1, 0.6)),
    ("stability: seconds held", lambda p: (p.get("stability") or {}).get("seconds_held"), (0.0, 1.0)),
)


def _at(p: dict, h: str) -> float | None:
    r = p.get("rollout", {}).get(h)
    return None if r is None else r["model"]


def write_curve_png(curve: dict, path: Path) -> None:
    """The panels against samples seen, three to a row, one line per run; written whole or not at all."""
    import io

    from PIL import Image, ImageDraw

    pw, ph, pad, cols = 300, 200, 36, 3
    rows = -(-len(PANELS) // cols)
    width, height = cols * (pw + pad) + pad, rows * (ph + 2 * pad) + 16 * len(curve["runs"]) + pad
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    xmax = max((p["samples"] or 0 for ps in curve["runs"].values() for p in ps), default=1) or 1
    for k, (title, fig, (lo, hi)) in enumerate(PANELS):
        x0, y0 = pad + (k % cols) * (pw + pad), pad + (k // cols) * (ph + 2 * pad)
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
        draw.text((pad, rows * (ph + 2 * pad) + 16 * j), f"-- {name}", fill=COLOURS[j % len(COLOURS)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_atomic(path, buf.getvalue())


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
    rollouts: int = arg(16, "rollouts of 64 frames each snapshot is judged on (0: none)", ge=0)
    stability_frames: int = arg(
        500, "frames of each snapshot's stability run beside the engine, with its hold (0: none)", ge=0
    )
    device: str | None = arg(None, "cpu or cuda (default: cpu)")
    seed: int = arg(0, "seed of the starts and the sampling", ge=0, le=MAX_SEED)


def main_curve(args: CurveArgs, engine_factory: EngineFactory | None = None) -> dict:
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
    curve = run_curve(
        runs,
        args.heldout,
        args.starts,
        args.seed,
        args.device,
        args.rollouts,
        args.stability_frames,
        engine_factory,
    )
    write_curve(curve, Path(args.out))
    print(format_curve(curve), end="")
    print(f"curve -> {Path(args.out) / 'curve.png'}")
    return curve
