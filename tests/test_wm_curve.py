"""Snapshots for learning curves (`wm train --keep-every`), `wm curve`, and the action pathways they judge."""

from __future__ import annotations

import json

import pytest
import torch

from data.actions import DEFAULT_ACTIONS
from play.cli import main
from world_model.evaluation.control import fast_turns, forced_turn
from world_model.model.checkpoint import load_world_model
from world_model.model.config import get_preset
from world_model.model.dit import DiT
from world_model.training.train import TrainArgs, train

TURN = DEFAULT_ACTIONS.fields.index("turn")


def test_keep_every_snapshots_and_the_curve_reads_them(dataset, ae, tmp_path, capsys):
    run = tmp_path / "run"
    recipe = ("diffusion.ego_warp=true", "dit.action_input=true")
    train(
        TrainArgs(
            data=str(dataset), ae=str(ae), out=str(run), preset="tiny", steps=6, keep_every=3, set=recipe
        )
    )
    snaps = sorted(p.name for p in (run / "snapshots").iterdir())
    assert snaps == ["step-0000003", "step-0000006"]
    ck = load_world_model(run / "snapshots" / "step-0000003")
    assert ck.step == 3 and ck.diffusion.ego_warp and ck.dit_cfg.action_input  # the recipe is saved
    assert sorted(p.name for p in (run / "snapshots" / "step-0000003").iterdir()) == [
        "autoencoder.safetensors",
        "config.json",
        "dit_ema.safetensors",
    ]
    out = tmp_path / "curve"
    argv = [
        "wm",
        "curve",
        "--run",
        f"warp={run}",
        "--heldout",
        str(dataset),
        "--out",
        str(out),
        "--starts",
        "4",
        "--rollouts",
        "2",
        "--stability-frames",
        "40",
    ]
    assert main(argv) == 0
    curve = json.loads((out / "curve.json").read_text())
    points = curve["runs"]["warp"]
    assert [p["step"] for p in points] == [3, 6] and [p["samples"] for p in points] == [24, 48]
    for p in points:
        assert p["starts"] == 4 and -1 <= p["edge_corr"] <= 1 and 0 <= p["right_way_share"] <= 1
        # rollouts (the episodes are 40 frames: h16 only) and a stability run beside the engine, with its hold
        assert list(p["rollout"]) == ["16"] and -1 <= p["rollout"]["16"]["model"] <= 1
        assert -1 <= p["rollout"]["16"]["copy_last"] <= 1
        st = p["stability"]
        assert st["frames"] == 40 and 0 <= st["share_above_floor"] <= 1 and 0 <= st["seconds_held"] <= 1
    assert (out / "curve.png").stat().st_size > 0 and "| warp | 24 |" in (out / "curve.md").read_text()
    # A run without snapshots, or a name given twice, is one line and exit 2 before any work.
    capsys.readouterr()
    assert main(["wm", "curve", "--run", f"a={tmp_path}", "--heldout", str(dataset), "--out", str(out)]) == 2
    assert "holds no snapshot" in capsys.readouterr().err
    twice = ["--run", f"a={run}", f"a={run}"]
    assert main(["wm", "curve", *twice, "--heldout", str(dataset), "--out", str(tmp_path / "c2")]) == 2


def test_forced_turn_presses_nothing_else():
    acts = torch.ones((2, 3, 5), dtype=torch.long)
    left, right = fast_turns(DEFAULT_ACTIONS)
    out = forced_turn(acts, DEFAULT_ACTIONS, right)
    expected = torch.as_tensor(DEFAULT_ACTIONS.noop())
    expected[TURN] = right
    assert torch.equal(out[:, -1], expected.expand(2, -1)) and torch.equal(out[:, :-1], acts[:, :-1])
    assert (left, right) == (0, len(DEFAULT_ACTIONS.turn_degrees_per_tic) - 1)


@pytest.mark.parametrize("pathway", ["action_input", "adaln"])
def test_the_input_pathway_hears_the_current_turn_where_adaln_zero_does_not(pathway):
    # Fresh and untouched, adaLN-Zero's modulation is zero, so no block hears the action and the gradient that
    # would teach it is zero too; the input pathway reaches every token from the first step.
    cfg = get_preset("tiny").dit
    cfg.action_input = pathway == "action_input"
    torch.manual_seed(0)
    model = DiT(cfg)
    with torch.no_grad():  # the output layer as after some training, so that block outputs show
        model.final_layer.linear.weight.normal_(std=0.1)
        model.final_layer.adaLN_modulation[-1].bias.normal_(std=0.1)
    k, (h, w) = cfg.context_len, cfg.latent_size
    x, ctx = torch.randn(2, cfg.latent_channels, h, w), torch.randn(2, k, cfg.latent_channels, h, w)
    acts = torch.as_tensor(DEFAULT_ACTIONS.noop()).repeat(2, k + 1, 1)
    left, right = acts.clone(), acts.clone()
    left[:, -1, TURN], right[:, -1, TURN] = fast_turns(DEFAULT_ACTIONS)
    t, bucket = torch.full((2,), 0.5), torch.zeros(2, dtype=torch.long)

    def out(a):
        return model(x, t, ctx, bucket, a)

    change = (out(right) - out(left)).norm() / out(left).norm()
    out(right).square().mean().backward()
    table = (model.action_input if cfg.action_input else model.action_embedder).tables[TURN].weight.grad
    if pathway == "adaln":  # no output hears the turn, and no gradient reaches its embedding
        assert change == 0 and (table is None or not table.any())
    else:
        assert change > 0.1 and table.abs().sum() > 0
