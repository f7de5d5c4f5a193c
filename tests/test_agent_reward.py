import numpy as np
import pytest

from agent.env import make_env
from agent.reward import TERMS, RewardConfig, ShapedReward, ShapedRewardWrapper
from data.episode import VARIABLES


def state(**values) -> np.ndarray:
    v = np.zeros(len(VARIABLES), np.float32)
    v[VARIABLES.index("HEALTH")] = 100
    for name, value in values.items():
        v[VARIABLES.index(name)] = value
    return v


def test_event_terms_use_gamengen_weights_scaled():
    cfg = RewardConfig(scale=1e-3, game_scale=0.0)
    shaping = ShapedReward(cfg)
    shaping.reset(state())
    terms = shaping.step(state(KILLCOUNT=1, HITCOUNT=2, ITEMCOUNT=1, SECRETCOUNT=1, HITS_TAKEN=1))
    assert terms["kill"] == pytest.approx(1.0)
    assert terms["enemy_hit"] == pytest.approx(0.6)
    assert terms["pickup"] == pytest.approx(0.1)
    assert terms["secret"] == pytest.approx(0.5)
    assert terms["hit_taken"] == pytest.approx(-0.1)
    assert set(terms) == set(TERMS)
    # Counters that stay put give nothing the next step.
    again = shaping.step(state(KILLCOUNT=1, HITCOUNT=2, ITEMCOUNT=1, SECRETCOUNT=1, HITS_TAKEN=1))
    assert all(v == 0 for v in again.values())


def test_health_armor_and_asymmetric_ammo():
    shaping = ShapedReward(RewardConfig(scale=1.0))
    shaping.reset(state(SELECTED_WEAPON_AMMO=50))
    terms = shaping.step(state(HEALTH=90, ARMOR=5, SELECTED_WEAPON_AMMO=48))
    assert terms["health"] == -100 and terms["armor"] == 50
    assert terms["ammo"] == -2  # spending costs 1 per round
    terms = shaping.step(state(HEALTH=90, ARMOR=5, SELECTED_WEAPON_AMMO=58))
    assert terms["ammo"] == 100  # picking up gains 10 per round


def test_death_is_counted_once_even_if_the_env_edits_its_array():
    shaping = ShapedReward(RewardConfig(scale=1.0))
    shaping.reset(state())
    v = state(HEALTH=0)
    shaping.step(v)
    v[VARIABLES.index("DEAD")] = 1.0  # DoomEnv marks death in place on the array it handed out
    terms = shaping.step(v)
    assert terms["death"] == -5000
    assert terms["health"] == 0 and terms["new_area"] == 0
    assert shaping.step(v)["death"] == 0


def test_new_area_bonus_grows_with_l1_distance_and_pays_once():
    cfg = RewardConfig(scale=1.0, cell_size=100.0)
    shaping = ShapedReward(cfg)
    shaping.reset(state(POSITION_X=50, POSITION_Y=50))
    assert shaping.step(state(POSITION_X=60, POSITION_Y=70))["new_area"] == 0  # same cell as the start
    assert shaping.step(state(POSITION_X=150, POSITION_Y=50))["new_area"] == pytest.approx(20 * 1.5)
    assert shaping.step(state(POSITION_X=250, POSITION_Y=-150))["new_area"] == pytest.approx(
        20 * (1 + 0.5 * 4)
    )
    assert shaping.step(state(POSITION_X=150, POSITION_Y=50))["new_area"] == 0  # visited before
    assert len(shaping.visited) == 3


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="before reset"):
        ShapedReward().step(state())


def test_wrapper_on_basic_sums_terms_per_episode():
    env = ShapedRewardWrapper(make_env("basic"), RewardConfig(game_scale=0.01))
    try:
        obs, info = env.reset(seed=1)
        total, game, done, steps = 0.0, 0.0, False, 0
        fire = env.unwrapped.spec_actions.make(attack=1)
        while not done:
            obs, r, terminated, truncated, info = env.step(fire)
            total += r
            game += info["reward_terms"]["game"]
            done = terminated or truncated
            steps += 1
        assert sum(info["episode_terms"].values()) == pytest.approx(total, abs=1e-5)
        assert info["episode_terms"]["game"] == pytest.approx(game)
        assert info["episode_game_return"] == pytest.approx(game / 0.01, rel=1e-4)
        assert info["episode_terms"]["ammo"] < 0  # firing spends ammo
        assert info["cells_visited"] >= 1
    finally:
        env.close()
