"""`dreamdoom wm train`: one flat loop training the DiT on cached latents.

AdamW (fused on CUDA), EMA, grad clipping, bf16 autocast on CUDA, optional torch.compile,
tensorboard scalars, tqdm, a checkpoint every N steps and --resume, DDP when started under torchrun
(gloo on CPU, nccl on CUDA). Rank 0 encodes the latent cache if it is missing or stale, logs and saves.
The latent cache sits on the training device and batches are gathered there; the loop reads a
number back from the device only when it logs, so a GPU is never left waiting on the host.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from data.cli_args import MAX_SEED, arg
from data.dataset import Dataset
from data.windows import LatentWindows
from world_model.model.autoencoder import latent_range
from world_model.model.capture import autocast_for
from world_model.model.checkpoint import (
    CheckpointError,
    check_data_fits,
    check_out,
    dit_config_for,
    export_world_model,
    load_autoencoder,
    load_optimizer_state,
    load_world_model,
    recipe_for,
    recover,
    save_world_model,
)
from world_model.model.config import PREDICTIONS, PRESETS, TrainConfig, bounds_of, to_dict
from world_model.model.diffusion import Diffusion
from world_model.model.dit import DiT
from world_model.training.latents import (
    LatentCache,
    LatentCacheError,
    cache_fingerprints,
    encode_dataset,
    stale_cache_reason,
)

UNBOUNDED_STEPS = 10**9  # --steps for a run that only --minutes ends


@dataclass
class TrainArgs:
    """What `dreamdoom wm train` was asked; None keeps the preset's value."""

    data: str = arg(help="dataset folder")
    ae: str = arg(help="autoencoder folder (from train-ae)")
    out: str = arg(help="run folder: checkpoint in OUT/ckpt, tensorboard in OUT/tb, latents.safetensors")
    preset: str = arg("cpu", "model and training preset", choices=sorted(PRESETS))
    resume: bool = arg(False, "continue from OUT/ckpt: weights, EMA, optimizer and step count")
    overwrite: bool = arg(
        False, "start over in a run folder that holds a checkpoint (replaced at the first save)"
    )
    steps: int | None = arg(
        None, "total optimizer steps (default: the preset's)", **bounds_of(TrainConfig, "steps")
    )
    minutes: float | None = arg(None, "stop (and save) after this much wall time", gt=0)
    batch_size: int | None = arg(
        None, "batch per process (default: the preset's)", **bounds_of(TrainConfig, "batch_size")
    )
    lr: float | None = arg(None, "peak learning rate (default: the preset's)", **bounds_of(TrainConfig, "lr"))
    ckpt_every: int | None = arg(
        None, "steps between checkpoints (default: the preset's)", **bounds_of(TrainConfig, "ckpt_every")
    )
    # Final fraction of this run (by --steps or --minutes, whichever ends first) over which the learning
    # rate decays linearly to zero; 0 keeps it constant, so a run can always be resumed at full rate.
    cooldown: float = arg(
        0.0,
        "decay the lr linearly to 0 over this final fraction of the run (by --steps or --minutes)",
        ge=0,
        le=1,
    )
    context_noise: bool = arg(True, "ablation: no context noise augmentation")
    prediction: str | None = arg(
        None, "what the DiT predicts: v, x0, eps or edm (default: the preset's)", choices=PREDICTIONS
    )
    set: tuple[str, ...] = arg(
        (),
        "change the preset's recipe: SECTION.FIELD=VALUE ..., e.g. dit.action_tokens=true "
        "diffusion.prediction=x0 (sections dit, diffusion, train)",
        nargs="+",
        metavar="SECTION.FIELD=VALUE",
    )
    keep_every: int | None = arg(
        None,
        "also keep the model every this many steps in OUT/snapshots/step-NNNNNNN (exported: config, "
        "autoencoder, EMA weights), for a learning curve drawn afterwards",
        ge=1,
    )
    cache: str | None = arg(None, "latent cache file (default: OUT/latents.safetensors, encoded if missing)")
    compile: bool = arg(False, "torch.compile the DiT")
    device: str | None = arg(None, "cpu or cuda (default: cuda when available)")
    seed: int = arg(0, "seed of initialisation and batches", ge=0, le=MAX_SEED)


def snapshot_dir(out: Path, step: int) -> Path:
    """Where `--keep-every` keeps the model of a step."""
    return out / "snapshots" / f"step-{step:07d}"


def _dist_setup(device: str | None) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():  # one multi-tensor kernel on CUDA instead of one per parameter
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a run folder whose checkpoint a save would replace unasked, or one that is not a run folder."""
    ckpt_dir = out / "ckpt"
    if (out / "config.json").exists() or out.is_file():
        raise CheckpointError(f"{out}: is a checkpoint or a file, not a run folder; choose another --out")
    check_out(ckpt_dir, "world_model", resume or overwrite, "--resume (or --overwrite)")
    if resume and recover(ckpt_dir) is None:
        raise CheckpointError(f"{ckpt_dir}: --resume but there is no checkpoint to resume")


def _latent_cache(args: TrainArgs, out: Path, ds: Dataset, ae, tcfg: TrainConfig, main: bool, world: int):
    """The run's latent cache, encoded by rank 0 when missing or stale, checked against the data."""
    cache_path = Path(args.cache) if args.cache else out / "latents.safetensors"
    stale = cache_path.exists() and stale_cache_reason(
        cache_path, cache_fingerprints(ae, ds, tcfg.heldout_fraction)
    )
    if stale and args.cache:
        raise LatentCacheError(
            f"{cache_path}: this latent cache does not fit: {stale}; delete it to re-encode, "
            f"or pass another --cache"
        )
    if main and (stale or not cache_path.exists()):
        if stale:
            print(f"{cache_path}: {stale}; encoding it again")
        encode_dataset(ae, ds, cache_path, tcfg.heldout_fraction, ae_path=str(args.ae))
    if world > 1:
        dist.barrier()
    cache = LatentCache.load(cache_path)
    if cache.resolution != tuple(ds.manifest.resolution) or cache.frame_skip != ds.manifest.frame_skip:
        raise LatentCacheError(
            f"{cache_path}: cache is {cache.resolution} at frame_skip {cache.frame_skip}, the data "
            f"is {ds.manifest.resolution} at {ds.manifest.frame_skip}; delete it to re-encode"
        )
    ds.action_spec.check_compatible(cache.action_spec, str(cache_path))
    return cache, cache_path


def _resumed(args: TrainArgs, ckpt_dir: Path, ds: Dataset, given: dict):
    """A run's model, EMA, recipe, step and seconds from its checkpoint, checked against the data."""
    ck = load_world_model(ckpt_dir, "cpu", weights="dit", expected_spec=ds.action_spec)
    check_data_fits(ck.config, ds.manifest.resolution, ds.manifest.frame_skip, ds.action_spec, str(ckpt_dir))
    ck.world.check(ds.world, f"the run {ckpt_dir}", f"--data {args.data}")
    if args.prediction is not None and args.prediction != ck.diffusion.prediction:
        raise CheckpointError(
            f"{ckpt_dir}: was trained with --prediction {ck.diffusion.prediction}, "
            f"cannot resume it with {args.prediction}"
        )
    # the run's own training recipe (own rollouts included), with only what the command line names changed
    tcfg = replace(ck.train, **{n: v for n, v in given.items() if v is not None})
    ema = load_world_model(ckpt_dir, "cpu", weights="dit_ema", expected_spec=ds.action_spec).dit
    seconds = float(ck.config.get("train_seconds", 0.0))
    return ck.dit.train(), ema, ck.dit_cfg, ck.diffusion, tcfg, ck.step, seconds


def _fresh(args: TrainArgs, preset, ae, ds: Dataset):
    """A new DiT of the preset on the autoencoder's grid, its EMA a copy, at step 0."""
    dit_cfg = dit_config_for(preset.dit, ae, ds.manifest.resolution, ds.action_spec)
    torch.manual_seed(args.seed)
    dit = DiT(dit_cfg)
    return dit, copy.deepcopy(dit), dit_cfg, 0, 0.0


def train(args: TrainArgs) -> dict:
    if not 0.0 <= args.cooldown <= 1.0:
        raise ValueError(f"--cooldown {args.cooldown}: must be a fraction between 0 and 1")
    rank, world, device = _dist_setup(args.device)
    main = rank == 0
    out = Path(args.out)
    ckpt_dir = out / "ckpt"
    if args.set and args.resume:
        raise ValueError("--set with --resume: a run keeps the recipe saved in its checkpoint")
    if main:  # before any work: an --out that a save would lose something in is refused now
        check_run_folder(out, args.resume, args.overwrite)
    preset = recipe_for(args.preset, args.set, args.ae)  # checked on the autoencoder's grid, before any data
    given = {n: getattr(args, n) for n in ("steps", "batch_size", "lr", "ckpt_every")}
    tcfg = replace(preset.train, **{n: v for n, v in given.items() if v is not None})
    diffusion = replace(preset.diffusion, context_noise=args.context_noise)
    if args.prediction is not None:
        diffusion = replace(diffusion, prediction=args.prediction)
    ds = Dataset(args.data)
    data_world = ds.world  # what the model will dream; shards of several worlds are refused here
    ae, ae_config = load_autoencoder(args.ae, device)
    check_data_fits(ae_config, ds.manifest.resolution, ds.manifest.frame_skip, ds.action_spec, str(args.ae))
    cache, cache_path = _latent_cache(args, out, ds, ae, tcfg, main, world)
    if args.resume:
        dit, ema, dit_cfg, diffusion, tcfg, step, seconds_before = _resumed(args, ckpt_dir, ds, given)
    else:
        dit, ema, dit_cfg, step, seconds_before = _fresh(args, preset, ae, ds)
    if tuple(cache.latent_shape) != (dit_cfg.latent_channels, *dit_cfg.latent_size):
        raise LatentCacheError(
            f"{cache_path}: latents are {tuple(cache.latent_shape)}, the model expects "
            f"{(dit_cfg.latent_channels, *dit_cfg.latent_size)}; delete the cache to re-encode"
        )
    dit, ema = dit.to(device).train(), ema.to(device).eval().requires_grad_(False)
    process = Diffusion.for_world(
        diffusion,
        dit_cfg.noise_buckets,
        ds.action_spec,
        ds.manifest.frame_skip,
        ds.manifest.resolution,
        dit_cfg.latent_size,
        dit_cfg.base_input,
    )
    if main:
        print(f"DiT config: {to_dict(dit_cfg)}\ndiffusion: {to_dict(diffusion)}\ntrain: {to_dict(tcfg)}")
        print(
            f"DiT parameters: {sum(p.numel() for p in dit.parameters()) / 1e6:.2f} M; "
            f"world size {world}; device {device}"
        )

    train_eps = torch.nonzero(~cache.heldout).flatten()
    train_range = latent_range(
        cache.latents, [(int(cache.starts[e]), int(cache.lengths[e])) for e in train_eps.tolist()]
    )
    windows = LatentWindows(
        cache.latents.to(device),  # float16: 195k frames of the cpu/gpu presets' latents are ~100 MB
        cache.actions.to(device),
        cache.starts,
        cache.lengths,
        train_eps,
        dit_cfg.context_len,
        ds.action_spec.noop(),
    )
    if main:
        print(
            f"{len(windows):,} training windows from {len(train_eps)} episodes "
            f"({int(cache.heldout.sum())} held out)"
        )

    # Training on own rollouts (TrainConfig.rollout_*): this many windows of each batch start a run of
    # rollout_steps frames the model makes itself; the rest are teacher-forced windows, as before.
    n_roll = round(tcfg.rollout_share * tcfg.batch_size)
    n_tf, r = tcfg.batch_size - n_roll, tcfg.rollout_steps
    onepass = tcfg.rollout_mode == "onepass"
    # loss terms (frames predicted with a gradient) per step: one-pass has a loss on every step of its runs
    terms = n_tf + n_roll * (r + 1 if onepass else 1)
    if main and n_roll:
        how = (
            "one pass: each step's denoised estimate feeds the next, a loss on every step"
            if onepass
            else f"the sampler at {diffusion.sampling_steps} steps with the "
            f"{'EMA' if tcfg.rollout_ema else 'online'} weights, a loss on the frame after them"
        )
        print(
            f"own rollouts: {n_roll} of each batch of {tcfg.batch_size} after {r} frames of its own ({how})"
        )

    model = dit
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            dit, device_ids=[device.index] if device.type == "cuda" else None
        )
    forward = torch.compile(model) if args.compile else model
    fused = device.type == "cuda"  # one kernel for the whole update instead of several per parameter
    opt = torch.optim.AdamW(
        dit.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=(0.9, 0.99), fused=fused
    )
    if args.resume:
        state = load_optimizer_state(ckpt_dir)
        for g in state["param_groups"]:  # the state may come from another device: use this one's update
            g["fused"] = fused
        opt.load_state_dict(state)

    def lr_at(s: int, progress: float) -> float:
        lr = tcfg.lr * min(1.0, (s + 1) / tcfg.warmup) if tcfg.warmup else tcfg.lr
        if args.cooldown > 0:
            lr *= min(1.0, max(0.0, 1.0 - progress) / args.cooldown)
        return lr

    def run_progress() -> float:
        """How much of this run's budget is spent, 0..1, the same on every rank: they must agree on the lr
        and on when to stop, or DDP would hang. Only the clock differs between ranks, so only a time
        budget costs an all-reduce."""
        p = (step - start_step) / max(1, tcfg.steps - start_step)
        if args.minutes is not None:
            spent = (time.time() - t0) / (args.minutes * 60)
            if world > 1:
                t = torch.tensor([spent], dtype=torch.float64, device=device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                spent = float(t)
            p = max(p, spent)
        return p

    # Every (seed, rank, start step) draws its own batches and noise: resumed runs do not repeat old draws.
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + rank * 7919 + step)
    noise_gen = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + rank * 7919 + step + 1)
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))

    def save() -> None:
        if main:
            save_world_model(
                ckpt_dir,
                ae,
                dit,
                ema,
                diffusion,
                tcfg,
                ds.action_spec,
                ds.manifest.resolution,
                ds.manifest.frame_skip,
                step,
                opt,
                extra_config={
                    "train_seconds": seconds_before + time.time() - t0,
                    # loss terms: teacher-forced windows, and every step of one-pass runs
                    "samples_seen": step * terms * world,
                    "dataset": str(args.data),
                    "autoencoder_source": str(args.ae),
                    "world": data_world.to_dict(),
                    # what a dream's latents are judged by (world_model/evaluation/hold.py)
                    "latent_range": train_range,
                },
            )

    t0 = time.time()
    start_step, loss = step, None
    bar = tqdm(  # a run that only the clock ends (wm ablate) shows its count and rate, not a total
        total=None if tcfg.steps >= UNBOUNDED_STEPS else tcfg.steps,
        initial=step,
        desc="wm train",
        disable=not main,
        mininterval=2.0,
    )

    def batch_loss() -> torch.Tensor:
        """One batch's loss, the mean over its loss terms: teacher-forced windows, then own rollouts."""
        losses, weights = [], []
        if n_tf:
            target, context, actions = windows.sample(n_tf, gen)  # gathered on `device`
            losses.append(process.loss(forward, target, context, actions, noise_gen))
            weights.append(n_tf)
        if n_roll:
            targets, contexts, actions = windows.sample_runs(n_roll, r + 1, gen)  # (B, r+1, ...)
            if onepass:
                losses.append(process.unrolled_loss(forward, targets, contexts, actions, noise_gen)[0])
                weights.append(n_roll * (r + 1))
            else:
                maker = ema if tcfg.rollout_ema else dit
                context, _ = process.rollout_context(
                    maker, contexts, actions, diffusion.sampling_steps, noise_gen
                )
                losses.append(process.loss(forward, targets[:, -1], context, actions[:, -1], noise_gen))
                weights.append(n_roll)
        if len(losses) == 1:
            return losses[0]
        return sum(w * x for w, x in zip(weights, losses, strict=True)) / sum(weights)

    loss_sum, loss_n, t_log = torch.zeros((), device=device), 0, time.time()
    while step < tcfg.steps:
        progress = run_progress()
        if progress >= 1.0:
            if main:
                print(f"time budget of {args.minutes} min spent at step {step}")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress)
        with autocast_for(device):
            loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(dit.parameters(), tcfg.grad_clip)
        opt.step()
        _ema_update(ema, dit, tcfg.ema_decay)
        step += 1
        loss_sum, loss_n = loss_sum + loss.detach(), loss_n + 1
        bar.update(1)
        if main and step % tcfg.log_every == 0:
            mean_loss = loss_sum.item() / loss_n  # waits for the device: only here, once per log interval
            rate = loss_n * terms * world / (time.time() - t_log)
            writer.add_scalar("losses/train", mean_loss, step)
            writer.add_scalar("losses/grad_norm", float(grad_norm), step)
            writer.add_scalar("charts/lr", opt.param_groups[0]["lr"], step)
            writer.add_scalar("charts/samples_per_s", rate, step)
            bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{rate:.0f}", refresh=False)
            loss_sum, loss_n, t_log = torch.zeros((), device=device), 0, time.time()
        keep = args.keep_every is not None and step % args.keep_every == 0
        if step % tcfg.ckpt_every == 0 or keep:
            save()
        if keep and main:
            export_world_model(ckpt_dir, snapshot_dir(out, step), replace=True)
    bar.close()
    save()
    seconds = time.time() - t0
    samples = (step - start_step) * terms * world
    summary = {
        "step": step,
        "seconds": seconds,
        "samples": samples,
        "samples_per_s": samples / max(seconds, 1e-9),
        "final_loss": float("nan") if loss is None else loss.item(),
        "checkpoint": str(ckpt_dir),
    }
    if main:
        writer.close()
        print(
            f"trained {step - start_step} steps ({samples:,} samples) in {seconds:.0f} s: "
            f"{summary['samples_per_s']:.1f} samples/s; checkpoint {ckpt_dir}"
        )
    if world > 1:
        dist.barrier()
    summary["model"] = dit
    summary["ema"] = ema
    return summary
