"""The place probe: a small CNN that reads the player's position and view angle off one frame.

Trained on real frames of a dataset's training split (the episodes carry POSITION_X, POSITION_Y and
ANGLE), it asks of a generated frame what a player would: where am I, which way am I looking? Its
error on real held-out frames is its own floor; a dream that keeps the player where the game would
scores near it. It sees the 3-D view only, at half resolution, and is cached per dataset (a few
minutes to train on 2 CPU cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from data.dataset import Dataset, EpisodeRef
from data.durable import write_with
from data.frame_layout import view_rows

PROBE_VERSION = 1
PLACE_VARIABLES = ("POSITION_X", "POSITION_Y", "ANGLE")


class ProbeError(ValueError):
    """A probe file is unreadable or was trained for other frames; the message names the file."""


@dataclass
class ProbeConfig:
    steps: int = 1500  # optimizer steps (under a minute on 2 quiet CPU cores)
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 16  # channels of the first conv; doubled twice
    every: int = 2  # use every n-th frame of the training episodes
    max_frames: int = 40_000  # at most this many training frames in memory (at half resolution)
    seed: int = 0


class PlaceNet(nn.Module):
    """Half-resolution 3-D view (B, 3, h, w) in [0, 1] -> (B, 4): x, y (normalised), sin, cos of the angle."""

    def __init__(self, width: int, in_hw: tuple[int, int]):
        super().__init__()
        c = width
        layers, ch = [], 3
        for out in (c, 2 * c, 4 * c, 4 * c):
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            ch = out
        self.features = nn.Sequential(*layers)
        h, w = (s // 16 for s in in_hw)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ch * h * w, 256), nn.ReLU(), nn.Linear(256, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def probe_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, h, w): the 3-D view, 2x2-averaged, cropped to a multiple of 16."""
    v = torch.as_tensor(np.ascontiguousarray(frames[:, view_rows(frames.shape[1])])).float() / 255
    x = F.avg_pool2d(v.permute(0, 3, 1, 2), 2)  # (B, 3, Hv/2, W/2)
    h, w = x.shape[-2] // 16 * 16, x.shape[-1] // 16 * 16
    return x[..., :h, :w].contiguous()


def place_targets(variables: np.ndarray) -> np.ndarray:
    """(N, 3) POSITION_X, POSITION_Y, ANGLE (degrees) -> (N, 4) x, y, sin, cos."""
    a = np.deg2rad(variables[:, 2])
    return np.stack([variables[:, 0], variables[:, 1], np.sin(a), np.cos(a)], 1).astype(np.float32)


def angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b in degrees, wrapped to (-180, 180]."""
    return -((np.asarray(b) - np.asarray(a) + 180.0) % 360.0 - 180.0)


class PlaceProbe:
    """A trained PlaceNet with its normalisation; `predict` gives map units and degrees."""

    def __init__(self, net: PlaceNet, mean: np.ndarray, std: np.ndarray, resolution: tuple[int, int]):
        self.net = net.eval()
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)  # of x, y
        self.resolution = tuple(resolution)

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 (B, H, W, 3) -> (B, 3): x, y in map units and the view angle in degrees [0, 360)."""
        h, w = frames.shape[1:3]
        if (w, h) != self.resolution:
            raise ProbeError(f"probe trained on {self.resolution} frames, given {w}x{h}")
        out = torch.cat([self.net(probe_input(frames[i : i + batch])) for i in range(0, len(frames), batch)])
        out = out.numpy()
        xy = out[:, :2] * self.std + self.mean
        angle = np.rad2deg(np.arctan2(out[:, 2], out[:, 3])) % 360.0
        return np.concatenate([xy, angle[:, None]], 1)

    def errors(self, frames: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per frame: position error (map units) and absolute angle error (degrees) against truth (B, 3)."""
        p = self.predict(frames)
        return np.linalg.norm(p[:, :2] - truth[:, :2], axis=1), np.abs(angle_diff(p[:, 2], truth[:, 2]))

    def save(self, folder: Path, meta: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        state["xy_mean"], state["xy_std"] = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        header = {"probe": json.dumps({**meta, "resolution": self.resolution})}
        write_with(folder / "probe.safetensors", lambda tmp: save_file(state, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: Path) -> tuple[PlaceProbe, dict]:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["probe"])
            state = load_file(str(path))
            net = PlaceNet(meta["config"]["width"], tuple(meta["input_hw"]))
            mean, std = state.pop("xy_mean").numpy(), state.pop("xy_std").numpy()
            net.load_state_dict(state)
        except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as e:
            raise ProbeError(f"{path}: unreadable place probe ({e})") from e
        return cls(net, mean, std, tuple(meta["resolution"])), meta


def _place_frames(
    ds: Dataset, refs: list[EpisodeRef], every: int, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every `every`-th frame (as probe input, uint8 half-res) and its (x, y, angle)."""
    xs, ys, n = [], [], 0
    for _, ep in ds.iter_episodes(refs, keys=("frames", "variables")):
        cols = [ep.variable_names.index(v) for v in PLACE_VARIABLES]
        frames = ep.frames[::every]
        xs.append((probe_input(frames) * 255).round().to(torch.uint8))
        ys.append(ep.variables[::every][:, cols])
        n += len(frames)
        if n >= limit:
            break
    if not xs:
        raise ProbeError(f"{ds.root}: no readable frames to train the place probe on")
    return torch.cat(xs)[:limit], np.concatenate(ys)[:limit]


def train_probe(
    ds: Dataset, refs: list[EpisodeRef], cfg: ProbeConfig, progress: bool = True
) -> tuple[PlaceProbe, dict]:
    """Fit a PlaceNet to the frames of `refs`; returns it and a summary (frames, seconds, final loss)."""
    t0 = time.time()
    x_all, place = _place_frames(ds, refs, cfg.every, cfg.max_frames)  # (N, 3, h, w) uint8, (N, 3)
    y_all = torch.from_numpy(place_targets(place))
    mean, std = y_all[:, :2].mean(0), y_all[:, :2].std(0).clamp_min(1.0)
    y_all[:, :2] = (y_all[:, :2] - mean) / std
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # BatchNorm/Linear init draw from the global generator
    net = PlaceNet(cfg.width, tuple(x_all.shape[-2:]))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    net.train()
    loss_ema = None
    bar = tqdm(range(cfg.steps), desc="place probe", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        i = torch.randint(len(x_all), (cfg.batch_size,), generator=gen)
        loss = F.mse_loss(net(x_all[i].float() / 255), y_all[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.4f}")
    seconds = time.time() - t0
    summary = {
        "frames": len(x_all),
        "seconds": round(seconds, 1),
        "samples_per_s": round(cfg.steps * cfg.batch_size / seconds, 1),
        "final_loss": loss_ema,
        "input_hw": list(x_all.shape[-2:]),
    }
    return PlaceProbe(net, mean.numpy(), std.numpy(), ds.manifest.resolution), summary


def probe_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dreamdoom" / "probes"


def probe_key(ds: Dataset, refs: list[EpisodeRef], cfg: ProbeConfig) -> str:
    """Changes when the training episodes, their contents or the probe's recipe do."""
    h = hashlib.sha256(json.dumps({"v": PROBE_VERSION, **asdict(cfg)}, sort_keys=True).encode())
    h.update(str(tuple(ds.manifest.resolution)).encode())
    for ref in refs:
        st = ref.path.stat()
        h.update(f"{ref.shard.name}/{ref.path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def get_probe(
    ds: Dataset, refs: list[EpisodeRef], cfg: ProbeConfig | None = None, cache: Path | None = None
) -> tuple[PlaceProbe, dict]:
    """The probe for these training episodes: from the cache if it was trained on them, else trained now."""
    cfg = cfg or ProbeConfig()
    if not refs:
        raise ProbeError(f"{ds.root}: no training episodes for the place probe")
    folder = (cache or probe_cache_dir()) / probe_key(ds, refs, cfg)
    path = folder / "probe.safetensors"
    if path.exists():
        try:
            probe, meta = PlaceProbe.load(path)
            return probe, {**meta["summary"], "cached": str(path)}
        except ProbeError as e:
            print(f"{e}; training it again", file=sys.stderr)
    print(
        f"training the place probe on {len(refs)} episodes of {ds.root} (cached in {folder})", file=sys.stderr
    )
    probe, summary = train_probe(ds, refs, cfg)
    probe.save(
        folder,
        {
            "version": PROBE_VERSION,
            "config": asdict(cfg),
            "input_hw": summary["input_hw"],
            "summary": summary,
        },
    )
    return probe, {**summary, "cached": str(path)}
