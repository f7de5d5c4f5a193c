"""The autoencoder's gradient loss, its 4x-down form, its reconstruction scores, and old checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_episode
from world_model.evaluation.metrics import reconstruction_scores
from world_model.model.autoencoder import Autoencoder, reconstruct, to_tensor
from world_model.model.checkpoint import load_autoencoder
from world_model.model.config import AEConfig, get_preset
from world_model.training.autoencoder import gradient_loss, reconstruction_loss, train_autoencoder

DEFAULT = Path(__file__).resolve().parents[1] / "checkpoints" / "e1m1"  # the v-prediction cpu model


def pattern_frame() -> np.ndarray:
    """A fixed 160x120 frame with stripes and a checkerboard, (1, 120, 160, 3) uint8."""
    yy, xx = np.mgrid[0:120, 0:160]
    chans = [(xx * 3) % 256, (yy * 5) % 256, ((xx // 8 + yy // 8) % 2) * 200 + 20]
    return np.stack(chans, -1).astype(np.uint8)[None]


def test_an_autoencoder_saved_before_the_gradient_loss_loads_and_reconstructs_the_same(tmp_path):
    from data.actions import DEFAULT_ACTIONS
    from world_model.model.checkpoint import save_autoencoder

    torch.manual_seed(0)
    ae = Autoencoder(get_preset("cpu").ae).eval()  # the previous default's design
    save_autoencoder(tmp_path / "ae", ae, (160, 120), 2, DEFAULT_ACTIONS, {})
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    del config["ae"]["grad_loss"]  # as written before the field existed
    (tmp_path / "ae" / "config.json").write_text(json.dumps(config))
    loaded, _ = load_autoencoder(tmp_path / "ae")
    assert loaded.cfg.grad_loss == 0.0 and loaded.cfg.downsample == 8
    with torch.no_grad():
        x = to_tensor(pattern_frame())  # (1, 3, 120, 160)
        assert torch.equal(loaded(x), ae(x))


def test_gradient_loss_zero_for_identical_and_for_a_brightness_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 20, generator=g) * 2 - 1
    assert gradient_loss(x, x.clone()).item() == 0.0
    assert gradient_loss(x + 0.3, x).item() == pytest.approx(0.0, abs=1e-6)  # same edges, other level
    assert gradient_loss(torch.rand(2, 3, 16, 20, generator=g), x).item() > 0.1


def test_gradient_loss_penalises_blur_that_pixel_losses_forgive():
    x = torch.zeros(1, 1, 16, 16)
    x[..., 8:] = 1.0  # one sharp vertical edge
    blurred = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    assert gradient_loss(blurred, x).item() > 0
    # A blurred edge keeps the total change across it: the L1 of gradients sees the spread, pixels less so.
    assert gradient_loss(blurred, x).item() > F.mse_loss(blurred, x).item()


def test_reconstruction_loss_adds_the_weighted_gradient_term():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    plain = AEConfig()
    assert torch.equal(reconstruction_loss(plain, y, x, "autoencoder"), F.mse_loss(y, x) + F.l1_loss(y, x))
    assert torch.equal(reconstruction_loss(plain, y, x, "decoder"), F.mse_loss(y, x))
    weighted = AEConfig(grad_loss=2.0)
    for stage in ("autoencoder", "decoder"):
        extra = reconstruction_loss(weighted, y, x, stage) - reconstruction_loss(plain, y, x, stage)
        assert extra.item() == pytest.approx(2.0 * gradient_loss(y, x).item(), rel=1e-5)


def test_tiny_4x_autoencoder_trains_and_round_trips_shapes(rng):
    cfg = AEConfig(
        channels=(4, 8, 8), latent_channels=4, steps=6, decoder_steps=3, batch_size=4, crop=16, grad_loss=1.0
    )
    assert cfg.downsample == 4
    frames = np.concatenate([make_episode(rng, steps=6, size=(48, 32)).frames for _ in range(2)])
    init = Autoencoder(cfg).state_dict()
    ae, summary = train_autoencoder(cfg, frames[:8], frames[8:], seed=0)
    assert any(not torch.equal(init[k], v) for k, v in ae.state_dict().items() if k in init)
    z = ae.encode(to_tensor(frames[:3]))
    assert z.shape == (3, 4, 8, 12)  # (B, C, H/4, W/4)
    assert ae.decode(z).shape == (3, 3, 32, 48)
    assert reconstruct(ae, frames[:3]).shape == frames[:3].shape
    assert np.isfinite(summary["heldout_psnr"])


def test_presets_cpu_unchanged_and_the_4x_presets_have_the_gradient_loss():
    cpu, cpu4x, edm = (get_preset(p).ae for p in ("cpu", "cpu4x", "cpu4x-edm"))
    assert cpu == AEConfig()  # what the shipped default was trained with, apart from step counts
    assert (cpu.downsample, cpu.grad_loss) == (8, 0.0)
    assert cpu4x.downsample == edm.downsample == 4 and cpu4x.grad_loss > 0 and edm.grad_loss > 0
    assert edm.channels == cpu4x.channels and edm.steps > cpu4x.steps


def test_reconstruction_scores_of_a_perfect_and_a_flat_reconstruction():
    frames = pattern_frame()

    class Identity(Autoencoder):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class Flat(Autoencoder):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    tiny = get_preset("tiny").ae
    perfect = reconstruction_scores(Identity(tiny), frames)
    assert perfect["scene_edge_corr"] == pytest.approx(1.0)
    assert perfect["scene_psnr"] == perfect["status_bar_psnr"] == pytest.approx(100.0)
    assert perfect["scene_ssim"] == pytest.approx(1.0)
    flat = reconstruction_scores(Flat(tiny), frames)
    assert flat["scene_edge_corr"] == 0.0 and flat["scene_psnr"] < 20
    with pytest.raises(ValueError, match="no frames"):
        reconstruction_scores(Identity(tiny), frames[:0])


def test_train_ae_cli_overrides_widths_latent_and_gradient_loss(tmp_path, rng, capsys):
    from agent.env import EnvConfig
    from data.dataset import ShardWriter, default_recorder
    from play.cli import main

    ds = tmp_path / "data"
    writer = ShardWriter(ds / "shard", EnvConfig(scenario="basic").manifest(default_recorder("test")))
    for _ in range(2):
        writer.write(make_episode(rng, steps=6, size=(160, 120)))
    out = tmp_path / "ae"
    args = ["wm", "train-ae", "--data", str(ds), "--out", str(out), "--preset", "tiny", "--device", "cpu"]
    args += ["--channels", "4,8,8", "--latent-channels", "2", "--grad-loss", "0.5", "--steps", "2"]
    assert main(args + ["--decoder-steps", "1"]) == 0
    ae, config = load_autoencoder(out)
    assert (ae.cfg.channels, ae.cfg.latent_channels, ae.cfg.grad_loss) == ((4, 8, 8), 2, 0.5)
    assert config["ae"]["grad_loss"] == 0.5
    assert main(["wm", "train-ae", "--data", str(ds), "--out", str(tmp_path / "b"), "--channels", "8"]) != 0
    err = capsys.readouterr().err
    assert "--channels 8 (preset cpu): AEConfig.channels = (8,): want at least two widths" in err
    assert not (tmp_path / "b").exists()
