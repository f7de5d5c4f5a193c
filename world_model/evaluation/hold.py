"""Whether a long dream holds, with no reference frame: a dream may drift from the engine and still be a
picture of its world, and one that dissolves or blows up is not, whatever it is compared with.

Per second of a dream, each figure beside the same figure of real frames of the world:
- sharpness: the mean difference between neighbouring pixels of the 3-D view (metrics.sharpness), over the
  real frames': fog reads low, stripes and noise read high;
- token-grid edges: how much stronger the edges are on the borders of the DiT's token grid (every
  patch x downsampling pixels) than elsewhere, over the same ratio on real frames: a dream broken into
  tiles on the grid reads high, real frames read 1;
- latents outside the range: the share of the dream's latent values outside the per-channel range of the
  training data's latents (the range the decoder was trained on).
A second holds when all three are within HOLD_LIMITS.
"""

from __future__ import annotations

import numpy as np
import torch

from data.frame_layout import view
from world_model.evaluation.metrics import GREY, sharpness
from world_model.evaluation.rollout import Dreamer, HeldOut
from world_model.model.autoencoder import latent_range

# A second of dream is a picture of its world when its sharpness is within 0.7-1.3 of real frames', its
# token-grid edges within 20% of real frames', and at most 0.1% of its latent values leave the training range.
HOLD_LIMITS = {"sharpness": (0.7, 1.3), "grid_edges": (0.8, 1.2), "outside_range": 0.001}
REFERENCE_FRAMES = 512  # real frames of held-out play the figures are measured against


def grid_edge_ratio(frames: np.ndarray, cell: int) -> np.ndarray:
    """Per frame (B, H, W, 3) uint8 -> (B,): the mean grey-level step across the borders of a `cell`-pixel
    grid (between pixel cell*i - 1 and cell*i, across and down) over the mean step everywhere else."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() @ torch.tensor(GREY)  # (B, H, W)
    across = (x[:, :, 1:] - x[:, :, :-1]).abs()  # (B, H, W-1): the step after column j
    down = (x[:, 1:, :] - x[:, :-1, :]).abs()  # (B, H-1, W)
    on_cols = (torch.arange(1, x.shape[2]) % cell) == 0  # (W-1,) the step between columns j and j+1
    on_rows = (torch.arange(1, x.shape[1]) % cell) == 0  # (H-1,)
    border = torch.cat([across[:, :, on_cols].flatten(1), down[:, on_rows, :].flatten(1)], 1).mean(1)
    rest = torch.cat([across[:, :, ~on_cols].flatten(1), down[:, ~on_rows, :].flatten(1)], 1).mean(1)
    return (border / rest.clamp_min(1e-6)).double().numpy()


def outside_share(latents: torch.Tensor, rng: dict[str, list[float]]) -> np.ndarray:
    """Per latent (B, C, h, w) -> (B,): the share of its values outside the per-channel range `rng`."""
    lo = torch.tensor(rng["low"]).view(1, -1, 1, 1)
    hi = torch.tensor(rng["high"]).view(1, -1, 1, 1)
    z = latents.float()
    return ((z < lo) | (z > hi)).flatten(1).float().mean(1).double().numpy()


class HoldMeter:
    """Collects a dream's frames' figures, then sums them up per second against real frames of the world."""

    def __init__(self, reference: np.ndarray, cell: int, rng: dict[str, list[float]], range_source: str):
        # reference: real frames of the world (N, H, W, 3); cell: the token grid's cell in pixels
        self.cell, self.rng, self.range_source = cell, rng, range_source
        self.real_sharpness = float(sharpness(view(reference)).mean())
        self.real_grid = float(grid_edge_ratio(reference, cell).mean())
        self.sharp, self.grid, self.outside = [], [], []

    def add(self, frames: np.ndarray, latents: torch.Tensor) -> None:
        """frames (B, H, W, 3) uint8 of the dream and their latents (B, C, h, w)."""
        self.sharp.append(sharpness(view(frames)))
        self.grid.append(grid_edge_ratio(frames, self.cell))
        self.outside.append(outside_share(latents, self.rng))

    def summary(self, fps: float) -> dict:
        """Per whole second (the last part-second too): each figure and whether the second holds."""
        second = max(1, int(round(fps)))
        sharp = np.concatenate(self.sharp) / self.real_sharpness
        grid = np.concatenate(self.grid) / self.real_grid
        outside = np.concatenate(self.outside)
        per = [
            (
                float(sharp[i : i + second].mean()),
                float(grid[i : i + second].mean()),
                float(outside[i : i + second].mean()),
            )
            for i in range(0, len(sharp), second)
        ]
        (s_lo, s_hi), (g_lo, g_hi), o_max = (
            HOLD_LIMITS[k] for k in ("sharpness", "grid_edges", "outside_range")
        )
        holds = [s_lo <= s <= s_hi and g_lo <= g <= g_hi and o <= o_max for s, g, o in per]
        return {
            "limits": HOLD_LIMITS,
            "cell_px": self.cell,
            "real": {"sharpness": self.real_sharpness, "grid_edge_ratio": self.real_grid},
            "latent_range_from": self.range_source,
            "sharpness_per_s": [p[0] for p in per],
            "grid_edges_per_s": [p[1] for p in per],
            "outside_range_per_s": [p[2] for p in per],
            "holds_per_s": holds,
            "share_of_seconds_held": float(np.mean(holds)) if holds else 0.0,
            "first_second_not_held": next((i for i, h in enumerate(holds) if not h), None),
        }


def hold_meter(ck, held: HeldOut, dreamer: Dreamer, frames: int = REFERENCE_FRAMES) -> HoldMeter:
    """The no-reference judge of a long dream: real frames of the world (held-out play) and the training
    latents' range the checkpoint recorded (or, for a checkpoint saved before it did, the held-out play's)."""
    idx = np.linspace(0, len(held.frames) - 1, min(frames, len(held.frames))).round().astype(int)
    rng, source = ck.config.get("latent_range"), "the training data"
    if rng is None:
        rng, source = latent_range(held.latents_at(idx)), "held-out play (the checkpoint records no range)"
    return HoldMeter(held.frames[idx], dreamer.token_px, rng, source)
