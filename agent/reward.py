"""Reward shaping for the exploring, fighting agent, computed from VizDoom game variables.

The terms and their raw weights are GameNGen's (Valevski et al. 2024, "Diffusion Models Are Real-Time
Game Engines", appendix): player hit -100, player death -5000, enemy hit +300, enemy kill +1000, item
pickup +100, secret +500, new area +20 * (1 + 0.5 * L1 distance), health and armor change x10, ammo
10 * max(0, d) + min(0, d). The new-area distance is counted in grid cells from the episode's start cell.
Raw Doom-scale rewards make PPO's value loss explode and the policy collapse, so the sum is multiplied
by `scale` before PPO sees it. A scenario's own reward (basic: living -1, kill +100, miss -5) is added
with its own scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np

from data.episode import VARIABLES

TERMS: tuple[str, ...] = (
    "hit_taken",
    "death",
    "enemy_hit",
    "kill",
    "pickup",
    "secret",
    "new_area",
    "health",
    "armor",
    "ammo",
    "game",
)

_V = {name: i for i, name in enumerate(VARIABLES)}


@dataclass
class RewardConfig:
    """Weights of the shaped reward (GameNGen's, in Doom units) and the scales PPO sees them at."""

    hit_taken: float = -100.0  # per hit the player takes (HITS_TAKEN)
    death: float = -5000.0
    enemy_hit: float = 300.0  # per hit the player lands (HITCOUNT)
    kill: float = 1000.0
    pickup: float = 100.0  # per counted item (ITEMCOUNT)
    secret: float = 500.0
    new_area: float = (
        20.0  # per first visit of a grid cell, times (1 + new_area_distance * L1 cells from start)
    )
    new_area_distance: float = 0.5
    cell_size: float = 128.0  # map units per side of a grid cell (a Doom corridor is ~128 wide)
    health: float = 10.0  # per health point gained or lost
    armor: float = 10.0
    ammo_gain: float = 10.0  # per round picked up
    ammo_spent: float = 1.0  # per round spent (a penalty)
    scale: float = 1e-3  # shaped sum -> PPO reward: a kill is 1, a death -5
    game_scale: float = 1e-2  # the scenario's own reward -> PPO reward (basic: a kill is ~1)

    def to_dict(self) -> dict:
        return asdict(self)


class ShapedReward:
    """Per-step reward terms from consecutive game-variable vectors of one episode."""

    def __init__(self, config: RewardConfig | None = None):
        self.config = config or RewardConfig()
        self.visited: set[tuple[int, int]] = set()
        self.start: tuple[int, int] = (0, 0)
        self.prev: np.ndarray | None = None

    def cell(self, variables: np.ndarray) -> tuple[int, int]:
        c = self.config.cell_size
        return int(np.floor(variables[_V["POSITION_X"]] / c)), int(np.floor(variables[_V["POSITION_Y"]] / c))

    def reset(self, variables: np.ndarray) -> None:
        self.prev = np.asarray(variables, np.float32).copy()
        self.start = self.cell(self.prev)
        self.visited = {self.start}

    def step(self, variables: np.ndarray, game_reward: float = 0.0) -> dict[str, float]:
        """Terms of one step, already scaled; their sum is the reward PPO gets."""
        if self.prev is None:
            raise RuntimeError("ShapedReward.step before reset")
        c, cur = self.config, np.array(variables, np.float32)  # a copy: the env may edit its array in place
        d = {name: float(cur[i] - self.prev[i]) for name, i in _V.items()}
        terms = {
            "hit_taken": c.hit_taken * max(0.0, d["HITS_TAKEN"]),
            "death": c.death * float(cur[_V["DEAD"]] > 0 and self.prev[_V["DEAD"]] == 0),
            "enemy_hit": c.enemy_hit * max(0.0, d["HITCOUNT"]),
            "kill": c.kill * max(0.0, d["KILLCOUNT"]),
            "pickup": c.pickup * max(0.0, d["ITEMCOUNT"]),
            "secret": c.secret * max(0.0, d["SECRETCOUNT"]),
            "new_area": 0.0,
            "health": c.health * d["HEALTH"],
            "armor": c.armor * d["ARMOR"],
            "ammo": c.ammo_gain * max(0.0, d["SELECTED_WEAPON_AMMO"])
            + c.ammo_spent * min(0.0, d["SELECTED_WEAPON_AMMO"]),
        }
        if cur[_V["DEAD"]] > 0:  # the last state of a dead player is not a place worth visiting
            terms["health"] = terms["armor"] = terms["ammo"] = 0.0
        else:
            cell = self.cell(cur)
            if cell not in self.visited:
                self.visited.add(cell)
                dist = abs(cell[0] - self.start[0]) + abs(cell[1] - self.start[1])
                terms["new_area"] = c.new_area * (1.0 + c.new_area_distance * dist)
        terms = {k: v * c.scale for k, v in terms.items()}
        terms["game"] = c.game_scale * float(game_reward)
        self.prev = cur
        return terms


class ShapedRewardWrapper(gym.Wrapper):
    """Replaces the env's reward with the shaped one. `info["reward_terms"]` holds the step's terms; at
    the end of an episode `info["episode_terms"]` holds their sums, `info["episode_game_return"]` the
    scenario's own (unscaled) return, and `info["cells_visited"]` the distinct grid cells reached."""

    def __init__(self, env: gym.Env, config: RewardConfig | None = None):
        super().__init__(env)
        self.shaping = ShapedReward(config)
        self._sums = dict.fromkeys(TERMS, 0.0)
        self._game_return = 0.0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.shaping.reset(info["variables"])
        self._sums = dict.fromkeys(TERMS, 0.0)
        self._game_return = 0.0
        return obs, info

    def step(self, action):
        obs, game_reward, terminated, truncated, info = self.env.step(action)
        terms = self.shaping.step(info["variables"], game_reward)
        for k, v in terms.items():
            self._sums[k] += v
        self._game_return += game_reward
        info = {**info, "reward_terms": terms}
        if terminated or truncated:
            info["episode_terms"] = dict(self._sums)
            info["episode_game_return"] = self._game_return
            info["cells_visited"] = len(self.shaping.visited)
        return obs, float(sum(terms.values())), terminated, truncated, info
