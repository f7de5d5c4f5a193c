"""Datasets: folders of episode files with a small JSON manifest each.

A collector writes one shard folder (manifest.json + ep_NNNNNN.npz); a dataset is every shard under a
root, so merging datasets is copying folders. Shards must agree on the action contract, resolution
and frame_skip.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data.actions import DEFAULT_ACTIONS, ActionContractError, ActionSpec
from data.episode import EPISODE_SUFFIX, Episode, EpisodeError, EpisodeRecorder, read_episode, write_episode

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1


class DatasetError(ValueError):
    """A dataset folder or manifest is missing, malformed or inconsistent; the message names the path."""


@dataclass
class Manifest:
    """What every episode of a shard shares: where it was recorded, how, and by whom."""

    scenario: str
    map: str
    resolution: tuple[int, int]  # (width, height) of the stored frames
    frame_skip: int  # Doom tics between consecutive stored frames (35 tics = 1 s)
    recorder: dict  # who recorded it: policy, host, process, free-form extras
    action_contract: dict
    schema_version: int = MANIFEST_SCHEMA_VERSION
    created: float = 0.0

    @property
    def fps(self) -> float:
        """Real-time playback rate of this data."""
        return 35.0 / self.frame_skip

    @property
    def action_spec(self) -> ActionSpec:
        return ActionSpec.from_dict(self.action_contract)

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "scenario": self.scenario,
            "map": self.map,
            "resolution": list(self.resolution),
            "frame_skip": self.frame_skip,
            "action_contract": self.action_contract,
            "recorder": self.recorder,
            "created": self.created,
        }

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: unreadable manifest ({e})") from e
        if d.get("schema_version") != MANIFEST_SCHEMA_VERSION:
            raise DatasetError(
                f"{path}: manifest schema version {d.get('schema_version')}, "
                f"this reader understands {MANIFEST_SCHEMA_VERSION}"
            )
        try:
            return cls(
                scenario=d["scenario"],
                map=d["map"],
                resolution=tuple(d["resolution"]),
                frame_skip=int(d["frame_skip"]),
                recorder=d.get("recorder", {}),
                action_contract=d["action_contract"],
                created=d.get("created", 0.0),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{path}: malformed manifest, missing or bad field {e}") from e


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class ShardWriter:
    """Writes the episodes of one worker into its own shard folder, one atomic file each."""

    def __init__(self, folder: str | Path, manifest: Manifest):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        path = self.folder / MANIFEST_NAME
        if path.exists():
            old = Manifest.load(path)
            for key in ("scenario", "map", "resolution", "frame_skip", "action_contract"):
                if getattr(old, key) != getattr(manifest, key):
                    raise DatasetError(
                        f"{path}: shard already holds {key}={getattr(old, key)!r}, "
                        f"refusing to add episodes with {key}={getattr(manifest, key)!r}"
                    )
        else:
            manifest.created = manifest.created or time.time()
            _atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2))
        # Leftovers of a killed writer are never episodes; clear them.
        for stale in self.folder.glob(f".*{EPISODE_SUFFIX}.tmp*"):
            stale.unlink(missing_ok=True)
        existing = sorted(self.folder.glob(f"ep_*{EPISODE_SUFFIX}"))
        self.next_index = int(existing[-1].stem.split("_")[1]) + 1 if existing else 0
        self.bytes_written = 0
        self.frames_written = 0

    def _next(self, spec: ActionSpec, frame_shape: tuple[int, ...]) -> Path:
        spec.check_compatible(self.manifest.action_contract, str(self.folder))
        h, w = frame_shape[:2]
        if (w, h) != tuple(self.manifest.resolution):
            raise DatasetError(
                f"{self.folder}: episode frames are {w}x{h}, manifest says {tuple(self.manifest.resolution)}"
            )
        path = self.folder / f"ep_{self.next_index:06d}{EPISODE_SUFFIX}"
        self.next_index += 1
        return path

    def write(self, episode: Episode) -> Path:
        """Write an in-memory episode as the shard's next file."""
        path = self._next(episode.action_spec, episode.frames.shape[1:])
        self.bytes_written += write_episode(path, episode)
        self.frames_written += len(episode)
        return path

    def write_recording(self, recorder: EpisodeRecorder, meta: dict) -> Path:
        """Write what a streaming recorder holds as the shard's next file (and empty the recorder)."""
        frames = len(recorder)
        path = self._next(recorder.action_spec, recorder.frame_shape or (0, 0))
        self.bytes_written += recorder.write(path, meta)
        self.frames_written += frames
        return path


def default_recorder(policy: str, **extra) -> dict:
    return {"policy": policy, "host": socket.gethostname(), "pid": os.getpid(), **extra}


@dataclass(frozen=True)
class EpisodeRef:
    path: Path
    shard: Path

    def is_heldout(self, fraction: float) -> bool:
        """Stable held-out split by a hash of the file's name within its shard (survives merging)."""
        key = f"{self.shard.name}/{self.path.name}".encode()
        return (zlib.crc32(key) % 10_000) < fraction * 10_000


def _find_manifests(root: Path) -> list[Path]:
    """Every manifest under `root`, following linked folders: a dataset can be merged by linking shards."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link loop, or the same shard linked twice
            dirs.clear()
            continue
        seen.add(real)
        if MANIFEST_NAME in files:
            found.append(Path(folder) / MANIFEST_NAME)
    return sorted(found)


class Dataset:
    """Every shard under `root`. Episodes are read lazily; bad files are reported, never fatal to the rest."""

    def __init__(self, root: str | Path, action_spec: ActionSpec = DEFAULT_ACTIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset folder")
        manifests = _find_manifests(self.root)
        if not manifests:
            raise DatasetError(
                f"{self.root}: no {MANIFEST_NAME} found; not a dataset (collect one with `dreamdoom collect`)"
            )
        self.action_spec = action_spec
        self.shards: dict[Path, Manifest] = {}
        for m in manifests:
            manifest = Manifest.load(m)
            try:
                action_spec.check_compatible(manifest.action_contract, str(m))
            except ActionContractError as e:
                raise DatasetError(str(e)) from e
            self.shards[m.parent] = manifest
        first_path, first = next(iter(self.shards.items()))
        for path, m in self.shards.items():
            for key in ("resolution", "frame_skip"):
                if getattr(m, key) != getattr(first, key):
                    raise DatasetError(
                        f"{path}: {key}={getattr(m, key)!r} but {first_path} has "
                        f"{getattr(first, key)!r}; shards of one dataset must agree"
                    )
        self.manifest = first
        self.episodes: list[EpisodeRef] = [
            EpisodeRef(p, shard) for shard in self.shards for p in sorted(shard.glob(f"ep_*{EPISODE_SUFFIX}"))
        ]
        self.errors: list[str] = []

    def __len__(self) -> int:
        return len(self.episodes)

    def split(self, heldout_fraction: float = 0.1) -> tuple[list[EpisodeRef], list[EpisodeRef]]:
        """(train, held-out) episode lists; at least one held-out episode when there are two or more."""
        held = [e for e in self.episodes if e.is_heldout(heldout_fraction)]
        if not held and len(self.episodes) > 1 and heldout_fraction > 0:
            held = [self.episodes[-1]]
        train = [e for e in self.episodes if e not in held]
        return train, held

    def load(self, ref: EpisodeRef | int, keys: tuple[str, ...] | None = None) -> Episode:
        ref = self.episodes[ref] if isinstance(ref, int) else ref
        return read_episode(ref.path, self.action_spec, keys)

    def iter_episodes(
        self, refs: list[EpisodeRef] | None = None, keys: tuple[str, ...] | None = None, strict: bool = False
    ) -> Iterator[tuple[EpisodeRef, Episode]]:
        """Yield readable episodes; a bad file is a warning (kept in `errors`), or raises when strict."""
        for ref in self.episodes if refs is None else refs:
            try:
                yield ref, self.load(ref, keys)
            except EpisodeError as e:
                if strict:
                    raise
                self.errors.append(str(e))
                warnings.warn(f"skipping episode: {e}", stacklevel=2)
