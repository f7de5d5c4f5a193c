"""`dreamdoom wm eval`: what a player would see of a checkpoint's dream, on held-out play.

Judged on the 3-D view apart from the status bar (PSNR on dark Doom frames rewards grey mush), each
figure beside calibrators that say what it means:

- copy_last: the last real frame again; floor: a real frame at the same step of another held-out
  episode (an unrelated picture of the same game); ceiling: the autoencoder's reconstruction (the
  most any dream on these latents can score); blur: the real frame under a 2-px Gaussian.
- view: edge correlation (structure), PSNR, SSIM; teacher-forced (one step from real frames) and
  per rollout horizon (the dream feeding on itself under the recorded actions).
- status_bar: PSNR of the bar alone.
- probe: position and angle read off frames by a CNN trained on real training frames (world_model/probe.py).
- control and stability against the real engine (world_model/control.py), when an engine is given.

Everything goes into report.json, with a contact sheet and a side-by-side video.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.actions import ActionSpec
from data.cli_args import MAX_SEED, arg
from data.dataset import Dataset, DatasetError
from data.durable import write_atomic
from data.frame_layout import scene_mask, status_bar, view
from data.video import video_backend, write_video
from world_model.evaluation.control import (
    EngineFactory,
    evaluate_control,
    evaluate_motion_one_step,
    evaluate_stability,
)
from world_model.evaluation.metrics import gaussian_blur, psnr, scene_edge_corr, sharpness, view_scores
from world_model.evaluation.probe import ProbeConfig, get_probe
from world_model.evaluation.report import format_report, write_contact_sheet
from world_model.evaluation.rollout import Dreamer, load_heldout
from world_model.model.checkpoint import check_data_fits, load_world_model
from world_model.model.env import MAX_SAMPLING_STEPS

HORIZONS = (1, 2, 4, 8, 16, 32, 64)  # plus the full rollout length
SHEET_HORIZONS = (1, 4, 16, 64)
BLUR_SIGMA = 2.0
CALIBRATORS = ("copy_last", "floor", "ceiling", "blur")


@dataclass
class EvalArgs:
    ckpt: str = arg(help="world-model checkpoint folder")
    data: str = arg(help="dataset folder (its held-out episodes are used)")
    out: str = arg(help="report folder: report.json, contact_sheet.png, side_by_side.mp4")
    episodes: int = arg(12, "at most this many held-out episodes", ge=1)
    all_episodes: bool = arg(
        False, "every episode of --data is held out (a dataset recorded apart from the training data)"
    )
    transitions: int = arg(256, "teacher-forced transitions (evenly spread)", ge=1)
    rollouts: int = arg(8, "autoregressive rollouts", ge=1)
    horizon: int = arg(96, "rollout length in frames", ge=1)
    engine: bool = arg(True, "skip control and stability against the real engine (no VizDoom)")
    control_cases: int = arg(16, "16-step control cases against the engine", ge=1)
    motion_starts: int = arg(
        128, "real starts of control by image motion one step ahead (forced fast turns; 0: skip)", ge=0
    )
    stability_frames: int = arg(2000, "frames of the long dream run beside the engine (0: skip)", ge=0)
    probe: bool = arg(True, "skip the place probe (position and angle read off the frames)")
    probe_data: str | None = arg(
        None, "dataset whose training split trains the place probe (default: --data)"
    )
    probe_steps: int | None = arg(None, "training steps of the place probe (default: its own)", ge=1)
    steps: int | None = arg(None, "DDIM steps (default: the checkpoint's)", ge=1, le=MAX_SAMPLING_STEPS)
    device: str | None = arg(None, "cpu or cuda (default: cuda when available)")
    seed: int = arg(0, "seed of the sampler", ge=0, le=MAX_SEED)
    batch: int = arg(64, "frames predicted at once", ge=1)


def opposite_actions(actions: torch.Tensor, spec: ActionSpec) -> torch.Tensor:
    """A clearly different action for each (..., fields): forward <-> backward (none -> forward), strafe
    mirrored, turn mirrored (no turn -> fastest right); attack and use kept."""
    out = actions.clone()
    f = spec.fields
    move, strafe, turn = (actions[..., f.index(n)] for n in ("move", "strafe", "turn"))
    out[..., f.index("move")] = torch.tensor([1, 2, 1])[move]
    out[..., f.index("strafe")] = torch.tensor([0, 2, 1])[strafe]
    n_turn = len(spec.turn_degrees_per_tic)
    mirrored = n_turn - 1 - turn
    out[..., f.index("turn")] = torch.where(
        turn == spec.turn_none, torch.full_like(turn, n_turn - 1), mirrored
    )
    return out


class _Scores:
    """Per-sample figures of one comparison, kept until they are averaged."""

    def __init__(self):
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, v: np.ndarray) -> None:
        self.values.setdefault(name, []).append(np.asarray(v, np.float64))

    def mean(self, name: str) -> float:
        return float(np.concatenate(self.values[name]).mean()) if name in self.values else float("nan")


def _score_view(sc: _Scores, prefix: str, pred, real, prev, floor, recon) -> None:
    """View edge_corr/psnr/ssim of the model and every calibrator, and the status bar's PSNR."""
    for who, frames in (
        ("model", pred),
        ("copy_last", prev),
        ("floor", floor),
        ("ceiling", recon),
        ("blur", gaussian_blur(real, BLUR_SIGMA)),
    ):
        if frames is None:
            continue
        for metric, v in view_scores(frames, real).items():
            sc.add(f"{prefix}{metric}/{who}", v)
        if who in ("model", "copy_last", "ceiling"):
            sc.add(f"{prefix}bar_psnr/{who}", psnr(status_bar(frames), status_bar(real)))


def _table(sc: _Scores, prefix: str, metric: str) -> dict[str, float]:
    return {
        who: sc.mean(f"{prefix}{metric}/{who}")
        for who in ("model", *CALIBRATORS)
        if f"{prefix}{metric}/{who}" in sc.values
    }


def evaluate(
    args: EvalArgs, engine_factory: EngineFactory | None = None, sheet_out: dict | None = None
) -> dict:
    """The report (also written to OUT/report.json). `sheet_out`, when given, receives the contact sheet's
    frames of the first rollout: {horizon: (real, dream, scene edge corr)}."""
    t_start = time.time()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ck = load_world_model(args.ckpt, device)
    ds = Dataset(args.data)
    check_data_fits(ck.config, ds.manifest.resolution, ds.manifest.frame_skip, ds.action_spec, str(args.ckpt))
    mine = f"the checkpoint {args.ckpt}"
    ck.world.check(ds.world, mine, f"--data {args.data}")
    probe_ds = Dataset(args.probe_data) if args.probe and args.probe_data else ds
    if probe_ds is not ds:  # a probe trained on another world reads nothing of this one
        ck.world.check(probe_ds.world, mine, f"--probe-data {args.probe_data}")
    train_refs, held_refs = ds.split(ck.train.heldout_fraction)
    if args.all_episodes:
        held_refs, train_refs = list(ds.episodes), []
    if not held_refs:
        raise DatasetError(f"{args.data}: no held-out episodes (the dataset needs at least two episodes)")
    steps = args.steps or ck.diffusion.sampling_steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.time()
        timing[name] = round(now - since, 1)
        return now

    held = load_heldout(ds, held_refs, train_refs, ck, device, args.episodes)
    t = lap("load", t_start)
    dreamer = Dreamer(ck, device, steps)
    k = ck.dit_cfg.context_len

    probe, probe_info = None, {"skipped": "--no-probe"}
    if args.probe:
        probe_train = probe_ds.split(ck.train.heldout_fraction)[0] if args.probe_data else train_refs
        if probe_train:
            cfg = ProbeConfig(steps=args.probe_steps) if args.probe_steps else ProbeConfig()
            probe, probe_info = get_probe(probe_ds, probe_train, cfg)
        else:
            probe_info = {
                "skipped": "no training episodes to fit it on (give --probe-data with --all-episodes)"
            }
    t = lap("probe", t)

    # Teacher-forced: one step from real frames, under the recorded and the opposite current action.
    windows = held.windows
    which = torch.linspace(0, len(windows) - 1, min(args.transitions, len(windows))).round().long().unique()
    sc = _Scores()
    for i in tqdm(range(0, len(which), args.batch), desc="eval teacher-forced"):
        w = which[i : i + args.batch]
        idx = windows.targets[w].numpy()
        context, acts = held.context(windows.targets[w])
        real, prev = held.frames[idx], held.frames[idx - 1]
        pred = dreamer.decode(dreamer.predict(context, acts, args.seed + i))
        swapped = acts.clone()
        swapped[:, k] = opposite_actions(acts[:, k], ds.action_spec)
        pred_swap = dreamer.decode(dreamer.predict(context, swapped, args.seed + i))
        recon = dreamer.decode(held.latents_at(idx))
        floor = held.other_episode_frames(idx) if held.has_floor else None
        _score_view(sc, "tf/", pred, real, prev, floor, recon)
        for metric, v in view_scores(pred_swap, real).items():
            sc.add(f"tf/{metric}/swap", v)
        rs = sharpness(view(real))
        sc.add("tf/sharpness/model", sharpness(view(pred)) / rs)
        sc.add("tf/sharpness/ceiling", sharpness(view(recon)) / rs)
    t = lap("teacher_forced", t)

    # Rollouts: the dream feeds on itself under the recorded actions, from real context.
    horizon = min(args.horizon, max(held.lengths) - 1)
    long_eps = [e for e, n in enumerate(held.lengths) if n > horizon]
    per_ep = -(-args.rollouts // len(long_eps))
    starts_r = []
    for j in range(args.rollouts):
        e = long_eps[j % len(long_eps)]
        hi = held.lengths[e] - 1 - horizon  # the last start with a real frame `horizon` steps later
        lo = min(k - 1, hi)
        # spread over the episode, away from its start, where every episode shows the same room
        starts_r.append(held.starts[e] + lo + (hi - lo) * (2 * (j // len(long_eps)) + 1) // (2 * per_ep))
    start = torch.tensor(starts_r)  # (R,) each rollout's last real context frame
    context, led_in = held.start_context(start)
    acts = held.actions[start[:, None] + torch.arange(horizon)]  # (R, H, fields)
    hs = sorted({h for h in (*HORIZONS, horizon) if h <= horizon})
    first_real = held.frames[start.numpy()]
    rsc, video, sheet, probe_err = _Scores(), [], {}, {}
    for h, gen in enumerate(
        tqdm(dreamer.rollout(context, led_in, acts, args.seed + 10_000), total=horizon, desc="eval rollouts"),
        start=1,
    ):
        idx = (start + h).numpy()
        real = held.frames[idx]
        video.append(np.concatenate([np.concatenate([real[i], gen[i]], 1) for i in range(min(len(gen), 2))]))
        if h not in hs:
            rsc.add("curve", scene_edge_corr(gen, real))
            continue
        floor = held.other_episode_frames(idx) if held.has_floor else None
        _score_view(rsc, f"{h}/", gen, real, first_real, floor, dreamer.decode(held.latents_at(idx)))
        rsc.add("curve", rsc.values[f"{h}/edge_corr/model"][-1])
        sheet[h] = (real[0], gen[0], float(rsc.values[f"{h}/edge_corr/model"][-1][0]))
        if probe is not None:
            truth = held.place[idx]
            probe_err[h] = {
                who: probe.errors(frames, truth)
                for who, frames in (("model", gen), ("real", real), ("copy_last", first_real))
            }
    t = lap("rollouts", t)

    # Control by image motion one step ahead: needs no engine (world_model/control.py).
    if args.motion_starts:
        pick = (
            torch.linspace(0, len(windows) - 1, min(args.motion_starts, len(windows))).round().long().unique()
        )
        one_step = evaluate_motion_one_step(
            dreamer, held, windows.targets[pick], ds.action_spec, args.seed + 30_000, args.batch
        )
    else:
        one_step = {"skipped": "--motion-starts 0"}
    t = lap("motion", t)

    view_floor = sc.mean("tf/edge_corr/floor")  # an unrelated real frame, over the whole of the episodes
    fps = 35.0 / ds.manifest.frame_skip
    control: dict = {
        "skipped": "--no-engine" if not args.engine else "no engine (the dreamdoom command gives wm eval one)"
    }
    stability: dict = dict(control)
    if engine_factory is not None:
        engines = {}
        for e, (meta, manifest) in enumerate(zip(held.metas, held.manifests)):
            engine = engine_factory(meta, manifest)
            if engine is not None:
                engines[e] = engine
        control = _guarded(
            "control",
            lambda: evaluate_control(
                dreamer, held, probe, engines, ds.action_spec, args.control_cases, args.seed, motion=True
            ),
        )
        t = lap("control", t)
        if args.stability_frames:
            stability = _guarded(
                "stability",
                lambda: evaluate_stability(
                    dreamer,
                    held,
                    engines,
                    ds.action_spec,
                    args.stability_frames,
                    float(view_floor),
                    fps,
                    args.seed + 20_000,
                ),
            )
            t = lap("stability", t)
        else:
            stability = {"skipped": "--stability-frames 0"}
    samples = stability.pop("_samples", [])
    turn_rows = control.pop("_turn_rows", [])
    over_cases = control.pop("motion", None) or {"skipped": control.get("skipped") or control.get("failed")}
    control["motion"] = {"one_step": one_step, "cases": over_cases}

    video_path = out / ("side_by_side.gif" if video_backend() == "gif" else "side_by_side.mp4")
    write_video(video, video_path.with_suffix(".mp4"), fps=fps, scale=2)  # a .gif where no mp4 encoder
    sheet_path = out / "contact_sheet.png"
    report = {
        "checkpoint": str(args.ckpt),
        "step": ck.step,
        "data": str(args.data),
        "sampling_steps": steps,
        "heldout_episodes": len(held.starts),
        "heldout_frames": int(len(held.frames)),
        "view": {
            "rows": [0, view(held.frames[:1]).shape[1]],
            "weapon_box": _weapon_box(*held.frames.shape[1:3]),
            "teacher_forced": {
                "transitions": int(len(which)),
                **{
                    m: {**_table(sc, "tf/", m), "opposite_action": sc.mean(f"tf/{m}/swap")}
                    for m in ("edge_corr", "psnr", "ssim")
                },
                "sharpness": {
                    "model": sc.mean("tf/sharpness/model"),
                    "ceiling": sc.mean("tf/sharpness/ceiling"),
                },
            },
            "rollout": {
                "rollouts": len(starts_r),
                "horizon": horizon,
                **{m: {str(h): _table(rsc, f"{h}/", m) for h in hs} for m in ("edge_corr", "psnr", "ssim")},
                "edge_corr_curve": [float(x) for x in np.stack(rsc.values["curve"]).mean(1)],
            },
        },
        "status_bar": {
            "rows": [
                int(held.frames.shape[1] - status_bar(held.frames[:1]).shape[1]),
                int(held.frames.shape[1]),
            ],
            "teacher_forced": {"psnr": _table(sc, "tf/", "bar_psnr")},
            "rollout": {"psnr": {str(h): _table(rsc, f"{h}/", "bar_psnr") for h in hs}},
        },
        "action_swap": {
            "edge_corr_delta": sc.mean("tf/edge_corr/model") - sc.mean("tf/edge_corr/swap"),
            "psnr_delta_db": sc.mean("tf/psnr/model") - sc.mean("tf/psnr/swap"),
        },
        "probe": _probe_block(probe_info, probe_err),
        "control": control,
        "stability": stability,
        "video": str(video_path),
        "contact_sheet": str(sheet_path),
        "timing_s": timing,
    }
    write_contact_sheet(
        report, sheet, samples, sheet_path, [h for h in SHEET_HORIZONS if h in sheet], turns=turn_rows
    )
    if sheet_out is not None:
        sheet_out.update(sheet)
    report["seconds"] = round(time.time() - t_start, 1)
    write_atomic(out / "report.json", json.dumps(report, indent=2).encode())  # last: marks the report whole
    return report


def _guarded(name: str, run) -> dict:
    """Run an engine-backed block; if the engine fails (a crashed VizDoom), report it and go on."""
    try:
        return run()
    except Exception as e:  # noqa: BLE001 (the engine's errors are its own classes; the report says which)
        print(f"wm eval: {name} failed, the engine said: {type(e).__name__}: {e}", file=sys.stderr)
        return {"failed": f"{type(e).__name__}: {e}"}


def _weapon_box(height: int, width: int) -> dict[str, list[int]]:
    """Rows and columns [start, stop) of the weapon sprite, left out of every scene figure."""
    mask = scene_mask(height, width)
    rows, cols = np.where(~mask)
    return {"rows": [int(rows.min()), int(rows.max()) + 1], "cols": [int(cols.min()), int(cols.max()) + 1]}


def _probe_block(info: dict, err: dict) -> dict:
    if not err:
        return info
    out = {"training": info, "position_error": {}, "angle_error_deg": {}}
    for h, by in err.items():
        out["position_error"][str(h)] = {who: float(np.mean(d)) for who, (d, _) in by.items()}
        out["angle_error_deg"][str(h)] = {who: float(np.mean(a)) for who, (_, a) in by.items()}
    return out


__all__ = ["EvalArgs", "evaluate", "format_report", "opposite_actions"]
