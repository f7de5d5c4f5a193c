"""No-reference hold of a long dream (world_model/evaluation/hold.py): a picture of the world holds, fog,
tiles and latents off the training range do not."""

import numpy as np
import torch

from world_model.evaluation.hold import HOLD_LIMITS, HoldMeter, grid_edge_ratio, outside_share
from world_model.evaluation.metrics import gaussian_blur
from world_model.model.autoencoder import latent_range

CELL = 16  # token grid of patch 4 on a 4x-down autoencoder


def scenes(n: int = 16, seed: int = 0) -> np.ndarray:
    """Frames with structure at every scale and no grid: smoothed noise plus a few random edges."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, 120, 160, 3)).astype(np.uint8)
    frames = gaussian_blur(frames, 1.5)
    for f in frames:
        for _ in range(6):
            y, x = rng.integers(0, 100), rng.integers(0, 140)
            f[y : y + rng.integers(5, 30), x : x + rng.integers(5, 30)] = rng.integers(0, 256, 3)
    return frames


def tiles(frames: np.ndarray) -> np.ndarray:
    """Each CELL x CELL block (the last row of blocks cut short, as the padded token grid) replaced by its
    mean colour: the token grid's tiles."""
    out = frames.copy()
    for y in range(0, frames.shape[1], CELL):
        for x in range(0, frames.shape[2], CELL):
            block = frames[:, y : y + CELL, x : x + CELL]
            out[:, y : y + CELL, x : x + CELL] = block.mean((1, 2), keepdims=True).astype(np.uint8)
    return out


def test_grid_edges_read_one_on_real_frames_and_high_on_tiles():
    real = scenes()
    assert 0.8 < grid_edge_ratio(real, CELL).mean() < 1.2
    assert grid_edge_ratio(tiles(real), CELL).mean() > 3  # all the steps sit on the grid's borders


def test_latents_outside_the_training_range():
    z = torch.rand(50, 8, 30, 40) * 2 - 1  # uniform in [-1, 1]
    rng = latent_range(z)
    assert len(rng["low"]) == 8 and outside_share(z, rng).max() == 0
    assert np.allclose(outside_share(z * 2, rng), 0.5, atol=0.03)  # half of twice the range lies outside it
    # over chosen spans of frames, in the latents' own dtype, as wm train takes its training episodes'
    half = z.half()
    spans = latent_range(half, [(0, 10), (30, 5)])
    assert spans["high"] == torch.cat([half[:10], half[30:35]]).float().amax(dim=(0, 2, 3)).tolist()
    shifted = z.clone()
    shifted[:, 3] += 10  # one channel of eight off its own range, though within the others'
    assert np.allclose(outside_share(shifted, rng), 1 / 8)


def test_a_picture_of_the_world_holds_and_fog_tiles_and_blow_ups_do_not():
    real = scenes(16, seed=1)
    z = torch.randn(16, 8, 30, 40)
    rng = latent_range(torch.randn(200, 8, 30, 40))

    def judge(frames, latents):
        meter = HoldMeter(real, CELL, rng, "test")
        for i in range(0, len(frames), 4):
            meter.add(frames[i : i + 4], latents[i : i + 4])
        return meter.summary(fps=4.0)  # 4 frames a second: 4 seconds

    other = scenes(16, seed=2)
    drift = judge(other, z * 0.5)  # another picture of the same world: it drifts from the engine, and holds
    assert drift["holds_per_s"] == [True] * 4 and drift["share_of_seconds_held"] == 1.0
    assert drift["first_second_not_held"] is None
    fog = judge(gaussian_blur(other, 4.0), z * 0.5)
    assert max(fog["sharpness_per_s"]) < HOLD_LIMITS["sharpness"][0] and fog["share_of_seconds_held"] == 0
    tiled = judge(tiles(other), z * 0.5)
    assert (
        min(tiled["grid_edges_per_s"]) > HOLD_LIMITS["grid_edges"][1] and tiled["share_of_seconds_held"] == 0
    )
    late = judge(other, torch.cat([z[:8] * 0.5, z[8:] * 50]))  # the latents leave the range half way
    assert late["first_second_not_held"] == 2 and late["holds_per_s"] == [True, True, False, False]
    assert late["outside_range_per_s"][-1] > 0.5
