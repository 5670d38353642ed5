"""Noise schedulers for DDPM training and sampling, kept apart from the network.

The interface follows diffusers' schedulers: :meth:`add_noise` for training,
:meth:`set_timesteps` then repeated :meth:`step` calls for sampling. Randomness comes only
from an explicit, seeded :class:`torch.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

PredictionType = Literal["epsilon", "v_prediction"]


def make_betas(num_train_timesteps: int, schedule: str) -> torch.Tensor:
    """β schedule: ``"linear"`` (Ho et al. 2020) or ``"cosine"`` (Nichol & Dhariwal 2021)."""
    if schedule == "linear":
        scale = 1000.0 / num_train_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_train_timesteps, dtype=torch.float64)
    if schedule == "cosine":
        steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
        alpha_bar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
        return betas.clamp(max=0.999)
    raise ValueError(f"Unknown beta schedule {schedule!r}; use 'linear' or 'cosine'.")


@dataclass
class SchedulerOutput:
    """Result of one sampling step."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class DDPMScheduler:
    """Denoising diffusion probabilistic model scheduler (ancestral sampling).

    Parameters
    ----------
    num_train_timesteps
        Diffusion steps of the forward process (1000 in Diff-ST).
    beta_schedule
        ``"cosine"`` (default) or ``"linear"``.
    prediction_type
        What the network predicts: ``"v_prediction"`` (default; Salimans & Ho 2022) or ``"epsilon"``.
    clip_sample
        Clamp the predicted clean sample to ``[-clip_sample, clip_sample]`` (``None``: no clamp).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "cosine",
        prediction_type: PredictionType = "v_prediction",
        clip_sample: float | None = None,
    ) -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}.")
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.betas = make_betas(self.num_train_timesteps, beta_schedule)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1)
        self.num_inference_steps = self.num_train_timesteps

    # ------------------------------------------------------------------ helpers
    def _ab(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod.to(like.device)[t.to(like.device).long()].to(like.dtype)
        return ab.view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward process: ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε``."""
        ab = self._ab(timesteps, original)
        return ab.sqrt() * original + (1 - ab).sqrt() * noise

    def get_velocity(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v-prediction target ``v = sqrt(ᾱ_t) ε - sqrt(1-ᾱ_t) x_0``."""
        ab = self._ab(timesteps, original)
        return ab.sqrt() * noise - (1 - ab).sqrt() * original

    def training_target(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output for this ``prediction_type``."""
        if self.prediction_type == "epsilon":
            return noise
        return self.get_velocity(original, noise, timesteps)

    def loss_weight(self, timesteps: torch.Tensor, min_snr_gamma: float | None = 5.0) -> torch.Tensor:
        """Per-sample loss weights that cap the weight of low-noise steps (Min-SNR-style, Hang et al. 2023).

        In terms of the clean-sample error, the plain v-loss weighs a step by ``SNR + 1`` and the
        ε-loss by ``SNR``. Here that weight is capped at ``γ + 1`` and kept at full weight for the
        high-noise steps, which decide the sample's structure and the posterior mean (Hang et al.'s
        ``min(SNR, γ)`` would instead down-weight those too). Ones when ``γ`` is None.
        """
        if min_snr_gamma is None:
            return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
        ab = self.alphas_cumprod.to(timesteps.device)[timesteps.long()]
        snr = ab / (1 - ab)
        x0_weight = torch.minimum(snr + 1, torch.full_like(snr, min_snr_gamma + 1))
        natural = snr + 1 if self.prediction_type == "v_prediction" else snr.clamp(min=1e-8)
        return (x0_weight / natural).clamp(max=1.0 if self.prediction_type == "v_prediction" else None).float()

    def predict_original(
        self, model_output: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x̂_0, ε̂)`` from a network output at ``timesteps``."""
        ab = self._ab(timesteps, sample)
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (sample - (1 - ab).sqrt() * eps) / ab.sqrt()
        else:
            x0 = ab.sqrt() * sample - (1 - ab).sqrt() * model_output
            eps = ab.sqrt() * model_output + (1 - ab).sqrt() * sample
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
            eps = (sample - ab.sqrt() * x0) / (1 - ab).sqrt()
        return x0, eps

    def set_timesteps(self, num_inference_steps: int | None = None) -> None:
        """Choose the (evenly spaced, descending) timesteps used for sampling."""
        n = self.num_train_timesteps if num_inference_steps is None else int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {self.num_train_timesteps}], got {n}.")
        self.num_inference_steps = n
        step = self.num_train_timesteps / n
        self.timesteps = torch.tensor(
            [int(round(self.num_train_timesteps - 1 - i * step)) for i in range(n)], dtype=torch.long
        )

    def previous_timestep(self, t: int) -> int:
        """The timestep after ``t`` in the current sampling schedule (``-1`` at the end)."""
        ts = self.timesteps.tolist()
        i = ts.index(int(t))
        return ts[i + 1] if i + 1 < len(ts) else -1

    def _ab_scalar(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else 1.0

    def _begin_step(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor
    ) -> tuple[int, torch.Tensor, torch.Tensor, float, float]:
        """``(previous timestep, x̂_0, ε̂, ᾱ_t, ᾱ_prev)`` for a step from ``timestep``."""
        t = int(timestep)
        prev = self.previous_timestep(t)
        tt = torch.full((sample.shape[0],), t, dtype=torch.long, device=sample.device)
        x0, eps = self.predict_original(model_output, sample, tt)
        return prev, x0, eps, self._ab_scalar(t), self._ab_scalar(prev)

    @staticmethod
    def _noise(sample: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)

    # ------------------------------------------------------------------ sampling
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> SchedulerOutput:
        """One ancestral DDPM step from ``timestep`` to the previous timestep of the schedule."""
        prev, x0, _, ab_t, ab_prev = self._begin_step(model_output, timestep, sample)
        beta_t = 1 - ab_t / ab_prev
        coef_x0 = math.sqrt(ab_prev) * beta_t / (1 - ab_t)
        coef_xt = math.sqrt(1 - beta_t) * (1 - ab_prev) / (1 - ab_t)
        mean = coef_x0 * x0 + coef_xt * sample
        if prev < 0:
            return SchedulerOutput(prev_sample=x0, pred_original_sample=x0)
        var = (1 - ab_prev) / (1 - ab_t) * beta_t
        noise = self._noise(sample, generator)
        return SchedulerOutput(prev_sample=mean + math.sqrt(max(var, 0.0)) * noise, pred_original_sample=x0)

    def config(self) -> dict:
        """Constructor arguments (for provenance)."""
        return {
            "class": type(self).__name__,
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "prediction_type": self.prediction_type,
            "num_inference_steps": self.num_inference_steps,
        }


class DDIMScheduler(DDPMScheduler):
    """Deterministic DDIM sampler (Song et al. 2021) over a few respaced steps.

    With ``eta=0`` (default) each step is deterministic given the starting noise, and 10–50
    network calls replace the 1000 of ancestral sampling.
    """

    def __init__(self, *args, eta: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eta = float(eta)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> SchedulerOutput:
        """One DDIM step from ``timestep`` to the previous timestep of the schedule."""
        prev, x0, eps, ab_t, ab_prev = self._begin_step(model_output, timestep, sample)
        if prev < 0:
            return SchedulerOutput(prev_sample=x0, pred_original_sample=x0)
        sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        direction = math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        prev_sample = math.sqrt(ab_prev) * x0 + direction
        if sigma > 0:
            prev_sample = prev_sample + sigma * self._noise(sample, generator)
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)

    def config(self) -> dict:
        """Constructor arguments (for provenance)."""
        return {**super().config(), "eta": self.eta}


def make_scheduler(sampler: str, **kwargs) -> DDPMScheduler:
    """``"ddpm"`` → :class:`DDPMScheduler`, ``"ddim"`` → :class:`DDIMScheduler`."""
    if sampler == "ddpm":
        return DDPMScheduler(**kwargs)
    if sampler == "ddim":
        return DDIMScheduler(**kwargs)
    raise ValueError(f"Unknown sampler {sampler!r}; use 'ddim' (fast, deterministic) or 'ddpm' (1000 steps).")
