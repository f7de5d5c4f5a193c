"""Action-conditioned DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

Reads like the paper's figure: embedders, the adaLN-Zero block, the final layer, the model. The
class-label embedder of the original is replaced by the action embedder; the noisy next latent is
concatenated on channels with the K past latents before patchifying (GameNGen sec. 3.2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from world_model.model.config import DiTConfig

TIMESTEP_SCALE = 1000.0  # continuous t in [0, 1] is embedded as t * 1000, like DiT's integer timesteps
FREQ_DIM = 256  # sinusoidal features before the timestep MLP (DiT's frequency_embedding_size)
# Init std of each input action embedding: the sum over the window's fields and positions is then about as
# large as a token's patch embedding (unit-variance latents through a Xavier linear), not 50x smaller.
ACTION_INPUT_STD = 0.2
CONV_HEAD_WIDTH = 32  # channels of the convolutional head's hidden layer (DiTConfig.conv_head)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Scalar diffusion time -> vector, through sinusoidal features and an MLP."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        half = FREQ_DIM // 2
        self.register_buffer(
            "freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = (t.float() * TIMESTEP_SCALE)[:, None] * self.freqs[None]  # (B, FREQ_DIM/2)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))  # (B, D)


class ActionEmbedder(nn.Module):
    """One embedding table per action field, indexed by (position in the window, value); all summed.
    Positions 0..K-1 are the actions that led into the K context frames, position K the current one.
    A negative value is "no action" (CFG's unconditional branch on the action) and embeds as zero."""

    def __init__(self, action_sizes: tuple[int, ...], positions: int, hidden: int):
        super().__init__()
        self.sizes = action_sizes
        self.tables = nn.ModuleList(nn.Embedding(positions * n, hidden) for n in action_sizes)
        self.register_buffer("pos", torch.arange(positions), persistent=False)

    def _field(self, actions: torch.Tensor, f: int) -> torch.Tensor:
        """(B, K+1, fields) int -> field f's embeddings (B, K+1, D), zero where there is no action."""
        a, n = actions[..., f], self.sizes[f]
        return self.tables[f](self.pos[None] * n + a.clamp_min(0)) * (a >= 0).unsqueeze(-1)

    def per_position(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, K+1, fields) int -> (B, K+1, D): each window position's fields summed."""
        return sum(self._field(actions, f) for f in range(len(self.sizes)))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, K+1, fields) int -> (B, D): every position's and field's embedding summed."""
        out = 0
        for f in range(len(self.sizes)):
            out = out + self._field(actions, f).sum(1)  # (B, D)
        return out


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (
            self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )  # 3 x (B, h, N, d/h)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d/h)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class DiTBlock(nn.Module):
    """adaLN-Zero block (DiT Fig. 3): the conditioning regresses shift, scale and a zero-initialised gate
    for both the attention and the MLP branch."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        mlp = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp), nn.GELU(approximate="tanh"), nn.Linear(mlp, hidden))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(
            6, dim=1
        )
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (B, N, D)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, N, D)
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, p*p*C)


class ConvHead(nn.Module):
    """3x3 convolutions over the unpatchified output and the noisy input it refines, added to the output:
    they see across the patch borders that the token grid's linear head cannot (U-ViT's final 3x3 conv, Bao et
    al. 2023). The last convolution starts at zero, so the head starts as the identity."""

    def __init__(self, channels: int, width: int = CONV_HEAD_WIDTH):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1)
        )

    def forward(self, out: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        # out, x_t: (B, C, h, w)
        return out + self.net(torch.cat([out, x_t], dim=1))  # (B, C, h, w)


def sincos_2d(hidden: int, gh: int, gw: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (gh*gw, hidden)."""

    def one_d(dim: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
        out = pos.reshape(-1, 1).double() * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    return torch.cat([one_d(hidden // 2, ys), one_d(hidden // 2, xs)], dim=1).float()


class DiT(nn.Module):
    """v(x_t, t | past latents, context-noise bucket, actions) for the next frame's latent."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        c, p, k = cfg.latent_channels, cfg.patch_size, cfg.context_len
        h, w = cfg.latent_size
        self.pad_h, self.pad_w = (-h) % p, (-w) % p  # pad the grid to whole patches, crop after
        self.grid = ((h + self.pad_h) // p, (w + self.pad_w) // p)
        frames = k + 1 + int(cfg.base_input)  # the noisy next latent, the context, the turned last latent
        self.x_embedder = nn.Linear(frames * c * p * p, cfg.hidden)
        self.t_embedder = TimestepEmbedder(cfg.hidden)
        self.noise_embedder = nn.Embedding(cfg.noise_buckets + 1, cfg.hidden)  # last bucket: context dropped
        self.action_embedder = ActionEmbedder(cfg.action_sizes, k + 1, cfg.hidden)
        if cfg.action_input:  # the actions added to every image token where the patches enter
            self.action_input = ActionEmbedder(cfg.action_sizes, k + 1, cfg.hidden)
        if cfg.action_tokens:  # the action tokens' own projection and place in the sequence
            self.action_proj = nn.Linear(cfg.hidden, cfg.hidden)
            self.action_pos = nn.Parameter(torch.zeros(1, k + 1, cfg.hidden))
        self.register_buffer("pos_embed", sincos_2d(cfg.hidden, *self.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(cfg.hidden, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(cfg.hidden, p, c)
        if cfg.conv_head:
            self.conv_head = ConvHead(c)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """As DiT: Xavier linears, N(0, 0.02) embedders, and zero adaLN modulation and output, so a fresh
        model is the identity in every block and outputs exactly zero."""

        def basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(basic)
        for m in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(self.noise_embedder.weight, std=0.02)
        for table in self.action_embedder.tables:
            nn.init.normal_(table.weight, std=0.02)
        if self.cfg.action_tokens:
            nn.init.normal_(self.action_pos, std=0.02)
        if self.cfg.action_input:  # at the patch embedding's scale, so the action counts from the start
            for table in self.action_input.tables:
                nn.init.normal_(table.weight, std=ACTION_INPUT_STD)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.cfg.conv_head:  # starts as the identity: a fresh model's output stays exactly zero
            nn.init.zeros_(self.conv_head.net[-1].weight)
            nn.init.zeros_(self.conv_head.net[-1].bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, N, p*p*C), padding the grid to whole patches."""
        p = self.cfg.patch_size
        x = F.pad(x, (0, self.pad_w, 0, self.pad_h))
        b, c, h, w = x.shape
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, h, w), cropping the padding."""
        p, c = self.cfg.patch_size, self.cfg.latent_channels
        gh, gw = self.grid
        b = x.shape[0]
        x = (
            x.view(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)
        )  # (B, C, h', w')
        h, w = self.cfg.latent_size
        return x[:, :, :h, :w]

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        noise_bucket: torch.Tensor,
        actions: torch.Tensor,
        base: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # x_t: (B, C, h, w) noisy next latent; t: (B,) in [0, 1]; context: (B, K, C, h, w);
        # noise_bucket: (B,) int; actions: (B, K+1, fields) int; base: (B, C, h, w), the turned last latent,
        # only with cfg.base_input
        b, k, c, h, w = context.shape
        inputs = [x_t, context.reshape(b, k * c, h, w)]
        if self.cfg.base_input:
            if base is None:
                raise ValueError(
                    "this DiT takes the turned last latent as an input (dit.base_input): pass base"
                )
            inputs.append(base)
        x = torch.cat(inputs, dim=1)  # (B, (K+1)C or (K+2)C, h, w)
        x = self.x_embedder(self.patchify(x)) + self.pos_embed  # (B, N, D)
        if self.cfg.action_input:
            x = x + self.action_input(actions).unsqueeze(1)  # (B, N, D): one action vector on every token
        cond = (
            self.t_embedder(t) + self.noise_embedder(noise_bucket) + self.action_embedder(actions)
        )  # (B, D)
        n = x.shape[1]
        if self.cfg.action_tokens:  # (B, N+K+1, D): the image tokens, then one token per window position
            tokens = self.action_proj(self.action_embedder.per_position(actions)) + self.action_pos
            x = torch.cat([x, tokens], dim=1)
        for block in self.blocks:
            x = block(x, cond)  # (B, N(+K+1), D)
        x = self.final_layer(x[:, :n], cond)  # (B, N, p*p*C)
        out = self.unpatchify(x)  # (B, C, h, w)
        return self.conv_head(out, x_t) if self.cfg.conv_head else out
