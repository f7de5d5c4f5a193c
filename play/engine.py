"""The real VizDoom behind the play face (`reset(frames, actions)` / `step(action)`), and start contexts.

The same object plays three parts: the game itself (`--engine`), the mirror that runs beside the dream
with the same inputs, and the source of the start context (the engine's first frames).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agent.env import RESOLUTIONS, DoomEnv, EnvConfig, downscale
from data.actions import DEFAULT_ACTIONS, ActionSpec
from data.dataset import Dataset, DatasetError
from data.world import World

ENGINE_SEED = 0  # every reset of the engine replays the same episode start


@dataclass
class StartContext:
    """The frames and actions a game starts from. actions[t] follows frames[t] (the dataset convention)."""

    frames: np.ndarray  # (K, H, W, 3) uint8
    actions: np.ndarray  # (K, fields) int64
    scenario: str
    map: str
    skill: int
    engine_seed: int | None  # the engine episode these frames come from; None: unknown (no exact mirror)
    source: str  # for the HUD and recorded metadata


class EngineBackend:
    """VizDoom with the play face; frames are resized to `size` (W, H) where the model and engine differ."""

    context_len = 1
    sampling_steps = None  # the engine renders; it has no denoising steps
    device = "cpu"

    def __init__(
        self,
        scenario: str = "e1m1",
        frame_skip: int = 2,
        size: tuple[int, int] = (160, 120),
        skill: int = 3,
        seed: int = ENGINE_SEED,
        action_spec: ActionSpec = DEFAULT_ACTIONS,
    ):
        # Render at the model's size when VizDoom can, else at 160x120 and resize.
        render = tuple(size) if tuple(size) in RESOLUTIONS else (160, 120)
        self.env = DoomEnv(
            EnvConfig(
                scenario=scenario,
                resolution=render,
                frame_skip=frame_skip,
                skill=skill,
                action_spec=action_spec,
            )
        )
        self.action_spec = action_spec
        self.frame_skip = frame_skip
        self.resolution = (int(size[0]), int(size[1]))
        self.scenario = scenario
        self.map = self.env.config.resolved_map()
        self.skill = skill
        self.seed = seed
        self.reward = 0.0
        self.variables = np.zeros(0, np.float32)
        self.restarts = 0  # episodes the engine ended (death, timeout) and began again on its own
        self.last_timing: dict[str, float] = {}

    def _frame(self, info: dict) -> np.ndarray:
        self.variables = info["variables"].copy()
        frame = info["frame"]
        return frame if frame.shape[1::-1] == self.resolution else downscale(frame, self.resolution)

    def reset(self, frames: np.ndarray | None = None, actions: np.ndarray | None = None) -> np.ndarray:
        """Begin the episode of `self.seed` and replay the actions between the given frames.

        The engine renders its own frames, so `frames` only says how many context steps to replay:
        after a reset with the context of `start_context(seed)`, the engine shows exactly its last frame.
        """
        _, info = self.env.reset(seed=self.seed)
        frame = self._frame(info)
        if actions is not None and frames is not None:
            for a in np.asarray(actions)[: len(frames) - 1]:
                frame = self.step(a)
        self.reward = 0.0
        return frame

    def step(self, action: np.ndarray) -> np.ndarray:
        _, self.reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:  # the game goes on: a dead or timed-out player starts over
            self.restarts += 1
            _, info = self.env.reset(seed=self.seed)
        return self._frame(info)

    def start_context(self, k: int, action: np.ndarray | None = None) -> StartContext:
        """The engine's first k frames of episode `self.seed`, holding `action` (default: no-op)."""
        action = self.action_spec.noop() if action is None else np.asarray(action, np.int64)
        frames = [self.reset().copy()]
        for _ in range(k - 1):
            frames.append(self.step(action).copy())
        return StartContext(
            frames=np.stack(frames),
            actions=np.tile(action, (k, 1)),
            scenario=self.scenario,
            map=self.map,
            skill=self.skill,
            engine_seed=self.seed,
            source=f"engine {self.scenario} {self.map} seed {self.seed}",
        )

    def close(self) -> None:
        self.env.close()


def collected_engine_seed(meta: dict) -> int | None:
    """The VizDoom seed of an episode written by `dreamdoom collect` (it seeds env.reset from
    default_rng(meta["seed"]), agent/collect.py `play_episode`); None if the episode says nothing."""
    seed = meta.get("seed")
    if not (isinstance(seed, list) and all(isinstance(s, int) for s in seed)):
        return None
    return int(np.random.default_rng(seed).integers(2**31 - 1))


def dataset_context(
    path: str | Path,
    episode: int,
    k: int,
    size: tuple[int, int],
    action_spec: ActionSpec = DEFAULT_ACTIONS,
    world: World | None = None,
    model: str = "the model",
) -> StartContext:
    """The first k frames and actions of a dataset episode, checked against the model size and contract,
    and against the `world` the model dreams (a dataset recorded at 320x240 is scaled down to it)."""
    ds = Dataset(path, action_spec)
    if not 0 <= episode < len(ds):
        raise DatasetError(f"--start-episode {episode}: out of range ({path} has {len(ds)} episodes)")
    ref = ds.episodes[episode]
    ep = ds.load(ref)
    if len(ep) < k:
        raise DatasetError(f"{ref.path}: {len(ep)} frames, the model needs a context of {k}")
    manifest = ds.shards[ref.shard]
    if world is not None:
        own = replace(World.of_manifest(manifest), resolution=world.resolution)
        world.check(own, model, f"--start {path}")
    frames = ep.frames[:k]
    if tuple(manifest.resolution) != tuple(size):
        if tuple(manifest.resolution) not in RESOLUTIONS:
            raise DatasetError(f"{ref.path}: frames are {manifest.resolution}, the model plays {tuple(size)}")
        frames = np.stack([downscale(f, tuple(size)) for f in frames])
    return StartContext(
        frames=np.ascontiguousarray(frames),
        actions=ep.actions[:k].astype(np.int64),
        scenario=manifest.scenario,
        map=manifest.map,
        skill=int(manifest.recorder.get("skill", 3)),
        engine_seed=collected_engine_seed(ep.meta),
        source=f"{ref.path.name} of {path}",
    )


class ReplayEngines:
    """Engines that restart held-out episodes written by `collect` from their seeds (for `wm eval`).

    One VizDoom per (scenario, map, skill, frame_skip, resolution), reused across episodes."""

    def __init__(self, action_spec: ActionSpec = DEFAULT_ACTIONS):
        self.action_spec = action_spec
        self._engines: dict[tuple, EngineBackend] = {}

    def __call__(self, meta: dict, manifest) -> EngineBackend | None:
        seed = collected_engine_seed(meta)
        if seed is None:
            return None
        skill = int(manifest.recorder.get("skill", 3))
        key = (manifest.scenario, manifest.map, skill, manifest.frame_skip, tuple(manifest.resolution))
        if key not in self._engines:
            self._engines[key] = EngineBackend(
                scenario=manifest.scenario,
                frame_skip=manifest.frame_skip,
                size=tuple(manifest.resolution),
                skill=skill,
                action_spec=self.action_spec,
            )
        engine = self._engines[key]
        # The engine plays its scenario's own map; an episode recorded on another map cannot be replayed.
        return _Seeded(engine, seed) if engine.map == manifest.map else None

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()


class _Seeded:
    """An engine shared between episodes, pinned to one episode's seed."""

    def __init__(self, engine: EngineBackend, seed: int):
        self.engine, self.seed = engine, seed

    @property
    def variables(self) -> np.ndarray:
        return self.engine.variables

    def reset(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        self.engine.seed = self.seed
        return self.engine.reset(frames, actions)

    def step(self, action: np.ndarray) -> np.ndarray:
        return self.engine.step(action)
