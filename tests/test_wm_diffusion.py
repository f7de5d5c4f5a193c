"""The diffusion process (world_model/model/diffusion.py): a checkpoint saved before the newer settings
existed samples as it did before the process became one object, and each parameterisation is exact with a
perfect model."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from world_model.model.checkpoint import load_world_model, make_untrained_checkpoint, save_world_model
from world_model.model.config import PREDICTIONS, DiffusionConfig, DiTConfig, get_preset
from world_model.model.diffusion import Diffusion
from world_model.model.dit import DiT

DEFAULT = Path(__file__).resolve().parents[1] / "checkpoints" / "e1m1"  # the v-prediction cpu model


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


# Config fields added after the first checkpoints were saved: a config.json without them must load with
# the values those checkpoints were trained with.
NEWER_FIELDS = {
    "ae": ["grad_loss"],
    "dit": ["action_tokens", "action_input", "conv_head", "base_input"],
    "diffusion": ["prediction", "clean_residual", "action_drop_prob", "action_guidance", "ego_warp"],
    "train": ["rollout_share", "rollout_steps", "rollout_mode", "rollout_ema"],
}


def write_old_checkpoint(path: Path) -> Path:
    """A checkpoint as saved before the newer fields existed: the cpu networks (the shipped E1M1 model's),
    randomly initialised and then perturbed so that every block and the output are not zero."""
    from data.actions import DEFAULT_ACTIONS
    from world_model.model.autoencoder import Autoencoder
    from world_model.model.checkpoint import dit_config_for

    torch.manual_seed(0)
    p = get_preset("cpu")
    ae = Autoencoder(p.ae)
    dit = DiT(dit_config_for(p.dit, ae, (160, 120), DEFAULT_ACTIONS))
    with torch.no_grad():
        for q in dit.parameters():
            q.add_(0.05 * torch.randn_like(q))
    save_world_model(path, ae, dit, dit, p.diffusion, p.train, DEFAULT_ACTIONS, (160, 120), 2, step=1)
    config = json.loads((path / "config.json").read_text())
    for section, names in NEWER_FIELDS.items():
        for name in names:
            del config[section][name]
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def default_ck(tmp_path_factory):
    return load_world_model(write_old_checkpoint(tmp_path_factory.mktemp("old") / "ckpt"), "cpu")


def test_an_old_checkpoint_loads_with_the_settings_it_was_trained_with(default_ck):
    for section, names in NEWER_FIELDS.items():
        assert not set(names) & set(default_ck.config[section])  # saved before the settings existed
    assert default_ck.diffusion.prediction == "v" and not default_ck.diffusion.clean_residual
    assert default_ck.diffusion.action_guidance == 1.0 and default_ck.diffusion.action_drop_prob == 0.0
    assert not default_ck.dit_cfg.action_tokens and default_ck.process.dropped_bucket == 10
    assert not default_ck.dit_cfg.action_input and not default_ck.diffusion.ego_warp
    assert default_ck.ae.cfg.grad_loss == 0.0
    assert not default_ck.dit_cfg.conv_head and not default_ck.dit_cfg.base_input
    assert default_ck.train.rollout_share == 0.0  # trained on true pasts only


def test_the_shipped_e1m1_model_loads_as_the_v_prediction_it_was_trained_with():
    ck = load_world_model(DEFAULT, "cpu")
    assert "prediction" not in ck.config["diffusion"]  # saved before the setting existed
    assert ck.diffusion.prediction == "v" and not ck.diffusion.clean_residual
    assert ck.diffusion == get_preset("cpu").diffusion


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_an_old_checkpoint_samples_bit_identically_to_the_old_sampler(default_ck, steps, guidance):
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
    assert want.std() > 0.1  # a working model's sample, not a constant


def test_an_old_checkpoint_loss_is_the_old_loss_draw_for_draw(default_ck):
    ck = default_ck
    context, actions, target, _ = _default_batch(ck, b=8, seed=1)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        want = _reference_loss(ck.dit, target, context, actions, ck.diffusion, ck.dit_cfg.noise_buckets, g)
        got = ck.process.loss(ck.dit, target, context, actions, torch.Generator().manual_seed(3))
    assert torch.equal(got, want)


# --- each parameterisation with a perfect model ------------------------------------------------------------

SHAPE = (2, 3, 4, 5)  # (B, C, h, w) of a tiny latent
K = 2  # context frames


def perfect_model(cfg: DiffusionConfig, clean, noises: list | None = None):
    """A model that knows the clean target (in the process's space: the change from the last context latent
    where residual): from its input it recovers the noise and returns what its parameterisation asks for.
    `clean(context)` -> (B, C, h, w); it sees the context the model is shown (zeros where dropped). Each
    call's recovered noise is appended to `noises`: a deterministic sampler keeps it the same at every step
    (DDIM's and the probability-flow ODE's path from the noise to the target is x0 + noise scaled)."""

    def model(x_in, t_in, context, bucket, actions):
        x0 = clean(context)
        if len(x0) != len(x_in):  # CFG's branches: a perfect model knows the target in each of them
            x0 = x0.repeat(len(x_in) // len(x0), 1, 1, 1)
        if cfg.prediction == "edm":  # x_in = c_in x, t_in = c_noise = ln(sigma) / 4 (Karras et al. Table 1)
            sigma = torch.exp(4 * t_in).view(-1, 1, 1, 1)
            scale = torch.sqrt(sigma**2 + cfg.edm_sigma_data**2)
            x = x_in * scale  # x = x0 + sigma eps
            if noises is not None:
                noises.append((x - x0) / sigma)
            c_skip, c_out = cfg.edm_sigma_data**2 / scale**2, sigma * cfg.edm_sigma_data / scale
            return (x0 - c_skip * x) / c_out  # D = c_skip x + c_out F = x0
        a, s = (v.view(-1, 1, 1, 1) for v in _alpha_sigma(t_in))
        eps = (x_in - a * x0) / s  # x_t = a x0 + s eps
        if noises is not None:
            noises.append(eps)
        return {"v": a * eps - s * x0, "x0": x0, "eps": eps}[cfg.prediction]

    return model


def _latents(seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(SHAPE, generator=g)
    context = torch.randn((SHAPE[0], K, *SHAPE[1:]), generator=g)
    actions = torch.zeros((SHAPE[0], K + 1, 5), dtype=torch.long)
    return target, context, actions


RESIDUALS = {  # what the target is the change from: nothing, the noised last context latent, the clean one
    "none": dict(residual=False),
    "noised": dict(residual=True),
    "clean": dict(residual=True, clean_residual=True),
}


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("residual", list(RESIDUALS))
def test_loss_is_zero_for_the_exact_output(prediction, residual):
    # Residual targets are relative to the last context frame, which a dropped context hides: keep every
    # context there, and drop half of them where the target does not depend on the context.
    cfg = DiffusionConfig(
        prediction=prediction, context_drop_prob=0.5 if residual == "none" else 0.0, **RESIDUALS[residual]
    )
    process = Diffusion(cfg, 10)
    target, context, actions = _latents()
    target, context, actions = (
        target.repeat(8, 1, 1, 1),
        context.repeat(8, 1, 1, 1, 1),
        actions.repeat(8, 1, 1),
    )

    def clean(ctx):  # ctx: the context as the model is shown it (noised)
        return {"none": target, "noised": target - ctx[:, -1], "clean": target - context[:, -1]}[residual]

    perfect = process.loss(
        perfect_model(cfg, clean), target, context, actions, torch.Generator().manual_seed(0)
    )
    zero = process.loss(
        lambda x, *_: torch.zeros_like(x), target, context, actions, torch.Generator().manual_seed(0)
    )
    assert zero > 0.1
    assert perfect < 1e-6 * zero, (perfect, zero)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("residual", list(RESIDUALS))
@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("guidance, action_guidance", [(1.0, 1.0), (2.0, 1.0), (1.0, 3.0), (2.0, 3.0)])
def test_sampler_with_a_perfect_model_returns_the_target(
    prediction, residual, steps, guidance, action_guidance
):
    # context noise on: bucket 1 at sampling
    cfg = DiffusionConfig(prediction=prediction, action_guidance=action_guidance, **RESIDUALS[residual])
    process = Diffusion(cfg, 10)
    assert process.draws_context_noise
    target, context, actions = _latents(seed=1)
    g = torch.Generator().manual_seed(2)
    context_eps, noise = torch.randn(context.shape, generator=g), torch.randn(SHAPE, generator=g)
    # The residual is taken from the last context latent as the model is shown it (noised by context_eps),
    # or from the clean one.
    shown = process.sampling_context(context, context_eps)[:, -1]
    base = {"none": 0.0, "noised": shown, "clean": context[:, -1]}[residual]
    noises = []
    model = perfect_model(cfg, lambda ctx: target - base, noises)
    got = process.sample(
        model, context, actions, steps, noise=noise, context_eps=context_eps, guidance=guidance
    )
    torch.testing.assert_close(got, target, atol=1e-4, rtol=1e-4)
    assert len(noises) == steps
    # Every step on the path from the first noise to the target (float32 rounding, divided by EDM's
    # sigma_min = 0.002 at the last step, allows about 1e-3).
    for later in noises[1:]:
        torch.testing.assert_close(later, noises[0], atol=1e-3, rtol=1e-3)


def test_action_guidance_pushes_away_from_the_no_action_branch():
    """out = cond + (w - 1)(cond - no_action): the no-action branch keeps the past frames and is told
    NO_ACTION; actions are dropped in training at action_drop_prob."""
    from world_model.model.diffusion import NO_ACTION

    process = Diffusion(DiffusionConfig(prediction="x0", residual=False, action_guidance=3.0), 10)
    target, context, actions = _latents(seed=5)
    seen = []

    def model(x, t, ctx, bucket, acts):  # 1 where told an action, 0 where told none
        seen.append((ctx.clone(), acts.clone()))
        return (acts[:, -1, :1] != NO_ACTION).float().view(-1, 1, 1, 1).expand_as(x).clone()

    out = process.sample(model, context, actions, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.full_like(out, 3.0))  # 1 + (3 - 1)(1 - 0)
    ctx, acts = seen[0]
    assert torch.equal(ctx[: len(context)], ctx[len(context) :])  # past frames kept in both branches
    assert (acts[len(context) :] == NO_ACTION).all() and (acts[: len(context)] >= 0).all()

    drop = Diffusion(DiffusionConfig(action_drop_prob=0.5, context_drop_prob=0.0), 10)
    told = []
    big = 512

    def record(x, t, ctx, bucket, acts):
        told.append((acts == NO_ACTION).all(dim=(1, 2)))
        return torch.zeros_like(x)

    target, context, actions = (
        v.repeat(big // 2, *([1] * (v.dim() - 1))) for v in (target, context, actions)
    )
    drop.loss(record, target, context, actions, torch.Generator().manual_seed(1))
    assert 0.4 < told[0].float().mean() < 0.6


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_sampler_draws_from_its_generator_in_the_documented_order(prediction):
    """context noise first, then x: what the play step's static buffers are filled in."""
    process = Diffusion(DiffusionConfig(prediction=prediction), 10)
    target, context, actions = _latents(seed=3)
    g = torch.Generator().manual_seed(4)
    context_eps, noise = torch.randn(context.shape, generator=g), torch.randn(SHAPE, generator=g)

    def model(x, t, ctx, bucket, acts):  # depends on all its inputs, so the draws matter
        return 0.3 * x + 0.1 * ctx[:, -1] + 0.01 * t.view(-1, 1, 1, 1) + 0.02 * bucket.view(-1, 1, 1, 1)

    drawn = process.sample(model, context, actions, 2, generator=torch.Generator().manual_seed(4))
    given = process.sample(model, context, actions, 2, noise=noise, context_eps=context_eps)
    assert torch.equal(drawn, given)


# --- the setting in checkpoints ---------------------------------------------------------------------------


def test_prediction_is_saved_in_the_checkpoint_and_a_bad_one_is_a_clear_error(tmp_path):
    ck = load_world_model(make_untrained_checkpoint(tmp_path / "v", preset="tiny", resolution=(32, 24)))
    assert ck.process.prediction == "v"
    save_world_model(
        tmp_path / "edm",
        ck.ae,
        ck.dit,
        ck.dit,
        dataclasses.replace(ck.diffusion, prediction="edm"),
        ck.train,
        ck.action_spec,
        ck.resolution,
        ck.frame_skip,
        step=0,
    )
    edm = load_world_model(tmp_path / "edm")
    assert edm.config["diffusion"]["prediction"] == "edm" and edm.process.prediction == "edm"
    config = json.loads((tmp_path / "edm" / "config.json").read_text())
    config["diffusion"]["prediction"] = "flow"
    config.pop("files")  # edited by hand: no longer the recorded bytes
    (tmp_path / "edm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"edm/config.json: DiffusionConfig.prediction = 'flow'.*\['v', 'x0', 'eps', 'edm'\]"
    ):
        load_world_model(tmp_path / "edm")


@pytest.mark.slow  # 4 to 10 s each on 2 free cores, several times that on a busy machine
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_each_parameterisation_learns_a_handful_of_transitions(prediction):
    """Trained on its own loss, a tiny DiT samples the targets back: the loss's gradient and the sampler
    agree on what the model outputs. Measured RMSE at 4 / 8 steps: v 0.029 / 0.024, x0 0.002 / 0.002,
    eps 0.048 / 0.028, edm 0.024 / 0.025; eps at 4 steps is the fragile one (above 0.1 with other seeds)."""
    torch.manual_seed(0)
    cfg = DiTConfig(
        latent_channels=4,
        latent_size=(3, 5),
        context_len=2,
        patch_size=1,
        hidden=64,
        depth=2,
        heads=2,
        mlp_ratio=2,
    )
    model = DiT(cfg)
    g = torch.Generator().manual_seed(1)
    torch.randn((4, 4, 3, 5), generator=g)  # the draws of test_wm_model's batch(), whose figures are quoted
    context = torch.randn((4, 2, 4, 3, 5), generator=g)
    actions = torch.stack([torch.randint(n, (4, 3), generator=g) for n in cfg.action_sizes], dim=-1)
    target = context[:, -1] * 0.5 + 0.3  # a function of the context (spread 0.5): nothing left to chance
    process = Diffusion(
        DiffusionConfig(prediction=prediction, context_drop_prob=0.0, context_noise=False), 10
    )
    many = target.repeat(8, 1, 1, 1), context.repeat(8, 1, 1, 1, 1), actions.repeat(8, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss = process.loss(model, *many, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = process.sample(model, context, actions, 8, generator=torch.Generator().manual_seed(5))
    rmse = (z - target).pow(2).mean().sqrt().item()
    assert rmse < 0.1, rmse


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_latent_clip_bounds_every_sample_and_is_off_by_default(prediction):
    target, context, actions = _latents(seed=6)
    far = 40.0 * target  # a target far outside the latents' range

    def model_for(cfg):
        return perfect_model(cfg, lambda ctx: far)

    off = DiffusionConfig(prediction=prediction, residual=False)
    assert off.latent_clip == 0.0
    got = Diffusion(off, 10).sample(model_for(off), context, actions, 2, generator=torch.Generator())
    torch.testing.assert_close(got, far, atol=1e-3, rtol=1e-3)
    on = DiffusionConfig(prediction=prediction, residual=False, latent_clip=5.0)
    got = Diffusion(on, 10).sample(model_for(on), context, actions, 2, generator=torch.Generator())
    torch.testing.assert_close(got, far.clamp(-5, 5), atol=1e-3, rtol=1e-3)
