"""EDM noise levels, preconditioning and samplers (Karras et al. 2022), apart from any network.

Stage B of :class:`~stdiff.models.DiffST` diffuses the per-gene-scaled residual around the stage-A
mean, which has unit standard deviation on the training tissue (``sigma_data = 1``). This module
holds everything about noise levels in one place:

- :func:`sample_training_sigmas`: log-normal training noise levels;
- :func:`precondition`: the ``c_skip, c_out, c_in, c_noise`` coefficients and :func:`loss_weight`;
- :func:`karras_sigmas`: the ``rho = 7`` sampling schedule from ``sigma_max`` down to 0;
- :func:`sample`: Euler or Heun (2nd order) integration of the probability-flow ODE, optionally with
  EDM's stochastic churn, for any denoiser ``D(x, sigma) -> x0``. The denoiser may be a whole-section
  canvas (see :mod:`stdiff.models.canvas`), so the sampler never sees tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def sample_training_sigmas(n: int, *, p_mean: float, p_std: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` noise levels with ``ln(sigma) ~ N(p_mean, p_std²)`` (EDM's training distribution)."""
    return torch.exp(p_mean + p_std * torch.randn(n, generator=generator))


def precondition(sigma: torch.Tensor, sigma_data: float = 1.0) -> tuple[torch.Tensor, ...]:
    """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma`` (any shape).

    The denoiser is ``D(x; sigma) = c_skip · x + c_out · F(c_in · x; c_noise)``, so the network ``F``
    sees unit-variance inputs and predicts a unit-variance target at every noise level.
    """
    s2, d2 = sigma**2, sigma_data**2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / torch.sqrt(s2 + d2)
    c_in = 1.0 / torch.sqrt(s2 + d2)
    c_noise = torch.log(sigma.clamp(min=1e-20)) / 4.0
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """EDM's ``lambda(sigma) = (sigma² + sigma_data²) / (sigma · sigma_data)²`` (unit effective weight)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def noise_embedding_input(c_noise: torch.Tensor) -> torch.Tensor:
    """Map ``c_noise`` (≈ −2 … 1) to the range the sinusoidal embedding resolves (≈ 0 … 1000)."""
    return (c_noise + 2.0) * 250.0


def karras_sigmas(steps: int, *, sigma_min: float = 0.002, sigma_max: float = 10.0, rho: float = 7.0) -> torch.Tensor:
    """``steps`` noise levels from ``sigma_max`` to ``sigma_min`` (``rho`` spacing), then a final 0."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}.")
    i = torch.arange(steps, dtype=torch.float64)
    inv = 1.0 / rho
    if steps == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        s = (sigma_max**inv + i / (steps - 1) * (sigma_min**inv - sigma_max**inv)) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).float()


Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


def sample(
    denoise: Denoiser,
    shape: tuple[int, ...],
    *,
    steps: int,
    generator: torch.Generator,
    solver: str = "heun",
    sigma_min: float = 0.002,
    sigma_max: float = 10.0,
    rho: float = 7.0,
    churn: float = 0.0,
    device: torch.device | str = "cpu",
    callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Integrate from pure noise at ``sigma_max`` to a sample with ``denoise(x, sigma) -> x0``.

    Parameters
    ----------
    denoise
        The preconditioned denoiser; ``x`` has ``shape`` and ``sigma`` is a Python float.
    shape
        Shape of the sample.
    steps
        Noise levels of the schedule (Heun uses ``2·steps − 1`` denoiser calls).
    generator
        Seeded generator for the initial noise (and the churn noise); noise is drawn on the CPU.
    solver
        ``"heun"`` (2nd order, EDM Algorithm 1/2) or ``"euler"``.
    sigma_min, sigma_max, rho
        The :func:`karras_sigmas` schedule.
    churn
        EDM's ``S_churn`` (0: deterministic ODE sampler).
    device
        Where ``x`` lives.
    callback
        Called with the step index after each step (progress bars).
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"solver must be 'heun' or 'euler', got {solver!r}.")
    sigmas = karras_sigmas(steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).tolist()
    x = (torch.randn(shape, generator=generator) * sigmas[0]).to(device)
    gamma_max = min(churn / steps, math.sqrt(2.0) - 1.0) if churn > 0 else 0.0
    for i in range(steps):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        if gamma_max > 0:
            s_hat = s_cur * (1 + gamma_max)
            eps = torch.randn(shape, generator=generator).to(device)
            x = x + math.sqrt(max(s_hat**2 - s_cur**2, 0.0)) * eps
            s_cur = s_hat
        d = (x - denoise(x, s_cur)) / s_cur
        x_next = x + (s_next - s_cur) * d
        if solver == "heun" and s_next > 0:
            d2 = (x_next - denoise(x_next, s_next)) / s_next
            x_next = x + (s_next - s_cur) * 0.5 * (d + d2)
        x = x_next
        if callback is not None:
            callback(i)
    return x
