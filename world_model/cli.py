"""`dreamdoom wm ...` subcommands: train-ae, encode, train, eval, bench."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

from data.cli import dataset_folder, output_file, output_folder
from data.cli_args import MAX_SEED, JsonOutput, UsageError, arg, build, check_device
from world_model.model.config import MAX_SAMPLING_STEPS, PRESETS, AEConfig, bounds_of


@dataclass
class Threads:
    threads: int = arg(0, "torch CPU threads (0: torch's default)", ge=0, le=1024)


@dataclass
class TrainAEArgs:
    """`wm train-ae`: the preset's autoencoder config, with these overrides."""

    data: str = arg(help="dataset folder")
    out: str = arg(help="autoencoder folder to write")
    overwrite: bool = arg(False, "replace the autoencoder already in --out")
    preset: str = arg("cpu", "model and training preset", choices=sorted(PRESETS))
    steps: int | None = arg(None, "override the preset's training steps", **bounds_of(AEConfig, "steps"))
    decoder_steps: int | None = arg(
        None, "override the preset's decoder fine-tuning steps", **bounds_of(AEConfig, "decoder_steps")
    )
    batch_size: int | None = arg(
        None, "override the preset's batch size", **bounds_of(AEConfig, "batch_size")
    )
    crop: int | None = arg(
        None,
        "crop size, a multiple of the autoencoder's downsampling (0: whole frames)",
        **bounds_of(AEConfig, "crop"),
    )
    channels: tuple[int, ...] | None = arg(
        None,
        "override the preset's widths, e.g. 16,32,64: one 2x downsampling between entries",
        **bounds_of(AEConfig, "channels"),
    )
    latent_channels: int | None = arg(
        None, "override the preset's latent channels", **bounds_of(AEConfig, "latent_channels")
    )
    grad_loss: float | None = arg(
        None,
        "override the preset's weight of the L1 loss on image gradients",
        **bounds_of(AEConfig, "grad_loss"),
    )
    every: int = arg(2, "use every n-th frame of the training episodes", ge=1)
    max_frames: int = arg(40000, "at most this many training frames in memory", ge=1)
    heldout: float = arg(0.1, "held-out fraction of episodes", ge=0, le=0.9)
    device: str | None = arg(None, "cpu or cuda (default: cuda when available)")
    seed: int = arg(0, "seed of initialisation and crops", ge=0, le=MAX_SEED)


@dataclass
class EncodeArgs:
    data: str = arg(help="dataset folder")
    ae: str = arg(help="autoencoder (or world-model) folder")
    out: str = arg(help="cache file (.safetensors)")
    heldout: float = arg(0.1, "held-out fraction of episodes", ge=0, le=0.9)
    device: str | None = arg(None, "cpu or cuda (default: cuda when available)")
    seed: int = arg(
        0, "no effect: encoding is deterministic (kept for scripts that pass it)", ge=0, le=MAX_SEED
    )


@dataclass
class BenchArgs:
    ckpt: str = arg(help="world-model checkpoint folder")
    steps: tuple[int, ...] = arg((1, 2, 4), "comma-separated DDIM step counts", ge=1, le=MAX_SAMPLING_STEPS)
    frames: int = arg(100, "timed steps per setting", ge=1)
    out: str | None = arg(None, "also write the JSON here")
    device: str | None = arg(None, "cpu or cuda (default: cuda when available)")
    seed: int = arg(0, "seed of the start context and actions", ge=0, le=MAX_SEED)
    start: str | None = arg(
        None,
        "dataset of the checkpoint's world whose first episode starts the bench (default: random frames)",
        metavar="DATASET",
    )


@dataclass
class ExportArgs:
    ckpt: str = arg(help="world-model checkpoint folder (a run's RUN/ckpt)")
    out: str = arg(help="folder to write: config.json, autoencoder and EMA weights")
    overwrite: bool = arg(False, "replace the world model already in --out")
    online: bool = arg(
        False,
        "ship the online weights in the EMA's place (a run too short for its EMA to have left its start)",
    )


def checkpoint_folder(path: str, option: str = "--ckpt") -> str:
    """`path` if it is a checkpoint folder (config.json in it)."""
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{option} {path}: {'a file, not' if p.exists() else 'no such'} checkpoint folder")
    config = p / "config.json"
    if not config.is_file():
        raise UsageError(f"{option} {path}: not a checkpoint folder (no config.json)")
    try:
        ok = isinstance(json.loads(config.read_text()), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"{option} {path}: {config} is not a checkpoint config (want a JSON object)")
    return path


def _setup(args: argparse.Namespace, device: str | None) -> str:
    """Threads and the device, checked before any work."""
    import torch

    threads = build(Threads, args).threads
    if threads:
        torch.set_num_threads(threads)
    # Arithmetic on values below 1e-38 (subnormals) is many times slower on x86 CPUs, and as training goes on
    # more of a network's gradients and Adam moments fall there, so each step slows down. Flushed to zero they
    # cost nothing and change no figure worth keeping.
    torch.set_flush_denormal(True)
    return check_device(device)


def cmd_train_ae(args: argparse.Namespace) -> int:
    a = build(TrainAEArgs, args)
    dataset_folder(a.data, "--data")
    output_folder(a.out)
    from world_model.model.config import ConfigError, get_preset, to_dict

    names = ("steps", "decoder_steps", "batch_size", "crop", "channels", "latent_channels", "grad_loss")
    given = {n: getattr(a, n) for n in names if getattr(a, n) is not None}
    try:
        cfg = replace(get_preset(a.preset).ae, **given)
    except ConfigError as e:
        shown = {n: ",".join(map(str, v)) if isinstance(v, tuple) else v for n, v in given.items()}
        options = " ".join(f"--{n.replace('_', '-')} {v}" for n, v in shown.items())
        raise UsageError(f"{options} (preset {a.preset}): {e}") from None
    device = _setup(args, a.device)
    from world_model.model.checkpoint import check_out

    check_out(a.out, "autoencoder", a.overwrite)  # before training, not after; it makes the parent folder
    from data.dataset import Dataset
    from world_model.model.checkpoint import save_autoencoder
    from world_model.training.autoencoder import train_autoencoder
    from world_model.training.latents import load_frames

    print(f"autoencoder config: {to_dict(cfg)}")
    ds = Dataset(a.data)
    train_refs, held_refs = ds.split(a.heldout)
    train = load_frames(ds, train_refs, every=a.every, limit=a.max_frames)
    held = load_frames(ds, held_refs or train_refs[-1:], every=max(a.every, 8), limit=512)
    print(f"{len(train):,} training frames, {len(held):,} held-out frames from {ds.root}")
    if ds.errors:
        print(f"skipped {len(ds.errors)} unreadable episode(s); the first: " + "; ".join(ds.errors[:3]))
    ae, summary = train_autoencoder(cfg, train, held, seed=a.seed, device=device)
    save_autoencoder(a.out, ae, ds.manifest.resolution, ds.manifest.frame_skip, ds.action_spec, summary)
    print(json.dumps(summary, indent=2))
    print(
        f"held-out reconstruction PSNR {summary['heldout_psnr']:.2f} dB; "
        f"{summary['crops_per_s']:.1f} crops/s; saved {a.out}"
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    a = build(EncodeArgs, args)
    dataset_folder(a.data, "--data")
    checkpoint_folder(a.ae, "--ae")
    output_file(a.out, suffixes=(".safetensors",))
    device = _setup(args, a.device)
    from data.dataset import Dataset
    from world_model.model.checkpoint import check_data_fits, load_autoencoder
    from world_model.training.latents import encode_dataset

    ae, config = load_autoencoder(a.ae, device)
    ds = Dataset(a.data)
    check_data_fits(config, ds.manifest.resolution, ds.manifest.frame_skip, ds.action_spec, str(a.ae))
    encode_dataset(ae, ds, a.out, heldout_fraction=a.heldout, ae_path=str(a.ae))
    return 0


def _train_options() -> tuple[type, ...]:
    from world_model.training.train import TrainArgs

    return (TrainArgs, Threads)


def cmd_train(args: argparse.Namespace) -> int:
    from world_model.training.train import TrainArgs, train

    a = build(TrainArgs, args)
    dataset_folder(a.data, "--data")
    checkpoint_folder(a.ae, "--ae")
    output_folder(a.out)
    if a.cache:
        output_file(a.cache, "--cache", suffixes=(".safetensors",))
    if a.set and a.resume:
        raise UsageError("--set with --resume: a run keeps the recipe saved in its checkpoint")
    from world_model.model.checkpoint import recipe_for

    recipe_for(a.preset, a.set, a.ae)  # every recipe value checked on the autoencoder's grid, before any data
    _setup(args, a.device)
    from world_model.training.train import check_run_folder

    check_run_folder(Path(a.out), a.resume, a.overwrite)  # last: it makes the run folder's parent
    train(a)
    return 0


def _eval_options() -> tuple[type, ...]:
    from world_model.evaluation.evaluate import EvalArgs

    return (EvalArgs, Threads, JsonOutput)


def cmd_eval(args: argparse.Namespace) -> int:
    from world_model.evaluation.evaluate import EvalArgs, evaluate, format_report

    a = build(EvalArgs, args)
    checkpoint_folder(a.ckpt)
    dataset_folder(a.data, "--data")
    output_folder(a.out)
    if a.probe_data:
        dataset_folder(a.probe_data, "--probe-data")
    from data.dataset import Dataset

    if not a.all_episodes and len(Dataset(a.data).episodes) < 2:  # a split needs two episodes
        raise UsageError(
            f"--data {a.data}: fewer than 2 episodes, so none is held out to evaluate on "
            "(--all-episodes evaluates on every episode of a dataset recorded apart from training)"
        )
    _setup(args, a.device)
    engines = args.engine_factory() if args.engine_factory and a.engine else None
    try:
        report = evaluate(a, engine_factory=engines)
    finally:
        if engines is not None:
            engines.close()
    print(json.dumps(report, indent=2) if build(JsonOutput, args).json else format_report(report))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from world_model.evaluation.bench import bench, format_bench

    a = build(BenchArgs, args)
    checkpoint_folder(a.ckpt)
    if a.start:
        dataset_folder(a.start, "--start")
    if a.out:
        output_file(a.out)
    device = _setup(args, a.device)
    result = bench(a.ckpt, steps=list(a.steps), device=device, frames=a.frames, seed=a.seed, start=a.start)
    print(json.dumps(result, indent=2) if build(JsonOutput, args).json else format_bench(result))
    if a.out:
        from data.durable import write_atomic

        write_atomic(a.out, json.dumps(result, indent=2).encode())
    return 0


def _ablate_options() -> tuple[type, ...]:
    from world_model.training.ablate import AblateArgs

    return (AblateArgs, Threads)


def cmd_ablate(args: argparse.Namespace) -> int:
    from world_model.training.ablate import AblateArgs, ablate, parse_variants

    a = build(AblateArgs, args)
    dataset_folder(a.data, "--data")
    checkpoint_folder(a.ae, "--ae")
    dataset_folder(a.heldout, "--heldout")
    if a.probe_data:
        dataset_folder(a.probe_data, "--probe-data")
    output_folder(a.out)
    parse_variants(a.variant, a.preset, a.ae)  # every recipe checked before the first one trains
    _setup(args, a.device)
    ablate(a, engine_factory=args.engine_factory)
    return 0


def _curve_options() -> tuple[type, ...]:
    from world_model.evaluation.curve import CurveArgs

    return (CurveArgs, Threads)


def cmd_curve(args: argparse.Namespace) -> int:
    from world_model.evaluation.curve import CurveArgs, main_curve

    a = build(CurveArgs, args)
    dataset_folder(a.heldout, "--heldout")
    output_folder(a.out)
    _setup(args, a.device)
    engines = args.engine_factory() if args.engine_factory and a.stability_frames else None
    try:
        main_curve(a, engines)
    finally:
        if engines is not None:
            engines.close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    a = build(ExportArgs, args)
    checkpoint_folder(a.ckpt)
    output_folder(a.out)
    from world_model.model.checkpoint import export_world_model

    out = export_world_model(a.ckpt, a.out, replace=a.overwrite, online=a.online)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))} ({size / 1e6:.1f} MB)")
    return 0


def register(sub: argparse._SubParsersAction, engine_factory=None) -> None:
    """`engine_factory()` makes the replay engines `wm eval` judges control against (None: no engine)."""
    wm = sub.add_parser("wm", help="world model: train, evaluate, benchmark").add_subparsers(
        dest="wm_command", required=True, metavar="WM_COMMAND"
    )
    wm.add_parser(
        "train-ae",
        help="train the autoencoder (then fine-tune its decoder)",
        options=lambda: (TrainAEArgs, Threads),
    ).set_defaults(func=cmd_train_ae)
    wm.add_parser(
        "encode",
        help="encode a dataset into a latent cache for DiT training",
        options=lambda: (EncodeArgs, Threads),
    ).set_defaults(func=cmd_encode)
    wm.add_parser("train", help="train the DiT on cached latents", options=_train_options).set_defaults(
        func=cmd_train
    )
    wm.add_parser(
        "eval",
        help="the dream on the 3-D view: structure, place, control, stability, beside floor and ceiling",
        options=_eval_options,
    ).set_defaults(func=cmd_eval, engine_factory=engine_factory)
    wm.add_parser(
        "ablate",
        help="DiT recipes side by side: each trained the same minutes, one table of the yardstick's figures",
        options=_ablate_options,
    ).set_defaults(func=cmd_ablate, engine_factory=engine_factory)
    wm.add_parser(
        "curve",
        help="learning curves from runs' snapshots (wm train --keep-every): structure, turn, rollouts, hold",
        options=_curve_options,
    ).set_defaults(func=cmd_curve, engine_factory=engine_factory)
    wm.add_parser(
        "export",
        help="a checkpoint with only what play and eval read (config, autoencoder, EMA weights)",
        options=lambda: (ExportArgs,),
    ).set_defaults(func=cmd_export)
    wm.add_parser(
        "bench",
        help="frames/s and latency of WorldModelEnv.step",
        options=lambda: (BenchArgs, Threads, JsonOutput),
    ).set_defaults(func=cmd_bench)
