"""Control by image motion (world_model/evaluation/control.py): what it reads off dreams that turn and that
do not."""

from pathlib import Path

import numpy as np
import pytest
import torch

from data.actions import DEFAULT_ACTIONS
from data.dataset import Dataset
from world_model.evaluation.control import evaluate_motion_one_step, motion_figures
from world_model.evaluation.rollout import Dreamer, load_heldout
from world_model.model.checkpoint import dit_config_for, load_autoencoder, load_world_model, save_world_model
from world_model.model.config import DiffusionConfig, get_preset
from world_model.model.dit import DiT

E1M1 = Path(__file__).resolve().parents[1] / "checkpoints" / "e1m1"  # the shipped E1M1 model


def test_figures_of_a_dream_that_turns_as_far_as_the_engine_one_that_copies_and_one_that_turns_back():
    engine_rec = np.array([19.0, -18.0, 0.5, 20.0, -0.2])
    turns = motion_figures(np.full(4, 19.0), np.full(4, -19.0), 38.0, engine_rec, engine_rec)
    assert turns["turn_gain"] == pytest.approx(1.0) and turns["right_way_share"] == 1.0
    assert turns["recorded"]["correlation"] == pytest.approx(1.0)
    assert turns["recorded"]["same_way_share"] == 1.0 and turns["recorded"]["turning"] == 3
    still = motion_figures(np.zeros(4), np.zeros(4), 38.0, np.zeros(5), engine_rec)
    assert still["turn_gain"] == 0.0 and still["right_way_share"] == 0.0
    assert still["recorded"]["correlation"] is None  # a dream that never moves correlates with nothing
    back = motion_figures(np.full(4, -10.0), np.full(4, 10.0), 38.0, -engine_rec, engine_rec)
    assert back["turn_gain"] == pytest.approx(-20 / 38) and back["right_way_share"] == 0.0
    assert back["recorded"]["same_way_share"] == 0.0
    # per-start engine figures; a start where the engine's view did not move is left out, not counted wrong
    mixed = motion_figures(
        np.array([19.0, 0.0]), np.array([-19.0, 0.0]), np.array([38.0, 1.0]), engine_rec, engine_rec
    )
    assert mixed["judged"] == 1 and mixed["right_way_share"] == 1.0
    unknown = motion_figures(np.full(4, 19.0), np.full(4, -19.0), None, engine_rec, engine_rec)
    # with no engine figure there is no gain; the right way is the estimator's sign (+ as turning right)
    assert unknown["turn_gain"] is None and unknown["right_way_share"] == 1.0


@pytest.fixture(scope="module")
def e1m1(tmp_path_factory):
    from agent.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("motion_e1m1") / "data"
    cfg = CollectConfig(
        out=str(out), scenario="e1m1", policy="random", episodes=2, workers=1, max_steps=150, seed=11
    )
    collect(cfg, progress=False)
    return out


def untrained(path, ego_warp: bool):
    """The shipped autoencoder and a fresh DiT (which outputs zero), the change taken from the clean last
    latent: without ego_warp its dream copies the last frame; with it, the last frame turned by the turn."""
    ae, _ = load_autoencoder(E1M1)
    p = get_preset("tiny")
    dit = DiT(dit_config_for(p.dit, ae, (160, 120), DEFAULT_ACTIONS))
    diffusion = DiffusionConfig(prediction="edm", clean_residual=True, ego_warp=ego_warp)
    save_world_model(path, ae, dit, dit, diffusion, p.train, DEFAULT_ACTIONS, (160, 120), 2, step=0)
    return load_world_model(path)


@pytest.mark.parametrize("ego_warp", [True, False])
def test_one_step_motion_reads_a_dream_that_turns_and_one_that_copies(e1m1, tmp_path, ego_warp):
    ck = untrained(tmp_path / "ckpt", ego_warp)
    ds = Dataset(e1m1)
    held = load_heldout(ds, list(ds.episodes), [], ck, torch.device("cpu"), limit=10**6)
    targets = held.windows.targets[::3]
    m = evaluate_motion_one_step(Dreamer(ck, torch.device("cpu"), 2), held, targets, DEFAULT_ACTIONS, seed=0)
    engine = m["engine_fast_turns"]
    assert engine["right"] > 10 and engine["left"] < -10 and engine["estimator_right_way"] >= 0.8
    assert m["starts"] == len(targets)
    if ego_warp:  # the turned last frame moves as the engine's view does (through the 8x autoencoder's blur)
        assert 0.5 < m["turn_gain"] < 1.3 and m["right_way_share"] >= 0.7
        assert m["recorded"]["correlation"] > 0.3 and m["recorded"]["same_way_share"] >= 0.6
    else:  # a copy of the last frame does not turn
        assert abs(m["turn_gain"]) < 0.1 and m["right_way_share"] <= 0.1
        assert abs(m["dream_right_px"]) < 2 and abs(m["dream_left_px"]) < 2
