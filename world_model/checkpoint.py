"""Checkpoint folders: config.json + *.safetensors (+ optimizer.pt for resume, loaded with weights_only=True).

An autoencoder folder holds `autoencoder.safetensors`; a world-model folder holds the autoencoder it
was trained with too, so one folder is all `WorldModelEnv.from_checkpoint` needs:

    config.json              kind, configs, action contract, resolution, frame_skip, step
    autoencoder.safetensors  encoder, decoder, latent statistics
    dit.safetensors          the DiT being trained (resume)
    dit_ema.safetensors      its exponential moving average (used for play and evaluation)
    optimizer.pt             AdamW state (resume only)

Folders are written to a temporary sibling and renamed, so a killed run keeps its last whole checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data.actions import DEFAULT_ACTIONS, ActionContractError, ActionSpec
from world_model.autoencoder import Autoencoder
from world_model.config import (
    AEConfig,
    DiffusionConfig,
    DiTConfig,
    TrainConfig,
    from_dict,
    get_preset,
    to_dict,
)
from world_model.dit import DiT

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed, or does not fit the data; the message names the path."""


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def _load_into(module: torch.nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, FileNotFoundError) as e:
        raise CheckpointError(f"{path}: unreadable weights ({e})") from e
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model of config.json ({str(e)[:400]})") from e


def read_config(folder: str | Path, kind: str | None = None) -> dict:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint config ({e})") from e
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {cfg.get('format_version')}, expected {FORMAT_VERSION}"
        )
    if kind is not None and cfg.get("kind") != kind:
        raise CheckpointError(f"{path}: is a '{cfg.get('kind')}' checkpoint, expected '{kind}'")
    return cfg


def _write_folder(
    folder: Path,
    config: dict,
    tensors: dict[str, dict[str, torch.Tensor]],
    extra: dict[str, object] | None = None,
) -> None:
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    for name, state in tensors.items():
        save_file(state, str(tmp / f"{name}.safetensors"))
    for name, obj in (extra or {}).items():
        torch.save(obj, tmp / name)
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


# --- autoencoder ---------------------------------------------------------------------------------------


def save_autoencoder(
    folder: str | Path,
    ae: Autoencoder,
    resolution: tuple[int, int],
    frame_skip: int,
    action_spec: ActionSpec,
    summary: dict | None = None,
) -> None:
    config = {
        "format_version": FORMAT_VERSION,
        "kind": "autoencoder",
        "ae": to_dict(ae.cfg),
        "resolution": list(resolution),
        "frame_skip": frame_skip,
        "action_contract": action_spec.to_dict(),
        "summary": summary or {},
        "saved": time.time(),
    }
    _write_folder(Path(folder), config, {"autoencoder": _state(ae)})


def load_autoencoder(
    folder: str | Path, device: str | torch.device = "cpu", config: dict | None = None
) -> tuple[Autoencoder, dict]:
    """From an autoencoder or a world-model folder; returns the model (eval mode) and config.json."""
    folder = Path(folder)
    config = config or read_config(folder)
    try:
        ae = Autoencoder(from_dict(AEConfig, config["ae"], str(folder / CONFIG_NAME)))
    except KeyError as e:
        raise CheckpointError(f"{folder / CONFIG_NAME}: missing {e}") from e
    _load_into(ae, folder / "autoencoder.safetensors")
    return ae.to(device).eval(), config


# --- world model ---------------------------------------------------------------------------------------


@dataclass
class WorldModelCheckpoint:
    ae: Autoencoder
    dit: DiT  # EMA weights unless loaded for resume
    dit_cfg: DiTConfig
    diffusion: DiffusionConfig
    train: TrainConfig
    action_spec: ActionSpec
    resolution: tuple[int, int]
    frame_skip: int
    step: int
    config: dict


def save_world_model(
    folder: str | Path,
    ae: Autoencoder,
    dit: DiT,
    ema: DiT,
    diffusion: DiffusionConfig,
    train: TrainConfig,
    action_spec: ActionSpec,
    resolution: tuple[int, int],
    frame_skip: int,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    extra_config: dict | None = None,
) -> None:
    config = {
        "format_version": FORMAT_VERSION,
        "kind": "world_model",
        "ae": to_dict(ae.cfg),
        "dit": to_dict(dit.cfg),
        "diffusion": to_dict(diffusion),
        "train": to_dict(train),
        "action_contract": action_spec.to_dict(),
        "resolution": list(resolution),
        "frame_skip": frame_skip,
        "step": step,
        "saved": time.time(),
        **(extra_config or {}),
    }
    extra = {"optimizer.pt": optimizer.state_dict()} if optimizer is not None else None
    _write_folder(
        Path(folder), config, {"autoencoder": _state(ae), "dit": _state(dit), "dit_ema": _state(ema)}, extra
    )


def load_world_model(
    folder: str | Path,
    device: str | torch.device = "cpu",
    weights: str = "dit_ema",
    expected_spec: ActionSpec = DEFAULT_ACTIONS,
) -> WorldModelCheckpoint:
    """Load a world-model folder; `weights` picks dit_ema (play, eval) or dit (resume)."""
    folder = Path(folder)
    config = read_config(folder, "world_model")
    where = str(folder / CONFIG_NAME)
    try:
        spec = ActionSpec.from_dict(config["action_contract"], where)
        expected_spec.check_compatible(spec, where)
        dit_cfg = from_dict(DiTConfig, config["dit"], where)
        diffusion = from_dict(DiffusionConfig, config["diffusion"], where)
        train = from_dict(TrainConfig, config["train"], where)
        resolution = (int(config["resolution"][0]), int(config["resolution"][1]))
        frame_skip = int(config["frame_skip"])
    except (KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{where}: malformed world-model config, missing or bad {e}") from e
    except ActionContractError as e:
        raise CheckpointError(str(e)) from e
    if tuple(dit_cfg.action_sizes) != tuple(spec.sizes):
        raise CheckpointError(
            f"{where}: DiT action sizes {dit_cfg.action_sizes} disagree with its contract {spec.sizes}"
        )
    ae, _ = load_autoencoder(folder, device, config)
    dit = DiT(dit_cfg)
    _load_into(dit, folder / f"{weights}.safetensors")
    return WorldModelCheckpoint(
        ae=ae,
        dit=dit.to(device).eval(),
        dit_cfg=dit_cfg,
        diffusion=diffusion,
        train=train,
        action_spec=spec,
        resolution=resolution,
        frame_skip=frame_skip,
        step=int(config.get("step", 0)),
        config=config,
    )


def load_optimizer_state(folder: str | Path) -> dict:
    path = Path(folder) / "optimizer.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: unreadable optimizer state ({e})") from e


def check_data_fits(
    config: dict, resolution: tuple[int, int], frame_skip: int, action_spec: ActionSpec, where: str
) -> None:
    """A checkpoint and a dataset must agree on the action contract, resolution and frame_skip."""
    try:
        action_spec.check_compatible(config["action_contract"], where)
    except ActionContractError as e:
        raise CheckpointError(str(e)) from e
    if tuple(config["resolution"]) != tuple(resolution):
        raise CheckpointError(
            f"{where}: checkpoint resolution {tuple(config['resolution'])} but the data is "
            f"{tuple(resolution)}"
        )
    if int(config["frame_skip"]) != int(frame_skip):
        raise CheckpointError(
            f"{where}: checkpoint frame_skip {config['frame_skip']} but the data has {frame_skip}"
        )


def dit_config_for(
    preset_dit: DiTConfig, ae: Autoencoder, resolution: tuple[int, int], action_spec: ActionSpec
) -> DiTConfig:
    """The DiT config of a preset, fitted to the autoencoder's latent grid and the action contract."""
    w, h = resolution
    d = ae.cfg.downsample
    if w % d or h % d:
        raise CheckpointError(f"resolution {w}x{h} is not divisible by the autoencoder's {d}x downsampling")
    return DiTConfig(
        **{
            **to_dict(preset_dit),
            "latent_channels": ae.cfg.latent_channels,
            "latent_size": (h // d, w // d),
            "action_sizes": tuple(action_spec.sizes),
        }
    )


def make_untrained_checkpoint(
    path: str | Path,
    preset: str = "tiny",
    resolution: tuple[int, int] = (160, 120),
    frame_skip: int = 2,
    seed: int = 0,
    action_spec: ActionSpec = DEFAULT_ACTIONS,
) -> Path:
    """Write a real, randomly initialised, loadable world-model checkpoint (for tests of other packages).

    Its latent statistics are the identity and its DiT, as every fresh DiT, predicts v = 0, so each step
    returns the decoded mean latent: a valid frame, not a meaningful one."""
    torch.manual_seed(seed)
    p = get_preset(preset)
    ae = Autoencoder(p.ae)
    dit = DiT(dit_config_for(p.dit, ae, resolution, action_spec))
    save_world_model(
        path,
        ae,
        dit,
        dit,
        p.diffusion,
        p.train,
        action_spec,
        resolution,
        frame_skip,
        step=0,
        extra_config={"untrained": True},
    )
    return Path(path)
