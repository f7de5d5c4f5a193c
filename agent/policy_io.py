"""A trained policy on disk: SB3's zip plus `dreamdoom.json` (its PPOConfig, the action contract, the step
count), and loading it to drive collection or play.

Loading reads only JSON and tensors (`weights_only=True`), never SB3's pickled fields. Kept apart from
agent/ppo.py so that rolling a policy out never imports the training code.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from stable_baselines3.common.save_util import load_from_zip_file

from agent.ppo_config import PolicyError, PPOConfig
from data.actions import DEFAULT_ACTIONS, ActionContractError, ActionSpec
from data.durable import checksum_error

POLICY_NAME = "policy.zip"
META_NAME = "dreamdoom.json"  # our entry inside the SB3 zip


def read_meta(path: str | Path, action_spec: ActionSpec = DEFAULT_ACTIONS) -> dict:
    """Our JSON from a saved policy, with its checksum (where a sidecar holds one) and action contract
    checked."""
    path = Path(path)
    try:
        damage = checksum_error(path)
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file") from None
    except OSError as e:
        raise PolicyError(f"{path}: unreadable policy file ({e})") from e
    if damage:
        raise PolicyError(f"{path}: {damage}")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read(META_NAME))
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file") from None
    except KeyError:
        raise PolicyError(
            f"{path}: no {META_NAME} inside; not a policy saved by `dreamdoom agent train`"
        ) from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise PolicyError(f"{path}: unreadable policy file ({e})") from e
    try:
        action_spec.check_compatible(meta["action_contract"], str(path))
    except (ActionContractError, KeyError) as e:
        raise PolicyError(f"{path}: {e}") from e
    return meta


def build_policy(cfg: PPOConfig, action_spec: ActionSpec = DEFAULT_ACTIONS) -> ActorCriticCnnPolicy:
    w, h = cfg.obs_size
    obs_space = gym.spaces.Box(0, 255, (3, h, w), np.uint8)  # channels first, as VecTransposeImage gives
    return ActorCriticCnnPolicy(
        obs_space,
        action_spec.gym_space(),
        lr_schedule=lambda _: 0.0,
        features_extractor_kwargs={"features_dim": cfg.features_dim},
    )


class PPOPolicy:
    """A trained policy behind the collector's Policy face: stochastic, holding decisions as in training."""

    name = "ppo"

    def __init__(self, policy: ActorCriticCnnPolicy, cfg: PPOConfig, source: str):
        self.policy, self.cfg, self.source = policy.eval(), cfg, source
        self.rng = np.random.default_rng(0)
        self.action: np.ndarray | None = None
        self.t = 0

    def reset(self, rng: np.random.Generator) -> None:
        self.rng, self.action, self.t = rng, None, 0

    def probabilities(self, obs: np.ndarray) -> list[np.ndarray]:
        """Per action field, the policy's probabilities of each value for one (H, W, 3) observation."""
        w, h = self.cfg.obs_size
        if obs.shape != (h, w, 3):
            raise ValueError(f"{self.source}: trained on observations of {(h, w, 3)}, got {obs.shape}")
        x = torch.as_tensor(np.ascontiguousarray(obs.transpose(2, 0, 1)))[None]  # (1, 3, H, W) uint8
        with torch.no_grad():
            dist = self.policy.get_distribution(x.to(self.policy.device))
        return [d.probs[0].double().cpu().numpy() for d in dist.distribution]

    def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
        if self.t % self.cfg.hold == 0:
            if self.action is None or self.rng.random() >= self.cfg.sticky:
                self.action = np.array(
                    [self.rng.choice(len(p), p=p / p.sum()) for p in self.probabilities(obs)], np.int64
                )
        self.t += 1
        return self.action


def load_policy(path: str | Path, action_spec: ActionSpec = DEFAULT_ACTIONS) -> PPOPolicy:
    """A trained policy from `policy.zip` (or a run folder holding one), on CPU with one torch thread."""
    path = Path(path)
    if path.is_dir():
        path = path / POLICY_NAME
    meta = read_meta(path, action_spec)
    cfg = PPOConfig.from_dict(meta["config"], str(path))
    torch.set_num_threads(1)  # one thread per collector process: N workers share the cores
    policy = build_policy(cfg, action_spec)
    try:
        _, params, _ = load_from_zip_file(
            path, device="cpu", load_data=False
        )  # tensors only, weights_only=True
        weights = params["policy"]
        policy.load_state_dict(weights)
    except (KeyError, RuntimeError, ValueError, zipfile.BadZipFile) as e:
        raise PolicyError(f"{path}: policy weights missing or do not fit the saved config ({e})") from e
    bad = [k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise PolicyError(f"{path}: non-finite policy weights (NaN or inf) in {', '.join(bad[:5])}")
    return PPOPolicy(policy, cfg, str(path))
