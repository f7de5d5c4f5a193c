"""Batched dreaming for evaluation: predict next latents, decode them, roll many contexts forward at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from data.dataset import Dataset, DatasetError, EpisodeRef, Manifest
from data.windows import LatentWindows
from world_model.evaluation.probe import PLACE_VARIABLES
from world_model.model.autoencoder import to_tensor, to_uint8
from world_model.model.capture import autocast_for
from world_model.model.checkpoint import WorldModelCheckpoint


class Dreamer:
    """A checkpoint's DiT and decoder at a fixed number of sampling steps, with explicit seeds."""

    def __init__(self, ck: WorldModelCheckpoint, device: torch.device, steps: int):
        self.ck, self.device, self.steps = ck, device, steps
        self.process = ck.process

    @torch.no_grad()
    def predict(self, context: torch.Tensor, actions: torch.Tensor, seed: int) -> torch.Tensor:
        """context (B, K, C, h, w), actions (B, K+1, fields) -> next latents (B, C, h, w) on the CPU."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        noise = torch.randn((len(context), *context.shape[2:]), generator=gen, device=self.device)
        with autocast_for(self.device):
            z = self.process.sample(
                self.ck.dit, context.to(self.device), actions.to(self.device), self.steps, noise, gen
            )
        return z.float().cpu()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> np.ndarray:
        """latents (B, C, h, w) -> uint8 frames (B, H, W, 3)."""
        with autocast_for(self.device):
            return to_uint8(self.ck.ae.decode(z.to(self.device)))

    def rollout(
        self, context: torch.Tensor, led_in: torch.Tensor, actions: torch.Tensor, seed: int
    ) -> Iterator[np.ndarray]:
        """Dream `actions` (B, T, fields) forward from context (B, K, C, h, w) whose frames were led into by
        `led_in` (B, K, fields): yields the T generated frames, (B, H, W, 3) each, feeding on its own."""
        for frames, _ in self.rollout_latents(context, led_in, actions, seed):
            yield frames

    def rollout_latents(
        self, context: torch.Tensor, led_in: torch.Tensor, actions: torch.Tensor, seed: int
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """As `rollout`, each frame with its latent: ((B, H, W, 3), (B, C, h, w))."""
        for t in range(actions.shape[1]):
            current = actions[:, t]  # (B, fields), taken at the previous frame
            z = self.predict(context, torch.cat([led_in, current[:, None]], 1), seed + t)  # (B, C, h, w)
            yield self.decode(z), z
            context = torch.cat([context[:, 1:], z[:, None]], 1)
            led_in = torch.cat([led_in[:, 1:], current[:, None]], 1)

    @property
    def token_px(self) -> int:
        """The side of one DiT token in pixels: its patch of latent cells times the autoencoder's
        downsampling."""
        return self.ck.dit_cfg.patch_size * self.ck.ae.cfg.downsample


@dataclass
class HeldOut:
    """Held-out episodes back to back: frames, actions and place, where each begins, and latents encoded
    on first use (an evaluation needs the context of a few hundred targets, not every frame)."""

    frames: np.ndarray  # (N, H, W, 3) uint8
    actions: torch.Tensor  # (N, fields) int64
    place: np.ndarray  # (N, 3) POSITION_X, POSITION_Y, ANGLE
    starts: list[int]  # first frame of each episode
    lengths: list[int]
    metas: list[dict]  # each episode's recorded meta (policy, seed, ...)
    manifests: list[Manifest]  # each episode's shard manifest (scenario, map, skill, ...)
    encode: Callable[[np.ndarray], torch.Tensor]  # uint8 frames (B, H, W, 3) -> latents (B, C, h, w)
    windows: LatentWindows  # over `latents`, filled in place as frames are encoded
    floor_episode: np.ndarray | None = None  # frames of another episode, for a floor when one is held out

    def __post_init__(self):
        self._encoded = np.zeros(len(self.frames), bool)

    @property
    def latents(self) -> torch.Tensor:
        return self.windows.latents

    def latents_at(self, idx: np.ndarray | torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Latents of frames `idx` (any shape), encoding those not encoded yet."""
        idx = np.asarray(idx)
        todo = np.unique(idx[~self._encoded[idx]])
        for i in range(0, len(todo), batch):
            part = todo[i : i + batch]
            self.latents[torch.from_numpy(part)] = self.encode(self.frames[part]).to(self.latents.dtype)
        self._encoded[todo] = True
        return self.latents[torch.from_numpy(idx)]

    @property
    def has_floor(self) -> bool:
        return len(self.starts) > 1 or self.floor_episode is not None

    def episode_of(self, idx: np.ndarray) -> np.ndarray:
        """Episode number of each frame index."""
        return np.searchsorted(np.asarray(self.starts), idx, side="right") - 1

    def context(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What predicts frame `target` (B,) by the training windows' rule: context latents (B, K, C, h, w)
        and actions (B, K+1, fields), the last one taken at frame target - 1."""
        first = torch.as_tensor(np.asarray(self.starts)[self.episode_of(target.numpy())])
        k = self.windows.k
        self.latents_at(torch.maximum(target[:, None] + torch.arange(-k, 0), first[:, None]))
        return self.windows.context_for(target, first)

    def start_context(self, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context latents (B, K, C, h, w) ending at frame `last` (B,) and the actions that led into them
        (B, K, fields), for a rollout whose first predicted frame is last + 1."""
        context, actions = self.context(last + 1)
        return context, actions[:, :-1]

    def other_episode_frames(self, idx: np.ndarray) -> np.ndarray:
        """For each frame index, the frame at the same step of another episode (the floor): the next
        held-out episode, or with a single one, `floor_episode`."""
        e = self.episode_of(idx)
        step = idx - np.asarray(self.starts)[e]
        if len(self.starts) == 1:
            return self.floor_episode[step % len(self.floor_episode)]
        other = (e + 1) % len(self.starts)
        return self.frames[np.asarray(self.starts)[other] + step % np.asarray(self.lengths)[other]]


def load_heldout(
    ds: Dataset,
    refs: list[EpisodeRef],
    others: list[EpisodeRef],
    ck: WorldModelCheckpoint,
    device: torch.device,
    limit: int,
) -> HeldOut:
    """Read up to `limit` held-out episodes of 2+ frames; their latents are encoded when first needed.
    With a single one, the first readable of `others` gives the floor's frames."""
    frames, actions, place, starts, lengths, metas, manifests = ([] for _ in range(7))
    n = 0
    for ref, ep in ds.iter_episodes(refs):
        if len(ep) < 2:
            continue
        frames.append(ep.frames)
        actions.append(torch.from_numpy(ep.actions.astype(np.int64)))
        place.append(ep.variables[:, [ep.variable_names.index(v) for v in PLACE_VARIABLES]])
        starts.append(n)
        lengths.append(len(ep))
        metas.append(ep.meta)
        manifests.append(ds.shards[ref.shard])
        n += len(ep)
        if len(frames) == limit:
            break
    if not frames:
        raise DatasetError(f"{ds.root}: no readable held-out episode with 2 or more frames")

    @torch.no_grad()
    def encode(x: np.ndarray) -> torch.Tensor:
        with autocast_for(device):
            return ck.ae.encode(to_tensor(x, device)).float().cpu()

    all_act = torch.cat(actions)
    c, (h, w) = ck.dit_cfg.latent_channels, ck.dit_cfg.latent_size
    windows = LatentWindows(
        torch.zeros((n, c, h, w)),
        all_act,
        torch.tensor(starts),
        torch.tensor(lengths),
        torch.arange(len(frames)),
        ck.dit_cfg.context_len,
        ds.action_spec.noop(),
    )
    floor_episode = None
    if len(frames) == 1:
        floor_episode = next((ep.frames for _, ep in ds.iter_episodes(others, keys=("frames",))), None)
    return HeldOut(
        np.concatenate(frames),
        all_act,
        np.concatenate(place),
        starts,
        lengths,
        metas,
        manifests,
        encode,
        windows,
        floor_episode,
    )
