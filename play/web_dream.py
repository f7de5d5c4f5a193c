"""The page's game loop in Python, on ONNX Runtime: what play/web_page/dream.js does for a scripted input,
frame for frame, so the browser's frames can be checked against it (and the graph against PyTorch).

Three things must agree with dream.js exactly: the noise generator (mulberry32, then Box-Muller, one
normal per pair of draws, rounded to float32), the order of the draws (context noise, then x's noise,
as `PlayStep.draw_noise`), and the scripted input's format: runs separated by `;`, each
`COUNT*move,strafe,turn,attack,use`, repeated until the frames are played (the page's `script=`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

UINT32 = 0xFFFFFFFF


class PageNoise:
    """dream.js's Gaussian noise: mulberry32 (a 32-bit generator small enough to write twice) + Box-Muller."""

    def __init__(self, seed: int):
        self.state = seed & UINT32

    def _uint32(self) -> int:
        self.state = (self.state + 0x6D2B79F5) & UINT32
        t = self.state
        t = ((t ^ (t >> 15)) * (t | 1)) & UINT32
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & UINT32)) & UINT32
        return (t ^ (t >> 14)) & UINT32

    def normal(self, shape: tuple[int, ...]) -> np.ndarray:
        """float32 normals of `shape`, drawn in C order."""
        out = np.empty(math.prod(shape), np.float64)
        for i in range(out.size):
            u1 = (self._uint32() + 0.5) / 4294967296.0
            u2 = (self._uint32() + 0.5) / 4294967296.0
            out[i] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        return out.astype(np.float32).reshape(shape)


def parse_script(text: str, fields: int = 5) -> list[np.ndarray]:
    """`COUNT*a,b,c,d,e;...` -> one action (fields,) per frame of one pass through the script."""
    actions = []
    for run in filter(None, (r.strip() for r in text.split(";"))):
        count, _, values = run.partition("*")
        action = np.array([int(v) for v in values.split(",")], np.int64)
        if action.shape != (fields,) or int(count) < 1:
            raise ValueError(f"script run {run!r}: want COUNT*{','.join(['v'] * fields)}")
        actions += [action] * int(count)
    if not actions:
        raise ValueError("empty script")
    return actions


def read_start(folder: str | Path, meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A page's start context: latents (K, C, h, w), led-in actions (K, fields) and its frame (H, W, 3)."""
    raw = (Path(folder) / meta["start"]["file"]).read_bytes()
    n = meta["context_len"] * math.prod(meta["latent"])
    latents = np.frombuffer(raw[: 4 * n], "<f4").reshape(meta["context_len"], *meta["latent"])
    frame = np.frombuffer(raw[4 * n :], np.uint8).reshape(*meta["frame"], 3)
    return latents.astype(np.float32), np.array(meta["start"]["actions"], np.int64), frame


class PageDream:
    """One step graph on ONNX Runtime (CPU) with the page's rolling context and noise."""

    def __init__(
        self,
        graph: str | Path,
        inputs: list[str] | tuple[str, ...],
        latents: np.ndarray,
        led_in: np.ndarray,
        seed: int = 0,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # no warnings about initializers it folds
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.inputs = tuple(inputs)
        self.start_latents, self.start_actions = np.asarray(latents, np.float32), np.asarray(led_in, np.int64)
        self.noise = PageNoise(seed)
        self.reset()

    @classmethod
    def of_page(cls, folder: str | Path, steps: int | None = None, seed: int = 0) -> PageDream:
        """The dream of a page folder written by `dreamdoom web`, at `steps` (default: the page's)."""
        meta = json.loads((Path(folder) / "meta.json").read_text())
        graph = Path(folder) / meta["steps"][str(steps or meta["default_steps"])]
        latents, led_in, _ = read_start(folder, meta)
        return cls(graph, meta["inputs"], latents, led_in, seed)

    def reset(self) -> None:
        """Back to the start context (the page's R); the noise goes on."""
        self.context = self.start_latents[None].copy()  # (1, K, C, h, w)
        self.led_in = self.start_actions.copy()  # (K, fields)

    def step(
        self, action: np.ndarray, noise: np.ndarray | None = None, context_noise: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(next latent (1, C, h, w), frame (H, W, 3)) for `action`; the noise is the page's unless given."""
        if "context_noise" in self.inputs and context_noise is None:
            context_noise = self.noise.normal(self.context.shape)
        if noise is None:
            noise = self.noise.normal((1, *self.context.shape[2:]))
        actions = np.concatenate([self.led_in, np.asarray(action, np.int64)[None]])[None]  # (1, K+1, fields)
        feed = {"context": self.context, "actions": actions, "noise": noise, "context_noise": context_noise}
        latent, frame = self.session.run(None, {name: feed[name] for name in self.inputs})
        # Roll as WorldModelEnv.step: drop the oldest latent, append the new one; the action now led into it.
        self.context = np.concatenate([self.context[:, 1:], latent[:, None]], axis=1)
        self.led_in = actions[0, 1:]
        return latent, frame[0]

    def play(self, script: str, frames: int) -> np.ndarray:
        """The frames (N, H, W, 3) the page shows for `script` over `frames` frames."""
        actions = parse_script(script, self.start_actions.shape[1])
        return np.stack([self.step(actions[i % len(actions)])[1] for i in range(frames)])
