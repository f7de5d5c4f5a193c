import numpy as np
import pytest

from data.frame_layout import view_rows
from world_model.evaluation.motion import view_shift


def record(tmp_path_factory, scenario: str, policy: str, seed: int, steps: int = 150):
    """Real play recorded by `collect`: frames before and after each step (T, H, W, 3) and the angle
    change of each step (T,) in degrees."""
    from agent.collect import CollectConfig, collect
    from data.dataset import Dataset

    out = tmp_path_factory.mktemp(f"motion_{scenario}") / "data"
    cfg = CollectConfig(
        out=str(out), scenario=scenario, policy=policy, episodes=2, workers=1, max_steps=steps, seed=seed
    )
    collect(cfg, progress=False)
    frames, turns = [], []
    for _, ep in Dataset(out).iter_episodes():
        angle = ep.variable("ANGLE")
        frames.append((ep.frames[:-1], ep.frames[1:]))
        turns.append((angle[1:] - angle[:-1] + 180) % 360 - 180)
    prev, nxt = (np.concatenate([f[i] for f in frames]) for i in (0, 1))
    return prev, nxt, np.concatenate(turns)


@pytest.fixture(scope="module")
def e1m1(tmp_path_factory):
    return record(tmp_path_factory, "e1m1", "random", seed=11)


def shifted(frames: np.ndarray, k: float) -> np.ndarray:
    """The view of `frames` (B, H, W, 3) moved k px as by a right turn (content slides left), linearly
    interpolated between whole pixels; the status bar stays."""
    out = frames.astype(np.float64)
    v = view_rows(frames.shape[1])
    lo = int(np.floor(k))
    frac = k - lo
    view = frames[:, v].astype(np.float64)
    out[:, v] = (1 - frac) * np.roll(view, -lo, axis=2) + frac * np.roll(view, -lo - 1, axis=2)
    return out.round().astype(np.uint8)


def test_still_frame_reads_zero(e1m1):
    prev = e1m1[0][::40]
    np.testing.assert_allclose(view_shift(prev, prev), 0, atol=1e-4)  # float32 transforms
    black = np.zeros_like(prev)
    assert np.array_equal(view_shift(black, black), np.zeros(len(prev)))


@pytest.mark.parametrize("k", [-25, -7, 3, 19, 40])
def test_shifted_frame_reads_its_shift(e1m1, k):
    prev = e1m1[0][::40]
    np.testing.assert_allclose(view_shift(prev, shifted(prev, k)), k, atol=0.35)


def test_sub_pixel_shift_and_other_shapes(e1m1):
    prev = e1m1[0][::40]
    np.testing.assert_allclose(view_shift(prev, shifted(prev, 2.5)), 2.5, atol=0.25)
    big = prev.repeat(2, 1).repeat(2, 2)  # 320x240
    np.testing.assert_allclose(view_shift(big, shifted(big, 30)), 30, atol=0.35)
    pairs = np.stack([prev, shifted(prev, 5)])  # (2, B, H, W, 3): any leading shape
    assert view_shift(pairs[:1], pairs[1:]).shape == (1, len(prev))


def test_reads_recorded_engine_turns_the_right_way_in_e1m1(e1m1):
    prev, nxt, turn = e1m1
    fast = np.abs(turn) >= 10  # a fast turn (7 degrees a tic, 2 tics); Doom's angle grows turning left
    shift = view_shift(prev[fast], nxt[fast])
    assert fast.sum() >= 30
    assert np.mean(np.sign(shift) == -np.sign(turn[fast])) >= 0.9
    assert 12 < np.median(np.abs(shift)) < 30


def test_reads_recorded_engine_turns_the_right_way_in_the_arena(tmp_path_factory):
    """defend_the_center's wall is one texture all round: a place probe cannot read the angle there."""
    prev, nxt, turn = record(tmp_path_factory, "defend_the_center", "random", seed=21)
    fast = np.abs(turn) >= 10
    shift = view_shift(prev[fast], nxt[fast])
    assert fast.sum() >= 30
    assert np.mean(np.sign(shift) == -np.sign(turn[fast])) >= 0.9
