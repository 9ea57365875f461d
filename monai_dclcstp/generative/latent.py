"""Latent space helpers for a MONAI ``AutoencoderKL``: scale factor, latent shape, encode and decode.

The latent diffusion model (Rombach et al., https://arxiv.org/abs/2112.10752) is trained on
``z * scale_factor`` with ``scale_factor = 1 / std(z)``, so that its input has roughly unit variance as the noise
schedule assumes. MONAI's generative tutorials estimate ``std(z)`` on one batch; :func:`compute_scale_factor` pools a
few batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["compute_scale_factor", "latent_shape", "encode_latents", "decode_latents"]


def _batch_images(batch: Any, image_key: str) -> torch.Tensor:
    if isinstance(batch, Mapping):
        if image_key not in batch:
            raise KeyError(f"batch has no key {image_key!r} (keys: {sorted(batch)}); set image_key.")
        batch = batch[image_key]
    elif isinstance(batch, (list, tuple)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"expected an image tensor (B, C, *spatial) in the batch, got {type(batch).__name__}.")
    return batch.as_tensor() if hasattr(batch, "as_tensor") else batch


def encode_latents(
    autoencoder: nn.Module, images: torch.Tensor, scale_factor: float = 1.0, sample_posterior: bool = True
) -> torch.Tensor:
    """Encode images to scaled latents, as ``LatentDiffusionInferer`` does in training.

    Args:
        autoencoder: a MONAI ``AutoencoderKL`` (anything with ``encode`` and ``encode_stage_2_inputs``).
        images: ``(B, C, H, W[, D])`` on the autoencoder's device.
        scale_factor: multiplier applied to the latents.
        sample_posterior: draw ``z ~ N(mu, sigma)`` (``encode_stage_2_inputs``, the training behaviour); if ``False``
            return the posterior mean ``mu``.

    Returns:
        latents ``(B, latent_channels, *latent_spatial)``.
    """
    if sample_posterior:
        z = autoencoder.encode_stage_2_inputs(images)
    else:
        z, _ = autoencoder.encode(images)
    return z * scale_factor


def decode_latents(autoencoder: nn.Module, latents: torch.Tensor, scale_factor: float = 1.0) -> torch.Tensor:
    """Decode scaled latents ``(B, latent_channels, *latent_spatial)`` back to images ``(B, C, H, W[, D])``."""
    return autoencoder.decode_stage_2_outputs(latents / scale_factor)


@torch.no_grad()
def compute_scale_factor(
    autoencoder: nn.Module,
    data: Iterable[Any] | torch.Tensor,
    num_batches: int = 4,
    image_key: str = "image",
    device: str | torch.device | None = None,
    sample_posterior: bool = True,
) -> float:
    """Estimate ``1 / std(z)`` of the autoencoder's latents over the first ``num_batches`` batches.

    The standard deviation is pooled over every latent element of every batch (float64, batch statistics merged exactly), which equals
    ``1 / torch.std(torch.cat(latents))`` without keeping the latents. The autoencoder is put in eval mode for the
    estimate and restored to its previous mode afterwards.

    Args:
        autoencoder: a trained MONAI ``AutoencoderKL``.
        data: a data loader (batches are dicts with ``image_key``, tuples/lists whose first item is the image, or
            tensors), or one image tensor ``(B, C, H, W[, D])``.
        num_batches: how many batches to use (fewer if ``data`` runs out).
        image_key: key of the image in dict batches.
        device: where to run the encoder; defaults to the autoencoder's device.
        sample_posterior: use sampled latents (as in training, default) or posterior means.

    Returns:
        the scale factor as a Python float.

    Raises:
        ValueError: no data, or latents with zero or non-finite spread.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}.")
    if device is None:
        device = next(autoencoder.parameters()).device
    batches: Iterable[Any] = [data] if isinstance(data, torch.Tensor) else data
    was_training = autoencoder.training
    autoencoder.eval()
    count, mean, m2 = 0, 0.0, 0.0  # pooled running statistics (Chan et al. merge of per-batch mean and M2)
    try:
        for i, batch in enumerate(batches):
            if i >= num_batches:
                break
            images = _batch_images(batch, image_key).to(device)
            z = encode_latents(autoencoder, images, sample_posterior=sample_posterior).double()
            n_b, mean_b = z.numel(), z.mean().item()
            m2_b = ((z - mean_b) ** 2).sum().item()
            delta, n = mean_b - mean, count + n_b
            mean += delta * n_b / n
            m2 += m2_b + delta * delta * count * n_b / n
            count = n
    finally:
        autoencoder.train(was_training)
    if count < 2:
        raise ValueError("compute_scale_factor got no data (or a single latent value): check the data loader.")
    std = math.sqrt(m2 / (count - 1))
    if not math.isfinite(std) or std <= 0.0:
        raise ValueError(f"latent standard deviation is {std}; the autoencoder output is degenerate.")
    return 1.0 / std


def latent_shape(autoencoder: nn.Module, spatial_size: Sequence[int] | int) -> tuple[int, ...]:
    """Shape ``(latent_channels, *latent_spatial)`` of the latents of images of ``spatial_size``.

    Computed from the ``AutoencoderKL`` architecture (one stride-2 downsampling with asymmetric padding per level but
    the last), without running the network, so it is cheap for large 3D volumes.

    Args:
        autoencoder: a MONAI ``AutoencoderKL``.
        spatial_size: image size ``(H, W[, D])``, or one int for all spatial dimensions.

    Returns:
        e.g. ``(3, 16, 16)`` for a 64x64 image and ``channels=(32, 64, 64)``.
    """
    encoder = getattr(autoencoder, "encoder", None)
    if encoder is None or not hasattr(encoder, "channels") or not hasattr(autoencoder, "latent_channels"):
        raise TypeError(f"latent_shape expects a MONAI AutoencoderKL, got {type(autoencoder).__name__}.")
    dims = int(encoder.spatial_dims)
    size = [int(spatial_size)] * dims if isinstance(spatial_size, int) else [int(s) for s in spatial_size]
    if len(size) != dims:
        raise ValueError(f"spatial_size {tuple(size)} does not match the autoencoder's spatial_dims={dims}.")
    for _ in range(len(encoder.channels) - 1):
        if min(size) < 2:
            raise ValueError(f"spatial_size {spatial_size} is too small for {len(encoder.channels) - 1} downsamplings.")
        size = [(s - 2) // 2 + 1 for s in size]
    return (int(autoencoder.latent_channels), *size)
