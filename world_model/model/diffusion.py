"""The diffusion process around the DiT: one object owns the schedule, the parameterisation, the context-noise
buckets, the loss and the few-step sampler, so callers hand it a model and tensors, not seven settings.

Continuous time t in [0, 1] on the cosine schedule alpha = cos(pi t / 2), sigma = sin(pi t / 2)
(Nichol & Dhariwal 2021), so x_t = alpha x_0 + sigma eps. The network's output is, by `prediction`:
  v    v = alpha eps - sigma x_0 (Salimans & Ho 2022, sec. 4): well-posed at t = 1 where few-step sampling
       starts; the default, and what every checkpoint saved before the setting existed was trained on.
  x0   x_0 itself (JiT, Li & He 2025: v and eps fail on high-dimensional tokens, x_0 does not).
  eps  the noise (DDPM); x_0 = (x_t - sigma eps) / alpha is singular at t = 1, so this runs on [0, EPS_T_MAX].
Sampling is deterministic DDIM (Song et al. 2021) from t = 1 (or EPS_T_MAX) to 0 in equal steps.

  edm  Karras et al. 2022 preconditioning, as DIAMOND's denoiser (Alonso et al. 2024): x = x_0 + sigma eps,
       D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), sigma log-normal in training, Euler steps on the
       Karras sigmas at sampling (DIAMOND: stable at 1 to 3 steps).

Around every parameterisation: the target is optionally the change from the last context latent
(`residual`; with `ego_warp`, from that latent turned by the player's turn, world_model/model/egomotion.py),
the context is noised at a random bucket level in training (GameNGen sec. 3.2.1), and
classifier-free guidance drops the past frames (actions kept), telling the model the `dropped_bucket`.
With `base_input` (DiTConfig) the last latent, turned, is also an input of the network.

Training on the model's own rollouts (TrainConfig.rollout_*): `unrolled_loss` is DIAMOND's one-pass way (each
step's denoised estimate, detached, becomes the next step's last context frame, a loss on every step);
`rollout_context` makes the frames with the sampler as play does, for a loss on the frame after them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from data.actions import ActionSpec
from world_model.model.config import DiffusionConfig
from world_model.model.egomotion import TurnWarp

# eps-prediction's x_0 estimate divides by alpha: starting at alpha(0.97) = 0.047 bounds the error's
# amplification to about 21x at the first sampling step.
EPS_T_MAX = 0.97
NO_ACTION = -1  # an action value the DiT embeds as "no action" (CFG's unconditional branch on the action)


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


class Diffusion:
    """Schedule, parameterisation, context-noise buckets, loss and sampler of one model.

    `buckets` is the model's number of context-noise levels (DiTConfig.noise_buckets); the model's
    noise embedding has one more entry, `dropped_bucket`, for a dropped context."""

    def __init__(
        self, cfg: DiffusionConfig, buckets: int, warp: TurnWarp | None = None, base_input: bool = False
    ):
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets}")
        if cfg.ego_warp and warp is None:
            raise ValueError("diffusion.ego_warp needs the world's turn warp (Diffusion.for_world)")
        self.cfg, self.buckets = cfg, buckets
        self.warp = warp if cfg.ego_warp else None
        self.base_input = (
            base_input  # the model takes the turned last latent as an input (DiTConfig.base_input)
        )
        # Noise level of each bucket: evenly spaced in [0, context_noise_max], bucket 0 = clean.
        self.levels = torch.linspace(0.0, cfg.context_noise_max, buckets)  # (buckets,)
        self.prediction = cfg.prediction
        self.t_max = EPS_T_MAX if cfg.prediction == "eps" else 1.0

    @classmethod
    def for_world(
        cls,
        cfg: DiffusionConfig,
        buckets: int,
        spec: ActionSpec,
        frame_skip: int,
        resolution: tuple[int, int],
        latent_hw: tuple[int, int],
        base_input: bool = False,
    ) -> Diffusion:
        """The process of a model of this world (action contract, frame_skip, (width, height) frames) on its
        latent grid: with ego_warp, the world's turn warp is made here."""
        warp = TurnWarp.for_world(spec, frame_skip, resolution, latent_hw) if cfg.ego_warp else None
        return cls(cfg, buckets, warp, base_input)

    @property
    def dropped_bucket(self) -> int:
        """The bucket the model is told when the context is dropped (CFG's unconditional branch)."""
        return self.buckets

    @property
    def sample_bucket(self) -> int:
        """The bucket a sampler tells the model (its small noise level is applied to the context)."""
        return self.cfg.sample_context_bucket if self.cfg.context_noise else 0

    @property
    def draws_context_noise(self) -> bool:
        """Whether `sample` draws context noise (before x's noise) or leaves the context clean."""
        return self.sample_bucket != 0

    def noise_context(
        self, context: torch.Tensor, bucket: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Variance-preserving noise on the past latents at each sample's bucket level (GameNGen 3.2.1)."""
        dev = context.device
        lv = self.levels.to(dev)[bucket.clamp_max(self.buckets - 1)].view(-1, 1, 1, 1, 1)
        gdev = dev if generator is None else generator.device
        eps = torch.randn(context.shape, generator=generator, device=gdev).to(dev)
        return context * torch.sqrt(1 - lv**2) + lv * eps  # (B, K, C, h, w)

    def sampling_context(self, context: torch.Tensor, context_eps: torch.Tensor | None) -> torch.Tensor:
        """The context as the sampler shows it to the model: noised at `sample_bucket`'s level by
        `context_eps` (the context's shape), or unchanged where that bucket is clean."""
        if not self.draws_context_noise:
            return context
        lv = self.levels[self.sample_bucket].item()
        return context * math.sqrt(1 - lv**2) + lv * context_eps.to(context.device)

    def residual_base(
        self, clean_last: torch.Tensor, shown_last: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor | float:
        """What the target is the change from (B, C, h, w), one rule for the loss and the sampler: nothing
        (0) without `residual`; else the last latent as the model is shown it (noised) or, with
        clean_residual, the clean one; with ego_warp, that latent turned by the current action's turn."""
        if not self.cfg.residual:
            return 0.0
        return self.turned(clean_last if self.cfg.clean_residual else shown_last, actions)

    def turned(self, last: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The last latent (B, C, h, w) turned by the current action's turn with ego_warp, else as it is."""
        return self.warp(last, actions) if self.warp is not None else last

    def _call(self, model, x, t, context, bucket, actions, base_in) -> torch.Tensor:
        """The model's output; the turned last latent goes in only where the model takes it (base_input)."""
        if self.base_input:
            return model(x, t, context, bucket, actions, base_in)
        return model(x, t, context, bucket, actions)

    # --- the parameterisation -------------------------------------------------------------------------

    def edm_scalings(self, sigma: torch.Tensor | float) -> tuple:
        """c_in, c_skip, c_out, c_noise of EDM's preconditioning (Karras et al. 2022, Table 1), for a tensor
        of levels in training or one level as a float at sampling (no tensor made inside a captured graph)."""
        sd = self.cfg.edm_sigma_data
        c_in = (sigma**2 + sd**2) ** -0.5
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd * c_in
        c_noise = torch.log(sigma) / 4 if isinstance(sigma, torch.Tensor) else math.log(sigma) / 4
        return c_in, c_skip, c_out, c_noise

    def _noised(self, x0: torch.Tensor, u: torch.Tensor, eps: torch.Tensor) -> tuple:
        """Training input from a clean x0 (B, C, h, w), a uniform (cosine) or normal (EDM) draw u (B,) and the
        noise: (model input, the model's time input (B,), the output the model should give, and the map from
        the model's output to its estimate of x0)."""
        if self.prediction == "edm":
            sigma = torch.exp(self.cfg.edm_p_mean + self.cfg.edm_p_std * u).view(-1, 1, 1, 1)
            x = x0 + sigma * eps
            c_in, c_skip, c_out, c_noise = self.edm_scalings(sigma)
            # MSE on F is EDM's loss with its weighting lambda(sigma) = 1 / c_out^2 folded in.
            return (
                c_in * x,
                c_noise.flatten(),
                (x0 - c_skip * x) / c_out,
                lambda out: c_skip * x + c_out * out,
            )
        t = u * self.t_max  # (B,)
        a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
        x_t = a * x0 + s * eps
        target = a * eps - s * x0 if self.prediction == "v" else x0 if self.prediction == "x0" else eps
        return x_t, t, target, lambda out: self._x0_eps(out, x_t, a, s)[0]

    def _x0_eps(
        self, out: torch.Tensor, x: torch.Tensor, a: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's output at x = a x0 + s eps -> its estimates of x0 and eps."""
        if self.prediction == "v":
            return a * x - s * out, s * x + a * out
        if self.prediction == "x0":
            return out, (x - a * out) / s
        return (x - s * out) / a, out

    # --- training -------------------------------------------------------------------------------------

    def loss(
        self,
        model,
        target: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """MSE of the model's output for a batch of (next latent, past latents, actions).

        target (B, C, h, w); context (B, K, C, h, w); actions (B, K+1, fields). The draws come from
        `generator`, in a fixed order: bucket and context noise, time, noise, dropped contexts."""
        out, out_target, _ = self.forward(model, target, context, actions, generator)
        return F.mse_loss(out, out_target)

    def forward(
        self,
        model,
        target: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        drop: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training forward of `loss`: the model's output and the output it should give (B, C, h, w), and
        its denoised estimate of the next latent, the base added back. `drop` False keeps every context (no
        CFG drop), for a step whose estimate feeds the next one."""
        b, dev = target.shape[0], target.device
        gdev = generator.device if generator is not None else dev

        def rand(*shape):
            return torch.rand(*shape, generator=generator, device=gdev).to(dev)

        clean_last = context[:, -1]
        if self.cfg.context_noise:
            bucket = (rand(b) * self.buckets).long().clamp_max(self.buckets - 1)  # (B,)
            context = self.noise_context(context, bucket, generator)
        else:
            bucket = torch.zeros(b, dtype=torch.long, device=dev)
        # Relative to the last latent as the model sees it (noised: it learns to undo that noise too), or,
        # with clean_residual, to the clean one, so that predicting zero copies the last frame exactly.
        base = self.residual_base(clean_last, context[:, -1], actions)
        base_in = self.turned(context[:, -1], actions) if self.base_input else None
        target = target - base
        if self.prediction == "edm":
            u = torch.randn(b, generator=generator, device=gdev).to(dev)  # (B,) log-normal sigma
        else:
            u = rand(b)  # (B,) uniform time
        eps = torch.randn(target.shape, generator=generator, device=gdev).to(dev)
        x_in, t_in, out_target, to_x0 = self._noised(target, u, eps)
        if drop:
            dropped = rand(b) < self.cfg.context_drop_prob  # (B,) the unconditional branch of CFG
            context = torch.where(dropped.view(-1, 1, 1, 1, 1), torch.zeros_like(context), context)
            bucket = torch.where(dropped, torch.full_like(bucket, self.dropped_bucket), bucket)
            if base_in is not None:
                base_in = torch.where(dropped.view(-1, 1, 1, 1), torch.zeros_like(base_in), base_in)
        if self.cfg.action_drop_prob > 0:  # the unconditional branch of CFG on the action: "no action"
            no_action = rand(b) < self.cfg.action_drop_prob  # (B,)
            actions = torch.where(no_action.view(-1, 1, 1), torch.full_like(actions, NO_ACTION), actions)
        out = self._call(model, x_in, t_in, context, bucket, actions, base_in).float()
        return out, out_target.float(), to_x0(out) + base

    def unrolled_loss(
        self,
        model,
        targets: torch.Tensor,
        contexts: torch.Tensor,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DIAMOND's training on its own rollouts in one pass: the mean loss over L steps, each step's
        denoised estimate (detached) written into the next steps' context as the last frame; and those frames.

        targets (B, L, C, h, w): L real frames in a row; contexts (B, L, K, C, h, w) and actions
        (B, L, K+1, fields): each one's real window. -> (loss, generated (B, L, C, h, w))."""
        steps = targets.shape[1]
        made, losses = [], []
        for i in range(steps):
            context = with_generated(contexts[:, i], made)
            out, out_target, denoised = self.forward(
                model, targets[:, i], context, actions[:, i], generator, drop=i == 0
            )
            losses.append(F.mse_loss(out, out_target))
            made.append(self._clip(denoised.detach()))
        return torch.stack(losses).mean(), torch.stack(made, 1)

    @torch.no_grad()
    def rollout_context(
        self,
        model,
        contexts: torch.Tensor,
        actions: torch.Tensor,
        steps: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The context of the frame after an L-frame run the sampler makes, as play runs it (`steps`, the
        guidance), from a real past under the recorded actions.

        contexts (B, L+1, K, C, h, w) and actions (B, L+1, K+1, fields): the real windows of L+1 frames in a
        row. -> (the last window's context with the model's frames in it (B, K, C, h, w), the frames
        (B, L, C, h, w))."""
        made = []
        for i in range(contexts.shape[1] - 1):
            made.append(
                self.sample(
                    model, with_generated(contexts[:, i], made), actions[:, i], steps, generator=generator
                )
            )
        return with_generated(contexts[:, -1], made), torch.stack(made, 1)

    # --- sampling -------------------------------------------------------------------------------------

    def edm_sigmas(self, steps: int) -> list[float]:
        """Karras et al. 2022 eq. 5: noise levels from sigma_max down to sigma_min, then 0 (steps + 1)."""
        rho = self.cfg.edm_rho
        lo, hi = self.cfg.edm_sigma_min ** (1 / rho), self.cfg.edm_sigma_max ** (1 / rho)
        ramp = [i / (steps - 1) for i in range(steps)] if steps > 1 else [0.0]
        return [(hi + r * (lo - hi)) ** rho for r in ramp] + [0.0]

    @torch.no_grad()
    def sample(
        self,
        model,
        context: torch.Tensor,
        actions: torch.Tensor,
        steps: int,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        guidance: float | None = None,
        context_eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The next latent (B, C, h, w) from context (B, K, C, h, w) and actions (B, K+1, fields), in `steps`
        deterministic steps.

        With guidance w != 1, out = out_uncond + w (out_cond - out_uncond), the unconditional branch having
        its past frames dropped (actions kept). With action guidance w_a != 1, out += (w_a - 1) (out_cond -
        out_no_action), the no-action branch having the actions dropped (past frames kept). `context_eps`
        (the context's shape) and `noise` (B, C, h, w) are the draws otherwise taken from `generator`, in
        that order: given, the sampler draws nothing (a captured CUDA graph must not)."""
        if steps < 1:
            raise ValueError(f"sampling steps must be >= 1, got {steps}")
        b, k, c, h, w = context.shape
        dev = context.device
        gdev = dev if generator is None else generator.device
        guidance = self.cfg.guidance if guidance is None else guidance
        action_guidance = self.cfg.action_guidance
        if self.draws_context_noise and context_eps is None:
            context_eps = torch.randn(context.shape, generator=generator, device=gdev)
        clean_last = context[:, -1]
        context = self.sampling_context(context, context_eps)
        base = self.residual_base(clean_last, context[:, -1], actions)  # (B, C, h, w) as in training
        base_in = (
            self.turned(context[:, -1], actions) if self.base_input else None
        )  # by the action, as in training
        bucket = torch.full((b,), self.sample_bucket, dtype=torch.long, device=dev)
        # The batch's branches, each of b rows: conditional, then past frames dropped, then no action.
        weights = [w for w in (guidance, action_guidance) if w != 1.0]
        contexts, bucket_list, action_list, base_list = [context], [bucket], [actions], [base_in]
        if guidance != 1.0:
            contexts.append(torch.zeros_like(context))
            bucket_list.append(torch.full_like(bucket, self.dropped_bucket))
            action_list.append(actions)
            base_list.append(None if base_in is None else torch.zeros_like(base_in))
        if action_guidance != 1.0:
            contexts.append(context)
            bucket_list.append(bucket)
            action_list.append(torch.full_like(actions, NO_ACTION))
            base_list.append(base_in)
        branches = len(contexts)
        if branches > 1:
            context, bucket, actions = torch.cat(contexts), torch.cat(bucket_list), torch.cat(action_list)
            base_in = None if base_in is None else torch.cat(base_list)
        if noise is None:
            noise = torch.randn((b, c, h, w), generator=generator, device=gdev).to(dev)
        x = noise

        def predict(x_in: torch.Tensor, t_in: torch.Tensor | float) -> torch.Tensor:
            """The model's (guided) output at x_in (B, C, h, w) and time input t_in (0-d tensor or float)."""
            xin = torch.cat([x_in] * branches) if branches > 1 else x_in
            n = xin.shape[0]
            t_in = t_in.expand(n) if isinstance(t_in, torch.Tensor) else torch.full((n,), t_in, device=dev)
            out = self._call(model, xin, t_in, context, bucket, actions, base_in).float()
            if branches > 1:
                out_cond, *others = out.chunk(branches)
                if len(weights) == 1 and guidance != 1.0:  # as before action guidance existed, bit for bit
                    return others[0] + guidance * (out_cond - others[0])
                out = out_cond
                for weight, other in zip(weights, others, strict=True):
                    out = out + (weight - 1.0) * (out_cond - other)
            return out

        if self.prediction == "edm":
            sigmas = self.edm_sigmas(steps)
            x = x * sigmas[0]
            for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
                c_in, c_skip, c_out, c_noise = self.edm_scalings(sigma)
                denoised = c_skip * x + c_out * predict(c_in * x, c_noise)
                x = x + (sigma_next - sigma) * (x - denoised) / sigma  # Euler on dx/dsigma = (x - D) / sigma
            return self._clip(x + base)
        ts = torch.linspace(self.t_max, 0.0, steps + 1, device=dev)
        for i in range(steps):
            t, t_next = ts[i], ts[i + 1]
            a, s = alpha_sigma(t)
            x0, eps = self._x0_eps(predict(x, t), x, a, s)
            a_next, s_next = alpha_sigma(t_next)
            x = a_next * x0 + s_next * eps
        return self._clip(x + base)

    def _clip(self, latent: torch.Tensor) -> torch.Tensor:
        c = self.cfg.latent_clip
        return latent.clamp(-c, c) if c > 0 else latent


def with_generated(context: torch.Tensor, made: list[torch.Tensor]) -> torch.Tensor:
    """A real context (B, K, C, h, w) whose last frames are the model's own, `made` (each (B, C, h, w), oldest
    first; the last K of them where there are more)."""
    k = context.shape[1]
    m = min(len(made), k)
    if m == 0:
        return context
    return torch.cat([context[:, : k - m], torch.stack(made[len(made) - m :], 1)], dim=1)  # (B, K, C, h, w)
