"""A few samples of the diffusion model during training, from fixed noise, for TensorBoard image grids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .sampling import sample_images

__all__ = ["DiffusionSamplePreview"]


class DiffusionSamplePreview:
    """``preview(engine=None) -> images (N, C, H, W[, D])``: decoded samples from the same noise every time.

    The noise is drawn once (seeded) so successive grids show the same samples getting better; stochastic samplers
    (e.g. ``"sde_dpm_solver++"``) also get the same per-step noise every time (the global generator is seeded with
    ``seed`` for the preview). Sampling runs under ``torch.no_grad`` with the networks in eval mode (their previous
    modes are restored) and inside ``torch.random.fork_rng``, so the training's random stream is not disturbed.

    Args:
        diffusion_model: the diffusion U-Net being trained.
        scheduler: a sampling scheduler (a fast one, e.g. ``build_scheduler("sde_dpm_solver++", ...)``).
        latent_shape: ``(C_latent, *latent_spatial)``.
        autoencoder: the frozen ``AutoencoderKL`` (``None``: image-space diffusion).
        scale_factor: latent scale factor (float or anything with ``__float__``, read at each call).
        num_images: samples per preview.
        num_inference_steps: sampling steps.
        num_classes: for a class-conditional model, labels cycle through ``0 .. num_classes - 1``; 0 otherwise.
        seed: seed of the fixed noise and of the stochastic samplers' per-step noise.
    """

    def __init__(
        self,
        diffusion_model: nn.Module,
        scheduler: Any,
        latent_shape: Sequence[int],
        autoencoder: nn.Module | None = None,
        scale_factor: Any = 1.0,
        num_images: int = 8,
        num_inference_steps: int = 20,
        num_classes: int = 0,
        seed: int = 0,
    ) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}.")
        self.diffusion_model = diffusion_model
        self.scheduler = scheduler
        self.autoencoder = autoencoder
        self.scale_factor = scale_factor
        self.num_inference_steps = int(num_inference_steps)
        self.seed = int(seed)
        self.noise = torch.randn(
            (int(num_images), *[int(s) for s in latent_shape]), generator=torch.Generator().manual_seed(seed)
        )
        self.labels = torch.arange(int(num_images)) % int(num_classes) if num_classes else None

    @torch.no_grad()
    def __call__(self, engine: Any = None) -> torch.Tensor:
        device = next(self.diffusion_model.parameters()).device
        modules = [m for m in (self.diffusion_model, self.autoencoder) if m is not None]
        modes = [m.training for m in modules]
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                for m in modules:
                    m.eval()
                return sample_images(
                    self.diffusion_model,
                    self.scheduler,
                    self.noise.to(device),
                    autoencoder=self.autoencoder,
                    scale_factor=float(self.scale_factor),
                    num_inference_steps=self.num_inference_steps,
                    class_labels=None if self.labels is None else self.labels.to(device),
                ).cpu()
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
