"""`dreamdoom wm eval`: what a player would see of a checkpoint's dream, on held-out play.

Judged on the 3-D view apart from the status bar (PSNR on dark Doom frames rewards grey mush), each
figure beside calibrators that say what it means:

- copy_last: the last real frame again; floor: a real frame at the same step of another held-out
  episode (an unrelated picture of the same game); ceiling: the autoencoder's reconstruction (the
  most any dream on these latents can score); blur: the real frame under a 2-px Gaussian.
- view: edge correlation (structure), PSNR, SSIM; teacher-forced (one step from real frames) and
  per rollout horizon (the dream feeding on itself under the recorded actions).
- status_bar: PSNR of the bar alone.
- probe: position and angle read off frames by a CNN trained on real training frames (probe.py).
- control and stability against the real engine (control.py), when an engine is given.

Everything goes into report.json, with a contact sheet and a side-by-side video. `evaluate` reads as its
blocks: load, place probe, teacher forced, rollouts, motion, engine control, stability, report; each block
is a function with its own inputs that returns its own part of report.json.
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
from data.dataset import Dataset, DatasetError, EpisodeRef
from data.durable import write_atomic
from data.frame_layout import scene_mask, status_bar, view
from data.video import video_backend, write_video
from world_model.evaluation.control import (
    EngineFactory,
    ReplayEngine,
    evaluate_control,
    evaluate_motion_one_step,
    evaluate_stability,
)
from world_model.evaluation.hold import hold_meter
from world_model.evaluation.metrics import gaussian_blur, psnr, scene_edge_corr, sharpness, view_scores
from world_model.evaluation.probe import PlaceProbe, ProbeConfig, get_probe
from world_model.evaluation.report import format_report, write_contact_sheet
from world_model.evaluation.rollout import Dreamer, HeldOut, load_heldout
from world_model.model.checkpoint import WorldModelCheckpoint, check_data_fits, load_world_model
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
    clock = _Clock()
    run = load(args)
    clock.lap("load")
    probe, probe_info = place_probe(args, run)
    clock.lap("probe")
    tf = teacher_forced(args, run)
    clock.lap("teacher_forced")
    ro = rollouts(args, run, probe)
    clock.lap("rollouts")
    one_step = motion_one_step(args, run)
    clock.lap("motion")
    control, stability = _no_engine(args), _no_engine(args)
    if engine_factory is not None:
        engines = open_engines(run.held, engine_factory)
        control = engine_control(args, run, probe, engines)
        clock.lap("control")
        stability = long_run_stability(args, run, engines, tf.floor_edge_corr)
        if args.stability_frames:
            clock.lap("stability")
    return write_report(args, run, tf, ro, probe_info, one_step, control, stability, clock, sheet_out)


class _Clock:
    """Seconds each block took, for the report's timing_s."""

    def __init__(self):
        self.start = self.last = time.time()
        self.timing: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.timing[name] = round(now - self.last, 1)
        self.last = now


@dataclass
class Run:
    """What the blocks read: the checkpoint, the data it is judged on, its held-out play, the dreamer."""

    ck: WorldModelCheckpoint
    ds: Dataset
    probe_ds: Dataset  # whose training split trains the place probe
    train_refs: list[EpisodeRef]
    held: HeldOut
    dreamer: Dreamer
    steps: int  # sampling steps
    out: Path

    @property
    def fps(self) -> float:
        return 35.0 / self.ds.manifest.frame_skip


def load(args: EvalArgs) -> Run:
    """The checkpoint and the held-out episodes it is judged on, each dataset checked to be of its world."""
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
    held = load_heldout(ds, held_refs, train_refs, ck, device, args.episodes)
    return Run(ck, ds, probe_ds, train_refs, held, Dreamer(ck, device, steps), steps, out)


def place_probe(args: EvalArgs, run: Run) -> tuple[PlaceProbe | None, dict]:
    """The place probe trained (or found cached) on real training frames, and what its training reports."""
    if not args.probe:
        return None, {"skipped": "--no-probe"}
    probe_train = run.probe_ds.split(run.ck.train.heldout_fraction)[0] if args.probe_data else run.train_refs
    if not probe_train:
        return None, {"skipped": "no training episodes to fit it on (give --probe-data with --all-episodes)"}
    cfg = ProbeConfig(steps=args.probe_steps) if args.probe_steps else ProbeConfig()
    return get_probe(run.probe_ds, probe_train, cfg)


@dataclass
class TeacherForced:
    view: dict  # report.json's view.teacher_forced
    status_bar: dict  # status_bar.teacher_forced
    action_swap: dict
    floor_edge_corr: float  # an unrelated real frame's scene edge corr, the floor stability is judged against


def teacher_forced(args: EvalArgs, run: Run) -> TeacherForced:
    """One step from real frames, under the recorded and the opposite current action."""
    held, dreamer, k = run.held, run.dreamer, run.ck.dit_cfg.context_len
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
        swapped[:, k] = opposite_actions(acts[:, k], run.ds.action_spec)
        pred_swap = dreamer.decode(dreamer.predict(context, swapped, args.seed + i))
        recon = dreamer.decode(held.latents_at(idx))
        floor = held.other_episode_frames(idx) if held.has_floor else None
        _score_view(sc, "tf/", pred, real, prev, floor, recon)
        for metric, v in view_scores(pred_swap, real).items():
            sc.add(f"tf/{metric}/swap", v)
        rs = sharpness(view(real))
        sc.add("tf/sharpness/model", sharpness(view(pred)) / rs)
        sc.add("tf/sharpness/ceiling", sharpness(view(recon)) / rs)
    return TeacherForced(
        view={
            "transitions": int(len(which)),
            **{
                m: {**_table(sc, "tf/", m), "opposite_action": sc.mean(f"tf/{m}/swap")}
                for m in ("edge_corr", "psnr", "ssim")
            },
            "sharpness": {"model": sc.mean("tf/sharpness/model"), "ceiling": sc.mean("tf/sharpness/ceiling")},
        },
        status_bar={"psnr": _table(sc, "tf/", "bar_psnr")},
        action_swap={
            "edge_corr_delta": sc.mean("tf/edge_corr/model") - sc.mean("tf/edge_corr/swap"),
            "psnr_delta_db": sc.mean("tf/psnr/model") - sc.mean("tf/psnr/swap"),
        },
        floor_edge_corr=float(sc.mean("tf/edge_corr/floor")),
    )


@dataclass
class Rollouts:
    view: dict  # report.json's view.rollout
    status_bar: dict  # status_bar.rollout
    probe_errors: dict  # {horizon: {who: (position errors, angle errors)}}, empty with no probe
    video: list[np.ndarray]  # real | dream, side by side, of the first rollouts
    sheet: dict  # {horizon: (real, dream, scene edge corr)} of the first rollout


def rollouts(args: EvalArgs, run: Run, probe: PlaceProbe | None) -> Rollouts:
    """The dream feeds on itself under the recorded actions, from real context."""
    held, dreamer, k = run.held, run.dreamer, run.ck.dit_cfg.context_len
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
    return Rollouts(
        view={
            "rollouts": len(starts_r),
            "horizon": horizon,
            **{m: {str(h): _table(rsc, f"{h}/", m) for h in hs} for m in ("edge_corr", "psnr", "ssim")},
            "edge_corr_curve": [float(x) for x in np.stack(rsc.values["curve"]).mean(1)],
        },
        status_bar={"psnr": {str(h): _table(rsc, f"{h}/", "bar_psnr") for h in hs}},
        probe_errors=probe_err,
        video=video,
        sheet=sheet,
    )


def motion_one_step(args: EvalArgs, run: Run) -> dict:
    """Control by image motion one step ahead: needs no engine (control.py)."""
    if not args.motion_starts:
        return {"skipped": "--motion-starts 0"}
    windows = run.held.windows
    pick = torch.linspace(0, len(windows) - 1, min(args.motion_starts, len(windows))).round().long().unique()
    return evaluate_motion_one_step(
        run.dreamer, run.held, windows.targets[pick], run.ds.action_spec, args.seed + 30_000, args.batch
    )


def _no_engine(args: EvalArgs) -> dict:
    return {
        "skipped": "--no-engine" if not args.engine else "no engine (the dreamdoom command gives wm eval one)"
    }


def open_engines(held: HeldOut, engine_factory: EngineFactory) -> dict[int, ReplayEngine]:
    """A replay engine for each held-out episode the factory can replay, by episode."""
    engines = {}
    for e, (meta, manifest) in enumerate(zip(held.metas, held.manifests)):
        engine = engine_factory(meta, manifest)
        if engine is not None:
            engines[e] = engine
    return engines


def engine_control(
    args: EvalArgs, run: Run, probe: PlaceProbe | None, engines: dict[int, ReplayEngine]
) -> dict:
    """Control against the real engine: the dream and the engine fed the recorded and the counterfactual
    actions from the same start."""
    return _guarded(
        "control",
        lambda: evaluate_control(
            run.dreamer,
            run.held,
            probe,
            engines,
            run.ds.action_spec,
            args.control_cases,
            args.seed,
            motion=True,
        ),
    )


def long_run_stability(args: EvalArgs, run: Run, engines: dict[int, ReplayEngine], floor: float) -> dict:
    """The long dream run beside the engine, judged against the floor (an unrelated real frame)."""
    if not args.stability_frames:
        return {"skipped": "--stability-frames 0"}
    return _guarded(
        "stability",
        lambda: evaluate_stability(
            run.dreamer,
            run.held,
            engines,
            run.ds.action_spec,
            args.stability_frames,
            floor,
            run.fps,
            args.seed + 20_000,
            hold_meter(run.ck, run.held, run.dreamer),
        ),
    )


def write_report(
    args: EvalArgs,
    run: Run,
    tf: TeacherForced,
    ro: Rollouts,
    probe_info: dict,
    one_step: dict,
    control: dict,
    stability: dict,
    clock: _Clock,
    sheet_out: dict | None = None,
) -> dict:
    """The blocks as report.json, with the side-by-side video and the contact sheet beside it."""
    samples = stability.pop("_samples", [])
    turn_rows = control.pop("_turn_rows", [])
    over_cases = control.pop("motion", None) or {"skipped": control.get("skipped") or control.get("failed")}
    control["motion"] = {"one_step": one_step, "cases": over_cases}

    frames = run.held.frames
    video_path = run.out / ("side_by_side.gif" if video_backend() == "gif" else "side_by_side.mp4")
    write_video(ro.video, video_path.with_suffix(".mp4"), fps=run.fps, scale=2)  # a .gif where no mp4 encoder
    sheet_path = run.out / "contact_sheet.png"
    report = {
        "checkpoint": str(args.ckpt),
        "step": run.ck.step,
        "data": str(args.data),
        "sampling_steps": run.steps,
        "heldout_episodes": len(run.held.starts),
        "heldout_frames": int(len(frames)),
        "view": {
            "rows": [0, view(frames[:1]).shape[1]],
            "weapon_box": _weapon_box(*frames.shape[1:3]),
            "teacher_forced": tf.view,
            "rollout": ro.view,
        },
        "status_bar": {
            "rows": [int(frames.shape[1] - status_bar(frames[:1]).shape[1]), int(frames.shape[1])],
            "teacher_forced": tf.status_bar,
            "rollout": ro.status_bar,
        },
        "action_swap": tf.action_swap,
        "probe": _probe_block(probe_info, ro.probe_errors),
        "control": control,
        "stability": stability,
        "video": str(video_path),
        "contact_sheet": str(sheet_path),
        "timing_s": clock.timing,
    }
    write_contact_sheet(
        report, ro.sheet, samples, sheet_path, [h for h in SHEET_HORIZONS if h in ro.sheet], turns=turn_rows
    )
    if sheet_out is not None:
        sheet_out.update(ro.sheet)
    report["seconds"] = round(time.time() - clock.start, 1)
    write_atomic(
        run.out / "report.json", json.dumps(report, indent=2).encode()
    )  # last: marks the report whole
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
