"""Diffusion around the DiT: schedule, v-prediction loss, context noise augmentation, few-step DDIM with CFG.

Continuous time t in [0, 1] on the cosine schedule alpha = cos(pi t / 2), sigma = sin(pi t / 2)
(Nichol & Dhariwal 2021), so x_t = alpha x_0 + sigma eps and the target is v = alpha eps - sigma x_0
(Salimans & Ho 2022, progressive distillation, sec. 4), which stays well-posed at t = 1 where
few-step sampling starts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from world_model.config import DiffusionConfig


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def bucket_levels(cfg: DiffusionConfig, buckets: int) -> torch.Tensor:
    """Noise level of each context-noise bucket: evenly spaced in [0, context_noise_max], bucket 0 = clean."""
    return torch.linspace(0.0, cfg.context_noise_max, buckets)


def noise_context(
    context: torch.Tensor,
    bucket: torch.Tensor,
    levels: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Variance-preserving noise on the past latents at each sample's bucket level (GameNGen sec. 3.2.1)."""
    lv = levels.to(context.device)[bucket.clamp_max(len(levels) - 1)].view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
    eps = torch.randn(
        context.shape, generator=generator, device=context.device if generator is None else generator.device
    ).to(context.device)
    return context * torch.sqrt(1 - lv**2) + lv * eps


def training_loss(
    model,
    target: torch.Tensor,
    context: torch.Tensor,
    actions: torch.Tensor,
    cfg: DiffusionConfig,
    buckets: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """v-prediction MSE for a batch of (next latent, past latents, actions).

    target (B, C, h, w); context (B, K, C, h, w); actions (B, K+1, fields)."""
    b, dev = target.shape[0], target.device
    gdev = generator.device if generator is not None else dev

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=gdev).to(dev)

    if cfg.context_noise:
        bucket = (rand(b) * buckets).long().clamp_max(buckets - 1)  # (B,)
        context = noise_context(context, bucket, bucket_levels(cfg, buckets), generator)
    else:
        bucket = torch.zeros(b, dtype=torch.long, device=dev)
    if cfg.residual:
        # Relative to the last latent as the model sees it (noised): it learns to undo that noise too.
        target = target - context[:, -1]
    t = rand(b)  # (B,)
    eps = torch.randn(target.shape, generator=generator, device=gdev).to(dev)
    a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
    x_t = a * target + s * eps
    v_target = a * eps - s * target
    drop = rand(b) < cfg.context_drop_prob  # (B,) the unconditional branch of CFG
    context = torch.where(drop.view(-1, 1, 1, 1, 1), torch.zeros_like(context), context)
    bucket = torch.where(drop, torch.full_like(bucket, buckets), bucket)
    return F.mse_loss(model(x_t, t, context, bucket, actions).float(), v_target.float())


def sample_bucket(cfg: DiffusionConfig) -> int:
    """The bucket a sampler tells the model (its small noise level is applied to the context)."""
    return cfg.sample_context_bucket if cfg.context_noise else 0


@torch.no_grad()
def ddim_sample(
    model,
    context: torch.Tensor,
    actions: torch.Tensor,
    steps: int,
    cfg: DiffusionConfig,
    buckets: int,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    guidance: float | None = None,
    context_eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021), t = 1 to 0 in `steps` equal steps -> next latent (B, C, h, w).

    With guidance w != 1, v = v_uncond + w (v_cond - v_uncond), the unconditional branch having its
    past frames dropped (actions kept). `noise` (B, C, h, w) and `context_eps` (the context's shape) are
    the draws otherwise taken from `generator`: given, the sampler draws nothing (a captured CUDA graph
    must not)."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    b, k, c, h, w = context.shape
    dev = context.device
    guidance = cfg.guidance if guidance is None else guidance
    bucket_id = sample_bucket(cfg)
    if bucket_id:
        lv = bucket_levels(cfg, buckets)[bucket_id].item()
        eps = (
            context_eps
            if context_eps is not None
            else torch.randn(
                context.shape, generator=generator, device=dev if generator is None else generator.device
            )
        )
        context = context * math.sqrt(1 - lv**2) + lv * eps.to(dev)
    base = context[:, -1] if cfg.residual else 0.0  # (B, C, h, w) as in training: the (noised) last latent
    bucket = torch.full((b,), bucket_id, dtype=torch.long, device=dev)
    if guidance != 1.0:
        context = torch.cat([context, torch.zeros_like(context)])
        actions = torch.cat([actions, actions])
        bucket = torch.cat([bucket, torch.full_like(bucket, buckets)])
    x = (
        noise
        if noise is not None
        else torch.randn(
            (b, c, h, w), generator=generator, device=dev if generator is None else generator.device
        ).to(dev)
    )
    ts = torch.linspace(1.0, 0.0, steps + 1, device=dev)
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        xin = torch.cat([x, x]) if guidance != 1.0 else x
        v = model(xin, t.expand(xin.shape[0]), context, bucket, actions).float()
        if guidance != 1.0:
            v_cond, v_uncond = v.chunk(2)
            v = v_uncond + guidance * (v_cond - v_uncond)
        a, s = alpha_sigma(t)
        x0 = a * x - s * v
        eps = s * x + a * v
        a_next, s_next = alpha_sigma(t_next)
        x = a_next * x0 + s_next * eps
    return x + base
