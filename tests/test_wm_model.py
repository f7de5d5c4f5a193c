"""DiT, diffusion and autoencoder on tiny shapes."""

import numpy as np
import pytest
import torch

from data.actions import DEFAULT_ACTIONS
from data.windows import LatentWindows
from world_model.model.autoencoder import Autoencoder, to_tensor, to_uint8
from world_model.model.config import DiffusionConfig, DiTConfig, get_preset
from world_model.model.diffusion import Diffusion
from world_model.model.dit import DiT
from world_model.training.autoencoder import random_crops


def tiny_dit(**kw) -> DiT:
    cfg = DiTConfig(
        latent_channels=4,
        latent_size=(3, 5),
        context_len=2,
        patch_size=1,
        hidden=32,
        depth=2,
        heads=2,
        mlp_ratio=2.0,
    )
    for key, value in kw.items():
        setattr(cfg, key, value)
    return DiT(cfg)


def batch(model: DiT, b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c, (h, w), k = model.cfg.latent_channels, model.cfg.latent_size, model.cfg.context_len
    x = torch.randn(b, c, h, w, generator=g)
    ctx = torch.randn(b, k, c, h, w, generator=g)
    acts = torch.stack([torch.randint(n, (b, k + 1), generator=g) for n in model.cfg.action_sizes], dim=-1)
    return x, ctx, acts


def test_fresh_dit_outputs_exactly_zero():
    model = tiny_dit()
    x, ctx, acts = batch(model)
    out = model(x, torch.rand(3), ctx, torch.tensor([0, 3, 10]), acts)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("patch,size", [(1, (3, 5)), (2, (3, 5)), (2, (4, 6)), (4, (15, 20))])
def test_patchify_unpatchify_roundtrip(patch, size):
    model = tiny_dit(patch_size=patch, latent_size=size)
    x = torch.randn(2, 4, *size)
    tokens = model.patchify(x)
    gh, gw = -(-size[0] // patch), -(-size[1] // patch)
    assert tokens.shape == (2, gh * gw, patch * patch * 4)
    assert torch.equal(model.unpatchify(tokens), x)


def test_action_embedding_changes_output_once_trained_a_little():
    model = tiny_dit()
    for p in model.parameters():  # leave the zero init: every parameter random
        torch.nn.init.normal_(p, std=0.1)
    x, ctx, acts = batch(model)
    t, bucket = torch.rand(3), torch.zeros(3, dtype=torch.long)
    other = acts.clone()
    other[:, -1, 2] = (other[:, -1, 2] + 1) % 7
    assert not torch.allclose(model(x, t, ctx, bucket, acts), model(x, t, ctx, bucket, other))


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("guidance", [1.0, 1.5])
def test_ddim_returns_finite_latents(steps, guidance):
    model = tiny_dit()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    _, ctx, acts = batch(model)
    z = Diffusion(DiffusionConfig(), model.cfg.noise_buckets).sample(
        model, ctx, acts, steps, generator=torch.Generator().manual_seed(0), guidance=guidance
    )
    assert z.shape == (3, 4, 3, 5)
    assert torch.isfinite(z).all()


def test_ddim_rejects_zero_steps():
    model = tiny_dit()
    _, ctx, acts = batch(model)
    with pytest.raises(ValueError, match="steps"):
        Diffusion(DiffusionConfig(), 10).sample(model, ctx, acts, 0)


def test_tiny_model_overfits_a_handful_of_transitions():
    torch.manual_seed(0)
    model = tiny_dit(hidden=64)
    target, ctx, acts = batch(model, b=4, seed=1)
    target = ctx[:, -1] * 0.5 + 0.3  # a learnable function of the context
    # Four transitions, each repeated so every step sees several noise levels; no context noise or
    # dropout, so the loss has no irreducible part.
    target, ctx, acts = target.repeat(8, 1, 1, 1), ctx.repeat(8, 1, 1, 1, 1), acts.repeat(8, 1, 1)
    process = Diffusion(DiffusionConfig(context_drop_prob=0.0, context_noise=False), 10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)

    def mean_loss():
        with torch.no_grad():
            return float(
                np.mean(
                    [
                        process.loss(model, target, ctx, acts, torch.Generator().manual_seed(i)).item()
                        for i in range(8)
                    ]
                )
            )

    before = mean_loss()
    for _ in range(300):
        loss = process.loss(model, target, ctx, acts, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_loss()
    assert after < before / 10, (before, after)


def test_autoencoder_shapes_and_uint8_roundtrip():
    ae = Autoencoder(get_preset("tiny").ae)
    frames = np.random.default_rng(0).integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    x = to_tensor(frames)
    assert x.shape == (2, 3, 24, 32) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), frames)
    z = ae.encode(x)
    assert z.shape == (2, 4, 3, 4)
    assert ae.decode(z).shape == x.shape
    crops = random_crops(frames, 5, 16, 8, torch.Generator().manual_seed(0))
    assert crops.shape == (5, 16, 16, 3)


def test_windows_pad_with_first_frame_and_noop_actions():
    n, k = 6, 3
    lat = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, 1, 1).contiguous()
    acts = torch.tensor([[i % 3, 0, 3, 0, 0] for i in range(n)])
    win = LatentWindows(
        lat, acts, torch.tensor([0, 4]), torch.tensor([4, 2]), torch.tensor([0, 1]), k, DEFAULT_ACTIONS.noop()
    )
    assert len(win) == 3 + 1
    target, ctx, a = win.gather(torch.tensor([0, 3]))
    assert target[:, 0, 0, 0].tolist() == [1.0, 5.0]
    assert ctx[0, :, 0, 0, 0].tolist() == [0.0, 0.0, 0.0]  # padded by frame 0
    assert ctx[1, :, 0, 0, 0].tolist() == [4.0, 4.0, 4.0]  # second episode starts at 4
    noop = DEFAULT_ACTIONS.noop().tolist()
    assert a[0].tolist() == [noop, noop, noop, acts[0].tolist()]  # current = action taken at frame 0
    assert a[1, -1].tolist() == acts[4].tolist() and a[1, -2].tolist() == noop
