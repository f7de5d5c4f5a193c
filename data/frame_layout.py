"""Where things sit in a recorded frame: the 3-D view, the status bar and the player's weapon.

Frames are rendered with the HUD on, so every frame of every world shares this layout, whatever its
resolution. The ego-motion warp turns the view and leaves the bar and the weapon still; the yardstick
scores the scene (the view without the weapon) apart from the bar; the place probe reads the view.
"""

from __future__ import annotations

import numpy as np

# Doom draws its 320x200 screen with the status bar on the last 32 lines (168..199). The view is taken
# to stop at 80% of the height, a few lines above the bar, so a rescaled edge between them counts
# for neither (160x120: view rows 0-95, bar rows 100-119).
STATUS_BAR_FRACTION = 32 / 200
VIEW_FRACTION = 0.8
# The weapon sprite and its muzzle flash, bottom centre of the view (rows, columns as fractions of the
# frame; measured on E1M1 play: the pistol's pixels stay put in over half the frames inside this box).
WEAPON_ROWS = (0.42, VIEW_FRACTION)
WEAPON_COLS = (0.35, 0.65)


def view_rows(height: int) -> slice:
    """Rows of the 3-D view in a frame of this height."""
    return slice(0, int(height * VIEW_FRACTION))


def status_bar_rows(height: int) -> slice:
    """Rows of the status bar in a frame of this height."""
    return slice(int(height * (1 - STATUS_BAR_FRACTION)), height)


def view(frames: np.ndarray) -> np.ndarray:
    """The 3-D view of (..., H, W, 3) frames."""
    return frames[..., view_rows(frames.shape[-3]), :, :]


def status_bar(frames: np.ndarray) -> np.ndarray:
    """The status bar of (..., H, W, 3) frames."""
    return frames[..., status_bar_rows(frames.shape[-3]), :, :]


def scene_mask(height: int, width: int) -> np.ndarray:
    """bool (view rows, width): True on the scene, False on the weapon sprite."""
    mask = np.ones((view_rows(height).stop, width), bool)
    r0, r1 = (int(height * f) for f in WEAPON_ROWS)
    c0, c1 = (int(width * f) for f in WEAPON_COLS)
    mask[r0:r1, c0:c1] = False
    return mask
