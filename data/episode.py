"""The episode file: one pickle-free .npz per episode, written atomically.

Frames, nearly all of the bytes, are stored as one zstd stream (level 1, with a checksum): on Doom
frames it is smaller than zlib level 6 and over ten times faster, so recording costs little.

The zip's comment holds a CRC-32 of the whole file (`_seal`), checked whenever frames are read: a
flipped byte anywhere, even in zip metadata no member CRC covers, makes the file a named, skipped
error instead of silently different data. Files written before the seal read as before.

Step t of an episode: `frames[t]` is what the player saw, `actions[t]` what they did next,
`rewards[t]` and `dones[t]` what followed. The world model learns frames[t+1] from frames[<=t] and
actions[<=t]; the last step of a finished episode has no next frame.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zstandard

from data.actions import DEFAULT_ACTIONS, ActionContractError, ActionSpec
from data.durable import write_atomic

EPISODE_SCHEMA_VERSION = 1
EPISODE_SUFFIX = ".npz"
ZSTD_LEVEL = 1
_ZIP_END = b"PK\x05\x06"  # signature of the zip's end-of-central-directory record
_SEAL = b"dreamdoom-crc32:"  # zip comment prefix of the whole-file checksum

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


def _seal(zip_bytes: bytes) -> bytes:
    """Append a CRC-32 of the whole file as the zip comment. The zip's own CRCs cover member data only;
    with this, a flipped byte anywhere (zip headers, central directory, the comment) is detected."""
    if zip_bytes[-22:-18] != _ZIP_END or zip_bytes[-2:] != b"\0\0":
        raise RuntimeError("numpy wrote a zip with a comment or without an end record; cannot seal it")
    head = zip_bytes[:-2] + len(_SEAL + b"00000000").to_bytes(2, "little") + _SEAL
    return head + b"%08x" % zlib.crc32(head)


def _check_seal(path: Path, data: bytes) -> None:
    """Raise if the file's whole-file checksum does not match. Files from before the seal have none."""
    if data[-8 - len(_SEAL) : -8] == _SEAL:
        if data[-8:] != b"%08x" % zlib.crc32(data[:-8]):
            raise EpisodeError(f"{path}: checksum mismatch, the file is damaged")
    elif data[-22:-18] != _ZIP_END or data[-2:] != b"\0\0":
        raise EpisodeError(f"{path}: damaged end of file (neither a checksum nor a zip end record)")


def _write_npz(
    path: Path, episode: Episode, frames_blob: bytes, frames_shape: tuple[int, ...], exclusive: bool
) -> int:
    """The one writer of the file format: atomic and durable (temp file, fsync, link, fsync of the folder).
    With `exclusive`, an existing file is never replaced (FileExistsError). Returns bytes on disk."""
    episode.validate(str(path))
    header = {
        "schema_version": EPISODE_SCHEMA_VERSION,
        "action_contract": episode.action_spec.to_dict(),
        "variable_names": list(episode.variable_names),
        "meta": episode.meta,
    }
    buf = io.BytesIO()
    np.savez(
        buf,
        header=np.array(json.dumps(header)),
        frames_zstd=np.frombuffer(frames_blob, np.uint8),
        frames_shape=np.array(frames_shape, np.int64),
        actions=episode.actions.astype(np.int8),
        rewards=episode.rewards.astype(np.float32),
        dones=episode.dones.astype(bool),
        variables=episode.variables.astype(np.float32),
    )
    data = _seal(buf.getbuffer().tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, exclusive=exclusive)
    return len(data)


def write_episode(path: str | Path, episode: Episode, exclusive: bool = True) -> int:
    """Write an in-memory episode atomically; a killed writer leaves no partial episode, and an existing
    file is replaced only when `exclusive` is False (else FileExistsError). Returns bytes."""
    path = Path(path)
    episode.validate(str(path))
    frames = np.ascontiguousarray(episode.frames)
    return _write_npz(path, episode, _compressor().compress(frames.data), frames.shape, exclusive)


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

    def write(self, path: str | Path, meta: dict, exclusive: bool = True) -> int:
        """Write the episode atomically and reset the recorder; returns bytes on disk. An existing `path`
        is an error (FileExistsError, the recorder keeps the episode) unless `exclusive` is False."""
        if not len(self):
            raise EpisodeError(f"{path}: refusing to write an empty episode")
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
        if self._stream is not None:  # once flushed the stream is closed; a retried write reuses the chunks
            self._chunks.append(self._stream.flush())
            self._stream = None
        size = _write_npz(Path(path), shell, b"".join(self._chunks), (t, *self._frame_shape), exclusive)
        self.__init__(self.action_spec, self.variable_names)
        return size


# Every way a damaged file shows itself while numpy, zipfile, json and zstd parse it. Reading an episode
# parses only data, never code, so any of these means "this file is damaged", not "this program is wrong".
_DAMAGE = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OSError,
    EOFError,
    OverflowError,
    NotImplementedError,  # zipfile, on a compression method flipped to an unknown one
    MemoryError,  # a damaged size field asking for more than there is
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    zstandard.ZstdError,
    ActionContractError,
)
_MAX_FRAME_BYTES = 1 << 36  # a frames_shape asking for more than 64 GiB is damage, not an episode


def _open(path: Path, expected: ActionSpec | None, whole: bool):
    """Open an episode file and check its header; returns (npz, header, action spec). `whole` reads the
    file into memory first and checks its whole-file checksum (worth it when the frames are read anyway)."""
    try:
        if whole:
            data = path.read_bytes()
            _check_seal(path, data)
            npz = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EpisodeError(f"{path}: no such episode file (or a link to a missing one)") from None
    except _DAMAGE as e:
        raise EpisodeError(f"{path}: not a readable episode file (truncated or corrupt: {e!r})") from e
    if not hasattr(npz, "files"):
        raise EpisodeError(f"{path}: a single array, not an episode file")
    try:
        header = json.loads(str(npz["header"]))
        if not isinstance(header, dict):
            raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
        version = header.get("schema_version")
        if version != EPISODE_SCHEMA_VERSION:
            raise EpisodeError(
                f"{path}: episode schema version {version}, this reader understands {EPISODE_SCHEMA_VERSION}"
            )
        spec = ActionSpec.from_dict(header["action_contract"], str(path))
        if expected is not None:
            expected.check_compatible(header["action_contract"], str(path))
        names = header.get("variable_names", list(VARIABLES))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"variable_names is {names!r}, not a list of names")
        if not isinstance(header.get("meta", {}), dict):
            raise ValueError("meta is not a JSON object")
    except EpisodeError:
        npz.close()
        raise
    except ActionContractError as e:
        npz.close()
        raise EpisodeError(str(e)) from e
    except _DAMAGE as e:
        npz.close()
        raise EpisodeError(f"{path}: episode header missing or corrupt ({e!r})") from e
    return npz, header, spec


def _frames(npz, path: Path) -> np.ndarray:
    shape = tuple(int(x) for x in _member(npz, path, "frames_shape"))
    too_big = np.prod(shape, dtype=np.float64) > _MAX_FRAME_BYTES
    if len(shape) != 4 or shape[-1] != 3 or min(shape) < 0 or too_big:
        raise EpisodeError(f"{path}: frames_shape {shape} is not a (T, H, W, 3) shape; the file is damaged")
    blob = _member(npz, path, "frames_zstd")
    size = int(np.prod(shape))
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob.data, max_output_size=size) if size else b""
    except _DAMAGE as e:
        raise EpisodeError(f"{path}: frames are truncated or corrupt ({e!r})") from e
    if len(raw) != size:
        raise EpisodeError(f"{path}: frames are {len(raw)} bytes, frames_shape {shape} needs {size}")
    return np.frombuffer(raw, np.uint8).reshape(shape)


def _member(npz, path: Path, name: str) -> np.ndarray:
    if name == "frames":
        return _frames(npz, path)
    try:
        return npz[name]
    except KeyError:
        raise EpisodeError(f"{path}: missing array '{name}'") from None
    except _DAMAGE as e:
        raise EpisodeError(f"{path}: array '{name}' is truncated or corrupt ({e!r})") from e


def read_episode(
    path: str | Path, expected: ActionSpec | None = DEFAULT_ACTIONS, keys: tuple[str, ...] | None = None
) -> Episode:
    """Read and validate one episode. `keys` limits which arrays are decompressed (frames are the
    costly one); the arrays left out are empty. Whenever frames are read, the whole-file checksum is
    checked too. Any damage raises EpisodeError naming the file."""
    path = Path(path)
    wanted = ("frames", "actions", "rewards", "dones", "variables") if keys is None else tuple(keys)
    npz, header, spec = _open(path, expected, whole="frames" in wanted)
    with npz:
        arrays = {k: _member(npz, path, k) for k in wanted}
    names = tuple(header.get("variable_names", VARIABLES))
    try:
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
    except _DAMAGE as e:  # a 0-d array where a sequence belongs, say
        raise EpisodeError(f"{path}: arrays of impossible shapes ({e!r})") from e
    # Partial reads are checked as far as they go: lengths agree, actions fit the contract.
    for name in ("actions", "rewards", "dones", "variables"):
        arr = getattr(ep, name)
        if arr.ndim < 1 or len(arr) != t:
            raise EpisodeError(f"{path}: {name} has shape {arr.shape}, expected {t} steps")
    if keys is None:
        ep.validate(str(path))
    elif "actions" in wanted:
        try:
            spec.validate(ep.actions, str(path))
        except ActionContractError as e:
            raise EpisodeError(str(e)) from e
    return ep
