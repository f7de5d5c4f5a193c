"""Frames to mp4 with imageio-ffmpeg (H.264, scaled up with nearest-neighbour so pixels stay crisp)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) -> (H*scale, W*scale, 3) by pixel repetition."""
    return frame if scale == 1 else frame.repeat(scale, axis=0).repeat(scale, axis=1)


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float, scale: int = 2) -> int:
    """Write uint8 (H, W, 3) frames to an mp4; returns the number of frames written."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=8,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(upscale(np.asarray(frame, np.uint8), scale))
            n += 1
    if n == 0:
        path.unlink(missing_ok=True)
        raise ValueError(f"{path}: no frames to write")
    return n


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video, (T, H, W, 3) uint8."""
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        return np.stack([np.asarray(f) for f in reader])
