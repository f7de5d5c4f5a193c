"""`dreamdoom wm bench`: frames/s and latency (median, p99) of WorldModelEnv.step, DiT and decoder apart."""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from world_model.env import WorldModelEnv

WARMUP_STEPS = 5


def bench(ckpt: str, steps: list[int], device: str | None = None, frames: int = 100, seed: int = 0) -> dict:
    """Time `frames` env steps per denoising-step count, after a warm-up, on a random start context."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    env = WorldModelEnv.from_checkpoint(ckpt, device=device, seed=seed)
    rng = np.random.default_rng(seed)
    w, h = env.resolution
    start = rng.integers(0, 256, (env.context_len, h, w, 3), dtype=np.uint8)
    spec = env.action_spec
    result = {
        "checkpoint": str(ckpt),
        "device": device,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "resolution": list(env.resolution),
        "context_len": env.context_len,
        "realtime_fps": 35.0 / env.frame_skip,
        "settings": [],
    }
    for n in steps:
        env.sampling_steps = n
        env.reset(start)
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
                "fps": float(1e3 / total.mean()),
                "median_ms": float(np.median(total)),
                "p99_ms": float(np.percentile(total, 99)),
                "dit_median_ms": float(np.median([t["dit_ms"] for t in timings])),
                "decode_median_ms": float(np.median([t["decode_ms"] for t in timings])),
            }
        )
    return result


def format_bench(result: dict) -> str:
    lines = [
        f"WorldModelEnv.step on {result['device']} ({result['gpu'] or result['cpu']}, "
        f"{result['threads']} threads), {result['resolution'][0]}x{result['resolution'][1]}, "
        f"real time = {result['realtime_fps']:.1f} frames/s",
        f"{'steps':>5} {'fps':>7} {'median ms':>10} {'p99 ms':>8} {'DiT ms':>7} {'decode ms':>10}",
    ]
    for s in result["settings"]:
        lines.append(
            f"{s['sampling_steps']:>5} {s['fps']:>7.1f} {s['median_ms']:>10.2f} {s['p99_ms']:>8.2f} "
            f"{s['dit_median_ms']:>7.2f} {s['decode_median_ms']:>10.2f}"
        )
    return "\n".join(lines)
