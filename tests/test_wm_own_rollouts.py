"""The levers for a dream that holds: training on the model's own rollouts, the convolutional head, the turned
last latent as an input; each saved in the checkpoint and trained end to end on tiny shapes."""

import json

import numpy as np
import pytest
import torch

from data.actions import DEFAULT_ACTIONS
from data.dataset import Dataset
from data.windows import LatentWindows
from world_model.model.checkpoint import load_world_model
from world_model.model.config import ConfigError, DiffusionConfig, DiTConfig, TrainConfig, parse_override
from world_model.model.diffusion import Diffusion, with_generated
from world_model.model.dit import DiT
from world_model.model.egomotion import TurnWarp
from world_model.model.env import WorldModelEnv
from world_model.training.train import TrainArgs, train

C, H, W, K = 4, 6, 8, 2  # a tiny latent grid and context


def tiny_dit(**kw) -> DiT:
    """A tiny DiT whose every weight is perturbed, so its output depends on every input."""
    torch.manual_seed(0)
    cfg = DiTConfig(
        latent_channels=C, latent_size=(H, W), context_len=K, patch_size=2, hidden=32, depth=1, **kw
    )
    dit = DiT(cfg)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return dit


def batch(b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    context = torch.randn((b, K, C, H, W), generator=g)
    actions = torch.stack([torch.randint(n, (b, K + 1), generator=g) for n in DEFAULT_ACTIONS.sizes], -1)
    return context, actions, torch.randn((b, C, H, W), generator=g)


class Recorder(torch.nn.Module):
    """The model, with the context of every call kept (as the model is shown it)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.contexts = model, []

    def forward(self, x, t, context, bucket, actions, *rest):
        self.contexts.append(context.detach().clone())
        return self.model(x, t, context, bucket, actions, *rest)


# --- the convolutional head -----------------------------------------------------------------------


def test_the_conv_head_keeps_a_fresh_model_at_exactly_zero_and_learns():
    torch.manual_seed(0)
    dit = DiT(
        DiTConfig(
            latent_channels=C,
            latent_size=(H, W),
            context_len=K,
            patch_size=2,
            hidden=32,
            depth=1,
            conv_head=True,
        )
    )
    context, actions, x = batch()
    t, bucket = torch.rand(3), torch.zeros(3, dtype=torch.long)
    assert torch.equal(dit(x, t, context, bucket, actions), torch.zeros_like(x))
    opt = torch.optim.SGD(dit.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (dit(x, t, context, bucket, actions) - 1.0).pow(2).mean().backward()
        opt.step()
    assert dit.final_layer.linear.weight.abs().sum() > 0
    assert dit.conv_head.net[-1].weight.abs().sum() > 0  # the convolution learns too
    assert dit(x, t, context, bucket, actions).abs().mean() > 0


def test_the_conv_head_sees_across_patch_borders():
    """Without it, one latent cell of the output depends on the noisy input through its token alone, so the
    change of the cell beside it in the next patch reaches it only through attention; with it, directly."""
    dit = tiny_dit(conv_head=True)
    x = batch(1)[2].requires_grad_(True)
    out = dit.conv_head(torch.zeros(1, C, H, W), x)  # the head alone: what the token grid adds is zero
    out[0, :, 0, 1].sum().backward()  # cell (0, 1): the right column of the first 2x2 patch
    assert x.grad[0, :, 0, 2].abs().sum() > 0  # cell (0, 2), the next patch, reaches it
    assert x.grad[0, :, 0, 4].abs().sum() == 0  # three cells away: out of two 3x3 convolutions' reach


# --- the turned last latent as an input -----------------------------------------------------------


def test_base_input_gives_the_network_the_last_latent_turned_by_the_action():
    spec = DEFAULT_ACTIONS
    warp = TurnWarp(spec, 2, (H * 8, W * 8), (H, W))
    process = Diffusion(DiffusionConfig(prediction="edm", residual=False, ego_warp=True), 10, warp, True)
    dit = tiny_dit(base_input=True)
    seen = []

    def model(x, t, context, bucket, actions, base):
        seen.append((context.clone(), actions.clone(), base.clone()))
        return dit(x, t, context, bucket, actions, base)

    context, actions, _ = batch()
    actions[:, -1, spec.fields.index("turn")] = spec.sizes[spec.fields.index("turn")] - 1  # fast right
    process.sample(model, context, actions, 1, generator=torch.Generator().manual_seed(0))
    shown, acts, base = seen[0]
    assert torch.allclose(base, warp(shown[:, -1], acts), atol=1e-6)
    assert not torch.allclose(base, shown[:, -1], atol=1e-3)  # turned, not the last latent as it is
    with pytest.raises(ValueError, match="base_input"):
        dit(
            torch.zeros(1, C, H, W),
            torch.zeros(1),
            context[:1],
            torch.zeros(1, dtype=torch.long),
            actions[:1],
        )


# --- own rollouts ---------------------------------------------------------------------------------


def test_with_generated_puts_the_models_frames_last():
    context = torch.zeros(2, 3, 1, 1, 1)
    made = [torch.full((2, 1, 1, 1), float(i + 1)) for i in range(4)]
    assert with_generated(context, []).flatten(1).tolist() == [[0, 0, 0]] * 2
    assert with_generated(context, made[:1]).flatten(1).tolist() == [[0, 0, 1]] * 2
    assert with_generated(context, made).flatten(1).tolist() == [[2, 3, 4]] * 2  # the last K of them


def real_run(steps: int, seed: int = 1):
    """A run of `steps` + 1 real frames in a row: windows of a toy latent sequence."""
    n = 20
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((n, C, H, W), generator=g)
    actions = torch.stack([torch.randint(s, (n,), generator=g) for s in DEFAULT_ACTIONS.sizes], -1)
    windows = LatentWindows(
        latents, actions, torch.tensor([0]), torch.tensor([n]), [0], K, DEFAULT_ACTIONS.noop()
    )
    return windows, windows.sample_runs(2, steps + 1, torch.Generator().manual_seed(seed))


def test_runs_are_consecutive_windows_of_one_episode():
    latents = torch.arange(30.0).view(30, 1, 1, 1).expand(30, C, H, W).contiguous()
    actions = torch.zeros((30, len(DEFAULT_ACTIONS.sizes)), dtype=torch.long)
    windows = LatentWindows(
        latents, actions, torch.tensor([0, 10]), torch.tensor([10, 20]), [0, 1], K, DEFAULT_ACTIONS.noop()
    )
    targets, contexts, acts = windows.sample_runs(64, 5, torch.Generator().manual_seed(0))
    first = targets[:, :, 0, 0, 0]  # (B, L) frame numbers
    assert torch.equal(first - first[:, :1], torch.arange(5.0).expand(64, 5))  # in a row
    assert ((first[:, 0] < 10) == (first[:, -1] < 10)).all()  # never across the episodes' border
    assert torch.equal(
        contexts[:, 1:, -1, 0, 0, 0], first[:, :-1]
    )  # each window's last frame: the target before
    with pytest.raises(ValueError, match="no run of 21 frames"):
        windows.sample_runs(1, 21, torch.Generator())


@pytest.mark.parametrize("residual", [True, False])
def test_one_pass_training_feeds_the_models_own_frames_into_context_and_base(residual):
    """DIAMOND's one pass: from the second step on, the last context frame the network sees and the base the
    target is the change from are the model's own denoised estimate of the step before, not the real frame."""
    process = Diffusion(
        DiffusionConfig(
            prediction="edm",
            clean_residual=True,
            residual=residual,
            context_noise=False,
            context_drop_prob=0.0,
        ),
        10,
    )
    rec = Recorder(tiny_dit())
    bases = []
    residual_base = process.residual_base

    def spy(clean, shown, acts):
        bases.append(clean.clone())
        return residual_base(clean, shown, acts)

    process.residual_base = spy
    _, (targets, contexts, actions) = real_run(3)
    loss, made = process.unrolled_loss(rec, targets, contexts, actions, torch.Generator().manual_seed(0))
    assert loss.requires_grad and made.shape == targets.shape and not made.requires_grad
    assert len(rec.contexts) == 4  # a forward (and a loss) on every step
    assert torch.equal(rec.contexts[0], contexts[:, 0])  # the first step sees the real past
    for i in (1, 2, 3):
        shown = rec.contexts[i]
        assert torch.equal(shown[:, -1], made[:, i - 1])  # the model's own frame, last in the context
        assert torch.equal(bases[i], made[:, i - 1])  # and the base the change is taken from
        assert not torch.allclose(shown[:, -1], contexts[:, i, -1])  # not the real one
    assert torch.equal(rec.contexts[2][:, -2], made[:, 0])  # two steps in: both frames are its own
    loss.backward()  # the loss of every step reaches the weights
    assert all(p.grad is not None for p in rec.model.parameters() if p.requires_grad)


def test_sampler_rollouts_are_the_frames_play_would_make():
    process = Diffusion(DiffusionConfig(prediction="edm", clean_residual=True, action_guidance=2.0), 10)
    dit = tiny_dit()
    _, (targets, contexts, actions) = real_run(2)
    context, made = process.rollout_context(dit, contexts, actions, 2, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    first = process.sample(dit, contexts[:, 0], actions[:, 0], 2, generator=g)
    second = process.sample(dit, with_generated(contexts[:, 1], [first]), actions[:, 1], 2, generator=g)
    assert torch.equal(made[:, 0], first) and torch.equal(made[:, 1], second)
    assert torch.equal(context[:, -2:], made) and torch.equal(context[:, :-2], contexts[:, -1, :-2])


def test_rollout_settings_are_checked():
    TrainConfig(rollout_share=0.5, rollout_steps=4, rollout_mode="sampler")
    for bad in ({"rollout_share": 1.5}, {"rollout_steps": 0}, {"rollout_mode": "dream"}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


# --- end to end: trained, saved, loaded, played ---------------------------------------------------


@pytest.mark.parametrize(
    "levers",
    [
        ["train.rollout_share=0.5", "train.rollout_steps=2", "dit.conv_head=true"],
        [
            "train.rollout_share=0.5",
            "train.rollout_steps=2",
            "train.rollout_mode=sampler",
            "train.rollout_ema=true",
        ],
        [
            "diffusion.prediction=edm",
            "diffusion.residual=false",
            "diffusion.ego_warp=true",
            "dit.base_input=true",
        ],
    ],
)
def test_each_lever_trains_is_saved_resumes_and_plays(dataset, ae, tmp_path, levers):
    out = tmp_path / "run"
    args = dict(data=str(dataset), ae=str(ae), out=str(out), preset="tiny", ckpt_every=100)
    summary = train(TrainArgs(**args, steps=3, set=tuple(levers)))
    assert np.isfinite(summary["final_loss"])
    config = json.loads((out / "ckpt" / "config.json").read_text())
    for item in levers:
        section, name, value = parse_override(item)
        assert config[section][name] == value
    ck = load_world_model(out / "ckpt")
    rng = config["latent_range"]  # the training latents' range, per channel, for the hold figures
    assert len(rng["low"]) == ck.dit_cfg.latent_channels and all(
        a <= b for a, b in zip(rng["low"], rng["high"])
    )
    train_cfg = ck.train
    if "train.rollout_share=0.5" in levers:
        assert train_cfg.rollout_share == 0.5 and train_cfg.rollout_steps == 2
        # one-pass runs count a loss term on every step: 4 teacher-forced + 4 runs x 3 steps
        want = 4 + 4 * 3 if train_cfg.rollout_mode == "onepass" else 8
        assert summary["samples"] == 3 * want
    resumed = train(TrainArgs(**args, steps=5, resume=True))
    assert resumed["step"] == 5
    if "train.rollout_share=0.5" in levers:  # resumed on the run's own recipe, own rollouts included
        assert resumed["samples"] == 2 * want
        assert load_world_model(out / "ckpt").train.rollout_share == 0.5
    env = WorldModelEnv(load_world_model(out / "ckpt"))
    env.reset(Dataset(dataset).load(0).frames[:3])
    assert env.step(DEFAULT_ACTIONS.noop()).shape == (*ck.resolution[::-1], 3)


def test_the_arena_preset_is_the_shipped_defaults_recipe():
    from dataclasses import asdict
    from pathlib import Path

    from world_model.model.config import get_preset

    config = json.loads((Path(__file__).parents[1] / "checkpoints" / "default" / "config.json").read_text())
    p = get_preset("arena")
    assert config["world"]["scenario"] == "defend_the_center"
    assert asdict(p.diffusion) == config["diffusion"] and asdict(p.train) == config["train"]
    grid = ("latent_channels", "latent_size", "action_sizes")  # the autoencoder and the contract decide these
    assert {k: v for k, v in asdict(p.dit).items() if k not in grid} == {
        k: v for k, v in config["dit"].items() if k not in grid
    }
    assert {k: v for k, v in asdict(p.ae).items()} == {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in config["ae"].items()
    }
