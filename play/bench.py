"""Benchmark of the full play step: backend step (model + decode) overlapped with drawing and presenting.

For each number of denoising steps: reset, warm up, then time `frames` iterations of the window's own
loop body (submit, draw + HUD + flip, collect) with no pacing. Frames/s is frames over wall time;
latencies are per frame (median, p99). A model on CUDA is timed both eagerly and replayed as CUDA graphs
(world_model/model/capture.py), side by side. CPU ms per frame is the process's CPU time (all threads) over
the timed frames: on a machine shared with other work it says what a frame costs when wall time cannot.
"""

from __future__ import annotations

import time

import numpy as np
import pygame
from tqdm import tqdm

from play.display import Display
from play.session import PlaySession
from play.window import hud_lines
from world_model.evaluation.bench import device_name

# A loop of varied actions (forward, strafe, turning both ways, fire); speed does not depend on them.
BENCH_ACTIONS = ((1, 0, 5, 0, 0), (1, 1, 3, 0, 0), (0, 2, 1, 1, 0), (2, 0, 3, 0, 1), (1, 0, 0, 0, 0))


def _stats(ms: np.ndarray) -> dict:
    return {"median": round(float(np.median(ms)), 3), "p99": round(float(np.percentile(ms, 99)), 3)}


def bench_play(
    session: PlaySession,
    steps: list[int],
    frames: int = 100,
    warmup: int = 10,
    scale: int = 4,
    overlap: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Frames/s and per-frame latency of the play loop at each denoising step count."""
    pygame.display.init()
    pygame.font.init()
    display = Display(session.backend.resolution, scale)
    screen = pygame.display.set_mode(display.canvas_size(session.mirror))
    actions = [np.array(a, np.int64) for a in BENCH_ACTIONS]
    results = []
    backend = session.backend
    # A model that can replay CUDA graphs is timed eagerly too, side by side; the real engine has neither.
    modes = ([False, True] if backend.captured else [False]) if hasattr(backend, "captured") else [None]
    for n_steps, captured in (
        (n, c) for n in (steps if session.steps is not None else [None]) for c in modes
    ):
        if n_steps is not None:
            session.set_steps(n_steps)
        if captured is not None:
            backend.captured = captured
        session.reset()
        frame_ms, step_ms, draw_ms, dit_ms, decode_ms = (np.zeros(frames) for _ in range(5))
        mode = None if captured is None else ("captured" if captured else "eager")
        bar = tqdm(
            total=warmup + frames,
            desc=f"bench steps={n_steps} {mode or ''}",
            unit="frame",
            disable=not progress,
        )
        start = cpu_start = 0.0
        for i in range(warmup + frames):
            t0 = time.perf_counter()
            if i == warmup:
                start, cpu_start = t0, time.process_time()
            session.submit(actions[i % len(actions)])
            if not overlap:
                session.collect()
            t1 = time.perf_counter()
            display.draw(screen, session.frame, session.mirror_frame, hud_lines(session, 0.0, None))
            pygame.display.flip()
            pygame.event.pump()
            t2 = time.perf_counter()
            session.collect()
            j = i - warmup
            if j >= 0:
                frame_ms[j], draw_ms[j], step_ms[j] = (
                    1000 * (time.perf_counter() - t0),
                    1000 * (t2 - t1),
                    session.last_step_ms,
                )
                dit_ms[j], decode_ms[j] = (
                    session.timing.get("dit_ms", np.nan),
                    session.timing.get("decode_ms", np.nan),
                )
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - start
        cpu_ms = 1000 * (time.process_time() - cpu_start) / frames  # all threads; unaffected by other load
        row = {
            "steps": n_steps,
            "mode": mode,
            "frames": frames,
            "fps": round(frames / seconds, 2),
            "overlap": overlap,
            "cpu_ms_per_frame": round(cpu_ms, 3),
            "frame_ms": _stats(frame_ms),
            "step_ms": _stats(step_ms),
            "draw_ms": _stats(draw_ms),
        }
        if not np.isnan(dit_ms).all():
            row["dit_ms"], row["decode_ms"] = _stats(dit_ms), _stats(decode_ms)
        results.append(row)
    pygame.display.quit()
    return results


def format_bench(results: list[dict], device: str, label: str) -> str:
    lines = [
        f"play loop bench: {label} on {device} ({device_name(device)})",
        f"{'steps':>5} {'mode':>8} {'frames/s':>9} {'frame ms (med/p99)':>19} {'step ms (med/p99)':>18} "
        f"{'dit ms':>7} {'decode ms':>9} {'draw ms':>8} {'CPU ms/frame':>12}",
    ]
    for r in results:
        dit = f"{r['dit_ms']['median']:7.1f}" if "dit_ms" in r else f"{'-':>7}"
        dec = f"{r['decode_ms']['median']:9.1f}" if "decode_ms" in r else f"{'-':>9}"
        lines.append(
            f"{r['steps'] if r['steps'] is not None else '-':>5} {r['mode'] or '-':>8} {r['fps']:9.1f} "
            f"{r['frame_ms']['median']:9.1f} /{r['frame_ms']['p99']:7.1f} "
            f"{r['step_ms']['median']:8.1f} /{r['step_ms']['p99']:7.1f} {dit} {dec} "
            f"{r['draw_ms']['median']:8.2f} {r['cpu_ms_per_frame']:12.1f}"
        )
    return "\n".join(lines)
