"""Frames to video, scaled up with nearest-neighbour so pixels stay crisp.

imageio-ffmpeg (H.264) when it is installed; else OpenCV's mp4v encoder; else, where neither is (a
bare GPU machine has no ffmpeg wheel), an animated GIF beside the asked-for path, with a one-line
notice. Callers (eval, headless play, data view) get their frames written either way, whole or not at all
(data/durable.py): a kill or a full disk leaves the video that was there before, never half of a new one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from data.durable import write_with


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) -> (H*scale, W*scale, 3) by pixel repetition."""
    return frame if scale == 1 else frame.repeat(scale, axis=0).repeat(scale, axis=1)


def video_backend() -> str:
    """The writer this machine has: "ffmpeg", "opencv" or "gif"."""
    try:
        import imageio_ffmpeg  # noqa: F401

        return "ffmpeg"
    except ImportError:
        pass
    try:
        import cv2  # noqa: F401

        return "opencv"
    except ImportError:
        return "gif"


def _write_ffmpeg(frames: Iterator[np.ndarray], path: Path, fps: float) -> int:
    import imageio.v2 as imageio

    n = 0
    with imageio.get_writer(
        path, fps=fps, codec="libx264", quality=8, macro_block_size=8, ffmpeg_log_level="error"
    ) as writer:
        for frame in frames:
            writer.append_data(frame)
            n += 1
    return n


def _write_opencv(frames: Iterator[np.ndarray], path: Path, fps: float) -> int:
    import cv2

    writer, n = None, 0
    try:
        for frame in frames:
            if writer is None:  # the size is known from the first frame
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"{path}: OpenCV could not open an mp4v writer")
            writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV wants BGR
            n += 1
    finally:
        if writer is not None:
            writer.release()
    return n


def _write_gif(frames: Iterator[np.ndarray], path: Path, fps: float) -> int:
    from PIL import Image

    # Palette images as they come: a quarter of the memory of RGB until the file is written at the end.
    images = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE) for f in frames]
    if images:
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0, optimize=False
        )
    return len(images)


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float, scale: int = 2) -> int:
    """Write uint8 (H, W, 3) frames to an mp4 (an animated .gif beside it where no mp4 encoder is
    installed); returns the number of frames written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scaled = (upscale(np.asarray(frame, np.uint8), scale) for frame in frames)
    backend = video_backend()
    if backend == "gif":
        gif = path.with_suffix(".gif")
        print(f"{path}: no mp4 encoder here (imageio-ffmpeg, OpenCV); writing {gif} instead", file=sys.stderr)
        path = gif
    write = {"ffmpeg": _write_ffmpeg, "opencv": _write_opencv, "gif": _write_gif}[backend]
    written = []

    def write_frames(tmp: Path) -> None:
        written.append(write(scaled, tmp, fps))
        if written[0] == 0:
            raise ValueError(f"{path}: no frames to write")

    write_with(path, write_frames)
    return written[0]


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video (mp4 or gif), (T, H, W, 3) uint8."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    if video_backend() != "ffmpeg":
        import cv2

        cap, frames = cv2.VideoCapture(str(path)), []
        ok, frame = cap.read()
        while ok:
            frames.append(frame[..., ::-1])  # BGR -> RGB
            ok, frame = cap.read()
        cap.release()
        if not frames:
            raise OSError(f"{path}: OpenCV read no frames")
        return np.stack(frames)
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
