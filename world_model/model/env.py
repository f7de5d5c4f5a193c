"""WorldModelEnv: the learned game behind a reset/step face like the real env's.

It holds the rolling context: the latents of the last K frames and, for each, the action that led
into it. `step(action)` samples the next latent in a few diffusion steps, decodes it, and rolls the
context forward. Buffers are preallocated; a step allocates nothing that grows. The sampler and the
decoder run in world_model/model/capture.py, as CUDA graphs on CUDA unless capture is turned off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.actions import DEFAULT_ACTIONS, ActionSpec
from data.windows import window_indices
from world_model.model.autoencoder import to_tensor
from world_model.model.capture import PlayStep, autocast_for
from world_model.model.checkpoint import WorldModelCheckpoint, load_world_model
from world_model.model.config import MAX_SAMPLING_STEPS


class WorldModelEnv:
    """reset(frames, actions) -> last frame; step(action) -> predicted next frame; uint8 (H, W, 3)."""

    def __init__(
        self,
        ckpt: WorldModelCheckpoint,
        device: str | torch.device = "cpu",
        seed: int = 0,
        capture: bool = True,
    ):
        self.device = torch.device(device)
        self.ckpt = ckpt
        self.ae = ckpt.ae.to(self.device).eval()
        self.dit = ckpt.dit.to(self.device).eval()
        self.action_spec: ActionSpec = ckpt.action_spec
        self.frame_skip: int = ckpt.frame_skip
        self.resolution: tuple[int, int] = ckpt.resolution
        self.world = ckpt.world  # what it dreams (data/world.py)
        self.context_len: int = ckpt.dit_cfg.context_len
        self.process = ckpt.process  # the sampler
        self._steps = ckpt.diffusion.sampling_steps
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._play = PlayStep(self.dit, self.ae, self.process, self.device, capture)
        self._ctx = self._play.context  # (1, K, C, h, w) latents of the last K frames
        # (1, K+1, fields): the actions that led into the context frames, then the current one
        self._actions = self._play.actions
        self._ready = False
        self.last_timing: dict[str, float] = {"dit_ms": 0.0, "decode_ms": 0.0, "total_ms": 0.0}

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", seed: int = 0, capture: bool = True
    ) -> WorldModelEnv:
        """Load a checkpoint folder; its action contract must be this code's (DEFAULT_ACTIONS)."""
        return cls(load_world_model(path, device, expected_spec=DEFAULT_ACTIONS), device, seed, capture)

    @property
    def captured(self) -> bool:
        """Whether steps replay CUDA graphs (CUDA with capture on) rather than run eagerly."""
        return self._play.captured

    @captured.setter
    def captured(self, on: bool) -> None:
        """Switch between graphs and eager steps (for side-by-side benchmarks); only CUDA captures."""
        self._play.captured = bool(on) and self.device.type == "cuda"

    @property
    def sampling_steps(self) -> int:
        return self._steps

    @sampling_steps.setter
    def sampling_steps(self, n: int) -> None:
        if not 1 <= int(n) <= MAX_SAMPLING_STEPS:
            raise ValueError(f"sampling_steps must be in 1..{MAX_SAMPLING_STEPS}, got {n}")
        self._steps = int(n)

    @property
    def context(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the rolling context: the last K latents (K, C, h, w) and the actions that led into
        them (K, fields), as the next step reads them."""
        k = self.context_len
        return self._ctx[0].cpu().numpy().copy(), self._actions[0, :k].cpu().numpy().copy()

    def _check_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        w, h = self.resolution
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (h, w, 3) or frames.dtype != np.uint8 or len(frames) == 0:
            raise ValueError(
                f"reset: frames must be uint8 (N>=1, {h}, {w}, 3), got {frames.dtype} {frames.shape}"
            )
        return frames

    @torch.inference_mode()
    def reset(self, frames: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """Start from real frames (N, H, W, 3) and the actions taken at them (N, fields) or None (noop).

        The last K frames become the context, fewer are padded by repeating the first.
        Returns the last frame."""
        frames = self._check_frames(frames)
        n, k = len(frames), self.context_len
        noop = self.action_spec.noop()
        if actions is None:
            actions = np.tile(noop, (n, 1))
        actions = np.asarray(actions)
        if actions.shape != (n, self.action_spec.num_fields):
            raise ValueError(
                f"reset: actions must be ({n}, {self.action_spec.num_fields}), got {actions.shape}"
            )
        self.action_spec.validate(actions, "reset actions")
        # The training windows' rule for target frame n: its last slot (the current action) is step's.
        ctx_idx, act_idx, valid = (
            x[0].numpy() for x in window_indices(torch.tensor([n]), torch.tensor([0]), k)
        )
        ctx_frames = frames[ctx_idx]  # (K, H, W, 3)
        led_in = np.where(valid[:k, None], actions[np.clip(act_idx[:k], 0, None)], noop)  # (K, fields)
        with autocast_for(self.device):
            z = self.ae.encode(to_tensor(ctx_frames, self.device))  # (K, C, h, w)
        self._ctx[0].copy_(z.float())
        self._actions[0, :k].copy_(torch.from_numpy(led_in))
        self._ready = True
        return frames[-1].copy()

    @torch.inference_mode()
    def step(self, action: np.ndarray) -> np.ndarray:
        """Predict the frame that follows `action` (fields,) from the current context."""
        if not self._ready:
            raise RuntimeError("step() before reset(): give the env a start context first")
        action = np.asarray(action)
        self.action_spec.validate(action[None], "step action")
        k = self.context_len
        self._actions[0, k].copy_(torch.from_numpy(action.astype(np.int64)))
        self._play.draw_noise(self.generator)
        frame, self.last_timing = self._play.run(self._steps)  # (H, W, 3)
        # Roll the context in place (the buffers' addresses are baked into the graphs): drop the oldest
        # latent, append the new one; the current action now led into it.
        self._ctx.copy_(torch.cat([self._ctx[:, 1:], self._play.latent[:, None]], dim=1))
        self._actions[0, :k].copy_(self._actions[0, 1:].clone())
        return frame
