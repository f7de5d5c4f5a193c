"""Checkpoint folders: config.json + *.safetensors (+ optimizer.pt for resume, loaded with weights_only=True).

An autoencoder folder holds `autoencoder.safetensors`; a world-model folder holds the autoencoder it
was trained with too, so one folder is all `WorldModelEnv.from_checkpoint` needs:

    config.json              kind, configs, action contract, resolution, frame_skip, step
    autoencoder.safetensors  encoder, decoder, latent statistics
    dit.safetensors          the DiT being trained (resume)
    dit_ema.safetensors      its exponential moving average (used for play and evaluation)
    optimizer.pt             AdamW state (resume only)

A save is written whole by data/durable.py's `FolderStore`, config.json last (it lists every file with its
size and SHA-256, so its presence marks the copy complete); `find_checkpoint` picks the newest complete
copy a kill left and `recover` puts it back in place, so loading and `--resume` work whatever moment the
kill hit. A save never replaces a folder that is not a checkpoint of its own kind, and `check_out`
refuses, before any work, an `--out` that would.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data.actions import DEFAULT_ACTIONS, ActionContractError, ActionSpec
from data.durable import FolderStore
from data.world import World, WorldMismatch
from world_model.model.autoencoder import Autoencoder
from world_model.model.config import (
    AEConfig,
    ConfigError,
    DiffusionConfig,
    DiTConfig,
    Preset,
    TrainConfig,
    apply_overrides,
    from_dict,
    get_preset,
    parse_override,
    to_dict,
)
from world_model.model.diffusion import Diffusion
from world_model.model.dit import DiT

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed, or does not fit the data; the message names the path."""


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def _check_file(path: Path, config: dict) -> None:
    """The file's size and SHA-256 must be those config.json recorded (checkpoints from before these
    records are loaded unchecked)."""
    error = STORE.file_error(path, config)
    if error is not None:
        raise CheckpointError(f"{path}: {error}")


def _load_into(module: torch.nn.Module, path: Path, config: dict) -> None:
    _check_file(path, config)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, FileNotFoundError) as e:
        raise CheckpointError(f"{path}: unreadable weights ({e})") from e
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights (NaN or inf) in {', '.join(bad[:5])}")
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or extra or shapes:
        what = []
        if shapes:
            k = shapes[0]
            what.append(
                f"{k} is {tuple(state[k].shape)} in the file but {tuple(want[k].shape)} by config.json"
                + (f" ({len(shapes) - 1} more tensors differ)" if len(shapes) > 1 else "")
            )
        if missing:
            what.append(f"{len(missing)} tensors missing (first: {missing[0]})")
        if extra:
            what.append(f"{len(extra)} tensors config.json does not make (first: {extra[0]})")
        raise CheckpointError(
            f"{path}: weights do not fit the model config.json describes: {'; '.join(what)}; "
            "config.json was edited or belongs to other weights"
        )
    module.load_state_dict(state)


def _read_json(path: Path) -> dict:
    cfg = json.loads(path.read_text())
    if not isinstance(cfg, dict):
        raise ValueError(f"a JSON {type(cfg).__name__}, not an object")
    return cfg


def read_config(folder: str | Path, kind: str | None = None) -> dict:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    try:
        cfg = _read_json(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint config ({e})") from e
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {cfg.get('format_version')}, expected {FORMAT_VERSION}"
        )
    if kind is not None and cfg.get("kind") != kind:
        raise CheckpointError(f"{path}: is a '{cfg.get('kind')}' checkpoint, expected '{kind}'")
    return cfg


# --- its copies, written whole by data/durable.py's FolderStore, and found again after a kill ------------


def _ours(folder: Path, config: dict) -> bool:
    """A config.json of this format; one written before file records is complete if its weights are there."""
    return config.get("format_version") == FORMAT_VERSION and (
        "files" in config or any(folder.glob("*.safetensors"))
    )


STORE = FolderStore(CONFIG_NAME, accept=_ours, rank=lambda config: int(config.get("step", 0)))


def find_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete copy of checkpoint `folder` (by step; in place wins a tie), whatever moment of
    a save a kill interrupted; None if there is none."""
    return STORE.find(folder)


def recover(folder: str | Path) -> Path | None:
    """Put the newest complete copy of `folder` in place after a save was cut short, and clear the other
    copies; returns `folder`, or None when there is no complete copy. Only the writer may call this."""
    return STORE.recover(folder)


def _save_tensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    save_file(state, str(path))


def _save_object(path: Path, obj: object) -> None:
    torch.save(obj, path)


def _refuse_foreign(folder: Path, kind: str) -> None:
    """A save replaces only a checkpoint of its own kind: never a folder of anything else."""
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(
            f"{folder}: is a file, not a '{kind}' checkpoint folder; refusing to replace it"
        )
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    found = find_checkpoint(folder)
    cfg = STORE.complete(found) if found else None
    if cfg is None:
        raise CheckpointError(f"{folder}: not empty and not a checkpoint; refusing to replace it")
    if cfg.get("kind") != kind:
        raise CheckpointError(
            f"{folder}: holds a '{cfg.get('kind')}' checkpoint; refusing to replace it with a '{kind}' one"
        )


def _write_folder(
    folder: Path,
    config: dict,
    tensors: dict[str, dict[str, torch.Tensor]],
    extra: dict[str, object] | None = None,
) -> None:
    folder = Path(folder)
    _refuse_foreign(folder, config["kind"])

    def write_files(tmp: Path) -> None:
        for name, state in tensors.items():
            _save_tensors(tmp / f"{name}.safetensors", state)
        for name, obj in (extra or {}).items():
            _save_object(tmp / name, obj)

    STORE.write(folder, config, write_files)


def check_out(
    folder: str | Path, kind: str, replace: bool = False, how_to_replace: str = "--overwrite"
) -> None:
    """Refuse, before any work, an output folder whose writing would lose something: a file, a non-empty
    folder that is not a checkpoint, a checkpoint of another kind, or one of this kind unless `replace`.
    Creates the folder's parent and checks it can be written."""
    folder = Path(folder)
    _refuse_foreign(folder, kind)
    found = find_checkpoint(folder)
    if found is not None and not replace:
        step = (STORE.complete(found) or {}).get("step")
        at = f" (step {step})" if step is not None else ""
        raise CheckpointError(
            f"{folder}: already holds a '{kind}' checkpoint{at}; pass {how_to_replace} to replace it, "
            f"or choose another --out"
        )
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot create its folder ({e})") from e
    try:  # by writing: permission bits do not tell (root, read-only mounts, /proc)
        os.rmdir(tempfile.mkdtemp(prefix=f".{folder.name}.probe", dir=folder.parent))
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot be written in {folder.parent} ({e.strerror})") from None


def _resolve(folder: Path) -> Path:
    """The copy to load: in place, or the newest complete copy a cut-short save left beside it."""
    found = find_checkpoint(folder)
    if found is None or found == folder:
        return folder
    warnings.warn(
        f"{folder}: loading {found.name}, the newest complete copy a cut-short save left", stacklevel=3
    )
    return found


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
    folder = Path(folder) if config else _resolve(Path(folder))
    config = config or read_config(folder)
    try:
        ae = Autoencoder(from_dict(AEConfig, config["ae"], str(folder / CONFIG_NAME)))
    except KeyError as e:
        raise CheckpointError(f"{folder / CONFIG_NAME}: missing {e}") from e
    _load_into(ae, folder / "autoencoder.safetensors", config)
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
    world: World  # what it dreams: read from its training data's manifests (E1M1 for older checkpoints)

    @property
    def process(self) -> Diffusion:
        """The diffusion process (loss and sampler) of this checkpoint's config and DiT."""
        return Diffusion.for_world(
            self.diffusion,
            self.dit_cfg.noise_buckets,
            self.action_spec,
            self.frame_skip,
            self.resolution,
            self.dit_cfg.latent_size,
            self.dit_cfg.base_input,
        )


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
    folder = _resolve(Path(folder))
    config = read_config(folder, "world_model")
    where = str(folder / CONFIG_NAME)
    try:
        spec = ActionSpec.from_dict(config["action_contract"], where)
        expected_spec.check_compatible(spec, where)
        dit_cfg = from_dict(DiTConfig, config["dit"], where)
        diffusion = from_dict(DiffusionConfig, config["diffusion"], where)
        train = from_dict(TrainConfig, config["train"], where)
        Preset(from_dict(AEConfig, config["ae"], where), dit_cfg, diffusion, train)  # the rules between them
        resolution = (int(config["resolution"][0]), int(config["resolution"][1]))
        frame_skip = int(config["frame_skip"])
        world = World.of_checkpoint(config, where)
    except (KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{where}: malformed world-model config, missing or bad {e}") from e
    except (ActionContractError, WorldMismatch) as e:
        raise CheckpointError(str(e)) from e
    except ConfigError as e:
        raise e.at(where) from None
    if world.resolution != resolution or world.frame_skip != frame_skip:
        raise CheckpointError(
            f"{where}: its world ({world}) disagrees with its resolution {resolution} and "
            f"frame_skip {frame_skip}"
        )
    if tuple(dit_cfg.action_sizes) != tuple(spec.sizes):
        raise CheckpointError(
            f"{where}: DiT action sizes {dit_cfg.action_sizes} disagree with its contract {spec.sizes}"
        )
    ae, _ = load_autoencoder(folder, device, config)
    dit = DiT(dit_cfg)
    _load_into(dit, folder / f"{weights}.safetensors", config)
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
        world=world,
    )


SHIPPED_FILES = ("autoencoder", "dit_ema")  # what play and eval read of a world model


def export_world_model(src: str | Path, dst: str | Path, replace: bool = False, online: bool = False) -> Path:
    """Copy checkpoint `src` to `dst` with only what play and eval read: config.json, the autoencoder and the
    EMA weights, each checked against `src`'s checksums. The form a model ships in (about half the bytes of
    a run's checkpoint); it cannot be resumed. `online` ships the online weights in the EMA's place, for a
    run too short for its EMA to have left its initialisation (the config records `exported_weights`)."""
    src, dst = _resolve(Path(src)), Path(dst)
    config = read_config(src, "world_model")
    try:  # a checkpoint saved before worlds were recorded ships with the world it loads as, written down
        config["world"] = World.of_checkpoint(config, str(src / CONFIG_NAME)).to_dict()
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{src / CONFIG_NAME}: malformed world-model config, missing or bad {e}") from e
    check_out(dst, "world_model", replace)
    tensors = {}
    if online:
        config["exported_weights"] = "online"
    for name in SHIPPED_FILES:
        path = src / f"{'dit' if online and name == 'dit_ema' else name}.safetensors"
        _check_file(path, config)
        try:
            tensors[name] = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: unreadable weights ({e})") from e
    _write_folder(dst, {k: v for k, v in config.items() if k != "files"}, tensors)
    return dst


def load_optimizer_state(folder: str | Path) -> dict:
    folder = _resolve(Path(folder))
    path = folder / "optimizer.pt"
    _check_file(path, read_config(folder))
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


# The DiT fields dit_config_for fits to the autoencoder and the action contract: a recipe cannot set them.
FITTED = {
    "latent_channels": "the autoencoder",
    "latent_size": "the autoencoder",
    "action_sizes": "the data's action contract",
}


def dit_config_for(
    preset_dit: DiTConfig, ae: Autoencoder | AEConfig, resolution: tuple[int, int], action_spec: ActionSpec
) -> DiTConfig:
    """The DiT config of a preset, fitted to the autoencoder's latent grid and the action contract (its
    rules, such as the patch fitting the grid, checked on that grid)."""
    cfg = ae.cfg if isinstance(ae, Autoencoder) else ae
    w, h = resolution
    d = cfg.downsample
    if w % d or h % d:
        raise CheckpointError(f"resolution {w}x{h} is not divisible by the autoencoder's {d}x downsampling")
    return DiTConfig(
        **{
            **to_dict(preset_dit),
            "latent_channels": cfg.latent_channels,
            "latent_size": (h // d, w // d),
            "action_sizes": tuple(action_spec.sizes),
        }
    )


def recipe_for(preset: str, items: tuple[str, ...], ae_folder: str | Path, option: str = "--set") -> Preset:
    """Preset `preset` with the override `items`, its DiT on the latent grid of the autoencoder in
    `ae_folder`, read from its config.json alone: every recipe value meets its bounds and rules, on the grid
    it will train on, before any weights or data are read. A refusal names the item (or the preset)."""
    folder = _resolve(Path(ae_folder))
    config = read_config(folder)
    where = str(folder / CONFIG_NAME)
    try:
        ae = from_dict(AEConfig, config["ae"], where)
        spec = ActionSpec.from_dict(config["action_contract"], where)
        resolution = (int(config["resolution"][0]), int(config["resolution"][1]))
    except (KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{where}: malformed autoencoder config, missing or bad {e}") from e
    except ActionContractError as e:
        raise CheckpointError(str(e)) from e
    base = get_preset(preset)
    try:
        base = replace(base, dit=dit_config_for(base.dit, ae, resolution, spec))
    except ConfigError as e:
        raise e.at(f"--preset {preset} on the autoencoder {ae_folder}") from None
    for item in items:
        section, name, _ = parse_override(item, option)
        if section == "dit" and name in FITTED:
            raise ConfigError(
                f"{option} {item!r}: dit.{name} is not a recipe value; {FITTED[name]} decides it: "
                f"{getattr(base.dit, name)} with the autoencoder {ae_folder}"
            )
    return apply_overrides(base, items, option)


def make_untrained_checkpoint(
    path: str | Path,
    preset: str = "tiny",
    resolution: tuple[int, int] = (160, 120),
    frame_skip: int = 2,
    seed: int = 0,
    action_spec: ActionSpec = DEFAULT_ACTIONS,
    scenario: str | None = None,
    map_name: str | None = None,
) -> Path:
    """Write a real, randomly initialised, loadable world-model checkpoint (for tests of other packages),
    of the world `scenario` on `map_name`; with no scenario it records no world, as checkpoints made before
    worlds were recorded (it then loads as E1M1).

    Its latent statistics are the identity and its DiT, as every fresh DiT, predicts v = 0, so each step
    returns the decoded mean latent: a valid frame, not a meaningful one."""
    torch.manual_seed(seed)
    contract = action_spec.to_dict()
    world = World(scenario, map_name or "", resolution, frame_skip, contract) if scenario else None
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
        extra_config={
            "untrained": True,
            **({"world": world.to_dict()} if world else {}),
        },
    )
    return Path(path)
