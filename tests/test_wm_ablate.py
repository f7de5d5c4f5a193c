"""`wm train --set` and `wm ablate`: recipes as checked config overrides, compared at one budget."""

import json

import pytest
import torch

from play.cli import main
from world_model.model.checkpoint import load_world_model
from world_model.model.config import apply_overrides, get_preset


def test_overrides_change_the_named_fields_and_nothing_else():
    base = get_preset("cpu4x")
    p = apply_overrides(base, ["dit.action_tokens=true", "diffusion.prediction=x0", "dit.context_len=2"])
    assert p.dit.action_tokens is True and p.diffusion.prediction == "x0" and p.dit.context_len == 2
    assert p.dit.hidden == base.dit.hidden and p.train == base.train
    assert base.dit.action_tokens is False  # the registry's preset is untouched
    assert apply_overrides(base, ["diffusion.action_guidance=2"]).diffusion.action_guidance == 2.0
    picked = get_preset("cpu4x-edm")  # the ablation's pick is the base plus these items
    items = ["diffusion.prediction=edm", "diffusion.clean_residual=true"]
    items += ["diffusion.action_drop_prob=0.1", "diffusion.action_guidance=2"]
    assert apply_overrides(base, items).diffusion == picked.diffusion and picked.dit == base.dit


@pytest.mark.parametrize(
    "item, words",
    [
        ("dit.actions_tokens=true", ["has no field 'actions_tokens'", "action_tokens"]),
        ("dit.context_len=two", ["DiTConfig.context_len", "want an integer"]),
        ("diffusion.prediction=z", ["prediction = 'z'", "choose one of"]),
        ("ae.channels=[8,16]", ["section 'ae'"]),
        ("context_len=2", ["SECTION.FIELD=VALUE"]),
        # the autoencoder decides the latent grid: set here, it used to be silently overwritten
        ("dit.latent_size=[4,4]", ["dit.latent_size", "the autoencoder decides it: (15, 20)"]),
        ("dit.mlp_ratio=0.01", ["DiTConfig.mlp_ratio", "zero-width MLP"]),
    ],
)
def test_a_bad_override_is_refused_before_training_naming_it(dataset, ae, tmp_path, capsys, item, words):
    out = tmp_path / "run"
    argv = ["wm", "train", "--data", str(dataset), "--ae", str(ae), "--preset", "tiny", "--out", str(out)]
    assert main([*argv, "--steps", "2", "--set", item]) == 2
    err = capsys.readouterr().err
    assert item in err and all(w in err for w in words), err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert not out.exists()


def test_set_trains_the_recipe_and_saves_it_in_the_checkpoint(dataset, ae, tmp_path):
    out = tmp_path / "run"
    argv = ["wm", "train", "--data", str(dataset), "--ae", str(ae), "--preset", "tiny", "--out", str(out)]
    recipe = ["dit.action_tokens=true", "diffusion.action_drop_prob=0.5", "diffusion.action_guidance=2"]
    assert main([*argv, "--steps", "3", "--set", *recipe]) == 0
    ck = load_world_model(out / "ckpt")
    assert ck.dit_cfg.action_tokens and ck.diffusion.action_guidance == 2.0
    assert ck.diffusion.action_drop_prob == 0.5
    assert main([*argv, "--steps", "4", "--resume", "--set", "dit.context_len=1"]) == 2  # recipe is saved


def test_ablate_writes_one_row_per_variant_and_skips_finished_ones(dataset, ae, tmp_path, capsys):
    out = tmp_path / "ablate"
    argv = [
        "wm", "ablate", "--data", str(dataset), "--ae", str(ae), "--heldout", str(dataset),
        "--out", str(out), "--preset", "tiny", "--minutes", "0.02",
        "--transitions", "4", "--rollouts", "1", "--horizon", "6", "--control-cases", "1",
        "--stability-frames", "8", "--probe-steps", "3", "--curve-every", "2", "--curve-starts", "2",
        "--variant", "base", "tokens:dit.action_tokens=true,diffusion.prediction=x0",
    ]  # fmt: skip
    assert main(argv) == 0
    curve = json.loads((out / "curve.json").read_text())["runs"]
    assert list(curve) == ["base", "tokens"] and (out / "curve.png").exists()
    for name, points in curve.items():  # a point for each snapshot the run kept, every 2 steps
        steps = load_world_model(out / name / "ckpt").step
        assert [p["step"] for p in points] == list(range(2, steps + 1, 2))
    rows = json.loads((out / "table.json").read_text())
    assert [r["variant"] for r in rows] == ["base", "tokens"]
    assert rows[1]["recipe"] == ["dit.action_tokens=true", "diffusion.prediction=x0"]
    for r in rows:
        assert r["train_steps"] >= 1 and r["samples_per_s"] > 0 and r["play_ms"] > 0
        assert -1 <= r["tf_edge_corr"] <= 1 and r["tf_ceiling"] == pytest.approx(rows[0]["tf_ceiling"])
        assert r["turn_sign_engine"] is not None or r["action_response"] is not None
        # control by image motion, from the variant's eval report
        report = json.loads((out / r["variant"] / "eval" / "report.json").read_text())
        one = report["control"]["motion"]["one_step"]
        assert r["motion_turn_gain"] == one["turn_gain"] and r["motion_right_way"] == one["right_way_share"]
        assert r["motion_cases_right_way"] == report["control"]["motion"]["cases"]["right_way_share"]
    assert load_world_model(out / "tokens" / "ckpt").dit_cfg.action_tokens
    table = (out / "table.md").read_text()
    assert "| base |" in table and "| tokens |" in table
    assert "| turn by motion, 1 step: gain, right way | over 16 steps |" in table
    assert (out / "sheet.png").stat().st_size > 0
    stamp = (out / "base" / "ckpt" / "config.json").stat().st_mtime_ns
    capsys.readouterr()
    (out / "sheet.png").unlink()
    assert main(argv) == 0  # run again: nothing retrained, the table and the picture are rebuilt
    assert (out / "sheet.png").stat().st_size > 0
    assert "already evaluated" in capsys.readouterr().out
    assert (out / "base" / "ckpt" / "config.json").stat().st_mtime_ns == stamp
    assert [r["variant"] for r in json.loads((out / "table.json").read_text())] == ["base", "tokens"]


def test_ablate_refuses_a_bad_variant_before_any_training(dataset, ae, tmp_path, capsys):
    out = tmp_path / "ablate"
    argv = ["wm", "ablate", "--data", str(dataset), "--ae", str(ae), "--heldout", str(dataset)]
    assert main([*argv, "--out", str(out), "--variant", "ok", "bad:dit.depth=deep"]) == 2
    assert "bad:" in capsys.readouterr().err and not (out / "ok").exists()
    assert main([*argv, "--out", str(out), "--variant", "a", "a:dit.depth=2"]) == 2
    assert "given twice" in capsys.readouterr().err


def test_action_tokens_let_the_action_reach_every_token():
    from world_model.model.config import DiTConfig
    from world_model.model.dit import DiT

    torch.manual_seed(0)
    cfg = DiTConfig(latent_channels=4, latent_size=(6, 8), context_len=2, hidden=32, depth=2, heads=2,
                    action_tokens=True)  # fmt: skip
    dit = DiT(cfg)
    for p in dit.parameters():  # leave the zero init, so the output depends on the inputs
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 4, 6, 8), torch.rand(2)
    ctx, bucket = torch.randn(2, 2, 4, 6, 8), torch.zeros(2, dtype=torch.long)
    acts = torch.zeros(2, 3, 5, dtype=torch.long)
    other = acts.clone()
    other[:, -1, 2] = 6  # the current turn only
    out, out_other = dit(x, t, ctx, bucket, acts), dit(x, t, ctx, bucket, other)
    assert out.shape == x.shape and not torch.allclose(out, out_other)
    none = torch.full_like(acts, -1)  # "no action" embeds as zero: the same as zeroed tables
    for table in dit.action_embedder.tables:
        torch.nn.init.zeros_(table.weight)
    assert torch.allclose(dit(x, t, ctx, bucket, none), dit(x, t, ctx, bucket, acts))
