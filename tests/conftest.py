import os

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_episode(
    rng: np.random.Generator, steps: int = 12, size: tuple[int, int] = (32, 24), meta: dict | None = None
):
    """A small episode with random content, for format tests."""
    from data.actions import DEFAULT_ACTIONS
    from data.episode import VARIABLES, Episode

    w, h = size
    return Episode(
        frames=rng.integers(0, 256, (steps, h, w, 3), dtype=np.uint8),
        actions=np.stack([rng.integers(0, n, steps) for n in DEFAULT_ACTIONS.sizes], axis=1),
        rewards=rng.normal(size=steps).astype(np.float32),
        dones=np.arange(steps) == steps - 1,
        variables=rng.normal(size=(steps, len(VARIABLES))).astype(np.float32),
        meta=meta or {"policy": "test"},
    )


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """Three short random-policy episodes of VizDoom's `basic` scenario, recorded by `collect` (so the engine
    can replay them). Shared by the world-model tests: copy it before changing it."""
    from agent.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("wm_data") / "data"
    collect(
        CollectConfig(out=str(out), scenario="basic", policy="random", episodes=3, workers=1, max_steps=40),
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def ae(dataset, tmp_path_factory):
    """A tiny autoencoder trained a few steps on `dataset` by `dreamdoom wm train-ae`."""
    from play.cli import main

    out = tmp_path_factory.mktemp("wm_ae") / "ae"
    argv = ["wm", "train-ae", "--data", str(dataset), "--preset", "tiny", "--out", str(out)]
    assert main([*argv, "--steps", "3", "--decoder-steps", "2", "--every", "4"]) == 0
    return out
