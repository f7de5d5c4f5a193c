"""A gymnasium env over VizDoom, speaking the action contract of data/actions.py.

The policy sees a downscaled RGB observation; `info["frame"]` holds the native frame (with HUD) that
the recorder keeps, and `info["variables"]` the game variables of data/episode.py's VARIABLES.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import vizdoom as vzd

from data.actions import BUTTONS, DEFAULT_ACTIONS, ActionSpec
from data.dataset import Manifest
from data.durable import write_atomic
from data.episode import VARIABLES

VIZDOOM_DIR = Path(vzd.__file__).parent
SCENARIO_DIR = Path(vzd.scenarios_path)
CONFIG_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dreamdoom"

# VizDoom ignores turning for the first tics of an episode (measured: turn deltas take effect from
# episode tic 9 on). Reset runs these tics with no input so every recorded action has its effect.
WARMUP_TICS = 8
TICS_PER_SECOND = 35

RESOLUTIONS = {
    (160, 120): vzd.ScreenResolution.RES_160X120,
    (320, 240): vzd.ScreenResolution.RES_320X240,
}

# VizDoom actor class names of monsters (Doom/Freedoom), used by the scripted explorer's aim.
MONSTERS = frozenset(
    {
        "ZombieMan",
        "ShotgunGuy",
        "ChaingunGuy",
        "DoomImp",
        "Demon",
        "Spectre",
        "LostSoul",
        "Cacodemon",
        "HellKnight",
        "BaronOfHell",
        "Arachnotron",
        "PainElemental",
        "Revenant",
        "Fatso",
        "Archvile",
        "SpiderMastermind",
        "Cyberdemon",
        "WolfensteinSS",
        "MarineChainsawVzd",
        "DoomPlayer",
    }
)


class ScenarioError(ValueError):
    """Unknown scenario, missing WAD, or a map the WAD does not hold."""


@dataclass(frozen=True)
class Scenario:
    """A named game setup: a VizDoom .cfg (small scenarios) or an IWAD and map (full game)."""

    name: str
    config: str | None  # a .cfg in vizdoom's scenarios folder
    iwad: str | None  # an IWAD in the vizdoom package (full game maps)
    map: str
    episode_timeout: int  # tics; 0 = none
    description: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "e1m1", None, "freedoom1.wad", "E1M1", 35 * 120, "Freedoom 1, episode 1 map 1: the full level"
        ),
        Scenario("basic", "basic.cfg", None, "MAP01", 300, "one room, one monster in front"),
        Scenario(
            "defend_the_center",
            "defend_the_center.cfg",
            None,
            "MAP01",
            2100,
            "circular arena, monsters close in",
        ),
        Scenario(
            "health_gathering", "health_gathering.cfg", None, "MAP01", 2100, "acid floor, collect medkits"
        ),
        Scenario("deathmatch", "deathmatch.cfg", None, "MAP01", 4200, "arena full of monsters and weapons"),
    ]
}


def wad_maps(path: str | Path) -> set[str]:
    """Map names (ExMy / MAPxx markers) in a WAD's lump directory, read from its header."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic, count, offset = struct.unpack("<4sii", f.read(12))
            if magic not in (b"IWAD", b"PWAD"):
                raise ScenarioError(f"{path}: not a WAD file")
            f.seek(offset)
            directory = f.read(16 * count)
    except (OSError, struct.error) as e:
        raise ScenarioError(f"{path}: unreadable WAD ({e})") from e
    names = {
        directory[i + 8 : i + 16].rstrip(b"\0").decode("ascii", "replace").upper()
        for i in range(0, len(directory), 16)
    }
    return {n for n in names if re.fullmatch(r"E\dM\d|MAP\d\d", n)}


def _cfg_wad(cfg: Path) -> Path:
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "doom_scenario_path":
            return cfg.parent / value.strip()
    raise ScenarioError(f"{cfg}: names no doom_scenario_path")


@dataclass
class EnvConfig:
    """What a DoomEnv plays and how it renders."""

    scenario: str = "e1m1"
    map: str | None = None  # override the scenario's map (e.g. E1M2); validated against the WAD
    resolution: tuple[int, int] = (160, 120)  # native (width, height) of recorded frames
    obs_size: tuple[int, int] = (80, 60)  # (width, height) of the policy's observation
    frame_skip: int = 2  # tics per step; recorded frames are this many tics apart
    skill: int = 3  # Doom skill 1 (easiest) .. 5
    episode_timeout: int | None = None  # tics; None = the scenario's
    depth: bool = False  # info["depth"]: the depth buffer (scripted explorer)
    labels: bool = False  # info["labels"]: visible objects (scripted explorer)
    action_spec: ActionSpec = field(default_factory=lambda: DEFAULT_ACTIONS)

    def manifest(self, recorder: dict) -> Manifest:
        """The dataset manifest of episodes recorded from an env of this config."""
        return Manifest(
            scenario=self.scenario,
            map=self.resolved_map(),
            resolution=tuple(self.resolution),
            frame_skip=self.frame_skip,
            action_contract=self.action_spec.to_dict(),
            recorder=recorder,
        )

    def resolved_map(self) -> str:
        return (self.map or self.scenario_spec().map).upper()

    def scenario_spec(self) -> Scenario:
        if self.scenario not in SCENARIOS:
            raise ScenarioError(f"unknown scenario '{self.scenario}'; choose one of {', '.join(SCENARIOS)}")
        return SCENARIOS[self.scenario]


PR_SET_PDEATHSIG = 1  # prctl(2) option: a signal the kernel sends a process when its parent dies
ENGINE_PARENT = "DREAMDOOM_ENGINE_PARENT"  # the environment variable naming the process the engine serves


def engine_launcher() -> Path | None:
    """An executable VizDoom starts instead of its engine: it asks the kernel to SIGKILL it when its parent
    goes (PR_SET_PDEATHSIG), then becomes the engine. VizDoom starts the engine as a child of this process
    from a thread that lives as long as the game, so an engine no longer outlives a process killed without
    closing its game (SIGKILL, the OOM killer). Linux only (None elsewhere: the engine's own binary)."""
    if not sys.platform.startswith("linux"):
        return None
    engine = str(VIZDOOM_DIR / "vizdoom")
    code = (
        f"import ctypes, os, sys; ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, {int(signal.SIGKILL)}); "
        f"parent = os.environ.get({ENGINE_PARENT!r}); "
        # the parent died before the signal was armed: do not start
        "parent is None or os.getppid() == int(parent) or sys.exit(1); "
        f"os.execv({engine!r}, [{engine!r}] + sys.argv[1:])"
    )
    script = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -c {shlex.quote(code)} "$@"\n'.encode()
    path = CONFIG_DIR / f"vizdoom-{hashlib.sha256(script).hexdigest()[:12]}.sh"  # per interpreter and engine
    if not path.exists():
        CONFIG_DIR.mkdir(parents=True, exist_ok=True)
        write_atomic(path, script, mode=0o755)
    return path


def make_game(cfg: EnvConfig) -> vzd.DoomGame:
    """A configured, initialised DoomGame; raises ScenarioError for a bad scenario, map or resolution."""
    sc = cfg.scenario_spec()
    game = vzd.DoomGame()
    # VizDoom writes its settings file into the working directory unless told otherwise.
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    game.set_doom_config_path(str(CONFIG_DIR / "_vizdoom.ini"))
    launcher = engine_launcher()
    if launcher is not None:
        os.environ[ENGINE_PARENT] = str(os.getpid())  # read by the launcher; a forked child sets its own
        game.set_vizdoom_path(str(launcher))
    if sc.config:
        cfg_path = SCENARIO_DIR / sc.config
        game.load_config(str(cfg_path))
        wad = _cfg_wad(cfg_path)
    else:
        wad = VIZDOOM_DIR / sc.iwad
        game.set_doom_game_path(str(wad))
    # A map name the WAD lacks makes VizDoom hang without an error: check first.
    the_map = cfg.resolved_map()
    maps = wad_maps(wad)
    if the_map not in maps:
        raise ScenarioError(
            f"map '{the_map}' is not in {wad.name} (scenario '{cfg.scenario}'); "
            f"it has: {', '.join(sorted(maps))}"
        )
    game.set_doom_map(the_map)
    if tuple(cfg.resolution) not in RESOLUTIONS:
        raise ScenarioError(f"resolution {cfg.resolution} not supported; choose one of {list(RESOLUTIONS)}")
    game.set_screen_resolution(RESOLUTIONS[tuple(cfg.resolution)])
    game.set_screen_format(vzd.ScreenFormat.RGB24)
    game.set_window_visible(False)
    game.set_mode(vzd.Mode.PLAYER)
    game.set_render_hud(True)
    game.set_render_minimal_hud(False)
    game.set_render_crosshair(False)
    game.set_render_weapon(True)
    game.set_render_messages(False)
    game.set_sound_enabled(False)
    game.set_depth_buffer_enabled(cfg.depth)
    game.set_labels_buffer_enabled(cfg.labels)
    game.set_available_buttons([getattr(vzd.Button, b) for b in BUTTONS])
    game.set_available_game_variables([getattr(vzd.GameVariable, v) for v in VARIABLES])
    game.set_doom_skill(cfg.skill)
    game.set_episode_timeout(sc.episode_timeout if cfg.episode_timeout is None else cfg.episode_timeout)
    game.add_game_args("+vid_forcesurface 1")
    game.init()
    return game


def downscale(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink an (H, W, 3) uint8 frame to (height, width): 2x2 box filter for halving, else nearest."""
    w, h = size
    while (
        frame.shape[0] == 2 * h * (frame.shape[0] // (2 * h))
        and frame.shape[0] >= 2 * h
        and frame.shape[1] * h == frame.shape[0] * w
    ):
        a = frame.astype(np.uint16)  # integer sums: ~8x faster than a float mean
        frame = ((a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) >> 2).astype(np.uint8)
    if frame.shape[:2] == (h, w):
        return frame
    ys = np.arange(h) * frame.shape[0] // h
    xs = np.arange(w) * frame.shape[1] // w
    return frame[ys][:, xs]


class DoomEnv(gym.Env):
    """VizDoom as a gymnasium env: MultiDiscrete actions of the contract, downscaled RGB observations."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": TICS_PER_SECOND}

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = "rgb_array"):
        self.config = config or EnvConfig()
        self.spec_actions = self.config.action_spec
        self.game = make_game(self.config)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": TICS_PER_SECOND / self.config.frame_skip}
        w, h = self.config.obs_size
        self.observation_space = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.action_space = self.spec_actions.gym_space()
        self._frame = np.zeros((self.config.resolution[1], self.config.resolution[0], 3), np.uint8)
        self._variables = np.zeros(len(VARIABLES), np.float32)
        self._noop = [0.0] * len(BUTTONS)

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.game.set_seed(int(self.np_random.integers(0, 2**31 - 1)))
        self.game.new_episode()
        self.game.make_action(self._noop, WARMUP_TICS)
        if self.game.is_episode_finished():
            raise RuntimeError(
                f"scenario '{self.config.scenario}' ended during its {WARMUP_TICS} warm-up tics"
            )
        self._read_state()
        return self._obs(), self._info()

    def step(self, action):
        reward = self.game.make_action(
            self.spec_actions.to_buttons(np.asarray(action)), self.config.frame_skip
        )
        finished = self.game.is_episode_finished()
        truncated = finished and self.game.is_episode_timeout_reached()
        terminated = finished and not truncated
        if not finished:
            self._read_state()
        elif self.game.is_player_dead():
            self._variables[VARIABLES.index("DEAD")] = 1.0
        return self._obs(), float(reward), terminated, truncated, self._info()

    def render(self):
        return self._frame

    def close(self):
        self.game.close()

    # -- internals -------------------------------------------------------------------------------
    def _read_state(self) -> None:
        state = self.game.get_state()
        self._frame = state.screen_buffer  # (H, W, 3) uint8, native resolution; a fresh array every step
        self._variables = np.asarray(state.game_variables, dtype=np.float32)
        self._state = state

    def _obs(self) -> np.ndarray:
        return downscale(self._frame, self.config.obs_size)

    def _info(self) -> dict:
        info = {"frame": self._frame, "variables": self._variables, "tic": self.game.get_episode_time()}
        if self.config.depth:
            info["depth"] = self._state.depth_buffer
        if self.config.labels:
            info["labels"] = [(lb.object_name, lb.x, lb.y, lb.width, lb.height) for lb in self._state.labels]
        return info

    def variable(self, name: str) -> float:
        return float(self._variables[VARIABLES.index(name)])


def make_env(scenario: str = "e1m1", **kwargs) -> DoomEnv:
    return DoomEnv(EnvConfig(scenario=scenario, **kwargs))
