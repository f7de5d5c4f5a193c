"""Configs of the world model's parts, and the preset registry (tiny for tests, cpu, gpu).

Every config is saved in each checkpoint's config.json and read back from there, so a checkpoint
describes itself; presets only choose the starting values.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from data.cli_args import MAX_SEED, bound_error

MAX_SAMPLING_STEPS = 64  # denoising steps a sampler may be asked for (play, eval, bench)


class ConfigError(ValueError):
    """A recipe value outside the bounds declared beside its field, or breaking a rule between fields; the
    message names the field and the rule."""

    def at(self, where: str) -> ConfigError:
        """This error with its message starting with `where` (once): the item or file the value came from."""
        return self if str(self).startswith(where) else ConfigError(f"{where}: {self}")


BOUNDS = "bounds"  # the field metadata key of a value's bounds


def bounded(default, *, ge: float | None = None, gt: float | None = None, le: float | None = None):
    """A config field whose value (each value, for a tuple) must lie within the bounds, checked whenever the
    config is built. A field declared without them is only checked to be a finite number."""
    return field(default=default, metadata={BOUNDS: {"ge": ge, "gt": gt, "le": le}})


def bounds_of(cls, name: str) -> dict:
    """The bounds declared beside field `name` of config `cls` (for a command-line option that sets it)."""
    return dict(next(f for f in fields(cls) if f.name == name).metadata.get(BOUNDS, {}))


def check(cfg) -> None:
    """Every field of `cfg` within its bounds, then `cfg.rules()`, the rules between its fields (they may
    rely on the bounds); the first value that breaks one is a ConfigError."""
    name = type(cfg).__name__
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, int | float) and not isinstance(v, bool):
                why = bound_error(v, **f.metadata.get(BOUNDS, {}), got=False)
                if why:
                    raise ConfigError(f"{name}.{f.name} = {value!r}: {why}")
    for key, holds, rule in cfg.rules() if hasattr(cfg, "rules") else ():
        if not holds:
            raise ConfigError(f"{name}.{key} = {getattr(cfg, key)!r}: {rule}")


@dataclass
class AEConfig:
    """Convolutional autoencoder: one stride-2 stage between consecutive entries of `channels`, so four
    entries downsample 8x and three 4x."""

    # width at full resolution, then after each 2x downsampling
    channels: tuple[int, ...] = bounded((8, 16, 32, 64), ge=1)
    latent_channels: int = bounded(8, ge=1)  # channels of the latent grid
    # std of noise added to (scaled) latents in training: the decoder learns to forgive
    latent_noise: float = bounded(0.1, ge=0)
    steps: int = bounded(3000, ge=1)  # training steps of the first stage (encoder + decoder)
    # decoder-only fine-tuning steps on pixel MSE (GameNGen, sec. 3.3.2)
    decoder_steps: int = bounded(1000, ge=0)
    batch_size: int = bounded(32, ge=1)
    crop: int = bounded(32, ge=0)  # train on random crops of this size (0: whole frames)
    lr: float = bounded(1e-3, gt=0, le=1)
    # Weight of an L1 loss on the reconstruction's finite differences against the frame's: MSE and L1
    # on pixels are content with a blurred edge, this term is not. 0: the pixel losses alone (the
    # checkpoints trained before it existed).
    grad_loss: float = bounded(0.0, ge=0)

    def __post_init__(self):
        check(self)

    def rules(self) -> list[tuple[str, bool, str]]:
        """(field, holds, rule) between fields."""
        return [
            ("channels", len(self.channels) >= 2, "want at least two widths (one downsampling)"),
            (
                "crop",
                self.crop % self.downsample == 0,
                f"must be 0 or a multiple of the {self.downsample}x downsampling of channels {self.channels}",
            ),
        ]

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)


@dataclass
class DiTConfig:
    """Action-conditioned DiT over latent grids (Peebles & Xie 2023, adaLN-Zero)."""

    latent_channels: int = bounded(8, ge=1)
    latent_size: tuple[int, int] = bounded((15, 20), ge=1)  # (h, w) of the latent grid
    context_len: int = bounded(4, ge=1)  # K past frames
    patch_size: int = bounded(2, ge=1)
    hidden: int = bounded(128, ge=4)
    depth: int = bounded(4, ge=1)
    heads: int = bounded(4, ge=1)
    mlp_ratio: float = bounded(4.0, gt=0)
    # values per action field (from the action contract)
    action_sizes: tuple[int, ...] = bounded((3, 3, 7, 2, 2), ge=1)
    # context-noise levels the model is told about; bucket `noise_buckets` = context dropped
    noise_buckets: int = bounded(10, ge=1)
    # How the actions reach the prediction. adaLN alone (False) sums them into the one conditioning
    # vector that scales and shifts every token alike; True also gives the attention K+1 action tokens
    # (one per window position) that every image token can read. Checkpoints saved before the setting
    # existed load as False.
    action_tokens: bool = False
    # True also adds an embedding of the window's actions to every image token at the input, where the
    # patches enter (as a constant plane per action concatenated to every patch would): each token then
    # reads the action through its own content, not only through a gain and shift shared by all. Checkpoints
    # saved before the setting existed load as False.
    action_input: bool = False
    # A small convolution over the unpatchified output (and the noisy input it refines), zero-initialised and
    # added to it: each latent patch otherwise comes from its own token through a linear head, so neighbouring
    # patches can disagree at every border and a rollout breaks into tiles on the token grid (U-ViT ends with
    # a 3x3 convolution for this). A fresh model still outputs exactly zero. Checkpoints saved before the
    # setting existed load as False.
    conv_head: bool = False
    # One more input frame beside the context: the last latent turned by the current action's turn (the
    # ego-motion warp; as it is without diffusion.ego_warp). With diffusion.residual off, copying the turned
    # view stays one step for the network while its output is the whole next frame, pulled toward frames the
    # decoder knows. Checkpoints saved before the setting existed load as False.
    base_input: bool = False

    def __post_init__(self):
        check(self)

    def rules(self) -> list[tuple[str, bool, str]]:
        """(field, holds, rule) between fields."""
        h, w = self.latent_size
        p = self.patch_size
        padded = -(-h // p) * p * -(-w // p) * p
        return [
            ("heads", self.hidden % self.heads == 0, f"must divide hidden ({self.hidden}): heads split it"),
            # sincos_2d: half the channels embed each axis, each half as sines and cosines
            ("hidden", self.hidden % 4 == 0, "must be a multiple of 4 (its 2-D sine-cosine position code)"),
            # The patch fits the latent grid: a power of two as in DiT (2, 4, 8), no wider than the grid, and
            # padding the grid to whole patches leaves at least half of the tokens' cells real latent.
            (
                "patch_size",
                p & (p - 1) == 0 and p <= min(h, w) and 2 * h * w >= padded,
                f"the patch must fit the {h}x{w} latent grid: a power of two, at most {min(h, w)}, "
                "and the grid padded to whole patches at most half padding",
            ),
            (
                "mlp_ratio",
                int(self.hidden * self.mlp_ratio) >= 1,
                f"gives a zero-width MLP: hidden ({self.hidden}) x mlp_ratio must be at least 1",
            ),
        ]


PREDICTIONS = ("v", "x0", "eps", "edm")  # what the DiT outputs; see world_model/model/diffusion.py
ROLLOUT_MODES = ("onepass", "sampler")  # how training on own rollouts makes its frames (TrainConfig)


@dataclass
class DiffusionConfig:
    """Parameterisation, few-step sampler, CFG on the past frames, context noise augmentation."""

    # v, x0, eps (cosine schedule, DDIM) or edm (Karras preconditioning, Euler). Checkpoints saved before
    # this field existed were trained on v, so a config.json without it loads as v.
    prediction: str = "v"
    sampling_steps: int = bounded(2, ge=1, le=MAX_SAMPLING_STEPS)  # default sampling steps at play time
    # GameNGen sec. 3.2.1: noise up to 0.7 on the context in training
    context_noise_max: float = bounded(0.7, ge=0)
    context_noise: bool = True  # False: the ablation without context noise augmentation
    # Diffuse the change from the last context latent instead of the latent itself: a model that
    # predicts zero copies the last frame, so learning starts from that baseline rather than from noise.
    residual: bool = True
    # The change is taken from the last context latent as the model is shown it, noised (False: the
    # checkpoints trained before the setting existed), or from the clean one (True): then predicting zero
    # copies the last frame exactly, and a rollout does not gather the sampler's context noise.
    clean_residual: bool = False
    # bucket of the small noise level applied to the context when sampling (below DiTConfig.noise_buckets)
    sample_context_bucket: int = bounded(1, ge=0)
    # context replaced by zeros with this probability (for CFG)
    context_drop_prob: float = bounded(0.1, ge=0, le=1)
    # Each sampled latent is clamped to [-latent_clip, latent_clip] (the latents are scaled to unit variance;
    # real ones stay within about +-8): a rollout cannot drift into values the decoder never saw. 0: off.
    latent_clip: float = bounded(0.0, ge=0)
    # The ego-motion prior (world_model/model/egomotion.py): the change is taken from the last latent turned
    # by the current action's turn, a column remap of the view, instead of from the last latent as it is.
    # Predicting zero then follows the player's turn exactly. Checkpoints saved before the setting existed
    # load as False.
    ego_warp: bool = False
    # CFG scale on the past frames at sampling; 1.0 = no guidance (one pass)
    guidance: float = bounded(1.0, ge=0)
    # CFG on the action: in training the actions are dropped (the model is told "no action") with this
    # probability; at sampling the prediction is pushed away from the no-action one by `action_guidance`.
    action_drop_prob: float = bounded(0.0, ge=0, le=1)
    action_guidance: float = bounded(1.0, ge=0)  # 1.0 = no action guidance
    # EDM only (Karras et al. 2022; DIAMOND's values but sigma_data: our latents are scaled to unit variance).
    edm_sigma_data: float = bounded(1.0, gt=0)  # std of the clean target the preconditioning assumes
    edm_p_mean: float = -0.4  # training noise levels: ln(sigma) ~ N(p_mean, p_std^2)
    edm_p_std: float = bounded(1.2, gt=0)
    # sampling noise levels: sigma_max to sigma_min, spaced by rho, then 0
    edm_sigma_min: float = bounded(2e-3, gt=0)
    edm_sigma_max: float = bounded(5.0, gt=0)
    edm_rho: float = bounded(7.0, gt=0)

    def __post_init__(self):
        check(self)

    def rules(self) -> list[tuple[str, bool, str]]:
        """(field, holds, rule) between fields."""
        return [
            ("prediction", self.prediction in PREDICTIONS, f"choose one of {list(PREDICTIONS)}"),
            (
                "edm_sigma_min",
                self.edm_sigma_min < self.edm_sigma_max,
                f"must be below edm_sigma_max ({self.edm_sigma_max:g})",
            ),
        ]


@dataclass
class TrainConfig:
    """DiT training loop."""

    steps: int = bounded(20000, ge=1)
    batch_size: int = bounded(32, ge=1)
    lr: float = bounded(3e-4, gt=0, le=1)
    weight_decay: float = bounded(0.01, ge=0)
    warmup: int = bounded(200, ge=0)
    ema_decay: float = bounded(0.999, ge=0, le=1)
    grad_clip: float = bounded(1.0, gt=0)
    ckpt_every: int = bounded(500, ge=1)
    log_every: int = bounded(50, ge=1)
    seed: int = bounded(0, ge=0, le=MAX_SEED)
    heldout_fraction: float = bounded(0.1, ge=0, le=0.9)
    # Training on the model's own rollouts. At play the residual base and the context are the model's own
    # output, errors included; trained only on true pasts it never learns to take an error out, and every
    # error passes into every later frame. This share of each batch is a run of `rollout_steps` frames the
    # model makes itself from a real past under the recorded actions, each written into the context (and so
    # the base) of the next, the target always the real frame (DIAMOND's CS:GO model: 4 steps). 0: off, as
    # every checkpoint saved before the setting existed was trained.
    rollout_share: float = bounded(0.0, ge=0, le=1)
    rollout_steps: int = bounded(4, ge=1, le=16)
    # How the model's frames are made: "onepass" (DIAMOND's) writes the training forward's own denoised
    # output, detached, into the next step's context, with a loss on every step, so it costs no extra pass;
    # "sampler" generates them without gradient with the sampler as play runs it (its steps and guidance)
    # and trains on the frame after them.
    rollout_mode: str = "onepass"
    rollout_ema: bool = (
        False  # sampler mode: generate with the EMA weights, as play does, not the online ones
    )

    def __post_init__(self):
        check(self)

    def rules(self) -> list[tuple[str, bool, str]]:
        """(field, holds, rule) between fields."""
        return [("rollout_mode", self.rollout_mode in ROLLOUT_MODES, f"choose one of {list(ROLLOUT_MODES)}")]


@dataclass
class Preset:
    ae: AEConfig
    dit: DiTConfig
    diffusion: DiffusionConfig
    train: TrainConfig

    def __post_init__(self):
        buckets = self.dit.noise_buckets
        if self.diffusion.sample_context_bucket >= buckets:  # bucket `noise_buckets` means "context dropped"
            raise ConfigError(
                f"DiffusionConfig.sample_context_bucket = {self.diffusion.sample_context_bucket}: "
                f"must be below DiTConfig.noise_buckets ({buckets})"
            )


PRESETS: dict[str, Preset] = {
    # Tests: seconds on a CPU, any resolution divisible by 8.
    "tiny": Preset(
        ae=AEConfig(
            channels=(4, 8, 8, 8), latent_channels=4, steps=20, decoder_steps=5, batch_size=4, crop=16
        ),
        dit=DiTConfig(
            latent_channels=4, context_len=2, patch_size=1, hidden=32, depth=2, heads=2, mlp_ratio=2.0
        ),
        diffusion=DiffusionConfig(),
        train=TrainConfig(
            steps=20, batch_size=8, lr=1e-3, warmup=0, ema_decay=0.9, ckpt_every=10, log_every=5
        ),
    ),
    # Trains in about an hour and plays in real time on 2 CPU cores (measured with `dreamdoom wm bench`); the
    # shipped default's recipe: 8x-down autoencoder (8x15x20 latent), DiT patch 2, residual v-prediction.
    "cpu": Preset(
        ae=AEConfig(),
        dit=DiTConfig(context_len=4, patch_size=2, hidden=128, depth=4, heads=4),
        diffusion=DiffusionConfig(),
        train=TrainConfig(lr=8e-4, ema_decay=0.998),
    ),
    # The cpu preset's DiT size on a 4x-down autoencoder with the gradient loss (8x30x40 latent for 160x120;
    # its reconstruction keeps the scene's edges, docs/autoencoder_ablation.md), patch 4 (80 tokens a frame
    # after padding, as cpu's); v-prediction. The DiT ablation's starting point (docs/dit_ablation.md).
    "cpu4x": Preset(
        ae=AEConfig(channels=(16, 32, 64), grad_loss=1.0),
        dit=DiTConfig(context_len=4, patch_size=4, hidden=128, depth=4, heads=4),
        diffusion=DiffusionConfig(),
        train=TrainConfig(lr=8e-4, ema_decay=0.998),
    ),
    # The recipe the DiT ablation picked (docs/dit_ablation.md): cpu4x's networks, the autoencoder trained
    # 16,000 + 4,000 steps, EDM preconditioning, the change taken from the clean last latent, and
    # classifier-free guidance on the action. Sharper than cpu for a second of play, then its rollouts
    # break up into tiles, so it is not the shipped default.
    "cpu4x-edm": Preset(
        ae=AEConfig(channels=(16, 32, 64), grad_loss=1.0, steps=16000, decoder_steps=4000),
        dit=DiTConfig(context_len=4, patch_size=4, hidden=128, depth=4, heads=4),
        diffusion=DiffusionConfig(
            prediction="edm", clean_residual=True, action_drop_prob=0.1, action_guidance=2.0
        ),
        train=TrainConfig(lr=8e-4, ema_decay=0.998),
    ),
    # The shipped arena default's recipe (checkpoints/default, docs/arena_levers.md): cpu4x-edm's networks
    # with the whole next frame as the target, the last latent turned by the current action as one more
    # input, the convolutional head, and half of each batch on the model's own 4-frame rollouts (one pass).
    # It holds a soft picture of the arena for minutes where the residual recipes blow up; it is still fog.
    "arena": Preset(
        ae=AEConfig(channels=(16, 32, 64), grad_loss=1.0, steps=8000, decoder_steps=2000),
        dit=DiTConfig(
            context_len=4, patch_size=4, hidden=128, depth=4, heads=4, conv_head=True, base_input=True
        ),
        diffusion=DiffusionConfig(
            prediction="edm",
            residual=False,
            clean_residual=True,
            ego_warp=True,
            action_drop_prob=0.1,
            action_guidance=2.0,
        ),
        train=TrainConfig(lr=8e-4, ema_decay=0.998, rollout_share=0.5, rollout_steps=4),
    ),
    # 160x120 at >= 35 frames/s with 4 steps on one datacenter GPU: 300 tokens of width 512, 12 blocks.
    "gpu": Preset(
        ae=AEConfig(channels=(32, 64, 128, 256), steps=20000, decoder_steps=5000, batch_size=64, crop=64),
        dit=DiTConfig(context_len=16, patch_size=1, hidden=512, depth=12, heads=8),
        diffusion=DiffusionConfig(sampling_steps=4),
        train=TrainConfig(
            steps=200000, batch_size=128, lr=2e-4, warmup=1000, ema_decay=0.9999, ckpt_every=5000
        ),
    ),
}


def _copy(p: Preset) -> Preset:
    """A copy, so that callers can edit its fields without touching the original."""
    return Preset(*(type(c)(**asdict(c)) for c in (p.ae, p.dit, p.diffusion, p.train)))


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: unknown, choose one of {sorted(PRESETS)}")
    return _copy(PRESETS[name])


OVERRIDABLE = ("dit", "diffusion", "train")  # the preset sections `wm train --set` may change


def parse_override(item: str, option: str = "--set") -> tuple[str, str, object]:
    """ "section.field=value" -> (section, field, value); the value is read as JSON (numbers, true/false,
    lists), anything else as a string."""
    import json

    key, eq, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not eq or not dot or not name or not text.strip():
        raise ConfigError(f"{option} {item!r}: want SECTION.FIELD=VALUE, e.g. diffusion.prediction=x0")
    if section not in OVERRIDABLE:
        raise ConfigError(f"{option} {item!r}: section {section!r} is not one of {list(OVERRIDABLE)}")
    try:
        value = json.loads(text)
    except ValueError:
        value = text.strip()
    return section, name, value


def apply_overrides(preset: Preset, items: tuple[str, ...] | list[str], option: str = "--set") -> Preset:
    """A copy of `preset` with "section.field=value" items applied, each checked like a saved config: an
    unknown field, a value of the wrong type, out of its bounds or breaking a rule is a ConfigError that
    names the item."""
    out = _copy(preset)
    for item in items:
        section, name, value = parse_override(item, option)
        cfg, where = getattr(out, section), f"{option} {item!r}"
        if name not in {f.name for f in fields(cfg)}:
            known = ", ".join(f.name for f in fields(cfg))
            raise ConfigError(f"{where}: {type(cfg).__name__} has no field {name!r} (it has {known})")
        try:
            out = replace(out, **{section: from_dict(type(cfg), {**asdict(cfg), name: value}, where)})
        except ConfigError as e:
            raise e.at(where) from None
    return out


def to_dict(cfg) -> dict:
    return asdict(cfg)


def _type_mismatch(default, value) -> str | None:
    """Why a JSON value cannot stand where the field's default is (None: it can), e.g. "x" for an int."""
    if default is None or default is MISSING:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "want true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "want an integer"
    if isinstance(default, float):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "want a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "want a string"
    if isinstance(default, tuple) and all(isinstance(x, int | float) for x in default):
        ok = isinstance(value, tuple) and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value
        )
        return None if ok else "want a list of numbers"
    return None


def from_dict(cls, d: dict, where: str):
    """Rebuild a config dataclass from JSON, its bounds and rules checked; unknown keys or a value of the
    wrong type are a ConfigError too."""
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where}: unknown {cls.__name__} fields {sorted(unknown)}")
    kwargs = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
            why = _type_mismatch(f.default, kwargs[f.name])
            if why:
                raise ConfigError(f"{where}: {cls.__name__}.{f.name} = {v!r}: {why}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # ValueError: a field's bounds or rules (ConfigError)
        raise ConfigError(f"{where}: {e}") from e


__all__ = [
    "ConfigError",
    "bounded",
    "bounds_of",
    "check",
    "AEConfig",
    "DiTConfig",
    "DiffusionConfig",
    "TrainConfig",
    "Preset",
    "PRESETS",
    "get_preset",
    "apply_overrides",
    "to_dict",
    "from_dict",
]
