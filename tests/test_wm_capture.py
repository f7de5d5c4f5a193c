"""The play step from static buffers (world_model/model/capture.py): the same numbers as the sampler drawing
its own noise, eagerly on CPU, and as CUDA graphs where a GPU is at hand."""

import dataclasses

import numpy as np
import pytest
import torch

from data.actions import DEFAULT_ACTIONS
from world_model.model.autoencoder import to_tensor, to_uint8
from world_model.model.checkpoint import load_world_model, make_untrained_checkpoint
from world_model.model.env import WorldModelEnv

RES = (32, 24)
ACTIONS = [DEFAULT_ACTIONS.make(move=1), DEFAULT_ACTIONS.make(turn=1), DEFAULT_ACTIONS.make(attack=1)]


def randomized_checkpoint(tmp_path, device="cpu", **diffusion):
    """A tiny checkpoint whose DiT and decoder compute something (a fresh DiT predicts v = 0)."""
    path = make_untrained_checkpoint(tmp_path / "ckpt", preset="tiny", resolution=RES, seed=0)
    ck = load_world_model(path, device)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*ck.dit.parameters(), *ck.ae.decoder.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return dataclasses.replace(ck, diffusion=dataclasses.replace(ck.diffusion, **diffusion))


def start_frames(n=3):
    return np.random.default_rng(0).integers(0, 256, (n, RES[1], RES[0], 3), dtype=np.uint8)


@torch.no_grad()
def reference_rollout(ck, steps: list[int], seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """Play as the env did before its buffers were static: the sampler draws its own noise from the seed."""
    gen = torch.Generator().manual_seed(seed)
    k, noop = ck.dit_cfg.context_len, DEFAULT_ACTIONS.noop()
    frames = start_frames()
    ctx = ck.ae.encode(to_tensor(frames[-k:]))[None]  # (1, K, C, h, w)
    history = torch.as_tensor(np.tile(noop, (k, 1)))[None]  # (1, K, fields): a reset without actions
    out = []
    for n, action in zip(steps, ACTIONS * 3, strict=False):
        acts = torch.cat([history, torch.as_tensor(action[None, None])], dim=1)  # (1, K+1, fields)
        z = ck.process.sample(ck.dit, ctx, acts, n, generator=gen)
        out.append(to_uint8(ck.ae.decode(z))[0])
        ctx = torch.cat([ctx[:, 1:], z[:, None]], dim=1)
        history = acts[:, 1:]
    return np.stack(out), ctx


def env_rollout(env: WorldModelEnv, steps: list[int]) -> np.ndarray:
    env.reset(start_frames())
    out = []
    for n, action in zip(steps, ACTIONS * 3, strict=False):
        env.sampling_steps = n
        out.append(env.step(action))
    return np.stack(out)


@pytest.mark.parametrize(
    "diffusion",
    [
        {},
        {"guidance": 2.0},
        {"sample_context_bucket": 0},
        {"context_noise": False, "residual": False},
        {"prediction": "x0", "guidance": 2.0},
        {"prediction": "edm", "guidance": 2.0},
    ],
    ids=["default", "cfg", "clean-context", "no-context-noise", "x0-cfg", "edm-cfg"],
)
def test_static_buffer_step_equals_the_sampler_drawing_its_own_noise(tmp_path, diffusion):
    ck = randomized_checkpoint(tmp_path, **diffusion)
    steps = [2, 1, 4, 4, 1, 2]  # changing the step count mid-play, as [ and ] do
    want, want_ctx = reference_rollout(ck, steps, seed=5)
    for capture in (True, False):  # on CPU capture falls back to the same eager function
        env = WorldModelEnv(ck, seed=5, capture=capture)
        assert not env.captured
        got = env_rollout(env, steps)
        assert np.array_equal(got, want)
        assert torch.equal(env._ctx, want_ctx)
        assert set(env.last_timing) == {"dit_ms", "decode_ms", "total_ms"}
    assert got.std() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_step_matches_eager_and_captures_once_per_step_count(tmp_path):
    steps = [1, 4, 1, 4, 2, 2]
    frames, latents = {}, {}
    for capture in (False, True):
        env = WorldModelEnv(randomized_checkpoint(tmp_path, "cuda", guidance=2.0), "cuda", 3, capture)
        assert env.captured == capture
        frames[capture] = env_rollout(env, steps).astype(int)
        latents[capture] = env._ctx.clone()
        if capture:
            assert env._play.captured_steps == [1, 2, 4]
            assert env.last_timing["dit_ms"] > 0 and env.last_timing["decode_ms"] > 0
    # Same kernels from the same buffers; allow bf16 rounding should cuBLAS pick another algorithm.
    assert np.abs(frames[True] - frames[False]).mean() < 0.5
    torch.testing.assert_close(latents[True], latents[False], atol=2e-2, rtol=2e-2)
