"""How the view moves between two frames: the horizontal shift of the scene, in pixels.

A turn slides the whole 3-D view sideways. Walls, door frames, monsters and the lines of the floor all
slide with it, so the scene's column profiles of horizontal gradient, taken in bands of rows, slide too.
The shift that best aligns the two frames' profiles (normalised cross-correlation over their overlap,
each band about its mean, the weapon box left out; refined to a sub-pixel peak by a parabola through
the best integer shift and its neighbours) reads the turn in any world, including a round arena whose
uniform wall leaves a place probe unable to read the angle. Bands keep the floor's lines and the wall's
few edges apart: summed down the whole view, the arena's wall texture drowns them (fast turns of
recorded `defend_the_center` play read the right way 74% of the time that way, 92-97% in bands of 6
rows; adding vertical gradients, which see the wall's top edge, reads worse, 85-90%).

Sign: positive when the view content moves as when the player turns right (content slides left on
screen, so nxt[x] shows what prev showed at x + s).
"""

from __future__ import annotations

import numpy as np
import torch

from data.frame_layout import WEAPON_ROWS, scene_mask, view_rows
from world_model.evaluation.metrics import GREY

MAX_SHIFT = 40  # px; a fast turn (7 degrees a tic, 2 tics) moves a 160-wide view about 19 px
BAND_ROWS = 1 / 20  # height of a band of rows, as a fraction of the frame (6 rows at 120)
SMOOTH_PX = 1.0  # Gaussian blur of each profile along x: pixel-level aliasing of far textures is not motion


def _bands(height: int) -> list[slice]:
    """Bands of rows of the view; none straddles the top of the weapon box (the mask changes there)."""
    top, stop = int(height * WEAPON_ROWS[0]), view_rows(height).stop
    step = max(1, round(height * BAND_ROWS))
    cuts = sorted({*range(0, top, step), *range(top, stop, step), top, stop})
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def column_profiles(frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, H, W, 3) -> profiles float32 (N, B, W - 1) and where they are valid, bool (B, W - 1):
    in each band of rows, the mean absolute difference of grey levels between neighbouring columns,
    smoothed along x; a column gap is valid where the band's scene (the weapon box left out) holds it."""
    n, h, w, _ = frames.shape
    grey = frames[:, view_rows(h)].astype(np.float32) @ np.array(GREY, np.float32)  # (N, Hv, W)
    grad = np.abs(np.diff(grey, axis=2))  # (N, Hv, W - 1)
    mask = scene_mask(h, w)
    gap = mask[:, 1:] & mask[:, :-1]  # (Hv, W - 1)
    bands = _bands(h)
    profiles = np.stack([grad[:, b].mean(1) for b in bands], 1)  # (N, B, W - 1)
    valid = np.stack([gap[b].all(0) for b in bands])  # (B, W - 1)
    x = profiles * valid
    if SMOOTH_PX:
        r = int(3 * SMOOTH_PX)
        k = np.exp(-(np.arange(-r, r + 1.0) ** 2) / (2 * SMOOTH_PX**2))
        padded = np.pad(x, ((0, 0), (0, 0), (r, r)))
        x = sum(w * padded[..., i : i + x.shape[-1]] for i, w in enumerate(k / k.sum()))  # (N, B, W - 1)
    x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    return x, torch.from_numpy(valid)


def profile_shift(
    p: torch.Tensor, q: torch.Tensor, valid: torch.Tensor, max_shift: int = MAX_SHIFT
) -> torch.Tensor:
    """Shift s (N,) in px that best aligns profiles q[..., x] with p[..., x + s], both (N, B, L), over the
    places `valid` (B, L) holds in both; 0 where either frame has no structure."""
    v = valid.float()
    length = p.shape[-1]
    max_shift = min(max_shift, length // 2)
    s = torch.arange(-max_shift, max_shift + 1)  # (S,)

    def centred(x: torch.Tensor) -> torch.Tensor:  # each band about its mean over the valid places
        return (x - (x * v).sum(-1, keepdim=True) / v.sum(-1, keepdim=True).clamp_min(1)) * v

    p, q = centred(p.float()), centred(q.float())  # (N, B, L)
    # Sums over each overlap by FFT cross-correlation, summed over bands before transforming back; the
    # size is a power of two past length + max_shift, so no shift wraps onto another.
    size = 1 << (length + max_shift).bit_length()
    fp, fq, fv, fpp, fqq = (torch.fft.rfft(x, size) for x in (p, q, v, p * p, q * q))

    def cross(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """sum over bands and x of a[..., x + s] * b[..., x], for each shift s: (N, S)."""
        return torch.fft.irfft((fa * fb.conj()).sum(-2), size)[..., s % size]

    cov = cross(fp, fq)  # (N, S)
    var = (cross(fpp, fv) * cross(fv, fqq)).clamp_min(1e-12)  # energies of p and q over each overlap
    score = (cov / var.sqrt()).float()  # (N, S)
    best = score.argmax(1)  # (N,)
    inner = (best > 0) & (best < len(s) - 1)
    i = best.clamp(1, len(s) - 2)
    left, mid, right = (score.gather(1, (i + d)[:, None])[:, 0] for d in (-1, 0, 1))
    curve = left - 2 * mid + right
    # Parabola through the peak and its neighbours (its vertex), where the peak is strict and inside.
    ok = inner & (curve < 0)
    offset = torch.where(ok, 0.5 * (left - right) / torch.where(ok, curve, -1.0), 0.0).clamp(-0.5, 0.5)
    shift = best.float() - max_shift + offset
    flat = (p.flatten(1).std(1) < 1e-6) | (q.flatten(1).std(1) < 1e-6)
    return torch.where(flat, 0.0, shift)


def view_shift(prev: np.ndarray, nxt: np.ndarray, max_shift: int = MAX_SHIFT) -> np.ndarray:
    """Horizontal view motion in px from uint8 frames `prev` to `nxt` (..., H, W, 3) -> (...) float32:
    positive as when the player turns right, 0 for a still frame."""
    if prev.shape != nxt.shape or prev.ndim < 3 or prev.shape[-1] != 3:
        raise ValueError(
            f"view_shift: frames must be two (..., H, W, 3) arrays alike, got {prev.shape}, {nxt.shape}"
        )
    lead = prev.shape[:-3]
    p, valid = column_profiles(prev.reshape(-1, *prev.shape[-3:]))
    q, _ = column_profiles(nxt.reshape(-1, *nxt.shape[-3:]))
    return profile_shift(p, q, valid, max_shift).numpy().reshape(lead)
