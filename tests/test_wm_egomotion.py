"""The ego-motion prior: the last frame turned by the player's turn, checked on the real engine's turns,
and the diffusion process predicting the change from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.actions import DEFAULT_ACTIONS
from data.frame_layout import status_bar_rows
from world_model.evaluation.metrics import scene_edge_corr
from world_model.model.config import DiffusionConfig
from world_model.model.diffusion import Diffusion
from world_model.model.egomotion import TurnWarp

TURN = DEFAULT_ACTIONS.fields.index("turn")
FAST_LEFT, FAST_RIGHT = 0, len(DEFAULT_ACTIONS.turn_degrees_per_tic) - 1


def _actions(turns: list[int], k: int = 2) -> torch.Tensor:
    """(B, K+1, fields): noop actions with the current one turning by each bin of `turns`."""
    a = torch.as_tensor(DEFAULT_ACTIONS.noop()).repeat(len(turns), k + 1, 1)
    a[:, -1, TURN] = torch.as_tensor(turns)
    return a


@pytest.fixture(scope="module")
def engine_turns(tmp_path_factory):
    """Real frames of the round arena around fast turns in place: (last frames, next frames, turn bins),
    from random play recorded by `collect`. (At the arena's centre the room looks the same from every angle
    and only the monsters move; the random player wanders off it.)"""
    from agent.collect import CollectConfig, collect
    from data.dataset import Dataset

    out = tmp_path_factory.mktemp("arena") / "data"
    cfg = CollectConfig(
        out=str(out),
        scenario="defend_the_center",
        policy="random",
        episodes=4,
        workers=1,
        max_steps=300,
        seed=5,
    )
    collect(cfg, progress=False)
    last, nxt, turns = [], [], []
    for _, ep in Dataset(out).iter_episodes():
        a = ep.actions
        pick = (np.isin(a[:, TURN], [FAST_LEFT, FAST_RIGHT]) & (a[:, 0] == 0) & (a[:, 1] == 0))[:-1]
        pick[:20] = False  # turning is ignored for the first tics, and the player starts at the centre
        last.append(ep.frames[:-1][pick])
        nxt.append(ep.frames[1:][pick])
        turns.append(a[:-1, TURN][pick])
    return np.concatenate(last), np.concatenate(nxt), np.concatenate(turns)


def _warp_frames(warp: TurnWarp, frames: np.ndarray, turns) -> np.ndarray:
    x = torch.from_numpy(frames.copy()).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    out = warp(x, _actions(list(turns)))
    return out.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_the_engines_turn_is_followed_by_the_warped_frame(engine_turns):
    last, nxt, turns = engine_turns
    h, w = last.shape[1:3]
    warp = TurnWarp.for_world(DEFAULT_ACTIONS, 2, (w, h), (h, w))
    copy, turned = scene_edge_corr(last, nxt), scene_edge_corr(_warp_frames(warp, last, turns), nxt)
    # A fast turn moves the view by about 20 px: the last frame as it is keeps little of the next one's
    # structure, the turned one much more, start by start.
    assert len(turns) >= 20
    assert turned.mean() > copy.mean() + 0.1, (turned.mean(), copy.mean())
    assert (turned > copy).mean() >= 0.8
    # Turned the wrong way, it is no better than the copy: the sign is VizDoom's (positive turns right).
    wrong = scene_edge_corr(_warp_frames(warp, last, [FAST_LEFT + FAST_RIGHT - t for t in turns]), nxt)
    assert wrong.mean() < copy.mean() + 0.05


def test_no_turn_is_the_identity_and_the_status_bar_never_turns():
    warp = TurnWarp.for_world(DEFAULT_ACTIONS, 2, (160, 120), (30, 40))
    last = torch.randn(3, 8, 30, 40)
    torch.testing.assert_close(warp(last, _actions([DEFAULT_ACTIONS.turn_none] * 3)), last)
    # "No action" (CFG's unconditional branch, negative values) turns by nothing.
    torch.testing.assert_close(warp(last, torch.full((3, 3, 5), -1)), last)
    turned = warp(last, _actions([FAST_LEFT, FAST_RIGHT, FAST_RIGHT]))
    bar = slice(status_bar_rows(120).start // 4 + 1, 30)  # latent rows wholly on the status bar
    torch.testing.assert_close(turned[..., bar, :], last[..., bar, :])
    assert (turned[..., :10, :] - last[..., :10, :]).abs().mean() > 0.3


def test_a_turn_right_moves_the_content_left_by_the_projected_angle():
    # A vertical line at the centre column: turned right by theta, it is seen f tan(theta) px to the left.
    frame = torch.zeros(1, 1, 120, 160)
    frame[..., 78:82] = 1.0
    warp = TurnWarp.for_world(DEFAULT_ACTIONS, 2, (160, 120), (120, 160))
    turned = warp(frame, _actions([FAST_RIGHT]))[0, 0, 40]  # a row of the view
    centre = (turned * torch.arange(160)).sum() / turned.sum()
    expected = 80 - 80 * np.tan(np.radians(7.0 * 2))
    assert abs(float(centre) - (expected - 0.5 + 0.0)) < 1.0, (float(centre), expected)


def _batch(seed=0, b=6, k=2, shape=(4, 15, 20)):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn((b, *shape), generator=g)
    context = torch.randn((b, k, *shape), generator=g)
    turns = [FAST_LEFT, FAST_RIGHT, DEFAULT_ACTIONS.turn_none] * (b // 3)
    return target, context, _actions(turns, k)


def test_ego_warp_needs_the_worlds_warp():
    with pytest.raises(ValueError, match="ego_warp"):
        Diffusion(DiffusionConfig(ego_warp=True), 10)


@pytest.mark.parametrize("clean", [False, True])
def test_the_change_is_taken_from_the_turned_last_latent(clean):
    # x0-prediction: a model that outputs zero predicts "no change" exactly, so the sample is the base.
    cfg = DiffusionConfig(prediction="x0", ego_warp=True, clean_residual=clean, action_guidance=2.0)
    warp = TurnWarp.for_world(DEFAULT_ACTIONS, 2, (160, 120), (15, 20))
    process = Diffusion(cfg, 10, warp)
    target, context, actions = _batch()
    g = torch.Generator().manual_seed(1)
    context_eps, noise = torch.randn(context.shape, generator=g), torch.randn(target.shape, generator=g)
    shown = process.sampling_context(context, context_eps)[:, -1]
    base = warp(context[:, -1] if clean else shown, actions)
    zero = lambda x, *_: torch.zeros_like(x)
    got = process.sample(zero, context, actions, 2, noise=noise, context_eps=context_eps)
    torch.testing.assert_close(got, base)  # under every branch of the action guidance too
    assert (got - (context[:, -1] if clean else shown))[:2].abs().mean() > 0.1  # the turns did turn it
    torch.testing.assert_close(got[2:3], (context[:, -1] if clean else shown)[2:3])  # no turn: the last one

    # In training the target is the change from the same base: the exact change has zero loss, no change not.
    cfg.context_drop_prob = 0.0

    def exact(x, t, ctx, bucket, acts):
        return target - warp(context[:, -1] if clean else ctx[:, -1], acts)

    gen = torch.Generator().manual_seed(0)
    assert process.loss(exact, target, context, actions, gen) < 1e-10
    assert process.loss(zero, target, context, actions, torch.Generator().manual_seed(0)) > 0.5
