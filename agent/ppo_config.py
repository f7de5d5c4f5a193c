"""The configuration of a PPO run: the game it plays, how decisions are held, and SB3's hyperparameters.

Saved inside every policy it trains (agent/policy_io.py) and read back from there; its fields are the
options of `dreamdoom agent train`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from agent.env import SCENARIOS, EnvConfig
from agent.reward import RewardConfig
from data.cli_args import MAX_SEED, arg


class PolicyError(ValueError):
    """A saved policy is missing, unreadable or of another action contract; the message names the file."""


@dataclass
class PPOConfig:
    """One PPO training run: the game it plays, how actions are held, and SB3's hyperparameters."""

    scenario: str = arg("e1m1", "scenario to train on", choices=sorted(SCENARIOS))
    steps: int = arg(300_000, "agent decisions over all envs (SB3 timesteps; frames = steps x hold)", ge=1)
    envs: int = arg(8, "parallel envs", ge=1, le=256)
    seed: int = arg(0, "seed of the envs, the action holding and the network", ge=0, le=MAX_SEED)
    frame_skip: int = arg(2, "tics per env step (= per recorded frame; 35 tics = 1 s)", ge=1, le=35)
    resolution: tuple[int, int] = arg((160, 120), "native frame size, 160x120 or 320x240")
    # NatureCNN's three convolutions (8/4, 4/2, 3/1) need at least 36 pixels a side
    obs_size: tuple[int, int] = arg((80, 60), "WIDTHxHEIGHT the policy sees", ge=36, le=640)
    skill: int = arg(3, "Doom skill", ge=1, le=5)
    max_episode_steps: int = arg(0, "cut episodes at N env steps (0: the scenario's own timeout)", ge=0)
    # 2 x frame_skip 2 = 4 tics, GameNGen's action repeat
    hold: int = arg(2, "env steps (frames) each decision is held for", ge=1, le=64)
    # Machado et al. 2018
    sticky: float = arg(0.25, "chance the previous decision is kept instead of the new one", ge=0, le=1)
    n_steps: int = arg(128, "decisions per env per PPO rollout", ge=1)
    batch_size: int = arg(256, "PPO minibatch (at most n_steps x envs is used)", ge=2)
    n_epochs: int = arg(4, "PPO epochs per rollout", ge=1)
    learning_rate: float = arg(2.5e-4, "Adam learning rate", gt=0, le=1, flag="--lr")
    gamma: float = arg(0.99, "discount", ge=0, le=1)
    gae_lambda: float = arg(0.95, "GAE lambda", ge=0, le=1)
    clip_range: float = arg(0.1, "PPO clip range", gt=0)
    ent_coef: float = arg(0.01, "entropy bonus", ge=0)
    vf_coef: float = arg(0.5, "value loss weight", ge=0)
    max_grad_norm: float = arg(0.5, "gradient clipping norm", gt=0)
    features_dim: int = arg(256, "NatureCNN output width", ge=1)
    # policy.zip, the point --resume starts from, is saved on a timer so an early kill loses minutes at most
    checkpoint_minutes: float = arg(2.0, "minutes between saves of policy.zip (0: none)", ge=0)
    checkpoint_every: int = arg(
        50_000, "steps between snapshots kept as checkpoints/policy_<steps>.zip (0: none)", ge=0
    )
    threads: int = arg(2, "torch CPU threads", ge=1)
    device: str = arg(
        "auto", "torch device of the policy network: auto (CUDA when there is one) | cpu | cuda"
    )
    vec: str = arg("dummy", "envs in one process, or one process each", choices=("dummy", "subproc"))
    reward: RewardConfig = field(default_factory=RewardConfig)

    def env_config(self) -> EnvConfig:
        return EnvConfig(
            scenario=self.scenario,
            resolution=tuple(self.resolution),
            obs_size=tuple(self.obs_size),
            frame_skip=self.frame_skip,
            skill=self.skill,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> PPOConfig:
        d = dict(d)
        try:
            reward = RewardConfig(**d.pop("reward", {}))
            for key in ("resolution", "obs_size"):
                if key in d:
                    d[key] = tuple(d[key])
            return cls(**d, reward=reward)
        except TypeError as e:  # a field this version does not know
            raise PolicyError(f"{where}: config does not fit this version of PPOConfig ({e})") from e
