"""`dreamdoom wm ...` subcommands: train-ae, encode, train, eval, bench."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _threads(args: argparse.Namespace) -> None:
    import torch

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def cmd_train_ae(args: argparse.Namespace) -> int:
    import torch

    from data.dataset import Dataset
    from world_model.autoencoder import train_autoencoder
    from world_model.checkpoint import check_out, save_autoencoder
    from world_model.config import get_preset, to_dict
    from world_model.latents import load_frames

    check_out(args.out, "autoencoder", args.overwrite)
    _threads(args)
    cfg = get_preset(args.preset).ae
    for name in ("steps", "decoder_steps", "batch_size", "crop"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    print(f"autoencoder config: {to_dict(cfg)}")
    ds = Dataset(args.data)
    train_refs, held_refs = ds.split(args.heldout)
    train = load_frames(ds, train_refs, every=args.every, limit=args.max_frames)
    held = load_frames(ds, held_refs or train_refs[-1:], every=max(args.every, 8), limit=512)
    print(f"{len(train):,} training frames, {len(held):,} held-out frames from {ds.root}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ae, summary = train_autoencoder(cfg, train, held, seed=args.seed, device=device)
    save_autoencoder(args.out, ae, ds.manifest.resolution, ds.manifest.frame_skip, ds.action_spec, summary)
    print(json.dumps(summary, indent=2))
    print(
        f"held-out reconstruction PSNR {summary['heldout_psnr']:.2f} dB; "
        f"{summary['crops_per_s']:.1f} crops/s; saved {args.out}"
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import torch

    from data.dataset import Dataset
    from world_model.checkpoint import check_data_fits, load_autoencoder
    from world_model.latents import encode_dataset

    _threads(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ae, config = load_autoencoder(args.ae, device)
    ds = Dataset(args.data)
    check_data_fits(config, ds.manifest.resolution, ds.manifest.frame_skip, ds.action_spec, str(args.ae))
    encode_dataset(ae, ds, args.out, heldout_fraction=args.heldout, ae_path=str(args.ae))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from world_model.train import TrainArgs, train

    _threads(args)
    train(
        TrainArgs(
            data=args.data,
            ae=args.ae,
            preset=args.preset,
            out=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            steps=args.steps,
            minutes=args.minutes,
            batch_size=args.batch_size,
            lr=args.lr,
            ckpt_every=args.ckpt_every,
            cooldown=args.cooldown,
            context_noise=not args.no_context_noise,
            cache=args.cache,
            compile=args.compile,
            device=args.device,
            seed=args.seed,
        )
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from world_model.evaluate import EvalArgs, evaluate, format_report

    _threads(args)
    report = evaluate(
        EvalArgs(
            ckpt=args.ckpt,
            data=args.data,
            out=args.out,
            episodes=args.episodes,
            transitions=args.transitions,
            rollouts=args.rollouts,
            horizon=args.horizon,
            steps=args.steps,
            device=args.device,
            seed=args.seed,
        )
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from world_model.bench import bench, format_bench

    _threads(args)
    steps = [int(s) for s in args.steps.split(",")]
    result = bench(args.ckpt, steps=steps, device=args.device, frames=args.frames)
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)


def register(sub: argparse._SubParsersAction) -> None:
    wm = sub.add_parser("wm", help="world model: train, evaluate, benchmark").add_subparsers(
        dest="wm_command", required=True, metavar="WM_COMMAND"
    )

    p = wm.add_parser("train-ae", help="train the autoencoder (then fine-tune its decoder)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--preset", default="cpu", help="tiny | cpu | gpu")
    p.add_argument("--out", required=True, help="autoencoder folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the autoencoder already in --out")
    p.add_argument("--steps", type=int, help="override the preset's training steps")
    p.add_argument("--decoder-steps", type=int, help="override the preset's decoder fine-tuning steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--crop", type=int, help="crop size (0: whole frames)")
    p.add_argument("--every", type=int, default=2, help="use every n-th frame of the training episodes")
    p.add_argument(
        "--max-frames", type=int, default=40000, help="at most this many training frames in memory"
    )
    p.add_argument("--heldout", type=float, default=0.1, help="held-out fraction of episodes")
    _common(p)
    p.set_defaults(func=cmd_train_ae)

    p = wm.add_parser("encode", help="encode a dataset into a latent cache for DiT training")
    p.add_argument("--data", required=True)
    p.add_argument("--ae", required=True, help="autoencoder (or world-model) folder")
    p.add_argument("--out", required=True, help="cache file (.safetensors)")
    p.add_argument("--heldout", type=float, default=0.1)
    _common(p)
    p.set_defaults(func=cmd_encode)

    p = wm.add_parser("train", help="train the DiT on cached latents")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--ae", required=True, help="autoencoder folder (from train-ae)")
    p.add_argument("--preset", default="cpu", help="tiny | cpu | gpu")
    p.add_argument("--out", required=True, help="run folder: checkpoint in OUT/ckpt, tensorboard in OUT/tb")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt")
    p.add_argument("--overwrite", action="store_true", help="start over, replacing OUT/ckpt")
    p.add_argument("--steps", type=int, help="total optimizer steps (default: the preset's)")
    p.add_argument("--minutes", type=float, help="stop (and save) after this much wall time")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--ckpt-every", type=int)
    p.add_argument(
        "--cooldown",
        type=float,
        default=0.0,
        help="decay the lr linearly to 0 over this final fraction of the run (by --steps or --minutes)",
    )
    p.add_argument("--no-context-noise", action="store_true", help="ablation: no context noise augmentation")
    p.add_argument("--cache", help="latent cache file (default: OUT/latents.safetensors, encoded if missing)")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = wm.add_parser("eval", help="held-out PSNR/SSIM, rollouts, action swap, side-by-side video")
    p.add_argument("--ckpt", required=True, help="world-model checkpoint folder")
    p.add_argument("--data", required=True, help="dataset folder (its held-out episodes are used)")
    p.add_argument("--out", required=True, help="report folder: report.json + side_by_side.mp4")
    p.add_argument("--episodes", type=int, default=8, help="at most this many held-out episodes")
    p.add_argument("--transitions", type=int, default=512, help="teacher-forced transitions")
    p.add_argument("--rollouts", type=int, default=8, help="autoregressive rollouts")
    p.add_argument("--horizon", type=int, default=96, help="rollout length in frames")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    _common(p)
    p.set_defaults(func=cmd_eval)

    p = wm.add_parser("bench", help="frames/s and latency of WorldModelEnv.step")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--steps", default="1,2,4", help="comma-separated DDIM step counts")
    p.add_argument("--frames", type=int, default=100, help="timed steps per setting")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also write the JSON here")
    _common(p)
    p.set_defaults(func=cmd_bench)
