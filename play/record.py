"""Recording a play session as dataset episodes: what was shown, and what the player sent.

Step t of a recorded episode is `frames[t]` (the frame on screen) and `actions[t]` (the action sent
while it was shown), the dataset convention of data/episode.py. With the mirror on, the engine's frames
of the same steps go to a second shard with the real game variables and rewards, so human play of the
real game becomes training data too. Episodes are cut at every reset and every `max_frames` frames,
and written on a background thread so the game does not stall.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data.actions import ActionSpec
from data.dataset import Manifest, ShardWriter, default_recorder
from data.episode import VARIABLES, Episode

MAX_EPISODE_FRAMES = 2048  # ~2 minutes at 17.5 frames/s; bounds the memory a recording holds


class _Track:
    """The steps of one shard's episode in progress."""

    def __init__(self, writer: ShardWriter):
        self.writer = writer
        self.frames: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.variables: list[np.ndarray] = []

    def add(self, frame: np.ndarray, action: np.ndarray, reward: float, variables: np.ndarray | None) -> None:
        self.frames.append(frame.copy())
        self.actions.append(np.asarray(action, np.int64).copy())
        self.rewards.append(float(reward))
        self.variables.append(np.zeros(len(VARIABLES), np.float32) if variables is None else variables.copy())

    def take(self, spec: ActionSpec, meta: dict) -> Episode | None:
        if not self.frames:
            return None
        dones = np.zeros(len(self.frames), bool)
        dones[-1] = True
        ep = Episode(
            frames=np.stack(self.frames),
            actions=np.stack(self.actions),
            rewards=np.asarray(self.rewards, np.float32),
            dones=dones,
            variables=np.stack(self.variables),
            action_spec=spec,
            meta=meta,
        )
        self.frames, self.actions, self.rewards, self.variables = [], [], [], []
        return ep


class SessionRecorder:
    """Writes `<folder>/dream` (and `<folder>/engine` with the mirror) shards of human play."""

    def __init__(
        self,
        folder: str | Path,
        scenario: str,
        map: str,
        resolution: tuple[int, int],
        frame_skip: int,
        spec: ActionSpec,
        meta: dict,
        max_frames: int = MAX_EPISODE_FRAMES,
    ):
        self.folder = Path(folder)
        self.spec = spec
        self.meta = meta
        self.max_frames = max_frames
        self._manifest = dict(
            scenario=scenario,
            map=map,
            resolution=tuple(resolution),
            frame_skip=frame_skip,
            action_contract=spec.to_dict(),
        )
        self._tracks: dict[str, _Track] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dreamdoom-record")
        self._pending: list[Future] = []
        self.written: list[Path] = []
        self.frames = 0  # steps recorded in this session

    def _track(self, shown: str) -> _Track:
        if shown not in self._tracks:
            manifest = Manifest(
                recorder=default_recorder("human", shown=shown, **self.meta), **self._manifest
            )
            self._tracks[shown] = _Track(ShardWriter(self.folder / shown, manifest))
        return self._tracks[shown]

    def add(
        self,
        frame: np.ndarray,
        action: np.ndarray,
        mirror_frame: np.ndarray | None = None,
        mirror_reward: float = 0.0,
        mirror_variables: np.ndarray | None = None,
    ) -> None:
        """One step: the dream frame shown and the action sent (and the engine's frame beside it)."""
        self._track("dream").add(frame, action, 0.0, None)
        if mirror_frame is not None:
            self._track("engine").add(mirror_frame, action, mirror_reward, mirror_variables)
        self.frames += 1
        if len(self._tracks["dream"].frames) >= self.max_frames:
            self.cut()

    def cut(self) -> None:
        """End the episodes in progress (on reset, on stop) and write them in the background."""
        for shown, track in self._tracks.items():
            ep = track.take(self.spec, {"policy": "human", "shown": shown, **self.meta})
            if ep is not None:
                self._pending.append(self._pool.submit(track.writer.write, ep))
        self._collect(block=False)

    def _collect(self, block: bool) -> None:
        for f in [f for f in self._pending if block or f.done()]:
            self.written.append(f.result())
            self._pending.remove(f)

    def close(self) -> list[Path]:
        """Write what is left; returns every episode file written."""
        self.cut()
        self._collect(block=True)
        self._pool.shutdown()
        return self.written
