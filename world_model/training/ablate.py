"""`dreamdoom wm ablate`: DiT recipes side by side at one budget, judged by `wm eval`'s yardstick.

Every variant trains the same minutes on the same latent cache (encoded once by the same autoencoder),
from the same seed, then is evaluated on the same held-out episodes with the same probe and the same
engine cases. One table (table.md, table.json) and one picture (sheet.png: real | each variant's dream at
horizons 1, 4, 16, 64 of the same rollout) come out, rewritten after each variant so that an interrupted
run keeps what it finished; run again, it skips the variants whose evaluation is already written. With
--curve-every, each variant keeps its model every so many steps, and the learning curves of all of them
(world_model/evaluation/curve.py: one-step structure and turn response against samples) are drawn at the end.

A variant is NAME or NAME:SECTION.FIELD=VALUE,SECTION.FIELD=VALUE, the items being `wm train --set`'s.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.cli_args import MAX_SEED, UsageError, arg
from data.durable import write_atomic, write_with
from world_model.model.config import PRESETS

SHEET_HORIZONS = (1, 4, 16, 64)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass
class AblateArgs:
    data: str = arg(help="training dataset folder")
    ae: str = arg(help="autoencoder folder every variant trains on (from train-ae)")
    heldout: str = arg(help="dataset recorded apart from --data: every episode of it is evaluated")
    out: str = arg(help="ablation folder: one run folder per variant, table.md, table.json, sheet.png")
    variant: tuple[str, ...] = arg(
        help="NAME or NAME:SECTION.FIELD=VALUE,... (wm train --set items), "
        "e.g. base x0:diffusion.prediction=x0",
        nargs="+",
        metavar="VARIANT",
    )
    minutes: float = arg(5.0, "training minutes of each variant", gt=0)
    preset: str = arg("cpu4x", "the recipe the variants change", choices=sorted(PRESETS))
    cooldown: float = arg(0.2, "final fraction of each run over which the lr decays to 0", ge=0, le=1)
    probe_data: str | None = arg(None, "dataset that trains the place probe (default: --data)")
    stability_frames: int = arg(2000, "frames of each variant's long dream run beside the engine", ge=0)
    control_cases: int = arg(16, "16-step control cases against the engine", ge=1)
    transitions: int = arg(256, "teacher-forced transitions of each evaluation", ge=1)
    rollouts: int = arg(8, "autoregressive rollouts of each evaluation", ge=1)
    horizon: int = arg(96, "rollout length in frames", ge=1)
    probe_steps: int | None = arg(None, "training steps of the place probe (default: its own)", ge=1)
    curve_every: int | None = arg(
        None,
        "keep each variant's model every this many steps and draw the learning curves of all of them "
        "(curve.md, curve.json, curve.png: wm curve's one-step structure and turn response)",
        ge=1,
    )
    curve_starts: int = arg(64, "real held-out starts each point of the curves is judged from", ge=1)
    device: str | None = arg(None, "cpu or cuda (default: cuda when available)")
    seed: int = arg(0, "seed of initialisation, batches and sampling", ge=0, le=MAX_SEED)


def parse_variants(items: tuple[str, ...], preset: str, ae: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(name, overrides)], each override checked now against the preset on autoencoder `ae`'s latent grid,
    before any training."""
    from world_model.model.checkpoint import recipe_for

    out, seen = [], set()
    for item in items:
        name, _, rest = item.partition(":")
        if not NAME.fullmatch(name):
            raise UsageError(f"--variant {item!r}: a name of letters, digits, '_', '.', '+', '-' comes first")
        if name in seen:
            raise UsageError(f"--variant {item!r}: the name {name!r} is given twice")
        seen.add(name)
        overrides = tuple(p.strip() for p in rest.split(",") if p.strip())
        recipe_for(preset, overrides, ae, option=f"--variant {name}:")
        out.append((name, overrides))
    return out


def row_of(name: str, overrides: tuple[str, ...], report: dict, trained: dict, speed: dict) -> dict:
    """The table's figures of one variant, from its eval report, training summary and play bench."""
    tf = report["view"]["teacher_forced"]["edge_corr"]
    ro = report["view"]["rollout"]["edge_corr"]
    probe = report.get("probe", {}).get("position_error", {})
    control, stab = report.get("control", {}), report.get("stability", {})
    turn = control.get("turn_sign", {})
    motion = control.get("motion", {})
    one, cases = motion.get("one_step", {}), motion.get("cases", {})

    def at(h: int, who: str = "model") -> float | None:
        return ro.get(str(h), {}).get(who)

    return {
        "variant": name,
        "recipe": list(overrides),
        "train_steps": trained.get("step"),
        "train_samples": trained.get("samples"),
        "samples_per_s": trained.get("samples_per_s"),
        "parameters": trained.get("parameters"),
        "tf_edge_corr": tf["model"],
        "tf_copy_last": tf["copy_last"],
        "tf_floor": tf.get("floor"),
        "tf_ceiling": tf["ceiling"],
        "tf_opposite_action": tf.get("opposite_action"),
        "rollout_edge_corr": {str(h): at(h) for h in SHEET_HORIZONS},
        "rollout_floor": {str(h): at(h, "floor") for h in SHEET_HORIZONS},
        "probe_position_error_h16": probe.get("16", {}).get("model"),
        "probe_position_error_h16_real": probe.get("16", {}).get("real"),
        "action_response": control.get("action_response"),
        "turn_sign": turn.get("model"),
        "turn_sign_engine": turn.get("engine_frames"),
        "motion_turn_gain": one.get("turn_gain"),
        "motion_right_way": one.get("right_way_share"),
        "motion_cases_turn_gain": cases.get("turn_gain"),
        "motion_cases_right_way": cases.get("right_way_share"),
        "stability_first_lost_frame": stab.get("first_lost_frame"),
        "stability_share_above_floor": stab.get("share_above_floor"),
        "stability_mean_edge_corr": stab.get("mean_edge_corr"),
        "play_ms": speed.get("ms"),
        "play_fps": speed.get("fps"),
        "sampling_steps": report.get("sampling_steps"),
    }


def _f(x, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


def _minus(a, b):
    return None if a is None or b is None else a - b


def format_table(rows: list[dict], minutes: float, preset: str) -> str:
    """The ablation as a markdown table: structure, place, control, stability, cost."""
    head = (
        "| variant | recipe | samples | scene edge corr 1 step (copy / floor / ceiling) "
        "| rollout h=4 / 16 / 64 "
        "| probe err h=16 (real) | 1 step, opposite input (change) | action response "
        "| turn sign (engine) | turn by motion, 1 step: gain, right way | over 16 steps "
        "| stability: lost at frame, "
        "share above floor | play ms |"
    )
    lines = [
        f"Each variant trained {minutes:g} min from the `{preset}` preset plus its recipe; figures from "
        "`wm eval` on every held-out episode.",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for r in rows:
        ro = r["rollout_edge_corr"]
        lines.append(
            f"| {r['variant']} | {', '.join(r['recipe']) or '(preset)'} | {_f(r['train_samples'], ',')} "
            f"| **{_f(r['tf_edge_corr'])}** ({_f(r['tf_copy_last'])} / {_f(r['tf_floor'])} / "
            f"{_f(r['tf_ceiling'])}) | {_f(ro.get('4'))} / {_f(ro.get('16'))} / {_f(ro.get('64'))} "
            f"| {_f(r['probe_position_error_h16'], '.0f')} ({_f(r['probe_position_error_h16_real'], '.0f')}) "
            f"| {_f(r['tf_opposite_action'])} "
            f"({_f(_minus(r['tf_edge_corr'], r['tf_opposite_action']), '+.3f')}) "
            f"| {_f(r['action_response'], '+.4f')} "
            f"| {_f(r['turn_sign'], '.0%')} ({_f(r['turn_sign_engine'], '.0%')}) "
            f"| {_f(r.get('motion_turn_gain'), '.2f')}, {_f(r.get('motion_right_way'), '.0%')} "
            f"| {_f(r.get('motion_cases_turn_gain'), '.2f')}, {_f(r.get('motion_cases_right_way'), '.0%')} "
            f"| {_f(r['stability_first_lost_frame'], 'd')}, {_f(r['stability_share_above_floor'], '.0%')} "
            f"| {_f(r['play_ms'], '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def write_sheet(frames: dict[str, dict], path: Path) -> None:
    """Real frames of one rollout at SHEET_HORIZONS on the first row, then each variant's dream of it."""
    from PIL import Image, ImageDraw

    names = [n for n in frames if frames[n]]
    if not names:
        return
    hs = [h for h in SHEET_HORIZONS if all(h in frames[n] for n in names)]
    if not hs:
        return
    h0, w0 = frames[names[0]][hs[0]][0].shape[:2]
    label = 14
    canvas = Image.new("RGB", (len(hs) * (w0 + 2), (len(names) + 1) * (h0 + label)), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    rows = [("real", {h: frames[names[0]][h][0] for h in hs}, {})] + [
        (n, {h: frames[n][h][1] for h in hs}, {h: frames[n][h][2] for h in hs}) for n in names
    ]
    for r, (name, pics, scores) in enumerate(rows):
        y = r * (h0 + label)
        for c, h in enumerate(hs):
            canvas.paste(Image.fromarray(pics[h]), (c * (w0 + 2), y + label))
            text = (f"{name} " if c == 0 else "") + f"h={h}" + (f" ec {scores[h]:.2f}" if h in scores else "")
            draw.text((c * (w0 + 2) + 2, y + 1), text, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda tmp: canvas.save(tmp, optimize=True))


def save_sheet_frames(sheet: dict, path: Path) -> None:
    """A variant's (real, dream, edge corr) at each horizon, so a later run can redraw sheet.png."""
    arrays = {}
    for h, (real, gen, score) in sheet.items():
        arrays[f"real_{h}"], arrays[f"dream_{h}"], arrays[f"score_{h}"] = real, gen, np.float64(score)
    write_with(path, lambda tmp: np.savez_compressed(tmp, **arrays))


def load_sheet_frames(path: Path) -> dict:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as z:
        hs = sorted(int(k.split("_")[1]) for k in z.files if k.startswith("real_"))
        return {h: (z[f"real_{h}"], z[f"dream_{h}"], float(z[f"score_{h}"])) for h in hs}


def write_results(out: Path, rows: list[dict], frames: dict[str, dict], a: AblateArgs) -> None:
    """table.json, table.md and sheet.png of the variants so far, each whole or not at all."""
    write_atomic(out / "table.json", json.dumps(rows, indent=2).encode())
    write_atomic(out / "table.md", format_table(rows, a.minutes, a.preset).encode())
    write_sheet(frames, out / "sheet.png")


def ablate(a: AblateArgs, engine_factory=None) -> list[dict]:
    from world_model.evaluation.bench import bench
    from world_model.evaluation.evaluate import EvalArgs, evaluate
    from world_model.training.train import UNBOUNDED_STEPS, TrainArgs, train

    variants = parse_variants(a.variant, a.preset, a.ae)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "latents.safetensors"  # one encoding of the data for every variant
    rows, frames = [], {}
    t_all = time.time()
    for i, (name, overrides) in enumerate(variants, 1):
        run = out / name
        done = run / "ablate.json"
        print(f"\n=== variant {i}/{len(variants)}: {name} {' '.join(overrides) or '(preset)'}", flush=True)
        if done.exists():  # finished in an earlier run of the same folder
            saved = json.loads(done.read_text())
            if saved.get("recipe") == list(overrides) and saved.get("minutes") == a.minutes:
                rows.append(saved["row"])
                frames[name] = load_sheet_frames(run / "sheet_frames.npz")
                print(f"{done}: already evaluated, kept")
                continue
        summary = train(
            TrainArgs(
                data=a.data,
                ae=a.ae,
                out=str(run),
                preset=a.preset,
                overwrite=True,
                steps=UNBOUNDED_STEPS,  # the minutes end every run
                minutes=a.minutes,
                cooldown=a.cooldown,
                set=overrides,
                cache=str(cache),
                keep_every=a.curve_every,
                device=a.device,
                seed=a.seed,
            )
        )
        trained = {k: summary[k] for k in ("step", "samples", "samples_per_s", "seconds")}
        trained["parameters"] = sum(p.numel() for p in summary["model"].parameters())
        ckpt = str(run / "ckpt")
        sheet: dict = {}
        engines = engine_factory() if engine_factory else None
        try:
            report = evaluate(
                EvalArgs(
                    ckpt=ckpt,
                    data=a.heldout,
                    out=str(run / "eval"),
                    all_episodes=True,
                    probe_data=a.probe_data or a.data,
                    stability_frames=a.stability_frames,
                    control_cases=a.control_cases,
                    transitions=a.transitions,
                    rollouts=a.rollouts,
                    horizon=a.horizon,
                    probe_steps=a.probe_steps,
                    device=a.device,
                    seed=a.seed,
                ),
                engine_factory=engines,
                sheet_out=sheet,
            )
        finally:
            if engines is not None:
                engines.close()
        frames[name] = sheet
        save_sheet_frames(sheet, run / "sheet_frames.npz")
        played = bench(ckpt, steps=[report["sampling_steps"]], device=a.device or "cpu", frames=50)
        s = played["settings"][-1]
        speed = {"ms": s["median_ms"], "fps": s["fps"]}
        row = row_of(name, overrides, report, trained, speed)
        rows.append(row)
        record = {"recipe": list(overrides), "minutes": a.minutes, "row": row}
        write_atomic(done, json.dumps(record, indent=2).encode())
        write_results(out, rows, frames, a)  # after every variant: an interrupted run keeps what it finished
    write_results(out, rows, frames, a)  # also when every variant was finished before
    if a.curve_every:
        from world_model.evaluation.curve import run_curve, write_curve

        runs = {name: out / name for name, _ in variants}
        engines = engine_factory() if engine_factory else None
        try:
            # each point's stability run as long as the variants' own, at most the curve's usual 500 frames
            curve = run_curve(
                runs,
                a.heldout,
                a.curve_starts,
                a.seed,
                a.device,
                stability_frames=min(500, a.stability_frames),
                engine_factory=engines,
            )
        finally:
            if engines is not None:
                engines.close()
        write_curve(curve, out)
    print(f"\n{len(variants)} variants in {time.time() - t_all:.0f} s; {out / 'table.md'}\n")
    print(format_table(rows, a.minutes, a.preset))
    return rows
