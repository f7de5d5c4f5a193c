"""The diffusion process (world_model/diffusion.py): the shipped checkpoint samples as it did before the
process became one object, and each parameterisation is exact with a perfect model."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from world_model.checkpoint import load_world_model

DEFAULT = Path(__file__).resolve().parents[1] / "checkpoints" / "default"


# --- the sampler and loss as they were written before `Diffusion` (v-prediction only), kept as references --


def _alpha_sigma(t):
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def _reference_ddim(model, context, actions, steps, cfg, buckets, noise, context_eps, guidance):
    b = context.shape[0]
    bucket_id = cfg.sample_context_bucket if cfg.context_noise else 0
    if bucket_id:
        lv = torch.linspace(0.0, cfg.context_noise_max, buckets)[bucket_id].item()
        context = context * math.sqrt(1 - lv**2) + lv * context_eps
    base = context[:, -1] if cfg.residual else 0.0
    bucket = torch.full((b,), bucket_id, dtype=torch.long)
    if guidance != 1.0:
        context = torch.cat([context, torch.zeros_like(context)])
        actions = torch.cat([actions, actions])
        bucket = torch.cat([bucket, torch.full_like(bucket, buckets)])
    x = noise
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        xin = torch.cat([x, x]) if guidance != 1.0 else x
        v = model(xin, t.expand(xin.shape[0]), context, bucket, actions).float()
        if guidance != 1.0:
            v_cond, v_uncond = v.chunk(2)
            v = v_uncond + guidance * (v_cond - v_uncond)
        a, s = _alpha_sigma(t)
        x0 = a * x - s * v
        eps = s * x + a * v
        a_next, s_next = _alpha_sigma(t_next)
        x = a_next * x0 + s_next * eps
    return x + base


def _reference_loss(model, target, context, actions, cfg, buckets, generator):
    b = target.shape[0]

    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    if cfg.context_noise:
        bucket = (rand(b) * buckets).long().clamp_max(buckets - 1)
        levels = torch.linspace(0.0, cfg.context_noise_max, buckets)
        lv = levels[bucket.clamp_max(len(levels) - 1)].view(-1, 1, 1, 1, 1)
        context = context * torch.sqrt(1 - lv**2) + lv * torch.randn(context.shape, generator=generator)
    else:
        bucket = torch.zeros(b, dtype=torch.long)
    if cfg.residual:
        target = target - context[:, -1]
    t = rand(b)
    eps = torch.randn(target.shape, generator=generator)
    a, s = (v.view(-1, 1, 1, 1) for v in _alpha_sigma(t))
    x_t = a * target + s * eps
    v_target = a * eps - s * target
    drop = rand(b) < cfg.context_drop_prob
    context = torch.where(drop.view(-1, 1, 1, 1, 1), torch.zeros_like(context), context)
    bucket = torch.where(drop, torch.full_like(bucket, buckets), bucket)
    return F.mse_loss(model(x_t, t, context, bucket, actions).float(), v_target.float())


def _default_batch(ck, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    k, c, (h, w) = ck.dit_cfg.context_len, ck.dit_cfg.latent_channels, ck.dit_cfg.latent_size
    context = torch.randn((b, k, c, h, w), generator=g)
    actions = torch.stack([torch.randint(n, (b, k + 1), generator=g) for n in ck.dit_cfg.action_sizes], -1)
    return context, actions, torch.randn((b, c, h, w), generator=g), torch.randn(context.shape, generator=g)


@pytest.fixture(scope="module")
def default_ck():
    return load_world_model(DEFAULT, "cpu")


def test_default_checkpoint_loads_as_v_prediction(default_ck):
    assert "prediction" not in default_ck.config["diffusion"]  # saved before the setting existed
    assert default_ck.diffusion.prediction == "v"
    assert default_ck.process.dropped_bucket == default_ck.dit_cfg.noise_buckets


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_default_checkpoint_samples_bit_identically_to_the_old_sampler(default_ck, steps, guidance):
    ck = default_ck
    context, actions, noise, context_eps = _default_batch(ck)
    with torch.no_grad():
        buckets = ck.dit_cfg.noise_buckets
        want = _reference_ddim(
            ck.dit, context, actions, steps, ck.diffusion, buckets, noise, context_eps, guidance
        )
    got = ck.process.sample(
        ck.dit, context, actions, steps, noise=noise, context_eps=context_eps, guidance=guidance
    )
    assert torch.equal(got, want)
    assert want.std() > 0.1  # a trained model's sample, not a constant


def test_default_checkpoint_loss_is_the_old_loss_draw_for_draw(default_ck):
    ck = default_ck
    context, actions, target, _ = _default_batch(ck, b=8, seed=1)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        want = _reference_loss(ck.dit, target, context, actions, ck.diffusion, ck.dit_cfg.noise_buckets, g)
        got = ck.process.loss(ck.dit, target, context, actions, torch.Generator().manual_seed(3))
    assert torch.equal(got, want)
