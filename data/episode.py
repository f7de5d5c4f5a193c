"""The episode file: one pickle-free .npz per episode, written atomically.

Frames, nearly all of the bytes, are stored as one zstd stream (level 1, with a checksum): on Doom
frames it is smaller than zlib level 6 and over ten times faster, so recording costs little.

Step t of an episode: `frames[t]` is what the player saw, `actions[t]` what they did next,
`rewards[t]` and `dones[t]` what followed. The world model learns frames[t+1] from frames[<=t] and
actions[<=t]; the last step of a finished episode has no next frame.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zstandard

from data.actions import DEFAULT_ACTIONS, ActionContractError, ActionSpec

EPISODE_SCHEMA_VERSION = 1
EPISODE_SUFFIX = ".npz"
ZSTD_LEVEL = 1

# Game variables kept with every step, in this order (names as in VizDoom's GameVariable).
VARIABLES: tuple[str, ...] = (
    "HEALTH",
    "ARMOR",
    "SELECTED_WEAPON_AMMO",
    "POSITION_X",
    "POSITION_Y",
    "ANGLE",
    "KILLCOUNT",
    "ITEMCOUNT",
    "SECRETCOUNT",
    "HITCOUNT",
    "HITS_TAKEN",
    "DAMAGECOUNT",
    "DAMAGE_TAKEN",
    "DEAD",
)


class EpisodeError(ValueError):
    """An episode file is unreadable or does not match the schema; the message names the file."""


@dataclass
class Episode:
    """One episode in memory. `meta` is free JSON (policy, seed, training step, ...)."""

    frames: np.ndarray  # (T, H, W, 3) uint8, native render resolution
    actions: np.ndarray  # (T, fields) int, the action contract
    rewards: np.ndarray  # (T,) float32
    dones: np.ndarray  # (T,) bool
    variables: np.ndarray  # (T, V) float32, columns named by variable_names
    variable_names: tuple[str, ...] = VARIABLES
    meta: dict = field(default_factory=dict)
    action_spec: ActionSpec = DEFAULT_ACTIONS

    def __len__(self) -> int:
        return len(self.frames)

    def variable(self, name: str) -> np.ndarray:
        """One game variable over the episode, (T,)."""
        return self.variables[:, self.variable_names.index(name)]

    def validate(self, where: str = "episode") -> None:
        t = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise EpisodeError(
                f"{where}: frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}"
            )
        for name, arr, ndim in (
            ("actions", self.actions, 2),
            ("rewards", self.rewards, 1),
            ("dones", self.dones, 1),
            ("variables", self.variables, 2),
        ):
            if arr.ndim != ndim or len(arr) != t:
                raise EpisodeError(f"{where}: {name} has shape {arr.shape}, expected {t} steps like frames")
        if self.variables.shape[1] != len(self.variable_names):
            raise EpisodeError(
                f"{where}: {self.variables.shape[1]} variable columns for {len(self.variable_names)} names"
            )
        try:
            self.action_spec.validate(self.actions, where)
        except ActionContractError as e:
            raise EpisodeError(str(e)) from e


def _compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)


def _write_npz(path: Path, episode: Episode, frames_blob: bytes, frames_shape: tuple[int, ...]) -> int:
    """The one writer of the file format. Atomic: temp file, fsync, rename. Returns bytes on disk."""
    episode.validate(str(path))
    header = {
        "schema_version": EPISODE_SCHEMA_VERSION,
        "action_contract": episode.action_spec.to_dict(),
        "variable_names": list(episode.variable_names),
        "meta": episode.meta,
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                header=np.array(json.dumps(header)),
                frames_zstd=np.frombuffer(frames_blob, np.uint8),
                frames_shape=np.array(frames_shape, np.int64),
                actions=episode.actions.astype(np.int8),
                rewards=episode.rewards.astype(np.float32),
                dones=episode.dones.astype(bool),
                variables=episode.variables.astype(np.float32),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.stat().st_size


def write_episode(path: str | Path, episode: Episode) -> int:
    """Write an in-memory episode atomically; a killed writer leaves no partial episode. Returns bytes."""
    path = Path(path)
    episode.validate(str(path))
    frames = np.ascontiguousarray(episode.frames)
    return _write_npz(path, episode, _compressor().compress(frames.data), frames.shape)


class EpisodeRecorder:
    """Builds an episode step by step, compressing each frame as it arrives: an episode in progress
    holds ~10 KB a frame instead of 57.6 KB raw (160x120), and nothing is left to do at its end."""

    def __init__(
        self, action_spec: ActionSpec = DEFAULT_ACTIONS, variable_names: tuple[str, ...] = VARIABLES
    ):
        self.action_spec, self.variable_names = action_spec, tuple(variable_names)
        self._stream = _compressor().compressobj()
        self._chunks: list[bytes] = []
        self._frame_shape: tuple[int, ...] | None = None
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.dones: list[bool] = []
        self.variables: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def frame_shape(self) -> tuple[int, ...] | None:
        """(H, W, 3) of the frames so far, None before the first."""
        return self._frame_shape

    def add(self, frame: np.ndarray, action, variables: np.ndarray, reward: float = 0.0, done: bool = False):
        """One step: the frame seen, the action taken, the game variables with the frame, what followed."""
        if self._frame_shape is None:
            self._frame_shape = frame.shape
        elif frame.shape != self._frame_shape or frame.dtype != np.uint8:
            raise EpisodeError(
                f"frame {len(self)}: {frame.dtype} {frame.shape}, episode has {self._frame_shape}"
            )
        self._chunks.append(self._stream.compress(np.ascontiguousarray(frame).data))
        self.actions.append(np.array(action, dtype=np.int64))
        self.variables.append(np.array(variables, np.float32))  # a copy: callers may reuse their array
        self.rewards.append(float(reward))
        self.dones.append(bool(done))

    def set_outcome(self, reward: float, done: bool) -> None:
        """Fill in what followed the last step's action (known only after the env steps)."""
        self.rewards[-1], self.dones[-1] = float(reward), bool(done)

    def write(self, path: str | Path, meta: dict) -> int:
        """Write the episode atomically and reset the recorder; returns bytes on disk."""
        if not len(self):
            raise EpisodeError(f"{path}: refusing to write an empty episode")
        self._chunks.append(self._stream.flush())
        t = len(self)
        shell = Episode(
            frames=np.zeros(
                (t, 0, 0, 3), np.uint8
            ),  # stands in for shape checks; the real ones are compressed
            actions=np.stack(self.actions),
            rewards=np.asarray(self.rewards, np.float32),
            dones=np.asarray(self.dones, bool),
            variables=np.stack(self.variables),
            variable_names=self.variable_names,
            meta=meta,
            action_spec=self.action_spec,
        )
        size = _write_npz(Path(path), shell, b"".join(self._chunks), (t, *self._frame_shape))
        self.__init__(self.action_spec, self.variable_names)
        return size


def _open(path: Path, expected: ActionSpec | None):
    """Open an episode file and check its header; returns (npz, header)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EpisodeError(f"{path}: no such episode file") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise EpisodeError(f"{path}: not a readable episode file (truncated or corrupt: {e})") from e
    try:
        header = json.loads(str(npz["header"]))
    except (KeyError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        npz.close()
        raise EpisodeError(f"{path}: episode header missing or corrupt ({e})") from e
    version = header.get("schema_version")
    if version != EPISODE_SCHEMA_VERSION:
        npz.close()
        raise EpisodeError(
            f"{path}: episode schema version {version}, this reader understands {EPISODE_SCHEMA_VERSION}"
        )
    if expected is not None:
        try:
            expected.check_compatible(header.get("action_contract", {}), str(path))
        except ActionContractError as e:
            npz.close()
            raise EpisodeError(str(e)) from e
    return npz, header


def _member(npz, path: Path, name: str) -> np.ndarray:
    if name == "frames":
        shape = tuple(int(x) for x in _member(npz, path, "frames_shape"))
        blob = _member(npz, path, "frames_zstd")
        try:
            raw = zstandard.ZstdDecompressor().decompress(blob.data, max_output_size=int(np.prod(shape)))
            return np.frombuffer(raw, np.uint8).reshape(shape)
        except (zstandard.ZstdError, ValueError) as e:
            raise EpisodeError(f"{path}: frames are truncated or corrupt ({e})") from e
    try:
        return npz[name]
    except KeyError:
        raise EpisodeError(f"{path}: missing array '{name}'") from None
    except (zipfile.BadZipFile, ValueError, zlib.error, EOFError, OSError) as e:
        raise EpisodeError(f"{path}: array '{name}' is truncated or corrupt ({e})") from e


def read_episode(
    path: str | Path, expected: ActionSpec | None = DEFAULT_ACTIONS, keys: tuple[str, ...] | None = None
) -> Episode:
    """Read and validate one episode. `keys` limits which arrays are decompressed (frames are the
    costly one); the arrays left out are empty. Raises EpisodeError naming the file."""
    path = Path(path)
    npz, header = _open(path, expected)
    with npz:
        wanted = ("frames", "actions", "rewards", "dones", "variables") if keys is None else keys
        arrays = {k: _member(npz, path, k) for k in wanted}
    spec = ActionSpec.from_dict(header["action_contract"], str(path))
    names = tuple(header.get("variable_names", VARIABLES))
    t = len(next(iter(arrays.values()))) if arrays else 0
    ep = Episode(
        frames=arrays.get("frames", np.zeros((t, 0, 0, 3), np.uint8)),
        actions=arrays.get("actions", np.zeros((t, spec.num_fields), np.int8)).astype(np.int64),
        rewards=arrays.get("rewards", np.zeros(t, np.float32)),
        dones=arrays.get("dones", np.zeros(t, bool)),
        variables=arrays.get("variables", np.zeros((t, len(names)), np.float32)),
        variable_names=names,
        meta=header.get("meta", {}),
        action_spec=spec,
    )
    if keys is None:
        ep.validate(str(path))
    return ep
