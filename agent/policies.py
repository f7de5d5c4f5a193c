"""Policies that drive collection: random (human-like action holding), a scripted explorer, or trained PPO.

A policy sees what the env gives (`obs`, `info`) and returns one action vector of the contract.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Protocol

import numpy as np

from agent.env import MONSTERS, EnvConfig
from data.actions import DEFAULT_ACTIONS, ActionSpec
from data.episode import VARIABLES


class Policy(Protocol):
    name: str

    def reset(self, rng: np.random.Generator) -> None: ...

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray: ...


class RandomPolicy:
    """Uniform random actions, each held for a random number of steps (GameNGen favoured repeats so the
    data looks like human play rather than per-frame jitter)."""

    name = "random"

    def __init__(self, spec: ActionSpec = DEFAULT_ACTIONS, repeat_prob: float = 0.75):
        self.spec, self.repeat_prob = spec, repeat_prob
        self.rng = np.random.default_rng(0)
        self.action = spec.noop()

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.action = self._sample()

    def _sample(self) -> np.ndarray:
        return np.array([self.rng.integers(n) for n in self.spec.sizes], dtype=np.int64)

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        if self.rng.random() > self.repeat_prob:
            self.action = self._sample()
        return self.action


class ScriptedPolicy:
    """A simple explorer: walks forward, turns towards open space when a wall is near (depth buffer),
    presses USE at walls (doors), backs off when stuck, and turns to and shoots visible monsters (labels)."""

    name = "scripted"
    needs = {"depth": True, "labels": True}

    def __init__(self, spec: ActionSpec = DEFAULT_ACTIONS, wall_depth: int = 12, stuck_steps: int = 12):
        self.spec, self.wall_depth, self.stuck_steps = spec, wall_depth, stuck_steps
        self.rng = np.random.default_rng(0)
        self.turn_dir, self.turn_left_steps, self.backoff = 0, 0, 0
        self.positions: deque = deque(maxlen=stuck_steps)
        n = len(spec.turn_degrees_per_tic)
        self.fast = {-1: 0, 1: n - 1}  # fastest turn left / right
        self.slow = {-1: spec.turn_none - 1, 1: spec.turn_none + 1}

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.turn_dir, self.turn_left_steps, self.backoff = 0, 0, 0
        self.positions.clear()

    def _aim(self, info: dict, width: int) -> np.ndarray | None:
        """Turn towards the nearest-to-centre visible monster, and fire when it is close to the crosshair."""
        monsters = [lb for lb in info.get("labels", ()) if lb[0] in MONSTERS and lb[0] != "DoomPlayer"]
        if not monsters:
            return None
        name, x, y, w, h = min(monsters, key=lambda lb: abs(lb[1] + lb[3] / 2 - width / 2))
        offset = (x + w / 2 - width / 2) / width  # -0.5 .. 0.5, positive = right of centre
        turn = self.spec.turn_none
        if abs(offset) > 0.04:
            direction = 1 if offset > 0 else -1
            turn = self.fast[direction] if abs(offset) > 0.2 else self.slow[direction]
        return self.spec.make(
            move=0, strafe=int(self.rng.integers(3)), turn=turn, attack=int(abs(offset) < 0.1)
        )

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        depth = info.get("depth")
        if depth is None:
            raise ValueError("the scripted explorer needs the depth buffer: make the env with depth=True")
        h, w = depth.shape
        aim = self._aim(info, w)
        if aim is not None:
            return aim
        var = info["variables"]
        self.positions.append((var[VARIABLES.index("POSITION_X")], var[VARIABLES.index("POSITION_Y")]))
        band = depth[h // 3 : 2 * h // 3]  # middle rows: walls, not floor and ceiling
        left, centre, right = (float(np.median(band[:, i * w // 3 : (i + 1) * w // 3])) for i in range(3))
        if self.backoff > 0:
            self.backoff -= 1
            return self.spec.make(move=2, turn=self.fast[self.turn_dir or 1])
        if len(self.positions) == self.stuck_steps:
            moved = np.hypot(*(np.subtract(self.positions[-1], self.positions[0])))
            if moved < 8.0:  # pressed against something: open it if it is a door, else back off and turn
                self.positions.clear()
                self.backoff = int(self.rng.integers(3, 8))
                self.turn_dir = int(self.rng.choice([-1, 1]))
                return self.spec.make(move=0, use=1)
        if self.turn_left_steps > 0:
            self.turn_left_steps -= 1
            return self.spec.make(move=0, turn=self.fast[self.turn_dir])
        if centre < self.wall_depth:
            self.turn_dir = -1 if left > right else 1
            self.turn_left_steps = int(self.rng.integers(3, 10))
            return self.spec.make(move=0, turn=self.fast[self.turn_dir], use=int(self.rng.random() < 0.3))
        # Open space: walk on, drifting towards the more open side, sometimes looking around.
        drift = 1 if right > left + 4 else -1 if left > right + 4 else 0
        turn = self.slow[drift] if drift else self.spec.turn_none
        if self.rng.random() < 0.05:
            turn = int(self.rng.integers(len(self.spec.turn_degrees_per_tic)))
        return self.spec.make(move=1, strafe=int(self.rng.choice(3, p=[0.8, 0.1, 0.1])), turn=turn)


def make_policy(spec: str, action_spec: ActionSpec = DEFAULT_ACTIONS) -> Policy:
    """'random', 'scripted', or the path of a trained policy (.zip)."""
    if spec == "random":
        return RandomPolicy(action_spec)
    if spec == "scripted":
        return ScriptedPolicy(action_spec)
    path = Path(spec)
    if path.suffix == ".zip" or path.is_dir():
        from agent.policy_io import load_policy  # noqa: PLC0415 (torch and SB3 load only when needed)

        return load_policy(path, action_spec)
    raise ValueError(f"--policy {spec!r}: expected 'random', 'scripted' or the path of a trained policy .zip")


def env_needs(policy: Policy, config: EnvConfig) -> EnvConfig:
    """Turn on the env buffers a policy reads (depth, labels)."""
    for key, value in getattr(policy, "needs", {}).items():
        setattr(config, key, value)
    return config
