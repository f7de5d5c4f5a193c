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
    with imageio.get_writer(
        path, fps=fps, codec="libx264", quality=8, macro_block_size=8, ffmpeg_log_level="error"
    ) as writer:
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


def contact_sheet(
    frames: np.ndarray, count: int = 8, cols: int = 4, scale: int = 2, gap: int = 2
) -> np.ndarray:
    """`count` evenly spaced frames of (T, H, W, 3) in a grid, (rows*H', cols*W', 3) uint8."""
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    tiles = [upscale(frames[i], scale) for i in idx]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return sheet


def write_png(image: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, optimize=True)
