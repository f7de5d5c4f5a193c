"""A small convolutional autoencoder for Doom frames, trained here on the dataset (no downloadable VAE).

Frames (B, 3, H, W) in [-1, 1] map to latents (B, C, H/d, W/d), d = cfg.downsample (8 or 4 in the
presets). The latents the DiT sees are `(z - latent_mean) * latent_scale`, with mean and scale
measured on data after training (world_model/training/autoencoder.py), so they have unit variance like
the diffusion noise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from world_model.model.config import AEConfig


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


def latent_range(latents: torch.Tensor, spans: list[tuple[int, int]] | None = None) -> dict[str, list[float]]:
    """Per-channel minimum and maximum of normalised latents (N, C, h, w), over the (start, length) `spans` of
    frames (default all): the range the decoder was trained on, which `wm train` records in the checkpoint and
    a dream's latents are judged by (world_model/evaluation/hold.py). Reduced in place, in the latents' own
    dtype (min and max are exact in it): no copy of a cache that may hold hundreds of thousands of frames."""
    spans = spans if spans is not None else [(0, len(latents))]
    lo = torch.stack([latents[s : s + n].amin(dim=(0, 2, 3)) for s, n in spans if n]).amin(0)  # (C,)
    hi = torch.stack([latents[s : s + n].amax(dim=(0, 2, 3)) for s, n in spans if n]).amax(0)  # (C,)
    return {"low": lo.float().tolist(), "high": hi.float().tolist()}
