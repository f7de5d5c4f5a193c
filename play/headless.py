"""Headless play: a scripted input file drives the game for N frames, written to a video.

Each frame is composed exactly as the window would show it (scale, filter, mirror, optional HUD) on
an offscreen surface, with the backend step for frame n+1 overlapping the drawing and encoding of
frame n. Reports frame time and memory at the start and the end of the run.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygame
from tqdm import tqdm

from data.video import write_video
from play.display import Display
from play.script import Command, per_frame
from play.session import PlaySession
from play.window import TICS_PER_SECOND, hud_lines

STATS_WINDOW = 500  # frames at the start and the end whose frame time and memory are reported
HUD_FPS_FRAMES = 20  # the HUD's frames/s in a video: over the frames just before


def rss_mb() -> float:
    """Resident memory of this process now (MiB); the peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class HeadlessConfig:
    frames: int  # frames to play and write
    out: str  # video file (.mp4)
    scale: int = 2
    filter: str = "nearest"
    hud: bool = False  # draw the HUD into the video
    progress: bool = True


def run_headless(session: PlaySession, commands: list[Command], cfg: HeadlessConfig) -> dict:
    """Play `cfg.frames` frames of the script into `cfg.out`; returns timing and memory figures."""
    if cfg.frames < 1:
        raise ValueError(f"--frames {cfg.frames}: must be at least 1")
    pygame.font.init()
    display = Display(session.backend.resolution, cfg.scale, cfg.filter)
    canvas = pygame.Surface(display.canvas_size(session.mirror), depth=32)
    w, h = canvas.get_size()
    picture = np.zeros((h, w, 3), np.uint8)  # the composed frame handed to the encoder, reused
    frame_ms = np.zeros(cfg.frames)
    # Process CPU time (all threads; the encoder is a separate process) after each frame: what a frame
    # costs, whatever else the machine is doing.
    cpu_at = np.zeros(cfg.frames + 1)
    step_ms = np.zeros(cfg.frames)
    rss, load = {}, {}
    fps_target = TICS_PER_SECOND / session.backend.frame_skip

    def frames() -> Iterator[np.ndarray]:
        bar = tqdm(total=cfg.frames, unit="frame", disable=not cfg.progress, desc="play")
        last = time.perf_counter()
        cpu_at[0] = time.process_time()
        for n, (pending, action) in enumerate(per_frame(commands, cfg.frames)):
            for c in pending:
                if c.kind == "reset":
                    session.reset()
                else:
                    session.set_steps(c.value)
            session.submit(action)  # frame n+1 computes while frame n is drawn and encoded
            hud = None
            if cfg.hud:
                recent = frame_ms[max(0, n - HUD_FPS_FRAMES) : n]
                hud = hud_lines(session, 1000.0 / np.median(recent) if n else 0.0, None)
            display.draw(canvas, session.frame, session.mirror_frame, hud)
            view = pygame.surfarray.pixels3d(canvas)  # (W, H, 3) view of the canvas
            np.copyto(picture, view.swapaxes(0, 1))
            del view  # unlocks the surface
            yield picture
            session.collect()
            now = time.perf_counter()
            frame_ms[n], step_ms[n], last = 1000 * (now - last), session.last_step_ms, now
            cpu_at[n + 1] = time.process_time()
            if n + 1 == min(STATS_WINDOW, cfg.frames):
                rss["start"], load["start"] = rss_mb(), round(os.getloadavg()[0], 2)
            bar.update(1)
        rss["end"] = rss_mb()
        bar.close()

    t0 = time.perf_counter()
    n = write_video(frames(), cfg.out, fps=fps_target, scale=1)
    seconds = time.perf_counter() - t0
    k = min(STATS_WINDOW, n)
    stats = {
        "frames": n,
        "seconds": round(seconds, 3),
        "fps": round(n / seconds, 2),
        "out": str(Path(cfg.out)),
        "steps": session.steps,
        "mirror": session.mirror,
        "frame_ms_median_start": round(float(np.median(frame_ms[1:k] if k > 1 else frame_ms[:k])), 3),
        "frame_ms_median_end": round(float(np.median(frame_ms[n - k : n])), 3),
        "cpu_ms_per_frame_start": round(1000 * (cpu_at[k] - cpu_at[0]) / k, 3),
        "cpu_ms_per_frame_end": round(1000 * (cpu_at[n] - cpu_at[n - k]) / k, 3),
        "step_ms_median_start": round(float(np.median(step_ms[1:k] if k > 1 else step_ms[:k])), 3),
        "step_ms_median_end": round(float(np.median(step_ms[n - k : n])), 3),
        # Frame times on a shared machine move with its load; the load average tells them apart from drift.
        "load_avg_start": load.get("start"),
        "load_avg_end": round(os.getloadavg()[0], 2),
        "rss_mb_start": round(rss.get("start", float("nan")), 1),
        "rss_mb_end": round(rss.get("end", float("nan")), 1),
    }
    if session.mirror:
        stats["mirror_psnr_last"] = round(session.psnr, 2)
        stats["mirror_psnr_mean_since_reset"] = round(session.mean_psnr, 2)
    return stats
