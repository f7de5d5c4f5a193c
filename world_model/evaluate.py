"""`dreamdoom wm eval`: how well a checkpoint predicts held-out play, against copying the last frame.

- teacher-forced: next frame from K real past frames and the recorded actions; PSNR and SSIM;
- rollouts: the model feeds on its own latents and follows the recorded actions; PSNR per horizon;
- action swap: teacher-forced PSNR with the true current action minus PSNR with the opposite one
  (same noise): positive when the model listens to the player;
- copy-last-frame baseline for each, the autoencoder's reconstruction PSNR (the ceiling), and a
  side-by-side real | generated video of the rollouts. Everything goes into report.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.actions import ActionSpec
from data.cli_args import MAX_SEED, arg
from data.dataset import Dataset
from data.video import write_video
from data.windows import LatentWindows
from world_model.autoencoder import to_tensor, to_uint8
from world_model.checkpoint import check_data_fits, load_world_model
from world_model.diffusion import ddim_sample
from world_model.env import MAX_SAMPLING_STEPS, autocast_for
from world_model.metrics import psnr, sharpness, ssim

HORIZONS = (1, 8, 32, 64)  # plus the full rollout length


@dataclass
class EvalArgs:
    ckpt: str = arg(help="world-model checkpoint folder")
    data: str = arg(help="dataset folder (its held-out episodes are used)")
    out: str = arg(help="report folder: report.json + side_by_side.mp4")
    episodes: int = arg(8, "at most this many held-out episodes", ge=1)
    transitions: int = arg(512, "teacher-forced transitions (evenly spread)", ge=1)
    rollouts: int = arg(8, "autoregressive rollouts", ge=1)
    horizon: int = arg(96, "rollout length in frames", ge=1)
    steps: int | None = arg(None, "DDIM steps (default: the checkpoint's)", ge=1, le=MAX_SAMPLING_STEPS)
    device: str | None = arg(None, "cpu or cuda (default: cuda when available)")
    seed: int = arg(0, "seed of the sampler", ge=0, le=MAX_SEED)
    batch: int = arg(64, "frames encoded at once", ge=1)


def opposite_actions(actions: torch.Tensor, spec: ActionSpec) -> torch.Tensor:
    """A clearly different action for each (..., fields): forward <-> backward (none -> forward), strafe
    mirrored, turn mirrored (no turn -> fastest right); attack and use kept."""
    out = actions.clone()
    f = spec.fields
    move, strafe, turn = (actions[..., f.index(n)] for n in ("move", "strafe", "turn"))
    out[..., f.index("move")] = torch.tensor([1, 2, 1])[move]
    out[..., f.index("strafe")] = torch.tensor([0, 2, 1])[strafe]
    n_turn = len(spec.turn_degrees_per_tic)
    mirrored = n_turn - 1 - turn
    out[..., f.index("turn")] = torch.where(
        turn == spec.turn_none, torch.full_like(turn, n_turn - 1), mirrored
    )
    return out


def evaluate(args: EvalArgs) -> dict:
    t_start = time.time()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ck = load_world_model(args.ckpt, device)
    ds = Dataset(args.data)
    check_data_fits(ck.config, ds.manifest.resolution, ds.manifest.frame_skip, ds.action_spec, str(args.ckpt))
    _, held_refs = ds.split(ck.train.heldout_fraction)
    if not held_refs:
        raise ValueError(f"{args.data}: no held-out episodes (the dataset needs at least two episodes)")
    steps = args.steps or ck.diffusion.sampling_steps
    k, buckets = ck.dit_cfg.context_len, ck.dit_cfg.noise_buckets
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Held-out episodes: real frames, actions, and their latents (encoded once).
    frames, actions, latents, starts, lengths = [], [], [], [], []
    n = 0
    for _, ep in ds.iter_episodes(held_refs[: args.episodes]):
        if len(ep) < 2:
            continue
        with torch.no_grad(), autocast_for(device):
            z = torch.cat(
                [
                    ck.ae.encode(to_tensor(ep.frames[i : i + args.batch], device)).float().cpu()
                    for i in range(0, len(ep), args.batch)
                ]
            )
        frames.append(ep.frames)
        actions.append(torch.from_numpy(ep.actions.astype(np.int64)))
        latents.append(z)
        starts.append(n)
        lengths.append(len(ep))
        n += len(ep)
    if not frames:
        raise ValueError(f"{args.data}: no readable held-out episode with 2 or more frames")
    all_frames = np.concatenate(frames)  # (N, H, W, 3)
    all_lat = torch.cat(latents)  # (N, C, h, w)
    windows = LatentWindows(
        all_lat,
        torch.cat(actions),
        torch.tensor(starts),
        torch.tensor(lengths),
        torch.arange(len(frames)),
        k,
        ds.action_spec.noop(),
    )

    def predict(context: torch.Tensor, acts: torch.Tensor, seed: int) -> torch.Tensor:
        gen = torch.Generator(device=device).manual_seed(seed)
        noise = torch.randn((len(context), *all_lat.shape[1:]), generator=gen, device=device)
        with torch.no_grad(), autocast_for(device):
            return ddim_sample(
                ck.dit,
                context.to(device),
                acts.to(device),
                steps,
                ck.diffusion,
                buckets,
                noise=noise,
                generator=gen,
            ).float()

    def decode(z: torch.Tensor) -> np.ndarray:
        with torch.no_grad(), autocast_for(device):
            return to_uint8(ck.ae.decode(z.to(device)))

    # Teacher-forced next frame, the action swap, and the copy-last-frame baseline.
    which = torch.linspace(0, len(windows) - 1, min(args.transitions, len(windows))).round().long().unique()
    tf: dict[str, list] = {
        k: []
        for k in ("psnr", "ssim", "copy_psnr", "copy_ssim", "recon_psnr", "swap_psnr", "sharp", "recon_sharp")
    }
    for i in tqdm(range(0, len(which), args.batch), desc="eval teacher-forced"):
        w = which[i : i + args.batch]
        target_idx = windows.targets[w]
        _, context, acts = windows.gather(w)
        real, prev = all_frames[target_idx.numpy()], all_frames[target_idx.numpy() - 1]
        seed = args.seed + i
        pred = decode(predict(context, acts, seed))
        swapped = acts.clone()
        swapped[:, k] = opposite_actions(acts[:, k], ds.action_spec)
        pred_swap = decode(predict(context, swapped, seed))
        tf["psnr"].append(psnr(pred, real))
        tf["ssim"].append(ssim(pred, real))
        tf["copy_psnr"].append(psnr(prev, real))
        tf["copy_ssim"].append(ssim(prev, real))
        recon = decode(all_lat[target_idx])
        tf["recon_psnr"].append(psnr(recon, real))
        real_sharp = sharpness(real)
        tf["sharp"].append(sharpness(pred) / real_sharp)
        tf["recon_sharp"].append(sharpness(recon) / real_sharp)
        tf["swap_psnr"].append(psnr(pred_swap, real))
    tf = {key: np.concatenate(v) for key, v in tf.items()}

    # Autoregressive rollouts that follow the recorded actions, from real context.
    horizon = min(args.horizon, max(lengths) - 1)
    long_eps = [e for e, length in enumerate(lengths) if length > horizon]
    per_ep = -(-args.rollouts // len(long_eps))
    starts_r, firsts_r = [], []
    for j in range(args.rollouts):
        e = long_eps[j % len(long_eps)]
        hi = lengths[e] - 1 - horizon  # the last start with a real frame `horizon` steps later
        lo = min(k - 1, hi)
        starts_r.append(starts[e] + lo + (hi - lo) * (j // len(long_eps)) // per_ep)
        firsts_r.append(starts[e])
    r = len(starts_r)
    start_idx = torch.tensor(starts_r)  # (R,) frame each rollout starts from (its last real context frame)
    ep_first = torch.tensor(firsts_r)  # (R,)
    ctx_idx = torch.maximum(start_idx[:, None] + torch.arange(-k + 1, 1), ep_first[:, None])  # (R, K)
    context = all_lat[ctx_idx]  # (R, K, C, h, w)
    acts_all = windows.actions
    noop = torch.as_tensor(ds.action_spec.noop())
    act_idx = start_idx[:, None] + torch.arange(-k, 0)  # (R, K) actions that led into the context frames
    led_in = torch.where((act_idx >= ep_first[:, None])[..., None], acts_all[act_idx.clamp_min(0)], noop)
    roll_psnr, copy_psnr, roll_sharp = (np.zeros((r, horizon)) for _ in range(3))
    video = []
    first_real = all_frames[start_idx.numpy()]
    for h in tqdm(range(1, horizon + 1), desc="eval rollouts"):
        current = acts_all[start_idx + h - 1]  # (R, fields), taken at the previous frame
        acts = torch.cat([led_in, current[:, None]], dim=1)  # (R, K+1, fields)
        z = predict(context, acts, args.seed + 10_000 + h).cpu()  # (R, C, h, w)
        gen_frames = decode(z)
        real = all_frames[(start_idx + h).numpy()]
        roll_psnr[:, h - 1] = psnr(gen_frames, real)
        copy_psnr[:, h - 1] = psnr(first_real, real)
        roll_sharp[:, h - 1] = sharpness(gen_frames) / sharpness(real)
        video.append(
            np.concatenate([np.concatenate([real[i], gen_frames[i]], axis=1) for i in range(min(r, 2))])
        )
        context = torch.cat([context[:, 1:], z[:, None]], dim=1)
        led_in = torch.cat([led_in[:, 1:], current[:, None]], dim=1)

    fps = 35.0 / ds.manifest.frame_skip
    hs_png = sorted({1, 8, 32, 64, horizon})
    write_video(video, out / "side_by_side.mp4", fps=fps, scale=2)
    _write_strip(video, all_frames.shape[1], out / "side_by_side.png", [h for h in hs_png if h <= horizon])

    hs = sorted({h for h in (*HORIZONS, horizon) if h <= horizon})
    report = {
        "checkpoint": str(args.ckpt),
        "step": ck.step,
        "data": str(args.data),
        "sampling_steps": steps,
        "heldout_episodes": len(frames),
        "heldout_frames": int(n),
        "teacher_forced": {
            "transitions": int(len(which)),
            "psnr": float(tf["psnr"].mean()),
            "ssim": float(tf["ssim"].mean()),
            "copy_last_psnr": float(tf["copy_psnr"].mean()),
            "copy_last_ssim": float(tf["copy_ssim"].mean()),
            "autoencoder_psnr": float(tf["recon_psnr"].mean()),
            # sharpness of prediction and reconstruction over the real frame's (1: as sharp, below: blurrier)
            "sharpness": float(tf["sharp"].mean()),
            "autoencoder_sharpness": float(tf["recon_sharp"].mean()),
        },
        "action_swap": {
            "psnr_true_action": float(tf["psnr"].mean()),
            "psnr_opposite_action": float(tf["swap_psnr"].mean()),
            "delta_db": float((tf["psnr"] - tf["swap_psnr"]).mean()),
        },
        "rollout": {
            "rollouts": r,
            "horizon": horizon,
            "psnr": {str(h): float(roll_psnr[:, h - 1].mean()) for h in hs},
            "copy_last_psnr": {str(h): float(copy_psnr[:, h - 1].mean()) for h in hs},
            "sharpness": {str(h): float(roll_sharp[:, h - 1].mean()) for h in hs},
            "psnr_curve": [float(x) for x in roll_psnr.mean(0)],
        },
        "video": str(out / "side_by_side.mp4"),
        "seconds": time.time() - t_start,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _write_strip(video: list[np.ndarray], height: int, path: Path, horizons: list[int]) -> None:
    """The first rollout's real | generated frames at a few horizons, one row each, in one small PNG."""
    import imageio.v2 as imageio

    imageio.imwrite(path, np.concatenate([video[h - 1][:height] for h in horizons], axis=0))


def format_report(report: dict) -> str:
    """The report as a small table: the model beside the copy-last-frame baseline."""
    tf, ro, sw = report["teacher_forced"], report["rollout"], report["action_swap"]
    row = "{:28}{:10.2f}{:11.2f}{:11.2f}".format
    lines = [
        f"{report['checkpoint']} (step {report['step']}) on {report['heldout_episodes']} held-out episodes "
        f"({report['heldout_frames']:,} frames), {report['sampling_steps']} DDIM steps",
        f"{'':28}{'model':>10}{'copy last':>11}{'sharpness':>11}",
        row("teacher-forced PSNR (dB)", tf["psnr"], tf["copy_last_psnr"], tf["sharpness"]),
        f"{'teacher-forced SSIM':28}{tf['ssim']:10.3f}{tf['copy_last_ssim']:11.3f}",
    ]
    for h, v in ro["psnr"].items():
        lines.append(row(f"rollout PSNR, h={h}", v, ro["copy_last_psnr"][h], ro["sharpness"][h]))
    lines += [
        f"autoencoder PSNR {tf['autoencoder_psnr']:.2f} dB, sharpness {tf['autoencoder_sharpness']:.2f}; "
        f"action swap {sw['delta_db']:+.2f} dB ({sw['psnr_true_action']:.2f} true, "
        f"{sw['psnr_opposite_action']:.2f} opposite)",
        f"{ro['rollouts']} rollouts; sharpness is the prediction's over the real frame's (below 1: blurrier)",
        f"report: {Path(report['video']).parent / 'report.json'}; video: {report['video']}",
    ]
    return "\n".join(lines)
