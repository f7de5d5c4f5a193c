"""PPO agent (stable-baselines3) that explores and fights, recording every episode it plays while it learns.

As in GameNGen (Valevski et al. 2024), the data is the agent's whole training run, clumsy to skilled.
Per env the wrappers stack, bottom up:

    DoomEnv -> TimeLimit? -> RecordEpisodes? -> ShapedRewardWrapper -> HoldAction -> Monitor

The recorder sits right on the engine, so it sees every frame and the action actually executed, and
every file is exactly one episode: SB3's auto-reset happens above it, so no recorded transition
crosses an episode boundary.

A saved policy is SB3's zip plus `dreamdoom.json` (this config, the action contract, the step count);
agent/policy_io.py reads it back.
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecTransposeImage
from tqdm import tqdm

from agent.env import DoomEnv, EnvConfig
from agent.policy_io import META_NAME, POLICY_NAME, read_meta
from agent.ppo_config import PolicyError, PPOConfig
from agent.reward import TERMS, RewardConfig, ShapedRewardWrapper
from agent.wrappers import HoldAction, RecordEpisodes
from data.actions import DEFAULT_ACTIONS
from data.dataset import ShardWriter, default_recorder, new_shard_name
from data.durable import write_checked
from data.episode import VARIABLES

CHECKPOINT_DIR = "checkpoints"


# -- the env stack ---------------------------------------------------------------------------------------


def make_env(cfg: PPOConfig, index: int, record_dir: str | None, shard_name: str):
    """A thunk building env `index` with the wrapper stack of this module (picklable for SubprocVecEnv)."""

    def build() -> gym.Env:
        torch.set_num_threads(1)  # in a subprocess the env needs no torch threads
        env_cfg = cfg.env_config()
        env: gym.Env = DoomEnv(env_cfg)
        if cfg.max_episode_steps:
            env = gym.wrappers.TimeLimit(env, cfg.max_episode_steps)
        if record_dir:
            manifest = env_cfg.manifest(
                default_recorder(
                    "ppo", source="agent train", env=index, hold=cfg.hold, sticky=cfg.sticky, skill=cfg.skill
                )
            )
            env = RecordEpisodes(
                env, ShardWriter(Path(record_dir) / f"{shard_name}-e{index:02d}", manifest), index
            )
        env = ShapedRewardWrapper(env, cfg.reward)
        env = HoldAction(env, cfg.hold, cfg.sticky, seed=cfg.seed * 1000 + index)
        return Monitor(env)

    return build


# -- saving and loading --------------------------------------------------------------------------------


def save_policy(model: PPO, path: Path, cfg: PPOConfig, policy_version: int) -> None:
    """SB3's zip plus our JSON, whole or not at all (a kill leaves the old file), its SHA-256 beside it."""
    meta = {
        "config": cfg.to_dict(),
        "action_contract": DEFAULT_ACTIONS.to_dict(),
        "num_timesteps": int(model.num_timesteps),
        "policy_version": int(policy_version),
    }

    def write(tmp: Path) -> None:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(META_NAME, json.dumps(meta, indent=2))

    write_checked(path, write)


# -- training ------------------------------------------------------------------------------------------


class TrainCallback(BaseCallback):
    """Progress bar, per-term reward and coverage logs, recorder tags and periodic checkpoints."""

    def __init__(self, cfg: PPOConfig, run_dir: Path, progress: bool):
        super().__init__()
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.bar: tqdm | None = None
        self.episodes: list[dict] = []  # per finished episode since the last log
        self.all_episodes = 0
        self.next_checkpoint = 0
        self.last_save = 0.0
        self.start_time = 0.0
        self.start_steps = 0

    @property
    def policy_version(self) -> int:
        """PPO updates so far: one per rollout."""
        return self.model.num_timesteps // (self.cfg.n_steps * self.cfg.envs)

    def _on_training_start(self) -> None:
        self.start_time, self.start_steps = time.perf_counter(), self.model.num_timesteps
        self.last_save = self.start_time
        every = self.cfg.checkpoint_every
        self.next_checkpoint = (self.model.num_timesteps // every + 1) * every if every else 0
        self.bar = tqdm(
            total=self.cfg.steps,
            initial=self.model.num_timesteps,
            unit="step",
            dynamic_ncols=True,
            disable=not self.progress,
            desc=f"ppo {self.cfg.scenario}",
        )

    def _on_rollout_start(self) -> None:
        if self.training_env.has_attr("set_training_tag"):
            self.training_env.env_method("set_training_tag", self.model.num_timesteps, self.policy_version)

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode_terms" in info:
                v = info["variables"]
                self.episodes.append(
                    {
                        **info["episode_terms"],
                        "return": info["episode"]["r"],
                        "length": info["episode"]["l"],
                        "game_return": info["episode_game_return"],
                        "cells": info["cells_visited"],
                        "kills": v[VARIABLES.index("KILLCOUNT")],
                        "items": v[VARIABLES.index("ITEMCOUNT")],
                    }
                )
        self.bar.update(self.training_env.num_envs)
        snapshot = self.next_checkpoint and self.model.num_timesteps >= self.next_checkpoint
        if snapshot:
            folder = self.run_dir / CHECKPOINT_DIR
            folder.mkdir(exist_ok=True)
            save_policy(
                self.model,
                folder / f"policy_{self.model.num_timesteps:09d}.zip",
                self.cfg,
                self.policy_version,
            )
            self.next_checkpoint += self.cfg.checkpoint_every
        minutes = self.cfg.checkpoint_minutes
        if snapshot or (minutes > 0 and time.perf_counter() - self.last_save >= minutes * 60):
            save_policy(self.model, self.run_dir / POLICY_NAME, self.cfg, self.policy_version)
            self.last_save = time.perf_counter()
        return True

    def _on_rollout_end(self) -> None:
        sps = (self.model.num_timesteps - self.start_steps) / max(1e-9, time.perf_counter() - self.start_time)
        self.logger.record("charts/steps_per_second", sps)
        self.logger.record("charts/frames_per_second", sps * self.cfg.hold)
        if self.episodes:
            mean = {k: float(np.mean([e[k] for e in self.episodes])) for k in self.episodes[0]}
            for term in TERMS:
                self.logger.record(f"reward/{term}", mean[term])
            for k in ("game_return", "cells", "kills", "items"):
                self.logger.record(f"charts/{k}", mean[k])
            self.all_episodes += len(self.episodes)
            self.bar.set_postfix(
                ret=f"{mean['return']:.2f}",
                cells=f"{mean['cells']:.0f}",
                eps=self.all_episodes,
                sps=f"{sps:.0f}",
                refresh=False,
            )
            self.episodes = []

    def _on_training_end(self) -> None:
        self.bar.close()


def make_model(cfg: PPOConfig, venv, run_dir: Path) -> PPO:
    return PPO(
        "CnnPolicy",
        venv,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        device=cfg.device,
        policy_kwargs={"features_extractor_kwargs": {"features_dim": cfg.features_dim}},
        tensorboard_log=str(run_dir / "tb"),
        verbose=0,
    )


def train(
    cfg: PPOConfig,
    run_dir: str | Path,
    record_dir: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train (or resume) PPO; saves run_dir/policy.zip and returns a summary with the throughput."""
    run_dir = Path(run_dir)
    policy_path = run_dir / POLICY_NAME
    cfg.env_config().scenario_spec()  # fail fast on a bad scenario name
    if cfg.vec not in ("dummy", "subproc"):
        raise ValueError(f"--vec must be dummy or subproc, got {cfg.vec!r}")
    if policy_path.exists() and not resume:
        raise FileExistsError(
            f"{policy_path} exists: pass --resume to continue that run, or choose another --out"
        )
    meta = None
    if resume:
        if not policy_path.exists():
            raise PolicyError(f"{policy_path}: nothing to resume (no such policy file)")
        meta = read_meta(policy_path)
        saved = PPOConfig.from_dict(meta["config"], str(policy_path))
        saved.steps, saved.threads, saved.vec, saved.device = (
            cfg.steps,
            cfg.threads,
            cfg.vec,
            cfg.device,
        )  # may change between sessions
        cfg = saved
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    print("ppo config:", json.dumps(cfg.to_dict()), file=sys.stderr)
    torch.set_num_threads(cfg.threads)

    shard_name = new_shard_name(f"ppo-{run_dir.name}-s{cfg.seed}")  # unique: runs may share a dataset
    thunks = [make_env(cfg, i, record_dir, shard_name) for i in range(cfg.envs)]
    venv = SubprocVecEnv(thunks, start_method="spawn") if cfg.vec == "subproc" else DummyVecEnv(thunks)
    venv = VecTransposeImage(venv)
    model = make_model(cfg, venv, run_dir)
    if meta is not None:
        model.set_parameters(str(policy_path), exact_match=True)  # tensors only (weights_only=True)
        model.num_timesteps = int(meta["num_timesteps"])
    done_before = model.num_timesteps
    callback = TrainCallback(cfg, run_dir, progress)
    start = time.perf_counter()
    try:
        if cfg.steps > done_before:
            model.learn(
                cfg.steps - done_before,
                callback=callback,
                reset_num_timesteps=meta is None,
                tb_log_name="ppo",
            )
    finally:
        seconds = time.perf_counter() - start
        save_policy(model, policy_path, cfg, model.num_timesteps // (cfg.n_steps * cfg.envs))
        recorded = sum(venv.env_method("finish")) if record_dir else 0
        venv.close()
    steps = model.num_timesteps - done_before
    summary = {
        "steps": int(model.num_timesteps),
        "steps_this_run": int(steps),
        "seconds": round(seconds, 1),
        "steps_per_second": round(steps / seconds, 1) if seconds else 0.0,
        "frames_per_second": round(steps * cfg.hold / seconds, 1) if seconds else 0.0,
        "recording": bool(record_dir),
        "episodes_recorded": int(recorded),
        "envs": cfg.envs,
        "threads": cfg.threads,
        "vec": cfg.vec,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate(
    policy, env_cfg: EnvConfig, episodes: int, seed: int = 0, reward: RewardConfig | None = None
) -> dict:
    """Mean scenario return, shaped return and grid cells over `episodes` episodes of any Policy."""
    env = ShapedRewardWrapper(DoomEnv(env_cfg), reward)
    game, shaped, cells = [], [], []
    try:
        for i in range(episodes):
            rng = np.random.default_rng((seed, i))
            obs, info = env.reset(seed=int(rng.integers(2**31 - 1)))
            policy.reset(rng)
            total, done = 0.0, False
            while not done:
                obs, r, terminated, truncated, info = env.step(policy.act(obs, info))
                total += r
                done = terminated or truncated
            game.append(info["episode_game_return"])
            shaped.append(total)
            cells.append(info["cells_visited"])
    finally:
        env.close()
    return {
        "game_return": float(np.mean(game)),
        "shaped_return": float(np.mean(shaped)),
        "cells": float(np.mean(cells)),
        "episodes": episodes,
    }


def main(cfg: PPOConfig, run_dir: str, record_dir: str | None, resume: bool, progress: bool = True) -> int:
    """`dreamdoom agent train` once its options are checked (agent/cli.py): errors are the CLI's to report."""
    summary = train(cfg, run_dir, record_dir, resume, progress)
    rec = (
        f", recording {summary['episodes_recorded']} episodes to {record_dir}"
        if record_dir
        else ", not recording"
    )
    print(
        f"trained to step {summary['steps']:,} ({summary['steps_this_run']:,} this run) "
        f"in {summary['seconds']:.0f} s: "
        f"{summary['steps_per_second']:.0f} agent steps/s, {summary['frames_per_second']:.0f} env frames/s "
        f"with {summary['envs']} envs{rec}; policy -> {Path(run_dir) / POLICY_NAME}"
    )
    return 0
