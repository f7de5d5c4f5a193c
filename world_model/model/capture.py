"""The play step as one function of static buffers: the few-step sampler (with CFG when it is on), then the
decoder.

WorldModelEnv writes the context, the actions and the step's noise into buffers made once and calls
`run(steps)`. On CUDA the sampler (one graph per step count, captured the first time that count is
asked for, so `[`/`]` pays one capture and then replays) and the decoder (one graph) are replayed as
CUDA graphs (PyTorch "CUDA Graphs" notes, whole-network capture): a launch or two instead of hundreds of
kernels, and at batch 1 the launches are where the time goes. Everywhere else, and with capture off,
the same functions run eagerly. The noise is drawn outside the graphs by the caller's generator, in
the order `Diffusion.sample` draws it, so captured and eager steps take the same numbers.

This class is the one place that knows about capture: when the sampler moves, this moves with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch

from world_model.model.autoencoder import Autoencoder, to_uint8
from world_model.model.diffusion import Diffusion
from world_model.model.dit import DiT

WARMUP_RUNS = 3  # eager runs on a side stream before capture, as in the PyTorch CUDA Graphs example


def autocast_for(device: torch.device, cache_enabled: bool = True):
    """bf16 autocast on CUDA; full precision on CPU (where bf16 matmuls are slower, not faster).

    Graph capture needs cache_enabled=False (the weight-cast cache would outlive the capture); the casts
    are the same, only redone."""
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache_enabled)


class PlayStep:
    """Static buffers in, the next latent and frame out; CUDA graphs on CUDA unless `capture` is False."""

    def __init__(
        self,
        dit: DiT,
        ae: Autoencoder,
        process: Diffusion,
        device: torch.device,
        capture: bool = True,
    ):
        self.dit, self.ae, self.process, self.device = dit, ae, process, device
        cfg = dit.cfg
        k, c, (h, w) = cfg.context_len, cfg.latent_channels, cfg.latent_size
        self.context = torch.zeros((1, k, c, h, w), device=device)  # latents of the last K frames
        self.actions = torch.zeros((1, k + 1, len(cfg.action_sizes)), dtype=torch.long, device=device)
        self.noise = torch.zeros((1, c, h, w), device=device)  # x at t = 1
        # The sampler's small context noise (its bucket's level); None where it tells the model bucket 0.
        self.context_eps = torch.zeros_like(self.context) if process.draws_context_noise else None
        self.latent = torch.zeros((1, c, h, w), device=device)  # the sampled next latent
        self.captured = capture and device.type == "cuda"  # may be switched between steps (benchmarks)
        self._samplers: dict[int, torch.cuda.CUDAGraph] = {}  # one graph per denoising step count
        self._decoder: tuple[torch.cuda.CUDAGraph, torch.Tensor] | None = None  # graph, its output
        if device.type == "cuda":  # bracket the sampler graph: its GPU time, without a sync in between
            self._start, self._sampled = (torch.cuda.Event(enable_timing=True) for _ in range(2))

    def draw_noise(self, generator: torch.Generator) -> None:
        """Fill the noise buffers from `generator`, in the sampler's order: context noise, then x."""
        if self.context_eps is not None:
            self.context_eps.normal_(generator=generator)
        self.noise.normal_(generator=generator)

    def _sample(self, steps: int) -> None:
        with autocast_for(self.device, cache_enabled=not self.captured):
            z = self.process.sample(
                self.dit, self.context, self.actions, steps, noise=self.noise, context_eps=self.context_eps
            )  # (1, C, h, w)
        self.latent.copy_(z)

    def _decode(self) -> torch.Tensor:
        with autocast_for(self.device, cache_enabled=not self.captured):
            return self.ae.decode(self.latent)  # (1, 3, H, W)

    def _capture(
        self, fn: Callable[[], torch.Tensor | None]
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor | None]:
        """Warm `fn` up on a side stream, then capture it; returns the graph and fn's (static) output."""
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                # Later captures find the CUDA libraries initialised: one run is enough, a shorter hitch.
                for _ in range(WARMUP_RUNS if self._decoder is None else 1):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: play runs the step on a worker thread; what other threads do is not captured.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = fn()
        return graph, out

    @property
    def captured_steps(self) -> list[int]:
        """The step counts captured so far."""
        return sorted(self._samplers)

    def run(self, steps: int) -> tuple[np.ndarray, dict[str, float]]:
        """One step from the buffers: self.latent gets the next latent; returns its frame (H, W, 3) uint8
        and the time split (ms): the sampler, the decoder with the copy to the host, the total."""
        if self.captured and steps not in self._samplers:
            self._samplers[steps] = self._capture(lambda: self._sample(steps))[0]
        if self.captured and self._decoder is None:
            self._decoder = self._capture(self._decode)
        t0 = time.perf_counter()
        if self.captured:
            graph, image = self._decoder
            with torch.cuda.device(self.device):  # the events and graphs belong to the env's device
                self._start.record()
                self._samplers[steps].replay()
                self._sampled.record()
                graph.replay()
                frame = to_uint8(image)[0]  # (H, W, 3); the copy to the host waits for both graphs
            dit_ms = self._start.elapsed_time(self._sampled)
        else:
            self._sample(steps)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            dit_ms = (time.perf_counter() - t0) * 1e3
            frame = to_uint8(self._decode())[0]  # (H, W, 3)
        total_ms = (time.perf_counter() - t0) * 1e3
        return frame, {"dit_ms": dit_ms, "decode_ms": total_ms - dit_ms, "total_ms": total_ms}
