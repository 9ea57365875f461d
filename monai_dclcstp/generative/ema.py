"""Exponential moving average (EMA) of the diffusion U-Net's weights, as diffusion models are usually sampled.

Ho et al. (https://arxiv.org/abs/2006.11239) and latent diffusion sample an EMA of the training weights: a single
snapshot of the weights carries the noise of the last optimiser steps, which deterministic samplers (DDIM,
DPM-Solver++) are sensitive to. The average is torch's own ``torch.optim.swa_utils.AveragedModel`` (a module with a
``state_dict``, so it goes into checkpoints as it is) with the warm-up decay of timm/diffusers ``EMAModel``:
``decay_n = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are not dominated by the
random initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn
from torch.optim.swa_utils import AveragedModel

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ema_avg_fn", "build_ema", "ModelEMAUpdater"]


def ema_avg_fn(
    decay: float = 0.999, warmup: bool = True
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``avg_fn`` for ``AveragedModel``: ``d * average + (1 - d) * current`` with ``d = min(decay, (1+n)/(10+n))``.

    Args:
        decay: the EMA decay, in ``(0, 1)``.
        warmup: use the warm-up schedule (else ``d = decay`` from the first update).
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}.")

    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor | int) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
        return averaged + (current - averaged) * (1.0 - d)

    return avg_fn


def build_ema(network: nn.Module, decay: float | None = 0.999, warmup: bool = True) -> AveragedModel | None:
    """A frozen EMA copy of ``network`` (``.module`` is the averaged network), or ``None`` when ``decay`` is 0/None.

    Buffers are averaged too (``use_buffers=True``), so the copy is complete on its own.
    """
    if not decay:
        return None
    ema = AveragedModel(network, avg_fn=ema_avg_fn(float(decay), warmup), use_buffers=True)
    ema.requires_grad_(False)
    return ema


class ModelEMAUpdater:
    """Ignite handler: ``ema.update_parameters(network)`` after every ``interval`` iterations.

    Args:
        ema: from :func:`build_ema` (``None``: the handler does nothing, so a config can switch EMA off).
        network: the trained network (unwrapped, or a DDP module: its ``module`` is used).
        interval: iterations between updates.
    """

    def __init__(self, ema: AveragedModel | None, network: nn.Module, interval: int = 1) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.ema = ema
        self.network = getattr(network, "module", network)
        self.interval = int(interval)

    def attach(self, engine: Engine) -> None:
        if self.ema is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    @torch.no_grad()
    def __call__(self, engine: Engine | None = None) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.network)
