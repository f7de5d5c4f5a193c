"""`dreamdoom wm bench`: frames/s and latency (median, p99) of WorldModelEnv.step, DiT and decoder apart,
eager and (on CUDA) replayed as CUDA graphs, side by side."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

from world_model.model.env import WorldModelEnv

WARMUP_STEPS = 5


def device_name(device: str | torch.device) -> str:
    """The GPU's name, or the CPU's model as /proc/cpuinfo gives it (platform's guess elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def modes_for(device: str | torch.device) -> list[bool]:
    """Capture settings worth timing: eager everywhere, CUDA graphs where there is CUDA."""
    return [False, True] if torch.device(device).type == "cuda" else [False]


def start_frames(env: WorldModelEnv, ckpt: str, start: str | None, rng: np.random.Generator) -> np.ndarray:
    """The start context: the first frames of the first episode of dataset `start`, which must be the world
    the checkpoint dreams, or random frames (a step costs the same on any content)."""
    w, h = env.resolution
    if start is None:
        return rng.integers(0, 256, (env.context_len, h, w, 3), dtype=np.uint8)
    from data.dataset import Dataset, DatasetError

    ds = Dataset(start, env.action_spec)
    env.world.check(ds.world, f"the checkpoint {ckpt}", f"--start {start}")
    for ref in ds.episodes:
        frames = ds.load(ref, ("frames",)).frames
        if len(frames) >= env.context_len:
            return np.ascontiguousarray(frames[: env.context_len])
    raise DatasetError(f"--start {start}: no episode of at least {env.context_len} frames")


def bench(
    ckpt: str,
    steps: list[int],
    device: str | None = None,
    frames: int = 100,
    seed: int = 0,
    start: str | None = None,
) -> dict:
    """Time `frames` env steps per denoising-step count and mode, after a warm-up (which also captures the
    graphs), from the start context `start_frames` gives."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    env = WorldModelEnv.from_checkpoint(ckpt, device=device, seed=seed)
    rng = np.random.default_rng(seed)
    start_context = start_frames(env, ckpt, start, rng)
    spec = env.action_spec
    result = {
        "checkpoint": str(ckpt),
        "device": device,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "resolution": list(env.resolution),
        "world": env.world.to_dict(),
        "start": start or "random frames",
        "context_len": env.context_len,
        "realtime_fps": 35.0 / env.frame_skip,
        "settings": [],
    }
    for n in steps:
        for captured in modes_for(device):
            env.captured = captured
            env.sampling_steps = n
            env.reset(start_context)
            timings = []
            for i in range(WARMUP_STEPS + frames):
                action = np.array([rng.integers(s) for s in spec.sizes])
                t0 = time.perf_counter()
                env.step(action)
                wall = (time.perf_counter() - t0) * 1e3
                if i >= WARMUP_STEPS:
                    timings.append({**env.last_timing, "wall_ms": wall})
            total = np.array([t["wall_ms"] for t in timings])
            result["settings"].append(
                {
                    "sampling_steps": n,
                    "mode": "captured" if captured else "eager",
                    "fps": float(1e3 / total.mean()),
                    "median_ms": float(np.median(total)),
                    "p99_ms": float(np.percentile(total, 99)),
                    "dit_median_ms": float(np.median([t["dit_ms"] for t in timings])),
                    "decode_median_ms": float(np.median([t["decode_ms"] for t in timings])),
                }
            )
    return result


def _world_line(result: dict) -> str:
    w = result.get("world")
    if not w:
        return "not recorded"
    return f"{w['scenario']} ({w['map']}), frame_skip {w['frame_skip']}"


def format_bench(result: dict) -> str:
    lines = [
        f"WorldModelEnv.step on {result['device']} ({result['device_name']}, "
        f"{result['threads']} threads), {result['resolution'][0]}x{result['resolution'][1]}, "
        f"real time = {result['realtime_fps']:.1f} frames/s",
        f"world: {_world_line(result)}; start context: {result.get('start', 'random frames')}",
        f"{'steps':>5} {'mode':>8} {'fps':>7} {'median ms':>10} {'p99 ms':>8} "
        f"{'DiT ms':>7} {'decode ms':>10}",
    ]
    for s in result["settings"]:
        lines.append(
            f"{s['sampling_steps']:>5} {s['mode']:>8} {s['fps']:>7.1f} {s['median_ms']:>10.2f} "
            f"{s['p99_ms']:>8.2f} {s['dit_median_ms']:>7.2f} {s['decode_median_ms']:>10.2f}"
        )
    if all(s["mode"] == "eager" for s in result["settings"]):
        lines.append("(CUDA graphs are timed only on a CUDA device)")
    return "\n".join(lines)
