"""wm eval's report for people: a table led by the view's structure, and contact sheets with numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.durable import write_with
from data.video import upscale

COLUMNS = ("model", "copy_last", "floor", "ceiling", "blur")


def _row(label: str, d: dict, fmt: str) -> str:
    cells = "".join(
        f"{format(d[c], fmt):>11}" if c in d and np.isfinite(d[c]) else f"{'':>11}" for c in COLUMNS
    )
    return f"  {label:26}{cells}"


def format_report(report: dict) -> str:
    """The report as a small table: every figure beside copy-last, floor, ceiling and blur."""
    v, bar = report["view"], report["status_bar"]
    tf, ro = v["teacher_forced"], v["rollout"]
    r0, r1 = v["rows"]
    lines = [
        f"{report['checkpoint']} (step {report['step']}) on {report['heldout_episodes']} held-out episodes "
        f"({report['heldout_frames']:,} frames), {report['sampling_steps']} sampling steps, "
        f"{tf['transitions']} transitions, {ro['rollouts']} rollouts",
        f"scene: the 3-D view (rows {r0}-{r1 - 1}) without the weapon sprite; floor: a real frame of another "
        "episode; ceiling: the autoencoder",
        f"  {'':26}" + "".join(f"{c.replace('_', ' '):>11}" for c in COLUMNS),
    ]
    for metric, title, fmt in (
        ("edge_corr", "edge correlation", ".3f"),
        ("psnr", "PSNR (dB)", ".2f"),
        ("ssim", "SSIM", ".3f"),
    ):
        lines.append(f"scene {title}")
        lines.append(_row("teacher-forced", tf[metric], fmt))
        lines += [_row(f"rollout h={h}", d, fmt) for h, d in ro[metric].items()]
    lines.append("status bar PSNR (dB)")
    lines.append(_row("teacher-forced", bar["teacher_forced"]["psnr"], ".2f"))
    last = list(bar["rollout"]["psnr"])[-1]
    lines.append(_row(f"rollout h={last}", bar["rollout"]["psnr"][last], ".2f"))
    sw = report["action_swap"]
    lines.append(
        f"opposite current action, teacher-forced: edge correlation {tf['edge_corr']['opposite_action']:.3f} "
        f"(delta {sw['edge_corr_delta']:+.3f}), PSNR delta {sw['psnr_delta_db']:+.2f} dB; "
        f"sharpness {tf['sharpness']['model']:.2f} (ceiling {tf['sharpness']['ceiling']:.2f})"
    )
    lines += _probe_lines(report["probe"]) + _control_lines(report["control"], report["stability"])
    timing = ", ".join(f"{k} {s:.0f} s" for k, s in report.get("timing_s", {}).items())
    lines.append(f"took {report.get('seconds', 0):.0f} s ({timing})")
    lines.append(
        f"report: {Path(report['video']).parent / 'report.json'}; sheet: {report['contact_sheet']}; "
        f"video: {report['video']}"
    )
    return "\n".join(lines)


def _probe_lines(p: dict) -> list[str]:
    if "skipped" in p:
        return [f"place probe: skipped ({p['skipped']})"]
    lines = ["place probe error (real: the probe on the real frames, its own floor)"]
    lines.append(f"  {'':26}{'model':>11}{'real':>11}{'copy last':>11}")
    for h in p["position_error"]:
        pe, ae = p["position_error"][h], p["angle_error_deg"][h]
        lines.append(
            f"  {'h=' + h:26}"
            + "".join(f"{pe[w]:>6.0f} /{ae[w]:>3.0f}" for w in ("model", "real", "copy_last"))
        )
    lines.append("  (map units / degrees)")
    return lines


def _control_lines(c: dict, s: dict) -> list[str]:
    if "skipped" in c or "failed" in c:
        lines = [f"control: {'skipped' if 'skipped' in c else 'failed'} ({c.get('skipped') or c['failed']})"]
    else:
        f = c["counterfactual_fidelity"]
        lines = [
            f"control over {c['cases']} cases of {c['steps']} steps "
            f"(engine replay exact: {c['replay_exact']:.0%}): action response {c['action_response']:+.3f} "
            f"(edge corr fed recorded {c['edge_corr_fed_recorded']:.3f}, "
            f"fed counterfactual {c['edge_corr_fed_counterfactual']:.3f})",
            f"  counterfactual fidelity {f['model']:.3f} (engine's recorded path {f['engine_recorded']:.3f}, "
            f"copy last {f['copy_last']:.3f})",
        ]
        ts = c.get("turn_sign")
        if ts and ts.get("cases"):
            lines.append(
                f"  turn sign agrees with the engine in {ts['model']:.0%} of {ts['cases']} turns "
                f"(the probe on the engine's frames: {ts['engine_frames']:.0%}"
                + (
                    ""
                    if ts.get("reads_this_world", True)
                    else "; it cannot read this world's angle, so this "
                    "says nothing of the dream: see control by image motion"
                )
                + ")"
            )
    lines += _motion_lines(c.get("motion"))
    if "skipped" in s or "failed" in s:
        lines.append(
            f"stability: {'skipped' if 'skipped' in s else 'failed'} ({s.get('skipped') or s['failed']})"
        )
    else:
        lost = (
            "never at the floor for a second"
            if s["first_lost_frame"] is None
            else f"at the floor from frame {s['first_lost_frame']} ({s['first_lost_second']:.1f} s), "
            + (
                f"a whole second back above it later; {s['later_seconds_above_floor']:.0%} of later seconds"
                if s["recovered"]
                else "never a whole second back above it"
            )
        )
        lines.append(
            f"stability over {s['frames']} frames ({s['seconds_of_play']:.0f} s): mean edge corr "
            f"{s['mean_edge_corr']:.3f} (floor {s['floor']:.3f}), "
            f"{s['share_above_floor']:.0%} above the floor; {lost}"
        )
        lines += _hold_lines(s.get("hold"))
    return lines


def _hold_lines(h: dict | None) -> list[str]:
    """The stability run judged with no reference (world_model/evaluation/hold.py), with its worst seconds."""
    if not h:
        return []
    first = h["first_second_not_held"]
    (s_lo, s_hi), (g_lo, g_hi) = h["limits"]["sharpness"], h["limits"]["grid_edges"]
    return [
        f"  hold with no reference: {h['share_of_seconds_held']:.0%} of seconds a picture of the world"
        + ("" if first is None else f", first not at second {first}")
        + f" (sharpness {min(h['sharpness_per_s']):.2f}-{max(h['sharpness_per_s']):.2f} of real frames', "
        f"within {s_lo:g}-{s_hi:g}; token-grid edges {min(h['grid_edges_per_s']):.2f}-"
        f"{max(h['grid_edges_per_s']):.2f}, within {g_lo:g}-{g_hi:g}; latents outside the range of "
        f"{h['latent_range_from']}: up to {max(h['outside_range_per_s']):.2%}, at most "
        f"{h['limits']['outside_range']:.1%})"
    ]


def _x(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _motion_figures(m: dict) -> str:
    r = m["recorded"]
    return (
        f"turn gain {_x(m['turn_gain'], '.2f')}, the right way from {_x(m['right_way_share'], '.0%')} of "
        f"{m['judged']} starts; under the recorded actions the dream's motion correlates "
        f"{_x(r['correlation'], '+.2f')} with the engine's and goes its way in "
        f"{_x(r['same_way_share'], '.0%')} of {r['turning']} steps where the engine's view moved"
    )


def _motion_lines(m: dict | None) -> list[str]:
    """Control by image motion (control.py): one step ahead, and over the control cases."""
    if not m:
        return []
    lines = [
        "control by image motion (the view's sideways shift in px, + as when turning right; gain 1: "
        "turns as far as the engine, 0: ignores the turn)"
    ]
    one = m.get("one_step", {})
    if "skipped" in one:
        lines.append(f"  one step: skipped ({one['skipped']})")
    else:
        e = one["engine_fast_turns"]
        lines.append(
            f"  one step from {one['starts']} real starts, forced fast right / left: dream "
            f"{one['dream_right_px']:+.1f} / {one['dream_left_px']:+.1f}; engine {_x(e['right'], '+.1f')} / "
            f"{_x(e['left'], '+.1f')} (its fast turns in this play, {e['right_frames']} / {e['left_frames']} "
            f"frames, read the right way {_x(e['estimator_right_way'], '.0%')})"
        )
        lines.append(f"    {_motion_figures(one)}")
    cases = m.get("cases", {})
    if "skipped" in cases or not cases:
        lines.append(f"  over the control cases: skipped ({cases.get('skipped')})")
    else:
        lines.append(
            f"  over {cases['cases']} cases of {cases['steps']} steps, forced fast right / left: dream "
            f"{cases['dream_right_px']:+.0f} / {cases['dream_left_px']:+.0f}; engine "
            f"{cases['engine_right_px']:+.0f} / {cases['engine_left_px']:+.0f} "
            f"({cases.get('seconds', 0):.0f} s of the control's time)"
        )
        lines.append(f"    {_motion_figures(cases)}")
    return lines


def _label(draw, xy: tuple[int, int], text: str) -> None:
    draw.text(xy, text, fill=(255, 255, 255))


def write_contact_sheet(
    report: dict,
    sheet: dict,
    samples: list,
    path: Path,
    horizons: list[int],
    scale: int = 2,
    turns: list | tuple = (),
) -> None:
    """Rows of real | dream at the given rollout horizons with their figures under each, then `turns` (engine,
    dream, label: a control case under held fast turns), then the stability run's engine | dream at a few
    moments."""
    from PIL import Image, ImageDraw

    rows: list[tuple[np.ndarray, np.ndarray, str]] = []
    ec = report["view"]["rollout"]["edge_corr"]
    ps = report["view"]["rollout"]["psnr"]
    for h in horizons:
        real, gen, own = sheet[h]
        e = ec[str(h)]
        rows.append(
            (
                real,
                gen,
                f"h={h}: edge corr {own:.2f} here, mean {e['model']:.2f} "
                f"(floor {e.get('floor', float('nan')):.2f}, ceiling {e['ceiling']:.2f}); "
                f"view PSNR {ps[str(h)]['model']:.1f} dB",
            )
        )
    for real, gen, text in turns:
        rows.append((real, gen, text))
    for t, real, gen in samples:
        rows.append((real, gen, f"stability, frame {t}: engine | dream"))
    if not rows:
        return
    h, w = rows[0][0].shape[:2]
    th = 14
    canvas = Image.new("RGB", (2 * w * scale + 4, len(rows) * (h * scale + th + 4) + th), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    _label(draw, (2, 1), "real (left) | dream (right)")
    y = th
    for real, gen, text in rows:
        canvas.paste(Image.fromarray(upscale(real, scale)), (0, y))
        canvas.paste(Image.fromarray(upscale(gen, scale)), (w * scale + 4, y))
        _label(draw, (2, y + h * scale + 1), text)
        y += h * scale + th + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda tmp: canvas.save(tmp, optimize=True))
