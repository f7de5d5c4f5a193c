"""The exported step graph (world_model/model/onnx_step.py) on ONNX Runtime against WorldModelEnv.step: the
same next latents over an autoregressive run, with the page's rolling context (play/web_dream.py)."""

import dataclasses

import numpy as np
import pytest
import torch

from data.actions import DEFAULT_ACTIONS
from play.app import DEFAULT_CKPT
from play.web_dream import PageDream, PageNoise, parse_script
from world_model.model.checkpoint import load_world_model, make_untrained_checkpoint
from world_model.model.dit import DiT
from world_model.model.env import WorldModelEnv
from world_model.model.onnx_step import example_inputs, export_step, optimize, share_weights, step_input_names

RES = (32, 24)
TOLERANCE = 1e-3  # latent max abs difference against PyTorch
# Turns of every size both ways, moves, fire: the warp's grid, the action embeddings and CFG all get used.
SCRIPT = "2*1,0,6,0,0;2*0,2,0,1,0;2*2,1,3,0,1;2*1,0,1,0,0;2*0,0,5,1,0;2*1,1,2,0,0;2*0,0,4,0,0;2*2,0,3,0,0"


def randomized(tmp_path, seed: int = 0, dit: dict | None = None, **diffusion):
    """A tiny checkpoint whose DiT and decoder compute something (a fresh DiT outputs zero), with these
    DiT and diffusion settings."""
    path = make_untrained_checkpoint(tmp_path / "ckpt", preset="tiny", resolution=RES, seed=seed)
    ck = load_world_model(path)
    if dit:
        dit_cfg = dataclasses.replace(ck.dit_cfg, **dit)
        ck = dataclasses.replace(ck, dit=DiT(dit_cfg).eval(), dit_cfg=dit_cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in [*ck.dit.parameters(), *ck.ae.decoder.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return dataclasses.replace(ck, diffusion=dataclasses.replace(ck.diffusion, **diffusion))


def start_frames(ck) -> np.ndarray:
    """K random frames at the checkpoint's size."""
    w, h = ck.resolution
    return np.random.default_rng(0).integers(0, 256, (ck.dit_cfg.context_len, h, w, 3), dtype=np.uint8)


def compare(ck, tmp_path, steps: int, frames: int) -> tuple[float, int]:
    """Max abs difference of the next latents, and of the frames' pixels, between WorldModelEnv.step and the
    graph with the page's rolling context, fed the noise the env drew, over `frames` steps of SCRIPT."""
    env = WorldModelEnv(ck, seed=7, capture=False)
    env.sampling_steps = steps
    env.reset(start_frames(ck))
    graph = optimize(export_step(ck, steps, tmp_path / f"step_{steps}.onnx"))  # the page's form
    dream = PageDream(graph, step_input_names(ck), *env.context)
    actions = parse_script(SCRIPT)
    worst_latent, worst_pixel = 0.0, 0
    for i in range(frames):
        want_frame = env.step(actions[i % len(actions)])
        play = env._play  # the draws this step used
        eps = play.context_eps.numpy() if play.context_eps is not None else None
        latent, frame = dream.step(actions[i % len(actions)], play.noise.numpy(), eps)
        worst_latent = max(worst_latent, float(np.abs(latent - play.latent.numpy()).max()))
        worst_pixel = max(worst_pixel, int(np.abs(frame.astype(int) - want_frame.astype(int)).max()))
    return worst_latent, worst_pixel


@pytest.mark.parametrize(
    "dit,diffusion",
    [
        ({}, {}),
        ({}, {"prediction": "edm", "ego_warp": True, "clean_residual": True, "guidance": 1.5}),
        ({}, {"prediction": "edm", "ego_warp": True, "action_guidance": 2.0, "latent_clip": 4.0}),
        ({}, {"prediction": "x0", "context_noise": False, "residual": False}),
        ({"conv_head": True, "base_input": True}, {"prediction": "edm", "ego_warp": True, "residual": False}),
    ],
    ids=["v-context-noise", "edm-warp-cfg", "edm-warp-action-cfg", "x0-clean", "conv-head-base-input"],
)
def test_graph_follows_the_env_over_16_autoregressive_steps(tmp_path, dit, diffusion):
    ck = randomized(tmp_path, dit=dit, **diffusion)
    latent, pixel = compare(ck, tmp_path, steps=2, frames=16)
    assert latent <= TOLERANCE
    assert pixel <= 1  # a latent a hair away can round a pixel the other way


def test_graph_inputs_follow_whether_the_sampler_draws_context_noise(tmp_path):
    noisy = randomized(tmp_path)
    assert noisy.process.draws_context_noise
    assert step_input_names(noisy) == ("context", "actions", "noise", "context_noise")
    clean = dataclasses.replace(noisy, diffusion=dataclasses.replace(noisy.diffusion, context_noise=False))
    assert step_input_names(clean) == ("context", "actions", "noise")


@pytest.mark.parametrize("ego_warp", [True, False])
def test_the_ego_warp_is_in_the_graph(tmp_path, ego_warp):
    """A fresh DiT outputs zero, so with the change taken from the clean last latent the next latent is that
    latent, turned by the turn where the model has ego_warp: a left and a right turn then differ."""
    path = make_untrained_checkpoint(tmp_path / "ckpt", preset="tiny", resolution=RES, seed=0)
    ck = load_world_model(path)
    diffusion = dataclasses.replace(ck.diffusion, prediction="edm", ego_warp=ego_warp, clean_residual=True)
    ck = dataclasses.replace(ck, diffusion=diffusion)
    graph = export_step(ck, 1, tmp_path / "step_1.onnx")
    env = WorldModelEnv(ck, capture=False)
    env.reset(start_frames(ck))
    latents, led_in = env.context
    out = [
        PageDream(graph, step_input_names(ck), latents, led_in).step(DEFAULT_ACTIONS.make(turn=turn))[0]
        for turn in (0, 6)
    ]
    assert (np.abs(out[0] - out[1]).max() > 1e-3) == ego_warp


def test_shipped_checkpoint_one_step(tmp_path):
    ck = load_world_model(DEFAULT_CKPT)
    latent, _ = compare(ck, tmp_path, steps=ck.diffusion.sampling_steps, frames=1)
    assert latent <= TOLERANCE


def test_shipped_checkpoint_exports_within_twice_its_safetensors(tmp_path):
    """Three step counts' graphs with their shared weights, against the shipped weights' bytes."""
    ck = load_world_model(DEFAULT_CKPT)
    graphs = [optimize(export_step(ck, n, tmp_path / f"step_{n}.onnx")) for n in (1, 2, 4)]
    share_weights(graphs, tmp_path / "weights.bin")
    exported = sum(p.stat().st_size for p in tmp_path.iterdir())
    shipped = sum(p.stat().st_size for p in DEFAULT_CKPT.glob("*.safetensors"))
    assert exported <= 2 * shipped
    feed = dict(zip(step_input_names(ck), (t.numpy() for t in example_inputs(ck)), strict=True))
    import onnxruntime as ort

    for g in graphs:  # each still loads, its weights read from the shared file
        assert ort.InferenceSession(str(g)).run(None, feed)[1].shape == (1, *ck.resolution[::-1], 3)


def test_page_noise_is_standard_normal_and_seeded():
    a = PageNoise(3).normal((4000,))
    assert a.dtype == np.float32
    assert abs(a.mean()) < 0.06 and abs(a.std() - 1) < 0.05
    assert np.array_equal(a[:10], PageNoise(3).normal((10,)))
    assert not np.array_equal(a[:10], PageNoise(4).normal((10,)))


def test_script_runs_repeat_as_the_page_reads_them():
    actions = parse_script("2*1,0,3,0,0; 1*0,2,6,1,1")
    assert [a.tolist() for a in actions] == [[1, 0, 3, 0, 0]] * 2 + [[0, 2, 6, 1, 1]]
    with pytest.raises(ValueError):
        parse_script("2*1,0,3")
