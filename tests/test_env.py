import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agent.env import SCENARIOS, VIZDOOM_DIR, DoomEnv, EnvConfig, ScenarioError, make_env, wad_maps
from data.actions import DEFAULT_ACTIONS as A
from data.episode import VARIABLES


@pytest.fixture(scope="module")
def e1m1():
    env = make_env("e1m1")
    yield env
    env.close()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_steps(scenario):
    env = make_env(scenario)
    obs, info = env.reset(seed=0)
    assert obs.shape == (60, 80, 3) and obs.dtype == np.uint8
    assert info["frame"].shape == (120, 160, 3) and info["variables"].shape == (len(VARIABLES),)
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and isinstance(reward, float)
        if terminated or truncated:
            env.reset()
    assert info["frame"].std() > 5  # a rendered picture, not a blank buffer
    env.close()


def test_e1m1_passes_gymnasium_check_and_is_seeded(e1m1):
    check_env(e1m1, skip_render_check=False)
    a, _ = e1m1.reset(seed=3)
    b, _ = e1m1.reset(seed=3)
    assert np.array_equal(a, b)


def heading(env) -> float:
    return math.radians(env.variable("ANGLE"))


def position(env) -> np.ndarray:
    return np.array([env.variable("POSITION_X"), env.variable("POSITION_Y")])


def angle_change(before: float, after: float) -> float:
    return (after - before + 180) % 360 - 180


def test_actions_move_and_turn_as_the_contract_says(e1m1):
    env = e1m1
    env.reset(seed=0)
    fs = env.config.frame_skip
    # Turning: bin 6 is +7 degrees per tic to the right; Doom's angle grows to the left.
    for turn_bin, degrees in ((6, 7.0), (0, -7.0), (4, 1.0)):
        before = env.variable("ANGLE")
        env.step(A.make(turn=turn_bin))
        assert angle_change(before, env.variable("ANGLE")) == pytest.approx(-degrees * fs, abs=0.01)
    # Forward moves along the heading, backward against it, strafe right to the heading's right.
    for action, direction in (
        (A.make(move=1), 0.0),
        (A.make(move=2), math.pi),
        (A.make(strafe=2), -math.pi / 2),
        (A.make(strafe=1), math.pi / 2),
    ):
        env.reset(seed=0)
        start, theta = position(env), heading(env) + direction
        for _ in range(3):
            env.step(action)
        moved = position(env) - start
        assert np.linalg.norm(moved) > 5
        assert np.dot(moved / np.linalg.norm(moved), [math.cos(theta), math.sin(theta)]) > 0.9
    env.reset(seed=0)
    start = position(env)
    env.step(A.noop())
    assert np.allclose(position(env), start)


def test_native_320x240_and_observation_downscale():
    env = DoomEnv(EnvConfig(scenario="basic", resolution=(320, 240)))
    obs, info = env.reset(seed=0)
    assert info["frame"].shape == (240, 320, 3) and obs.shape == (60, 80, 3)
    # The observation is the native frame box-filtered down: means agree closely.
    assert abs(float(obs.mean()) - float(info["frame"].mean())) < 1.0
    env.close()


def test_bad_scenario_map_or_resolution_is_a_clear_error():
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        make_env("nope")
    with pytest.raises(ScenarioError, match="map 'MAP01' is not in freedoom1.wad"):
        make_env("e1m1", map="MAP01")
    with pytest.raises(ScenarioError, match="resolution"):
        make_env("basic", resolution=(640, 480))
    assert {"E1M1", "E1M9", "E4M9"} <= wad_maps(VIZDOOM_DIR / "freedoom1.wad")
    env = make_env("e1m1", map="e1m2")  # other maps of the IWAD load
    env.reset(seed=0)
    env.close()
