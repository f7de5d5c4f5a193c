"""One game being played, without any drawing: backend, start context, mirror, recording, timing.

The backend step runs on a worker thread (torch and VizDoom release the GIL), so the step for frame
n+1 runs while the caller draws frame n:

    session.submit(action)   # the backend starts on frame n+1
    draw(session.frame)      # frame n
    session.collect()        # frame n+1 becomes session.frame

Any `Backend` plays: WorldModelEnv (the dream) or EngineBackend (the real engine, which is also the
mirror). Frames are copied into two buffers made once, so the one being drawn is never written while
the next is computed.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from data.actions import DEFAULT_ACTIONS, ActionSpec
from play.engine import ENGINE_SEED, EngineBackend, StartContext
from play.record import SessionRecorder
from play.stats import RollingTimes, psnr

MIN_STEPS = 1
MAX_STEPS = 8


class Backend(Protocol):
    """What play needs of a game: world_model.model.env.WorldModelEnv and play.engine.EngineBackend offer
    it."""

    resolution: tuple[int, int]  # (W, H) of the frames it returns
    frame_skip: int  # tics per frame: real time is 35 / frame_skip frames/s
    context_len: int  # frames a start context holds
    sampling_steps: int | None  # denoising steps per frame; None for the real engine
    last_timing: dict[str, float]  # the last step's split (dit_ms, decode_ms, ...); empty when none
    device: Any  # where it computes (torch device or "cpu")

    def reset(self, frames: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> np.ndarray: ...


class PlaySession:
    """The state of play: the frame on screen, the mirror's, pause, denoising steps, recording."""

    def __init__(
        self,
        backend: Backend,
        context: StartContext,
        engine: EngineBackend | None = None,
        spec: ActionSpec = DEFAULT_ACTIONS,
    ):
        self.backend = backend
        self.context = context
        self.spec = spec
        self.is_engine = isinstance(backend, EngineBackend)
        self.engine = engine  # the mirror (made on first use when None)
        self.mirror = False
        self.paused = False
        w, h = backend.resolution
        self._frames = np.zeros((2, h, w, 3), np.uint8)  # double buffer: shown, being computed
        self._mirror_frames = np.zeros((2, h, w, 3), np.uint8)
        self._cur = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dreamdoom-step")
        self._future: Future | None = None
        self._sent = spec.noop()
        self.action = spec.noop()  # the last action sent
        self.model_ms = RollingTimes()  # backend step latency
        self.last_step_ms = 0.0
        self.mirror_ms = RollingTimes()  # engine step latency
        self.timing: dict = {}  # the backend's own split (dit_ms, decode_ms, ...) when it reports one
        self.psnr = float("nan")
        self._psnr_sum = 0.0
        self.steps_taken = 0  # steps since the last reset
        self.mirror_steps = 0
        self.recorder: SessionRecorder | None = None
        self._mirror_state: tuple[np.ndarray, int] = (np.zeros(0, np.float32), 0)
        self.reset()

    # -- what is on screen ---------------------------------------------------------------------------
    @property
    def frame(self) -> np.ndarray:
        """(H, W, 3) uint8: the frame being shown."""
        return self._frames[self._cur]

    @property
    def mirror_frame(self) -> np.ndarray | None:
        return self._mirror_frames[self._cur] if self.mirror else None

    @property
    def mean_psnr(self) -> float:
        return self._psnr_sum / self.mirror_steps if self.mirror_steps else float("nan")

    @property
    def steps(self) -> int | None:
        """Denoising steps of the backend; None for the real engine."""
        return self.backend.sampling_steps

    # -- stepping ------------------------------------------------------------------------------------
    def _work(self, action: np.ndarray, mirror: bool) -> None:
        nxt = 1 - self._cur
        t0 = time.perf_counter()
        frame = self.backend.step(action)
        t1 = time.perf_counter()
        np.copyto(self._frames[nxt], frame)
        self.last_step_ms = 1000 * (t1 - t0)
        self.model_ms.add(self.last_step_ms)
        self.timing = dict(self.backend.last_timing)
        if mirror:
            np.copyto(self._mirror_frames[nxt], self.engine.step(action))
            self.mirror_ms.add(1000 * (time.perf_counter() - t1))

    def submit(self, action: np.ndarray) -> None:
        """Start the step to the next frame with `action`; the frame shown is recorded with it."""
        if self._future is not None:
            self.collect()
        self.spec.validate(action, "action")
        np.copyto(self._sent, action)
        if self.mirror:  # the game variables at the frame shown, and how often the engine started over
            self._mirror_state = (self.engine.variables, self.engine.restarts)
        self._future = self._pool.submit(self._work, self._sent.copy(), self.mirror)

    def collect(self) -> None:
        """Wait for the step in flight; its frame becomes the one shown."""
        if self._future is None:
            return
        future, self._future = self._future, None
        future.result()  # re-raises an error of the backend here
        ended = self.mirror and self.engine.restarts != self._mirror_state[1]
        if self.recorder is not None:  # step t: the frame shown, the action sent, the reward that followed
            self.recorder.add(
                self.frame,
                self._sent,
                self.mirror_frame,
                self.engine.reward if self.mirror else 0.0,
                self._mirror_state[0] if self.mirror else None,
            )
            if ended:  # the real game ended (death, timeout) and began again: so does the episode
                self.recorder.cut()
        self._cur = 1 - self._cur
        np.copyto(self.action, self._sent)
        self.steps_taken += 1
        if self.mirror:
            self.mirror_steps += 1
            self.psnr = psnr(self.frame, self._mirror_frames[self._cur])
            self._psnr_sum += min(self.psnr, 100.0)

    def step(self, action: np.ndarray) -> np.ndarray:
        """submit + collect: one step, no overlap."""
        self.submit(action)
        self.collect()
        return self.frame

    # -- controls ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the start context (R): the dream and the mirror start again from the same frames."""
        self.collect()
        if self.recorder is not None:
            self.recorder.cut()
        np.copyto(self._frames[self._cur], self.backend.reset(self.context.frames, self.context.actions))
        if self.mirror:
            np.copyto(
                self._mirror_frames[self._cur], self.engine.reset(self.context.frames, self.context.actions)
            )
        self.steps_taken = self.mirror_steps = 0
        self._psnr_sum = 0.0
        self.psnr = psnr(self.frame, self._mirror_frames[self._cur]) if self.mirror else float("nan")

    def set_steps(self, n: int) -> int | None:
        """Set the denoising steps (clamped to MIN_STEPS..MAX_STEPS); no effect on the real engine."""
        if self.steps is None:
            return None
        self.collect()
        self.backend.sampling_steps = int(np.clip(n, MIN_STEPS, MAX_STEPS))
        return self.steps

    def toggle_pause(self) -> bool:
        self.collect()
        self.paused = not self.paused
        return self.paused

    def set_mirror(self, on: bool) -> str | None:
        """Run the real engine beside the dream (M); both restart from the start context. Returns an
        explanation when the mirror cannot be turned on."""
        if on and self.is_engine:
            return "the mirror runs the real engine beside a world model; this game is the engine itself"
        self.collect()
        if on and self.engine is None:
            self.engine = self._new_engine()
        self.mirror = on
        self.reset()
        if on and self.context.engine_seed is None:
            return (
                f"the start context ({self.context.source}) has no engine seed: the mirror starts elsewhere"
            )
        return None

    def _new_engine(self) -> EngineBackend:
        seed = ENGINE_SEED if self.context.engine_seed is None else self.context.engine_seed
        return EngineBackend(
            self.context.scenario,
            self.backend.frame_skip,
            self.backend.resolution,
            self.context.skill,
            seed,
            self.spec,
        )

    def start_recording(self, folder: str, meta: dict) -> None:
        """F5: record from the frame on screen on; episodes go to `folder`/dream (and /engine)."""
        self.collect()
        self.recorder = SessionRecorder(
            folder,
            self.context.scenario,
            self.context.map,
            self.backend.resolution,
            self.backend.frame_skip,
            self.spec,
            {"start": self.context.source, **meta},
        )

    def stop_recording(self) -> list:
        """F5 again: write what was recorded; returns the episode files."""
        self.collect()
        recorder, self.recorder = self.recorder, None
        return recorder.close() if recorder is not None else []

    def close(self) -> list:
        written = self.stop_recording()
        self._pool.shutdown()
        return written
