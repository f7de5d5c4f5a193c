"""Score trained autoencoders on held-out episodes: the table and the picture of docs/autoencoder_ablation.md.

    python docs/autoencoder_ablation.py --heldout /work/data/heldout \
        cpu=/tmp/ae_cpu cpu+grad=/tmp/ae_cpu_grad 4x=/tmp/ae_4x 4x+grad=/tmp/ae_cpu4x \
        --png docs/autoencoder_ablation.png

Each autoencoder folder is what `dreamdoom wm train-ae --out` writes; the figures are the means of
world_model.evaluation.metrics.reconstruction_scores over every `--every`-th frame of every held-out episode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from data.dataset import Dataset
from world_model.evaluation.metrics import reconstruction_scores
from world_model.model.autoencoder import reconstruct
from world_model.model.checkpoint import load_autoencoder
from world_model.training.latents import load_frames

PICTURE_FRACTIONS = (0.2, 0.5, 0.8)  # which held-out frames the picture shows, as positions in the list
LABEL_HEIGHT = 14
DECODE_REPEATS = 20  # single-frame decodes timed per variant (play decodes one frame per step)


@torch.no_grad()
def decode_ms(ae, z: torch.Tensor) -> float:
    """Median wall-clock milliseconds of decoding one latent (1, C, h, w), after one warm-up call."""
    ae.decode(z)
    times = []
    for _ in range(DECODE_REPEATS):
        t0 = time.perf_counter()
        ae.decode(z)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def parse_variant(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=AUTOENCODER_FOLDER")
    return name, Path(path)


def picture(frames: np.ndarray, columns: list[tuple[str, np.ndarray]], scale: int) -> Image.Image:
    """Rows: the frames; columns: real, then each variant's reconstruction; a label above each column."""
    h, w = frames.shape[1:3]
    cols = [("real", frames), *columns]
    sheet = Image.new("RGB", (len(cols) * w * scale, LABEL_HEIGHT + len(frames) * h * scale), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (name, imgs) in enumerate(cols):
        draw.text((c * w * scale + 4, 1), name, fill="black")
        for r, img in enumerate(imgs):
            tile = Image.fromarray(img).resize((w * scale, h * scale), Image.NEAREST)
            sheet.paste(tile, (c * w * scale, LABEL_HEIGHT + r * h * scale))
    return sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", type=parse_variant, help="NAME=AUTOENCODER_FOLDER")
    p.add_argument("--heldout", required=True, help="held-out dataset folder")
    p.add_argument("--every", type=int, default=8, help="score every n-th frame of each episode")
    p.add_argument("--png", help="write the real | reconstruction picture here")
    p.add_argument("--scale", type=int, default=2, help="upscale factor of the picture")
    p.add_argument("--picture-only", action="store_true", help="skip the table, only draw the picture")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ds = Dataset(a.heldout)
    frames = load_frames(ds, ds.episodes, every=a.every)  # (N, H, W, 3)
    print(f"{len(frames)} held-out frames from {len(ds.episodes)} episodes of {a.heldout}", file=sys.stderr)
    shown = frames[[int(f * (len(frames) - 1)) for f in PICTURE_FRACTIONS]]
    h, w = frames.shape[1:3]
    print(
        "| variant | channels | latent (C x h x w) | parameters | train s | scene edge corr | scene PSNR dB "
        "| scene SSIM | status-bar PSNR dB | decode ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    columns = []
    for name, folder in a.variants:
        ae, config = load_autoencoder(folder)
        columns.append((name, reconstruct(ae, shown)))
        if a.picture_only:
            continue
        d, cfg = ae.cfg.downsample, ae.cfg
        s = reconstruction_scores(ae, frames)
        params = sum(t.numel() for t in ae.parameters())
        seconds = config.get("summary", {}).get("seconds")
        with torch.no_grad():
            z = ae.encode(torch.zeros(1, 3, h, w))  # (1, C, h/d, w/d)
        widths = ",".join(map(str, cfg.channels))
        print(
            f"| {name} | {widths} | {cfg.latent_channels} x {h // d} x {w // d} | {params:,} "
            f"| {'-' if seconds is None else f'{seconds:.0f}'} "
            f"| {s['scene_edge_corr']:.3f} | {s['scene_psnr']:.2f} | {s['scene_ssim']:.3f} "
            f"| {s['status_bar_psnr']:.2f} | {decode_ms(ae, z):.1f} |",
            flush=True,
        )
    if a.png:
        picture(shown, columns, a.scale).save(a.png, optimize=True)
        print(f"wrote {a.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
