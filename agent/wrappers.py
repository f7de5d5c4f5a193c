"""Gym wrappers of the agent's env stack: held, sticky actions and the episode recorder."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from data.dataset import ShardWriter
from data.episode import EpisodeRecorder


class HoldAction(gym.Wrapper):
    """Each decision drives `hold` env steps; with probability `sticky` the previous decision is executed
    instead of the new one. Both make the data look like human play (held keys, not per-frame jitter)."""

    def __init__(self, env: gym.Env, hold: int, sticky: float, seed: int):
        super().__init__(env)
        if hold < 1 or not 0.0 <= sticky < 1.0:
            raise ValueError(f"hold must be >= 1 and sticky in [0, 1), got hold={hold}, sticky={sticky}")
        self.hold, self.sticky = hold, sticky
        self.rng = np.random.default_rng(seed)
        self.previous: np.ndarray | None = None

    def reset(self, **kwargs):
        self.previous = None
        return self.env.reset(**kwargs)

    def step(self, action):
        if self.previous is not None and self.rng.random() < self.sticky:
            action = self.previous
        self.previous = np.asarray(action).copy()
        total = 0.0
        for _ in range(self.hold):
            obs, reward, terminated, truncated, info = self.env.step(self.previous)
            total += reward
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class RecordEpisodes(gym.Wrapper):
    """Streams every step of the wrapped engine into a compressing EpisodeRecorder and writes each finished
    episode to a ShardWriter, tagged with the training step and policy version set by `set_training_tag`."""

    def __init__(self, env: gym.Env, writer: ShardWriter, env_index: int):
        super().__init__(env)
        self.writer, self.env_index = writer, env_index
        self.recording = EpisodeRecorder(env.unwrapped.spec_actions)
        self.tag = {"training_step": 0, "policy_version": 0}
        self.episodes_written = 0
        self._info: dict = {}
        self._start_tag: dict = {}

    def set_training_tag(self, training_step: int, policy_version: int) -> None:
        self.tag = {"training_step": int(training_step), "policy_version": int(policy_version)}

    def reset(self, **kwargs):
        if len(self.recording):  # cut from above (never by SB3, which resets only after an episode ends)
            self._write("cut")
        obs, self._info = self.env.reset(**kwargs)
        self._start_tag = dict(self.tag)
        return obs, self._info

    def step(self, action):
        self.recording.add(self._info["frame"], action, self._info["variables"])  # what was seen, then done
        obs, reward, terminated, truncated, self._info = self.env.step(action)
        self.recording.set_outcome(reward, terminated or truncated)
        if terminated or truncated:
            self._write("terminated" if terminated else "truncated")
        return obs, reward, terminated, truncated, self._info

    def finish(self) -> int:
        """Write the episode in progress (training stopped in it), marked as cut; returns episodes written."""
        if len(self.recording) > 1:
            self._write("cut")
        return self.episodes_written

    def _write(self, end: str) -> None:
        self.recording.set_outcome(self.recording.rewards[-1], True)
        meta = {
            "policy": "ppo",
            "env": self.env_index,
            "end": end,
            "training_step_start": self._start_tag.get("training_step", 0),
            "policy_version_start": self._start_tag.get("policy_version", 0),
            **self.tag,
        }
        self.writer.write_recording(self.recording, meta)
        self.episodes_written += 1
