"""A small convolutional autoencoder for Doom frames, trained here on the dataset (no downloadable VAE).

Frames (B, 3, H, W) in [-1, 1] map to latents (B, C, H/d, W/d), d = cfg.downsample (8 or 4 in the
presets). The latents the DiT sees are `(z - latent_mean) * latent_scale`, with mean and scale
measured on data after training, so they have unit variance like the diffusion noise. Training:
stage 1 trains both halves on L1 + MSE (+ cfg.grad_loss times the gradient loss) with a little latent
noise (the decoder learns to forgive small latent errors, which is what the DiT makes); stage 2
freezes the encoder and fine-tunes the decoder on pixel MSE (GameNGen sec. 3.3.2), with the same
gradient term so the fine-tuning does not blur the edges back.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from world_model.config import AEConfig
from world_model.metrics import psnr, status_bar, view_scores

STATS_FRAMES = 512  # frames the latent mean and scale are measured on
PSNR_FRAMES = 128  # held-out frames the reconstruction PSNR is measured on


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Encoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for i, (c_in, c_out) in enumerate(zip(ch[:-1], ch[1:], strict=True)):
            layers += ([ResBlock(c_in)] if i else []) + [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
        layers += [ResBlock(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        ch = cfg.channels[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1), ResBlock(ch[0])]
        for i, (c_in, c_out) in enumerate(zip(ch[:-1], ch[1:], strict=True)):
            # A transposed 4x4 conv costs less than half of upsample + 3x3 conv, and decoding is on the
            # critical path of every played frame; no residual block at full resolution for the same reason.
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(ch) - 2:
                layers.append(ResBlock(c_out))
        layers += [nn.SiLU(), nn.Conv2d(ch[-1], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Autoencoder(nn.Module):
    """Encoder + decoder + the measured latent statistics (buffers, saved with the weights)."""

    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_scale", torch.ones(cfg.latent_channels))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H/d, W/d), d = cfg.downsample."""
        z = self.encoder(x)
        return (z - self.latent_mean[:, None, None]) * self.latent_scale[:, None, None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> (B, 3, H, W), roughly in [-1, 1]."""
        z = z / self.latent_scale[:, None, None] + self.latent_mean[:, None, None]
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.array(frames, dtype=np.uint8)).to(device)  # a copy: episode arrays are read-only
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3) on x's device (also inside an exported graph)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    return to_pixels(x).cpu().numpy()


@torch.no_grad()
def measure_latent_stats(ae: Autoencoder, frames: np.ndarray, batch: int = 64) -> None:
    """Set latent_mean/latent_scale so the latents of `frames` have zero mean and unit std per channel."""
    ae.latent_mean.zero_()
    ae.latent_scale.fill_(1.0)
    device = ae.latent_mean.device
    zs = [ae.encoder(to_tensor(frames[i : i + batch], device)) for i in range(0, len(frames), batch)]
    z = torch.cat(zs).transpose(0, 1).reshape(ae.cfg.latent_channels, -1)  # (C, N*h*w)
    ae.latent_mean.copy_(z.mean(1))
    ae.latent_scale.copy_(1.0 / z.std(1).clamp_min(1e-6))


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def gradient_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the finite differences, across and down, of images (B, C, H, W) y and x."""
    across = F.l1_loss(y[..., :, 1:] - y[..., :, :-1], x[..., :, 1:] - x[..., :, :-1])  # (B, C, H, W-1)
    down = F.l1_loss(y[..., 1:, :] - y[..., :-1, :], x[..., 1:, :] - x[..., :-1, :])  # (B, C, H-1, W)
    return (across + down) / 2


def reconstruction_loss(cfg: AEConfig, y: torch.Tensor, x: torch.Tensor, stage: str) -> torch.Tensor:
    """Stage 1 ("autoencoder"): L1 + MSE; stage 2 ("decoder"): MSE; both + cfg.grad_loss x gradient loss."""
    loss = F.mse_loss(y, x) + (F.l1_loss(y, x) if stage == "autoencoder" else 0.0)
    if cfg.grad_loss:
        loss = loss + cfg.grad_loss * gradient_loss(y, x)
    return loss


def random_crops(frames: np.ndarray, n: int, crop: int, align: int, gen: torch.Generator) -> np.ndarray:
    """n random crops (crop x crop, offsets on the latent grid) of random frames; crop 0 = whole frames.
    The autoencoder is fully convolutional, so crops teach it the same thing for a fraction of the compute."""
    idx = torch.randint(len(frames), (n,), generator=gen).numpy()
    h, w = frames.shape[1:3]
    ch, cw = (min(crop, h), min(crop, w)) if crop else (h, w)
    ys = torch.randint((h - ch) // align + 1, (n,), generator=gen).numpy() * align
    xs = torch.randint((w - cw) // align + 1, (n,), generator=gen).numpy() * align
    return np.stack([frames[i, y : y + ch, x : x + cw] for i, y, x in zip(idx, ys, xs, strict=True)])


def train_autoencoder(
    cfg: AEConfig,
    train_frames: np.ndarray,
    heldout_frames: np.ndarray,
    seed: int = 0,
    device: str = "cpu",
    log=None,
) -> tuple[Autoencoder, dict]:
    """Both stages on uint8 frames (N, H, W, 3); returns the model and a summary with held-out PSNR."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ae = Autoencoder(cfg).to(device)
    h, w = train_frames.shape[1:3]
    if h % cfg.downsample or w % cfg.downsample:
        raise ValueError(
            f"frames are {w}x{h}; both sides must be divisible by the autoencoder's {cfg.downsample}x"
        )
    summary: dict = {"train_frames": len(train_frames), "heldout_frames": len(heldout_frames)}
    t0 = time.time()
    for stage, steps in (("autoencoder", cfg.steps), ("decoder", cfg.decoder_steps)):
        params = list(ae.parameters()) if stage == "autoencoder" else list(ae.decoder.parameters())
        ae.encoder.requires_grad_(stage == "autoencoder")
        opt = torch.optim.AdamW(
            params, lr=cfg.lr if stage == "autoencoder" else cfg.lr * 0.3, weight_decay=0.0
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
        if stage == "decoder":
            measure_latent_stats(
                ae, train_frames[torch.randperm(len(train_frames), generator=gen)[:STATS_FRAMES].numpy()]
            )
        bar = tqdm(range(steps), desc=f"train-ae {stage}", mininterval=2.0)
        for _ in bar:
            x = to_tensor(random_crops(train_frames, cfg.batch_size, cfg.crop, cfg.downsample, gen), device)
            if stage == "autoencoder":
                z = ae.encoder(x)
                z = z + cfg.latent_noise * z.detach().std() * torch.randn(z.shape, generator=gen).to(device)
                y = ae.decoder(z)
            else:
                with torch.no_grad():
                    z = ae.encoder(x)
                y = ae.decoder(z)
            loss = reconstruction_loss(cfg, y, x, stage)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if log is not None:
                log(stage, loss.item())
        if stage == "autoencoder":
            summary["heldout_psnr_stage1"] = reconstruction_psnr(ae, heldout_frames)
    ae.encoder.requires_grad_(True)
    measure_latent_stats(
        ae, train_frames[torch.randperm(len(train_frames), generator=gen)[:STATS_FRAMES].numpy()]
    )
    seconds = time.time() - t0
    summary["heldout_psnr"] = reconstruction_psnr(ae, heldout_frames)
    summary["seconds"] = seconds
    summary["crops_per_s"] = (cfg.steps + cfg.decoder_steps) * cfg.batch_size / max(seconds, 1e-9)
    return ae, summary


@torch.no_grad()
def reconstruct(ae: Autoencoder, frames: np.ndarray, batch: int = 32) -> np.ndarray:
    """encode -> decode of uint8 frames (N, H, W, 3) -> uint8 (N, H, W, 3), in eval mode."""
    was_training = ae.training
    ae.eval()
    device = ae.latent_mean.device
    recon = np.concatenate(
        [to_uint8(ae(to_tensor(frames[i : i + batch], device))) for i in range(0, len(frames), batch)]
    )
    ae.train(was_training)
    return recon


def reconstruction_psnr(ae: Autoencoder, frames: np.ndarray, batch: int = 32) -> float:
    """Mean per-frame PSNR (dB) of encode -> decode on (up to PSNR_FRAMES evenly spaced) uint8 frames."""
    if len(frames) == 0:
        return float("nan")
    frames = frames[:: max(1, len(frames) // PSNR_FRAMES)]
    recon = reconstruct(ae, frames, batch)
    return float(np.mean([psnr_uint8(a, b) for a, b in zip(recon, frames, strict=True)]))


def reconstruction_scores(ae: Autoencoder, frames: np.ndarray, batch: int = 32) -> dict[str, float]:
    """The autoencoder's ceiling for the world model on uint8 frames (N, H, W, 3): means over frames of
    the scene's (3-D view without the weapon) edge correlation, PSNR and SSIM, and the status bar's PSNR."""
    if len(frames) == 0:
        raise ValueError("reconstruction_scores: no frames")
    recon = reconstruct(ae, frames, batch)
    scene = view_scores(recon, frames)
    return {
        "scene_edge_corr": float(scene["edge_corr"].mean()),
        "scene_psnr": float(scene["psnr"].mean()),
        "scene_ssim": float(scene["ssim"].mean()),
        "status_bar_psnr": float(psnr(status_bar(recon), status_bar(frames)).mean()),
    }
