"""The ego-motion prior: the last frame turned by the player's turn, the base the DiT predicts a change from.

A pure turn in Doom is a rotation of a pinhole camera about its vertical axis (no pitch, no roll), so the
next view is the last one remapped: the point seen at angle phi' from the new heading was seen at
phi = phi' + theta from the old one (theta > 0 turns right, VizDoom's sign), at column u = f tan(phi),
and at a height from the horizon scaled by cos(phi') / cos(phi) (its depth along the view direction
changes). With a 90-degree horizontal field of view, f is half the frame's width. The status bar and the
weapon sprite do not turn, so the remap is blended in on the scene only (data/frame_layout.py's mask).

It is one grid per turn bin, made once for a world (frame size, frame_skip, turn rates) and the latent
grid, and applied with `grid_sample` to latents (or, at the frame's own size, to frames). It is a help,
not a solution: textures alias at low resolution and moving things (monsters, the floor's light) do not
follow a remap, so the model still predicts the change from this base.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from data.actions import ActionSpec
from data.frame_layout import scene_mask, view_rows

HFOV_DEGREES = 90.0  # Doom's horizontal field of view at 4:3


def turn_grid(
    theta_deg: float, frame_hw: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each cell of an (h, w) grid laid over a frame of `frame_hw` pixels samples the last grid from
    after a turn of `theta_deg` degrees: a grid_sample grid (1, h, w, 2) in [-1, 1] (align_corners=False),
    and the share of each cell on the turning scene (h, w), 0 on the status bar and the weapon."""
    height, width = frame_hw
    h, w = out_hw
    f = (width / 2) / math.tan(math.radians(HFOV_DEGREES) / 2)
    horizon = view_rows(height).stop / 2  # the 3-D view's centre row, in frame pixels
    u_out = (torch.arange(w, dtype=torch.float64) + 0.5) * (width / w) - width / 2  # (w,) px from centre
    v_out = (torch.arange(h, dtype=torch.float64) + 0.5) * (height / h) - horizon  # (h,) px from horizon
    phi_out = torch.atan(u_out / f)
    phi_src = (phi_out + math.radians(theta_deg)).clamp(-math.pi / 2 + 1e-3, math.pi / 2 - 1e-3)
    u_src = f * torch.tan(phi_src)  # (w,)
    v_src = v_out[:, None] * torch.cos(phi_out)[None] / torch.cos(phi_src)[None]  # (h, w)
    gx = ((u_src + width / 2) / width * 2 - 1)[None].expand(h, w)
    gy = (v_src + horizon) / height * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).float()[None]  # (1, h, w, 2)
    # The mask at the grid's resolution: the share of each cell's pixels that belong to the scene.
    mask = np.zeros((height, width), np.float32)
    sm = scene_mask(height, width)
    mask[: sm.shape[0]] = sm
    share = F.adaptive_avg_pool2d(torch.from_numpy(mask)[None, None], (h, w))[0, 0]  # (h, w)
    return grid, share


class TurnWarp(torch.nn.Module):
    """The last latent (B, C, h, w) turned by each sample's current turn bin: one grid per bin of the world's
    action contract, at its frame_skip (the turn rate applies on every tic)."""

    def __init__(
        self, spec: ActionSpec, frame_skip: int, frame_hw: tuple[int, int], latent_hw: tuple[int, int]
    ):
        super().__init__()
        self.turn_field = spec.fields.index("turn")
        self.none_bin = spec.turn_none
        grids, shares = zip(
            *(turn_grid(deg * frame_skip, frame_hw, latent_hw) for deg in spec.turn_degrees_per_tic),
            strict=True,
        )
        self.register_buffer("grids", torch.cat(grids), persistent=False)  # (bins, h, w, 2)
        self.register_buffer("share", shares[0][None, None].clone(), persistent=False)  # (1, 1, h, w)

    @classmethod
    def for_world(
        cls, spec: ActionSpec, frame_skip: int, resolution: tuple[int, int], latent_hw: tuple[int, int]
    ) -> TurnWarp:
        """A world's warp: its action contract, frame_skip and (width, height) frames, on a latent grid."""
        return cls(spec, frame_skip, (resolution[1], resolution[0]), latent_hw)

    def forward(self, last: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """last (B, C, h, w); actions (B, K+1, fields), the last one the current action -> (B, C, h, w)."""
        turn = actions[:, -1, self.turn_field]  # (B,); "no action" (negative) warps as no turn
        turn = torch.where(turn < 0, torch.full_like(turn, self.none_bin), turn)
        grid = self.grids.to(last.device)[turn]  # (B, h, w, 2)
        turned = F.grid_sample(
            last.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        share = self.share.to(last.device)
        return (share * turned + (1 - share) * last.float()).to(last.dtype)  # (B, C, h, w)
