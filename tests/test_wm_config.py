"""The recipe's bounds and rules: declared beside each field of world_model/model/config.py, met by every way
a config is built (presets, `--set`, `--variant`, a checkpoint's config.json)."""

import json
from dataclasses import dataclass, fields

import pytest

from data.actions import DEFAULT_ACTIONS
from world_model.model.config import (
    PRESETS,
    AEConfig,
    ConfigError,
    TrainConfig,
    bounded,
    bounds_of,
    check,
    to_dict,
)


@dataclass
class Lever:
    """A config as another branch might grow one: some fields bounded, some not."""

    size: int = bounded(4, ge=1)
    share: float = bounded(0.5, ge=0, le=1)
    offset: float = -1.0  # no bounds declared: any finite number
    count: int = -3
    on: bool = False

    def __post_init__(self):
        check(self)


def test_a_field_without_bounds_needs_only_a_finite_value():
    assert Lever(offset=-1e9, count=-7, on=True).count == -7
    with pytest.raises(ConfigError, match=r"Lever.offset = nan: must be a finite number"):
        Lever(offset=float("nan"))
    with pytest.raises(ConfigError, match=r"Lever.share = 1.5: must be at least 0 and at most 1"):
        Lever(share=1.5)
    with pytest.raises(ConfigError, match=r"Lever.size = 0: must be at least 1"):
        Lever(size=0)


def test_command_line_options_take_their_bounds_from_the_recipe():
    from world_model.cli import TrainAEArgs
    from world_model.training.train import TrainArgs

    for args, cfg, names in (
        (TrainArgs, TrainConfig, ("steps", "batch_size", "lr", "ckpt_every")),
        (TrainAEArgs, AEConfig, ("steps", "decoder_steps", "batch_size", "crop", "channels", "grad_loss")),
    ):
        for f in fields(args):
            if f.name in names:
                cli = {k: f.metadata["cli"][k] for k in ("ge", "gt", "le")}
                assert cli == bounds_of(cfg, f.name), f"{args.__name__}.{f.name}"


def test_the_patch_is_checked_on_the_grid_the_autoencoder_makes(tmp_path):
    """cpu4x's autoencoder makes 30x40 latents of 160x120 frames: patch 16 fits there (not on the 15x20 a
    preset assumes until it meets its autoencoder), 32 does not."""
    from world_model.model.checkpoint import recipe_for

    ae = tmp_path / "ae"
    ae.mkdir()
    config = {
        "format_version": 1,
        "kind": "autoencoder",
        "ae": to_dict(PRESETS["cpu4x"].ae),
        "resolution": [160, 120],
        "frame_skip": 2,
        "action_contract": DEFAULT_ACTIONS.to_dict(),
    }
    (ae / "config.json").write_text(json.dumps(config))
    assert recipe_for("cpu4x", ("dit.patch_size=16",), ae).dit.patch_size == 16
    assert recipe_for("cpu4x", (), ae).dit.latent_size == (30, 40)
    with pytest.raises(ConfigError, match=r"--set 'dit.patch_size=32': DiTConfig.patch_size = 32: .*30x40"):
        recipe_for("cpu4x", ("dit.patch_size=32",), ae)
    config["ae"], config["resolution"] = to_dict(PRESETS["cpu"].ae), [32, 24]  # 8x down: 3x4 latents
    (ae / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"--preset cpu4x on the autoencoder .*: DiTConfig.patch_size = 4"):
        recipe_for("cpu4x", (), ae)
