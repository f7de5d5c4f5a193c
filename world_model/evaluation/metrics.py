"""Image metrics on uint8 frames, in torch, with no downloaded weights.

The world model is judged on the scene: the 3-D view apart from the status bar and the player's
weapon. Doom frames are dark and the bar is large and nearly constant, so a whole-frame PSNR rewards
a grey field under a correct bar; the weapon sprite sits in the same place in every frame, so a grey
field that keeps it would share structure with any frame. The structure figure is `edge_corr`: a
grey field or a noise field scores about 0, the true frame 1. Where the view, the bar and the weapon
sit: data/frame_layout.py.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from data.frame_layout import scene_mask, status_bar, view
from world_model.model.autoencoder import Autoencoder, reconstruct

SSIM_C1 = (0.01 * 255) ** 2  # Wang et al. 2004, eq. 13 with K1 = 0.01, L = 255
SSIM_C2 = (0.03 * 255) ** 2  # K2 = 0.03
SSIM_SIGMA = 1.5  # the paper's 11x11 Gaussian window
SSIM_WINDOW = 11
GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


def _float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float32 (B, 3, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    if x.ndim == 3:
        x = x[None]
    return x.permute(0, 3, 1, 2)


def _masked_mean(x: torch.Tensor, mask: np.ndarray | None) -> torch.Tensor:
    """Mean over (C, H, W) of (B, C, H, W), over the pixels where mask (H, W) is True."""
    if mask is None:
        return x.mean(dim=(1, 2, 3))
    m = torch.from_numpy(mask).to(x.dtype)
    return (x * m).sum(dim=(1, 2, 3)) / (m.sum() * x.shape[1])


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames (B, H, W, 3) -> (B,), over the pixels where mask (H, W) is
    True (default all); identical frames give 100."""
    mse = _masked_mean((_float(a).double() - _float(b).double()) ** 2, mask)
    return (10 * torch.log10(255.0**2 / mse.clamp_min(255.0**2 * 1e-10))).numpy()


def sharpness(frames: np.ndarray) -> np.ndarray:
    """Per-frame mean absolute difference between neighbouring pixels, across and down, in grey levels
    (B, H, W, 3) -> (B,). A blurred picture scores lower than the real one however good its PSNR, so
    the ratio of a prediction's sharpness to the real frame's shows blur that PSNR rewards."""
    x = _float(frames)
    across = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    down = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return ((across + down) / 2).double().numpy()


def _gaussian(sigma: float, radius: int) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _separable(x: torch.Tensor, g: torch.Tensor, padding: int = 0) -> torch.Tensor:
    """Convolve each channel of (B, C, H, W) with the 2-D kernel g g^T as two 1-D passes."""
    c, n = x.shape[1], len(g)
    x = F.conv2d(x, g.view(1, 1, 1, n).expand(c, 1, 1, n), padding=(0, padding), groups=c)
    return F.conv2d(x, g.view(1, 1, n, 1).expand(c, 1, n, 1), padding=(padding, 0), groups=c)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-frame SSIM (Gaussian window, per channel, averaged) of uint8 frames (B, H, W, 3) -> (B,), over
    the windows centred where mask (H, W) is True (default all).

    The window is separable, so it runs as two 1-D convolutions in float32 (about 20x faster than one
    11x11 float64 convolution, equal to 1e-5)."""
    x, y = _float(a), _float(b)
    g = _gaussian(SSIM_SIGMA, SSIM_WINDOW // 2)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return _separable(z, g)  # valid windows only, as the reference implementation

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)) / ((mx**2 + my**2 + SSIM_C1) * (sxx + syy + SSIM_C2))
    r = SSIM_WINDOW // 2
    return _masked_mean(s, None if mask is None else mask[r:-r, r:-r]).double().numpy()


def edge_magnitude(frames: np.ndarray) -> torch.Tensor:
    """Central-difference gradient magnitude of the grey picture on the common interior,
    uint8 (B, H, W, 3) -> float32 (B, H-2, W-2)."""
    x = _float(frames)  # (B, 3, H, W)
    g = (x * torch.tensor(GREY).view(1, 3, 1, 1)).sum(1)  # (B, H, W)
    gx = g[:, 1:-1, 2:] - g[:, 1:-1, :-2]  # (B, H-2, W-2)
    gy = g[:, 2:, 1:-1] - g[:, :-2, 1:-1]
    return torch.sqrt(gx**2 + gy**2)


def edge_corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-frame Pearson correlation of the edge-magnitude maps of uint8 frames (B, H, W, 3) -> (B,), over
    the pixels where mask (H, W) is True (default all).

    1: the same structure; a flat or noise picture against a real one: about 0. A picture with no edges
    at all has no defined correlation and scores 0."""
    keep = slice(None) if mask is None else torch.from_numpy(mask[1:-1, 1:-1].reshape(-1))
    ma, mb = (edge_magnitude(f).flatten(1).double()[:, keep] for f in (a, b))  # (B, P)
    ma, mb = ma - ma.mean(1, keepdim=True), mb - mb.mean(1, keepdim=True)
    den = torch.sqrt((ma**2).sum(1) * (mb**2).sum(1))
    r = (ma * mb).sum(1) / den.clamp_min(1e-12)
    return torch.where(den > 1e-9, r, torch.zeros_like(r)).numpy()


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 (B, H, W, 3) under a Gaussian of `sigma` pixels (3-sigma kernel, edges replicated)."""
    radius = max(1, int(round(3 * sigma)))
    x = F.pad(_float(frames), (radius,) * 4, mode="replicate")
    y = _separable(x, _gaussian(sigma, radius))
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def scene_edge_corr(pred: np.ndarray, real: np.ndarray) -> np.ndarray:
    """edge_corr of the scene (the view without the weapon) of (B, H, W, 3) frames -> (B,)."""
    mask = scene_mask(*real.shape[1:3])
    return edge_corr(view(pred), view(real), mask)


def view_scores(pred: np.ndarray, real: np.ndarray) -> dict[str, np.ndarray]:
    """edge_corr, psnr and ssim of the scene (3-D view without the weapon), each (B,), pred against real."""
    p, r, mask = view(pred), view(real), scene_mask(*real.shape[1:3])
    return {"edge_corr": edge_corr(p, r, mask), "psnr": psnr(p, r, mask), "ssim": ssim(p, r, mask)}


def reconstruction_scores(ae: Autoencoder, frames: np.ndarray, batch: int = 32) -> dict[str, float]:
    """The autoencoder's ceiling for the world model on uint8 frames (N, H, W, 3): means over frames of
    the scene's (3-D view without the weapon) edge correlation, PSNR and SSIM, and the status bar's PSNR."""
    if len(frames) == 0:
        raise ValueError("reconstruction_scores: no frames")
    recon = reconstruct(ae, frames, batch)
    scene = view_scores(recon, frames)
    return {
        "scene_edge_corr": float(scene["edge_corr"].mean()),
        "scene_psnr": float(scene["psnr"].mean()),
        "scene_ssim": float(scene["ssim"].mean()),
        "status_bar_psnr": float(psnr(status_bar(recon), status_bar(frames)).mean()),
    }
