"""PSNR, SSIM and sharpness on known pictures."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from world_model.evaluation.metrics import psnr, sharpness, ssim


@pytest.fixture
def frames(rng):
    """Two textured pictures: random blocks, so they have edges like game frames."""
    blocks = rng.integers(0, 256, size=(2, 15, 20, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)  # (2, 120, 160, 3)


def blurred(frames: np.ndarray, k: int = 5) -> np.ndarray:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double()
    y = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_psnr_of_a_known_error(frames):
    assert psnr(frames, frames) == pytest.approx([100.0, 100.0])
    off = frames.astype(np.int16) + np.where(frames < 128, 4, -4)  # every value off by exactly 4
    assert psnr(off.astype(np.uint8), frames) == pytest.approx([10 * np.log10(255**2 / 16)] * 2)


def test_ssim_is_one_for_the_same_picture_and_lower_for_worse_ones(frames):
    assert ssim(frames, frames) == pytest.approx([1.0, 1.0])
    s_blur = ssim(blurred(frames), frames)
    s_other = ssim(frames[::-1], frames)
    assert np.all(s_blur < 0.99) and np.all(s_other < s_blur)


def test_sharpness_falls_with_blur_and_ignores_brightness(frames):
    sharp = sharpness(frames)
    assert sharp.shape == (2,) and np.all(sharp > 0)
    assert np.all(sharpness(blurred(frames, 3)) < sharp)
    assert np.all(sharpness(blurred(frames, 7)) < sharpness(blurred(frames, 3)))
    flat = np.full_like(frames, 90)
    assert sharpness(flat) == pytest.approx([0.0, 0.0])
    dimmer = (frames // 2).astype(np.uint8)  # half the contrast, half the edges
    assert sharpness(dimmer) == pytest.approx(sharp / 2, rel=0.02)
    brighter = (frames // 2 + 100).astype(np.uint8)  # an offset changes nothing
    assert sharpness(brighter) == pytest.approx(sharpness(dimmer))
