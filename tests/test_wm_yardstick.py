"""The yardstick: structure on the 3-D view, calibrators, the place probe and the engine replay."""

import numpy as np
import pytest

from data.actions import DEFAULT_ACTIONS
from data.frame_layout import status_bar, status_bar_rows, view, view_rows
from world_model.evaluation.control import counterfactual, scripted_inputs
from world_model.evaluation.metrics import edge_corr, gaussian_blur, psnr, ssim
from world_model.evaluation.probe import angle_diff


@pytest.fixture(scope="module")
def e1m1():
    """A few hundred real E1M1 frames of the scripted explorer, with their seeds, from the engine."""
    import tempfile

    from agent.collect import CollectConfig, collect
    from data.dataset import Dataset

    out = tempfile.mkdtemp(prefix="yardstick-") + "/data"
    collect(
        CollectConfig(out=out, policy="scripted", episodes=4, workers=2, max_steps=120, seed=5),
        progress=False,
    )
    return Dataset(out)


def test_rows_of_view_and_status_bar_follow_the_resolution():
    assert view_rows(120) == slice(0, 96) and status_bar_rows(120) == slice(100, 120)
    assert view_rows(240) == slice(0, 192) and status_bar_rows(240) == slice(201, 240)
    frames = np.zeros((2, 120, 160, 3), np.uint8)
    assert view(frames).shape == (2, 96, 160, 3) and status_bar(frames).shape == (2, 20, 160, 3)


def test_edge_corr_sees_structure_not_brightness(e1m1):
    frames = view(e1m1.load(0).frames[10:18])
    assert edge_corr(frames, frames) == pytest.approx(np.ones(8))
    shifted = np.roll(frames, 1, axis=2)  # the same picture, one pixel to the right
    assert np.all(edge_corr(shifted, frames) > 0.4)
    flat = np.full_like(frames, 90)
    assert np.all(edge_corr(flat, frames) == 0)
    noise = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)
    assert np.all(np.abs(edge_corr(noise, frames)) < 0.1)
    brighter = np.clip(frames.astype(int) * 2 + 10, 0, 255).astype(np.uint8)
    assert np.all(edge_corr(brighter, frames) > 0.9)
    # blur keeps some structure, more blur keeps less, and PSNR does not see it the same way
    b2, b5 = gaussian_blur(frames, 2.0), gaussian_blur(frames, 5.0)
    assert np.all(edge_corr(b5, frames) < edge_corr(b2, frames)) and np.all(edge_corr(b2, frames) < 1)


def test_a_grey_field_that_keeps_the_weapon_holds_none_of_the_scene(e1m1):
    """The weapon sprite is in the same place in every frame; the scene figures leave it out."""
    from data.frame_layout import scene_mask
    from world_model.evaluation.metrics import scene_edge_corr, view_scores

    frames = e1m1.load(0).frames[20:36]
    mask = scene_mask(*frames.shape[1:3])
    assert mask.shape == (96, 160) and 0.8 < mask.mean() < 0.9
    grey_with_weapon = np.full_like(frames, 60)
    grey_with_weapon[:, :96][:, ~mask] = frames[:, :96][:, ~mask]
    other = e1m1.load(1).frames[20:36]
    # over the whole view the weapon alone correlates; over the scene it does not
    assert edge_corr(view(grey_with_weapon), view(other)).mean() > 0.1
    assert np.abs(scene_edge_corr(grey_with_weapon, other)).mean() < 0.05
    assert view_scores(frames, frames)["edge_corr"] == pytest.approx(np.ones(16))
    assert view_scores(frames, frames)["ssim"] == pytest.approx(np.ones(16))


def test_gaussian_blur_keeps_a_flat_picture_and_ssim_matches_the_reference(rng):
    flat = np.full((1, 24, 32, 3), 77, np.uint8)
    assert np.array_equal(gaussian_blur(flat, 2.0), flat)
    # SSIM as two 1-D float32 passes equals the one 11x11 float64 window it replaced
    import torch
    import torch.nn.functional as F

    a = rng.integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    x, y = (torch.from_numpy(f.astype(np.float64)).permute(0, 3, 1, 2) for f in (a, b))
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    win = ((g / g.sum())[:, None] * (g / g.sum())[None, :]).expand(3, 1, 11, 11)
    mx, my = (F.conv2d(z, win, groups=3) for z in (x, y))
    sxx, syy = F.conv2d(x * x, win, groups=3) - mx**2, F.conv2d(y * y, win, groups=3) - my**2
    sxy = F.conv2d(x * y, win, groups=3) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ref = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    assert ssim(a, b) == pytest.approx(ref.mean(dim=(1, 2, 3)).numpy(), abs=1e-5)
    assert psnr(a, a) == pytest.approx([100.0] * 3)


def test_floor_is_below_blur_on_real_frames(e1m1):
    """A real frame of another episode holds less of the scene than a blurred copy of the truth."""
    a, b = e1m1.load(0).frames, e1m1.load(1).frames
    n = min(len(a), len(b))
    real, other = view(a[:n]), view(b[:n])
    floor = edge_corr(other, real).mean()
    assert floor < edge_corr(gaussian_blur(real, 2.0), real).mean() - 0.2
    assert 0 < floor < 0.6  # same game, same start: some shared structure, far from the same picture


def test_angle_diff_wraps():
    assert angle_diff(np.array([10.0]), np.array([350.0])) == pytest.approx([20.0])
    assert angle_diff(np.array([350.0]), np.array([10.0])) == pytest.approx([-20.0])
    assert angle_diff(np.array([180.0]), np.array([0.0])) == pytest.approx([180.0])


def test_counterfactual_mirrors_turns_and_swaps_forward_and_back():
    spec = DEFAULT_ACTIONS
    f = spec.fields
    a = np.tile(spec.noop(), (3, 1))
    a[0, f.index("move")], a[1, f.index("move")] = 1, 2
    a[0, f.index("turn")] = 0
    a[2, f.index("strafe")] = 1
    b = counterfactual(a, spec)
    assert b[0, f.index("move")] == 2 and b[1, f.index("move")] == 1 and b[2, f.index("move")] == 0
    assert b[0, f.index("turn")] == len(spec.turn_degrees_per_tic) - 1
    assert b[1, f.index("turn")] == spec.turn_none  # no turn stays no turn
    assert b[2, f.index("strafe")] == 1
    assert np.array_equal(counterfactual(b, spec), a)  # its own inverse
    inputs = scripted_inputs(spec, 300)
    spec.validate(inputs, "scripted inputs")
    turns = np.asarray(spec.turn_degrees_per_tic)[inputs[:, f.index("turn")]]
    assert (turns > 0).any() and (turns < 0).any()


def test_replay_reproduces_the_recorded_frames_exactly(e1m1):
    """The engine restarted from an episode's seed and fed its recorded actions shows its recorded frames:
    the ground truth the control figures are measured against."""
    from play.engine import ReplayEngines

    engines = ReplayEngines()
    try:
        for ref in e1m1.episodes[:2]:
            ep = e1m1.load(ref)
            engine = engines(ep.meta, e1m1.shards[ref.shard])
            assert engine is not None
            s = 40
            assert np.array_equal(engine.reset(ep.frames[: s + 1], ep.actions[: s + 1]), ep.frames[s])
            for t in range(s, s + 16):
                assert np.array_equal(engine.step(ep.actions[t]), ep.frames[t + 1]), (ref.path, t)
            angle = ep.variable_names.index("ANGLE")
            assert engine.variables[angle] == pytest.approx(ep.variables[s + 16, angle])
        # no seed recorded: no engine
        assert engines({"policy": "ppo"}, e1m1.shards[e1m1.episodes[0].shard]) is None
    finally:
        engines.close()


def test_place_probe_fits_real_frames(e1m1, tmp_path):
    from world_model.evaluation.probe import PlaceProbe, ProbeConfig, get_probe

    cfg = ProbeConfig(steps=150, batch_size=32, width=8, every=1)
    refs = e1m1.episodes
    probe, info = get_probe(e1m1, refs, cfg, cache=tmp_path)
    ep = e1m1.load(refs[0])
    truth = ep.variables[:, [ep.variable_names.index(v) for v in ("POSITION_X", "POSITION_Y", "ANGLE")]]
    pos, ang = probe.errors(ep.frames, truth)
    # against guessing the mean place and a fixed angle, the probe has learned where the frames were taken
    guess = np.linalg.norm(truth[:, :2] - truth[:, :2].mean(0), axis=1).mean()
    assert pos.mean() < 0.6 * guess and ang.mean() < 60
    # cached: asked again, it loads the same weights instead of training
    again, info2 = get_probe(e1m1, refs, cfg, cache=tmp_path)
    assert info2["cached"] == info["cached"] and np.allclose(
        again.predict(ep.frames[:4]), probe.predict(ep.frames[:4])
    )
    loaded, _ = PlaceProbe.load(tmp_path / next(p.name for p in tmp_path.iterdir()) / "probe.safetensors")
    assert np.allclose(loaded.predict(ep.frames[:4]), probe.predict(ep.frames[:4]))


def test_floor_is_below_the_ceiling_of_the_shipped_autoencoder(e1m1):
    """The autoencoder's reconstruction keeps more of the scene than a real frame of another episode."""
    from pathlib import Path

    import torch

    from world_model.model.autoencoder import to_tensor, to_uint8
    from world_model.model.checkpoint import load_autoencoder

    ae, _ = load_autoencoder(Path(__file__).parents[1] / "checkpoints" / "e1m1", "cpu")
    a, b = e1m1.load(0).frames, e1m1.load(1).frames
    n = min(len(a), len(b), 64)
    with torch.no_grad():
        recon = to_uint8(ae.decode(ae.encode(to_tensor(a[:n]))))
    ceiling = edge_corr(view(recon), view(a[:n])).mean()
    floor = edge_corr(view(b[:n]), view(a[:n])).mean()
    assert floor + 0.1 < ceiling
