"""Datasets: folders of episode files with a small JSON manifest each.

A collector writes one shard folder (manifest.json + ep_NNNNNN.npz); a dataset is every shard under a
root, so merging datasets is copying folders. Shards must agree on the action contract, resolution
and frame_skip.

Many writers, on many processes or hosts, may add to one dataset at once: shard names carry a random
part (`new_shard_name`), and every file is created exclusively (a hard link that fails rather than
replaces), so even two writers that pick the same shard never overwrite each other's episodes.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data.actions import DEFAULT_ACTIONS, ActionContractError, ActionSpec
from data.durable import write_atomic
from data.episode import EPISODE_SUFFIX, Episode, EpisodeError, EpisodeRecorder, read_episode, write_episode
from data.world import World, world_of_shards

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
STALE_TEMP_SECONDS = 600  # a temp file this old is a killed writer's, not one being written


class DatasetError(ValueError):
    """A dataset folder or manifest is missing, malformed or inconsistent; the message names the path."""


class ManifestDamaged(DatasetError):
    """A manifest that cannot be read or lacks fields: its shard is skipped, not the whole dataset."""


def new_shard_name(prefix: str) -> str:
    """A shard folder name no other process or host picks: the prefix, a UTC time, and 32 random bits."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


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
            raise ManifestDamaged(f"{path}: unreadable manifest ({e})") from e
        if not isinstance(d, dict):
            raise ManifestDamaged(f"{path}: malformed manifest, a JSON {type(d).__name__} and not an object")
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
            raise ManifestDamaged(f"{path}: malformed manifest, missing or bad field {e}") from e


class ShardWriter:
    """Writes episodes into a shard folder, one atomic, exclusively created file each. Two writers on one
    folder (a reopened shard, a name collision) both keep every episode: a taken name moves to the next."""

    def __init__(self, folder: str | Path, manifest: Manifest):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        path = self.folder / MANIFEST_NAME
        if not path.exists():
            manifest.created = manifest.created or time.time()
            try:
                write_atomic(path, json.dumps(manifest.to_dict(), indent=2).encode(), exclusive=True)
            except FileExistsError:  # another writer made this shard a moment ago: check it as below
                pass
        old = Manifest.load(path)
        for key in ("scenario", "map", "resolution", "frame_skip", "action_contract"):
            if getattr(old, key) != getattr(manifest, key):
                raise DatasetError(
                    f"{path}: shard already holds {key}={getattr(old, key)!r}, "
                    f"refusing to add episodes with {key}={getattr(manifest, key)!r}"
                )
        # Leftovers of a killed writer are never episodes; clear them (not a live writer's: those are new).
        for stale in self.folder.glob(f".*{EPISODE_SUFFIX}.tmp*"):
            try:
                if time.time() - stale.stat().st_mtime > STALE_TEMP_SECONDS:
                    stale.unlink()
            except FileNotFoundError:
                pass
        self.next_index = self._first_free()
        self.bytes_written = 0
        self.frames_written = 0

    def _first_free(self) -> int:
        existing = sorted(self.folder.glob(f"ep_*{EPISODE_SUFFIX}"))
        return int(existing[-1].stem.split("_")[1]) + 1 if existing else 0

    def _check(self, spec: ActionSpec, frame_shape: tuple[int, ...]) -> None:
        spec.check_compatible(self.manifest.action_contract, str(self.folder))
        h, w = frame_shape[:2]
        if (w, h) != tuple(self.manifest.resolution):
            raise DatasetError(
                f"{self.folder}: episode frames are {w}x{h}, manifest says {tuple(self.manifest.resolution)}"
            )

    def _write_exclusive(self, write) -> Path:
        """Call `write(path)` on the next free name until one is not taken by another writer."""
        while True:
            path = self.folder / f"ep_{self.next_index:06d}{EPISODE_SUFFIX}"
            try:
                self.bytes_written += write(path)
            except FileExistsError:
                self.next_index = max(self.next_index + 1, self._first_free())
                continue
            self.next_index += 1
            return path

    def write(self, episode: Episode) -> Path:
        """Write an in-memory episode as the shard's next file."""
        self._check(episode.action_spec, episode.frames.shape[1:])
        path = self._write_exclusive(lambda p: write_episode(p, episode, exclusive=True))
        self.frames_written += len(episode)
        return path

    def write_recording(self, recorder: EpisodeRecorder, meta: dict) -> Path:
        """Write what a streaming recorder holds as the shard's next file (and empty the recorder)."""
        frames = len(recorder)
        self._check(recorder.action_spec, recorder.frame_shape or (0, 0))
        path = self._write_exclusive(lambda p: recorder.write(p, meta, exclusive=True))
        self.frames_written += frames
        return path


def default_recorder(policy: str, **extra) -> dict:
    return {"policy": policy, "host": socket.gethostname(), "pid": os.getpid(), **extra}


@dataclass(frozen=True)
class EpisodeRef:
    path: Path
    shard: Path

    def is_heldout(self, fraction: float) -> bool:
        """Held out by a hash of the file's name within its shard (survives merging). `Dataset.split`
        also keeps copies of one episode on one side."""
        key = f"{self.shard.name}/{self.path.name}".encode()
        return (zlib.crc32(key) % 10_000) < fraction * 10_000

    def content_key(self) -> str | None:
        """The CRCs of the frames and actions, read from the zip directory without reading the data:
        equal for byte-identical episodes (a rerun with the same seed), None for an unreadable file."""
        try:
            with zipfile.ZipFile(self.path) as z:
                return f"{z.getinfo('frames_zstd.npy').CRC:08x}-{z.getinfo('actions.npy').CRC:08x}"
        except (OSError, KeyError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile):
            return None


def _scan(root: Path) -> tuple[list[Path], list[Path]]:
    """Every manifest under `root`, and every folder holding episode files but no manifest. Linked
    folders are followed: a dataset can be merged by linking shards."""
    found, orphans, seen = [], [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link loop, or the same shard linked twice
            dirs.clear()
            continue
        seen.add(real)
        if MANIFEST_NAME in files:
            found.append(Path(folder) / MANIFEST_NAME)
        elif any(f.startswith("ep_") and f.endswith(EPISODE_SUFFIX) for f in files):
            orphans.append(Path(folder))
    return sorted(found), sorted(orphans)


class Dataset:
    """Every shard under `root`. Episodes are read lazily; bad files are reported, never fatal to the rest.

    What cannot be used is named in a warning and listed: `shard_errors` (a shard whose manifest is
    missing or damaged, skipped whole) and `errors` (an episode file that is damaged, a dangling link)."""

    def __init__(self, root: str | Path, action_spec: ActionSpec = DEFAULT_ACTIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset folder")
        manifests, orphans = _scan(self.root)
        self.action_spec = action_spec
        self.errors: list[str] = []
        self.shard_errors: list[str] = []
        for folder in orphans:
            n = len(list(folder.glob(f"ep_*{EPISODE_SUFFIX}")))
            self._shard_problem(f"{folder}: no {MANIFEST_NAME}, so its {n} episode file(s) are left out")
        self.shards: dict[Path, Manifest] = {}
        for m in manifests:
            try:
                manifest = Manifest.load(m)
            except ManifestDamaged as e:
                n = len(list(m.parent.glob(f"ep_*{EPISODE_SUFFIX}")))
                self._shard_problem(f"{e}; its {n} episode file(s) are left out")
                continue
            try:
                action_spec.check_compatible(manifest.action_contract, str(m))
            except ActionContractError as e:
                raise DatasetError(str(e)) from e
            self.shards[m.parent] = manifest
        if not self.shards:
            raise DatasetError(
                f"{self.root}: no {MANIFEST_NAME} found{' that is readable' if self.shard_errors else ''}; "
                f"not a dataset (collect one with `dreamdoom collect`)"
                + "".join(f"\n  {e}" for e in self.shard_errors)
            )
        first_path, first = next(iter(self.shards.items()))
        for path, m in self.shards.items():
            for key in ("resolution", "frame_skip"):
                if getattr(m, key) != getattr(first, key):
                    raise DatasetError(
                        f"{path}: {key}={getattr(m, key)!r} but {first_path} has "
                        f"{getattr(first, key)!r}; shards of one dataset must agree"
                    )
        self.manifest = first
        self.episodes: list[EpisodeRef] = []
        for shard in self.shards:
            for p in sorted(shard.glob(f"ep_*{EPISODE_SUFFIX}")):
                if p.exists():
                    self.episodes.append(EpisodeRef(p, shard))
                else:  # a link to a file that is gone: nothing downstream may trip over it
                    self._episode_problem(f"{p}: a link to a missing file ({os.readlink(p)})")
        self._content_keys: dict[EpisodeRef, str] | None = None

    def _shard_problem(self, message: str) -> None:
        self.shard_errors.append(message)
        warnings.warn(f"skipping shard: {message}", stacklevel=3)

    def _episode_problem(self, message: str) -> None:
        self.errors.append(message)
        warnings.warn(f"skipping episode: {message}", stacklevel=3)

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def world(self) -> World:
        """The world every shard was recorded in (data/world.py); shards of several worlds are refused."""
        return world_of_shards(self.shards, str(self.root))

    def duplicates(self) -> list[list[EpisodeRef]]:
        """Groups of episode files with the same frames and actions (reruns with one seed, copied shards)."""
        if self._content_keys is None:
            self._content_keys = {ref: ref.content_key() for ref in self.episodes}
        groups: dict[str, list[EpisodeRef]] = {}
        for ref, key in self._content_keys.items():
            if key is not None:
                groups.setdefault(key, []).append(ref)
        return [g for g in groups.values() if len(g) > 1]

    def split(self, heldout_fraction: float = 0.1) -> tuple[list[EpisodeRef], list[EpisodeRef]]:
        """(train, held-out) episode lists; at least one held-out episode when there are two or more.

        Each file is held out by the hash of its name; copies of one episode are held out only if every
        copy is, so no held-out episode has a twin in training. Without copies this is the name split."""
        held = {e for e in self.episodes if e.is_heldout(heldout_fraction)}
        for group in self.duplicates():
            if not all(e in held for e in group):
                held.difference_update(group)
        if not held and len(self.episodes) > 1 and heldout_fraction > 0:
            last = self.episodes[-1]
            held = next((set(g) for g in self.duplicates() if last in g), {last})
        train = [e for e in self.episodes if e not in held]
        return train, [e for e in self.episodes if e in held]

    def load(self, ref: EpisodeRef | int, keys: tuple[str, ...] | None = None) -> Episode:
        ref = self.episodes[ref] if isinstance(ref, int) else ref
        return read_episode(ref.path, self.action_spec, keys)

    def iter_episodes(
        self, refs: list[EpisodeRef] | None = None, keys: tuple[str, ...] | None = None, strict: bool = False
    ) -> Iterator[tuple[EpisodeRef, Episode]]:
        """Yield readable episodes; a bad file is a warning naming it (kept in `errors`), or raises when
        strict. Reading frames (or all arrays) checks the file's whole-file checksum too."""
        for ref in self.episodes if refs is None else refs:
            try:
                episode = self.load(ref, keys)
            except EpisodeError as e:
                if strict:
                    raise
                self.errors.append(str(e))
                warnings.warn(f"skipping episode: {e}", stacklevel=2)
                continue
            yield ref, episode
