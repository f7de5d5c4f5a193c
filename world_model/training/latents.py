"""Encode a dataset once into a latent cache, so DiT training never touches images.

The cache is one safetensors file:

    latents      (N, C, h, w) float16, every frame of every readable episode, episodes back to back
    actions      (N, fields) int64
    starts       (E,) int64, index of each episode's first frame; lengths (E,) its frame count
    heldout      (E,) bool, the dataset's stable held-out split

with metadata naming the autoencoder, the dataset's resolution, frame_skip and action contract, and
fingerprints of the episodes and the encoder, so a cache that no longer fits its data is noticed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from tqdm import tqdm

from data.actions import ActionSpec
from data.dataset import Dataset, EpisodeRef
from data.durable import write_with
from world_model.model.autoencoder import Autoencoder, to_tensor

CACHE_VERSION = 1


class LatentCacheError(ValueError):
    """A latent cache is unreadable or does not fit the autoencoder or data; the message names the file."""


def load_frames(ds: Dataset, refs: list[EpisodeRef], every: int = 1, limit: int | None = None) -> np.ndarray:
    """Every `every`-th frame of the given episodes, (N, H, W, 3) uint8, at most `limit` frames."""
    out, n = [], 0
    for _, ep in ds.iter_episodes(refs, keys=("frames",)):
        out.append(ep.frames[::every])
        n += len(out[-1])
        if limit is not None and n >= limit:
            break
    if not out:
        raise ValueError(f"{ds.root}: no readable frames in the selected episodes")
    frames = np.concatenate(out)
    return frames[:limit] if limit is not None else frames


def dataset_fingerprint(ds: Dataset, heldout_fraction: float) -> str:
    """Changes when an episode is added, removed or rewritten, or when the held-out split changes."""
    h = hashlib.sha256(f"heldout={heldout_fraction}\n".encode())
    for ref in ds.episodes:
        h.update(f"{ref.shard.name}/{ref.path.name}:{ref.path.stat().st_size}\n".encode())
    for group in ds.duplicates():  # the split keeps copies together, which moves some episodes' side
        h.update(("copies:" + ",".join(f"{r.shard.name}/{r.path.name}" for r in group) + "\n").encode())
    return h.hexdigest()[:16]


def autoencoder_fingerprint(ae: Autoencoder) -> str:
    """Changes when the encoder's weights or the latent normalisation do."""
    h = hashlib.sha256()
    for name, t in sorted(
        {**ae.encoder.state_dict(), "mean": ae.latent_mean, "scale": ae.latent_scale}.items()
    ):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_fingerprints(ae: Autoencoder, ds: Dataset, heldout_fraction: float) -> dict[str, str]:
    return {
        "dataset_fingerprint": dataset_fingerprint(ds, heldout_fraction),
        "autoencoder_fingerprint": autoencoder_fingerprint(ae),
    }


def stale_cache_reason(path: str | Path, fingerprints: dict[str, str]) -> str | None:
    """Why the cache at `path` does not fit these fingerprints (None: it fits). Reads the header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        return f"it is unreadable ({e})"
    for key, what in (("dataset_fingerprint", "the dataset"), ("autoencoder_fingerprint", "the autoencoder")):
        if meta.get(key) != fingerprints[key]:
            return f"{what} changed since it was encoded"
    return None


@torch.no_grad()
def encode_dataset(
    ae: Autoencoder,
    ds: Dataset,
    out: str | Path,
    heldout_fraction: float = 0.1,
    batch: int = 128,
    ae_path: str = "",
) -> Path:
    """Encode every readable episode of `ds` with `ae` into the cache file `out`; prints frames/s."""
    out = Path(out)
    _, held_refs = ds.split(heldout_fraction)
    held = set(held_refs)
    device = ae.latent_mean.device
    lat, acts, starts, lengths, heldout = [], [], [], [], []
    n, t0 = 0, time.time()
    bar = tqdm(ds.episodes, desc="encode", unit="ep")
    errors_before = len(ds.errors)
    for ref, ep in ds.iter_episodes(bar):
        zs = [
            ae.encode(to_tensor(ep.frames[i : i + batch], device)).half().cpu()
            for i in range(0, len(ep), batch)
        ]
        lat.append(torch.cat(zs))  # (T, C, h, w)
        acts.append(torch.from_numpy(ep.actions.astype(np.int64)))
        starts.append(n)
        lengths.append(len(ep))
        heldout.append(ref in held)
        n += len(ep)
        bar.set_postfix(frames=n, fps=f"{n / (time.time() - t0):.0f}", refresh=False)
    if not lat:
        raise LatentCacheError(f"{ds.root}: no readable episodes to encode")
    meta = {
        "cache_version": str(CACHE_VERSION),
        "autoencoder": ae_path,
        "resolution": json.dumps(list(ds.manifest.resolution)),
        "frame_skip": str(ds.manifest.frame_skip),
        "action_contract": json.dumps(ds.action_spec.to_dict()),
        "dataset": str(ds.root),
        **cache_fingerprints(ae, ds, heldout_fraction),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "latents": torch.cat(lat).contiguous(),
        "actions": torch.cat(acts).contiguous(),
        "starts": torch.tensor(starts),
        "lengths": torch.tensor(lengths),
        "heldout": torch.tensor(heldout),
    }
    write_with(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    seconds = time.time() - t0
    print(
        f"encoded {n:,} frames of {len(lat)} episodes in {seconds:.1f} s "
        f"({n / seconds:.0f} frames/s) -> {out}"
    )
    skipped = ds.errors[errors_before:]
    if skipped:
        print(f"skipped {len(skipped)} unreadable episode(s); the first: " + "; ".join(skipped[:3]))
    return out


@dataclass
class LatentCache:
    latents: torch.Tensor  # (N, C, h, w) float16
    actions: torch.Tensor  # (N, fields) int64
    starts: torch.Tensor  # (E,)
    lengths: torch.Tensor  # (E,)
    heldout: torch.Tensor  # (E,) bool
    resolution: tuple[int, int]
    frame_skip: int
    action_spec: ActionSpec
    path: Path

    @classmethod
    def load(cls, path: str | Path) -> LatentCache:
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            t = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise LatentCacheError(f"{path}: unreadable latent cache ({e})") from e
        if meta.get("cache_version") != str(CACHE_VERSION):
            raise LatentCacheError(
                f"{path}: latent cache version {meta.get('cache_version')}, expected {CACHE_VERSION}"
            )
        try:
            return cls(
                latents=t["latents"],
                actions=t["actions"],
                starts=t["starts"],
                lengths=t["lengths"],
                heldout=t["heldout"],
                resolution=tuple(json.loads(meta["resolution"])),
                frame_skip=int(meta["frame_skip"]),
                action_spec=ActionSpec.from_dict(json.loads(meta["action_contract"]), str(path)),
                path=path,
            )
        except (KeyError, ValueError) as e:
            raise LatentCacheError(f"{path}: malformed latent cache, missing or bad {e}") from e

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.latents.shape[1:])
