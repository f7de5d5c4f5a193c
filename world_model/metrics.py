"""Image metrics on uint8 frames, in torch, with no downloaded weights."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SSIM_C1 = (0.01 * 255) ** 2  # Wang et al. 2004, eq. 13 with K1 = 0.01, L = 255
SSIM_C2 = (0.03 * 255) ** 2  # K2 = 0.03
SSIM_SIGMA = 1.5  # the paper's 11x11 Gaussian window
SSIM_WINDOW = 11


def _float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float64 (B, 3, H, W)."""
    x = torch.from_numpy(np.array(frames, dtype=np.float64))
    if x.ndim == 3:
        x = x[None]
    return x.permute(0, 3, 1, 2)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames (B, H, W, 3) -> (B,); identical frames give 100."""
    mse = ((_float(a) - _float(b)) ** 2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(255.0**2 / mse.clamp_min(255.0**2 * 1e-10))).numpy()


def sharpness(frames: np.ndarray) -> np.ndarray:
    """Per-frame mean absolute difference between neighbouring pixels, across and down, in grey levels
    (B, H, W, 3) -> (B,). A blurred picture scores lower than the real one however good its PSNR, so
    the ratio of a prediction's sharpness to the real frame's shows blur that PSNR rewards."""
    x = _float(frames)
    across = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    down = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return ((across + down) / 2).numpy()


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM (Gaussian window, per channel, averaged) of uint8 frames (B, H, W, 3) -> (B,)."""
    x, y = _float(a), _float(b)
    c = x.shape[1]
    r = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    g = torch.exp(-(r**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(c, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, win, groups=c)  # valid windows only, as the reference implementation

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)) / ((mx**2 + my**2 + SSIM_C1) * (sxx + syy + SSIM_C2))
    return s.mean(dim=(1, 2, 3)).numpy()
