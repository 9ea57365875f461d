"""Batch preparation for latent diffusion training with MONAI's ``SupervisedTrainer`` and ``DiffusionInferer``.

``monai.engines.DiffusionPrepareBatch`` draws noise shaped like the *image*; a latent diffusion model needs noise
shaped like the *latent*. :class:`LatentDiffusionPrepareBatch` encodes the images with the (frozen) autoencoder and
returns the scaled latents as the network input, so the plain ``DiffusionInferer`` and ``SupervisedTrainer`` train the
diffusion U-Net without a custom trainer::

    "prepare_batch": {"_target_": "monai_dclcstp.generative.LatentDiffusionPrepareBatch",
                      "autoencoder": "@autoencoder", "scale_factor": "@scale_factor",
                      "num_train_timesteps": 1000, "condition_name": "label"},
    "inferer": {"_target_": "DiffusionInferer", "scheduler": "@noise_scheduler"}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch, default_prepare_batch
from torch import nn

from .latent import encode_latents

__all__ = ["LatentDiffusionPrepareBatch"]


class LatentDiffusionPrepareBatch(DiffusionPrepareBatch):
    """Encode images to latents, draw noise and timesteps, and pick the training target.

    Returns ``(latents, target, (), {"noise": noise, "timesteps": t[, "condition": labels]})`` as
    ``SupervisedTrainer`` expects; the trainer then calls ``inferer(latents, network, noise=..., timesteps=...,
    condition=...)``. With ``condition_name`` (e.g. ``"label"``) the class labels are passed as ``condition``, which
    :class:`~monai_dclcstp.generative.conditional_unet.ClassConditionalDiffusionUNet` routes to its class embedding.

    Args:
        autoencoder: trained ``AutoencoderKL``; used under ``torch.no_grad`` (keep it in eval mode).
        num_train_timesteps: number of diffusion steps; timesteps are drawn uniformly from ``[0, num_train_timesteps)``.
        scale_factor: latent scale factor (see :func:`~monai_dclcstp.generative.latent.compute_scale_factor`), or
            anything with ``__float__`` read at every batch (e.g. a
            :class:`~monai_dclcstp.generative.scale_factor.LatentScaleFactor` restored from a checkpoint on resume).
        condition_name: batch key of the condition (class labels ``(B,)``), or ``None`` for unconditional training.
        label_dropout: probability of replacing a label by ``null_label`` (classifier-free guidance training).
        null_label: the "no class" label, usually ``num_classes`` with ``num_class_embeds = num_classes + 1``.
        prediction_type: ``"epsilon"`` (target = noise), ``"v_prediction"`` (target = velocity, needs ``scheduler``)
            or ``"sample"`` (target = latents).
        scheduler: the training noise scheduler, for ``prediction_type="v_prediction"``.
        sample_posterior: encode with a posterior sample (default, as MONAI's ``LatentDiffusionInferer``) or the mean.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        num_train_timesteps: int,
        scale_factor: Any = 1.0,
        condition_name: str | None = None,
        label_dropout: float = 0.0,
        null_label: int | None = None,
        prediction_type: str = "epsilon",
        scheduler: Any = None,
        sample_posterior: bool = True,
    ) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps, condition_name=condition_name)
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}.")
        if label_dropout > 0 and (null_label is None or condition_name is None):
            raise ValueError("label_dropout needs condition_name and null_label (the 'no class' index).")
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {prediction_type!r}.")
        if prediction_type == "v_prediction" and scheduler is None:
            raise ValueError("prediction_type='v_prediction' needs the training scheduler (for get_velocity).")
        self.autoencoder = autoencoder
        self.scale_factor = scale_factor if hasattr(scale_factor, "__float__") else float(scale_factor)
        self.label_dropout = float(label_dropout)
        self.null_label = null_label
        self.prediction_type = prediction_type
        self.scheduler = scheduler
        self.sample_posterior = sample_posterior

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(images, noise, timesteps)
        if self.prediction_type == "sample":
            return images
        return noise

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        images, _ = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        with torch.no_grad():
            latents = encode_latents(self.autoencoder, images, float(self.scale_factor), self.sample_posterior)
        latents = latents.as_tensor() if hasattr(latents, "as_tensor") else latents
        noise = self.get_noise(latents)
        timesteps = self.get_timesteps(latents)
        target = self.get_target(latents, noise, timesteps)
        infer_kwargs: dict[str, Any] = {"noise": noise, "timesteps": timesteps}
        if self.condition_name is not None:
            if not isinstance(batchdata, Mapping) or self.condition_name not in batchdata:
                raise KeyError(f"batch has no condition key {self.condition_name!r}.")
            labels = torch.as_tensor(batchdata[self.condition_name]).to(latents.device, non_blocking=non_blocking)
            if self.label_dropout > 0:
                drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
                labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)
            infer_kwargs["condition"] = labels
        return latents, target, (), infer_kwargs
