"""Training windows over a cached latent store: (next latent, K past latents, K+1 actions).

Target frame n of an episode is predicted from frames n-K..n-1 (padded by repeating the episode's
first frame) and the actions a[n-K-1..n-1]: for each context frame the action that led into it,
then the current action a[n-1] (the one taken at frame n-1). Actions before the episode's start
are noop. `window_indices` is that rule; training windows, evaluation and WorldModelEnv.reset all call
it, so training and play agree.
"""

from __future__ import annotations

import numpy as np
import torch


def window_indices(
    n: torch.Tensor, first: torch.Tensor, context_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which frames and actions feed target frame n (B,) of the episode starting at frame `first` (B,).

    -> context frame indices (B, K), action indices (B, K+1) (the last one taken at frame n-1), and whether
    each action lies in the episode (B, K+1): those before its start are noop."""
    offsets = torch.arange(-context_len - 1, 0, device=n.device)  # (K+1,) before the target
    ctx_idx = torch.maximum(n[:, None] + offsets[1:], first[:, None])  # (B, K), padded by the first frame
    act_idx = n[:, None] + offsets  # (B, K+1)
    return ctx_idx, act_idx, act_idx >= first[:, None]


class LatentWindows(torch.utils.data.Dataset):
    """All windows whose target lies in the selected episodes; `sample` draws a batch without a DataLoader.

    Batches are gathered on the device the latents and actions are on (the GPU, when training there)."""

    def __init__(
        self,
        latents: torch.Tensor,
        actions: torch.Tensor,
        starts: torch.Tensor,
        lengths: torch.Tensor,
        episodes: torch.Tensor | np.ndarray,
        context_len: int,
        noop: np.ndarray,
    ):
        # latents (N, C, h, w); actions (N, fields); starts/lengths (E,); episodes: indices of episodes to use
        self.latents, self.actions, self.k = latents, actions, context_len
        dev = latents.device
        self.noop = torch.as_tensor(noop, dtype=torch.long, device=dev)
        targets, first, last = [], [], []
        for e in torch.as_tensor(episodes, dtype=torch.long).tolist():
            s, n = int(starts[e]), int(lengths[e])
            if n >= 2:
                targets.append(torch.arange(s + 1, s + n))
                first.append(torch.full((n - 1,), s))
                last.append(torch.full((n - 1,), s + n - 1))
        if not targets:
            raise ValueError("no training windows: every selected episode has fewer than 2 frames")
        self.targets = torch.cat(targets).to(dev)  # (M,) index of each window's target frame
        self.first = torch.cat(first).to(dev)  # (M,) index of its episode's first frame
        self.last = torch.cat(last).to(dev)  # (M,) index of its episode's last frame
        self._runs: dict[int, torch.Tensor] = {}  # run length -> the windows that start such a run

    def __len__(self) -> int:
        return len(self.targets)

    def gather(self, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Windows `which` (B,) -> target (B, C, h, w), context (B, K, C, h, w), actions (B, K+1, fields)."""
        which = which.to(self.targets.device)
        n = self.targets[which]  # (B,)
        context, actions = self.context_for(n, self.first[which])
        return self.latents[n].float(), context, actions

    def context_for(self, n: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What predicts frame n (B,) of the episode starting at `first` (B,), by `window_indices`.

        -> context (B, K, C, h, w) and actions (B, K+1, fields), the last one taken at frame n-1."""
        n, first = n.to(self.latents.device), first.to(self.latents.device)
        ctx_idx, act_idx, valid = window_indices(n, first, self.k)
        actions = torch.where(
            valid[..., None], self.actions[act_idx.clamp_min(0)], self.noop
        )  # (B, K+1, fields)
        return self.latents[ctx_idx].float(), actions

    def sample(
        self, batch: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Indices from a CPU generator: the same batches whichever device gathers them.
        return self.gather(torch.randint(len(self), (batch,), generator=generator))

    def sample_runs(
        self, batch: int, length: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`batch` runs of `length` consecutive targets within one episode, for training on own rollouts:
        targets (B, L, C, h, w), and each target's real window: contexts (B, L, K, C, h, w), actions
        (B, L, K+1, fields)."""
        if length not in self._runs:
            self._runs[length] = torch.nonzero(self.targets + length - 1 <= self.last).flatten()
        starts = self._runs[length]
        if len(starts) == 0:
            raise ValueError(f"no run of {length} frames: every selected episode is shorter")
        which = starts[torch.randint(len(starts), (batch,), generator=generator).to(starts.device)]
        n = self.targets[which][:, None] + torch.arange(length, device=which.device)  # (B, L)
        first = self.first[which][:, None].expand(-1, length)  # (B, L)
        context, actions = self.context_for(n.flatten(), first.flatten())
        b = len(which)
        return (
            self.latents[n].float(),  # (B, L, C, h, w)
            context.view(b, length, *context.shape[1:]),  # (B, L, K, C, h, w)
            actions.view(b, length, *actions.shape[1:]),  # (B, L, K+1, fields)
        )

    def __getitem__(self, i: int):
        target, context, actions = self.gather(torch.tensor([i]))
        return target[0], context[0], actions[0]
