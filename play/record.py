"""Recording a play session as dataset episodes: what was shown, and what the player sent.

Step t of a recorded episode is `frames[t]` (the frame on screen) and `actions[t]` (the action sent
while it was shown), the dataset convention of data/episode.py. With the mirror on, the engine's frames
of the same steps go to a second shard with the real game variables and rewards, so human play of the
real game becomes training data too. Frames are compressed as they are played (data/episode.py's
EpisodeRecorder); episodes are cut at every reset and every `max_frames` frames, and written on a
background thread so the game does not stall.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data.actions import ActionSpec
from data.dataset import Manifest, ShardWriter, default_recorder
from data.episode import VARIABLES, EpisodeRecorder

MAX_EPISODE_FRAMES = 2048  # ~2 minutes at 17.5 frames/s; bounds the memory a recording holds


class _Track:
    """One shard's episode in progress, compressed frame by frame as it is played."""

    def __init__(self, writer: ShardWriter, spec: ActionSpec):
        self.writer, self.spec = writer, spec
        self.recording = EpisodeRecorder(spec)

    def add(self, frame: np.ndarray, action: np.ndarray, reward: float, variables: np.ndarray | None) -> None:
        if variables is None:
            variables = np.zeros(len(VARIABLES), np.float32)
        self.recording.add(frame, action, variables, reward)

    def take(self) -> EpisodeRecorder | None:
        """The finished episode, marked done at its last step; a fresh recording starts."""
        if not len(self.recording):
            return None
        done, self.recording = self.recording, EpisodeRecorder(self.spec)
        done.set_outcome(done.rewards[-1], True)
        return done


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
            self._tracks[shown] = _Track(ShardWriter(self.folder / shown, manifest), self.spec)
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
        if len(self._tracks["dream"].recording) >= self.max_frames:
            self.cut()

    def cut(self) -> None:
        """End the episodes in progress (on reset, on stop) and write them in the background."""
        for shown, track in self._tracks.items():
            done = track.take()
            if done is not None:
                meta = {"policy": "human", "shown": shown, **self.meta}
                self._pending.append(self._pool.submit(track.writer.write_recording, done, meta))
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
