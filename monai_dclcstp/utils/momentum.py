"""Momentum (EMA) encoder utilities: pure functions, as in ``lightly/models/utils.py`` and ``lightly/utils/scheduler.py``."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["cosine_schedule", "update_momentum", "deactivate_requires_grad"]


def cosine_schedule(step: int, max_steps: int, start_value: float, end_value: float) -> float:
    """Cosine interpolation from ``start_value`` (step 0) to ``end_value`` (step ``max_steps``).

    BYOL (Grill et al. 2020, Sec. 3.2) schedules the momentum as ``1 - (1 - m0) * (cos(pi k / K) + 1) / 2``, which is
    this function with ``start_value=m0`` and ``end_value=1``. Steps past ``max_steps`` return ``end_value``.

    Raises:
        ValueError: when ``step`` is negative or ``max_steps`` is not positive.
    """
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}.")
    if max_steps < 1:
        raise ValueError(f"max_steps must be positive, got {max_steps}.")
    if step >= max_steps:
        return end_value
    return end_value - (end_value - start_value) * (math.cos(math.pi * step / max_steps) + 1) / 2


@torch.no_grad()
def update_momentum(model: nn.Module, model_ema: nn.Module, m: float) -> None:
    """EMA update ``ema = m * ema + (1 - m) * online`` of the parameters, with fused ``_foreach`` kernels.

    As in MoCo (He et al. 2020, Eq. 2) and lightly's ``update_momentum``, buffers (BatchNorm running statistics) are
    not averaged: the momentum twin keeps the statistics of its own forward passes. Both modules must have the same
    parameter structure.
    """
    ema_params = [p for p in model_ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("model and model_ema have different numbers of parameters.")
    torch._foreach_mul_(ema_params, m)
    torch._foreach_add_(ema_params, params, alpha=1.0 - m)


def deactivate_requires_grad(model: nn.Module) -> nn.Module:
    """Freeze every parameter of ``model`` (the momentum twin is updated by EMA only). Returns ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model
