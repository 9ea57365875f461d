"""Perceptual loss for the autoencoder that never downloads anything.

MONAI's ``PerceptualLoss`` fetches its weights at construction (LPIPS/torchvision from the internet, RadImageNet and
MedicalNet through ``torch.hub``/Hugging Face). No machine of this project may download at run time, so
:func:`build_perceptual_loss` only builds a perceptual loss from a **local** weights file, and otherwise returns
``None`` and logs that the loss is off:

- ``network_type="encoder"`` (default): an encoder exported by the pretraining bundle (``encoder.pt`` +
  ``encoder.json``, Contract 2), used LPIPS-style by :class:`EncoderPerceptualLoss` on its C3-C5 features. The
  encoder must have the autoencoder's ``spatial_dims`` and ``in_channels``.
- ``network_type="resnet50"``: MONAI's ``PerceptualLoss`` on a torchvision ResNet-50 state dict saved locally
  (needs torchvision; ``pretrained_path`` of MONAI's loss).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from monai.utils import optional_import
from torch import nn

__all__ = ["EncoderPerceptualLoss", "build_perceptual_loss", "PERCEPTUAL_NETWORKS"]

logger = logging.getLogger(__name__)

#: values of ``network_type`` accepted by :func:`build_perceptual_loss`.
PERCEPTUAL_NETWORKS = ("encoder", "resnet50")


def _normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class EncoderPerceptualLoss(nn.Module):
    """LPIPS-style distance (Zhang et al., https://arxiv.org/abs/1801.03924) on a frozen DCL-CsTP encoder.

    For each of the backbone's C3, C4, C5 maps: unit-normalise the features over channels, take the squared
    difference, sum over channels and average over space; the loss is the sum over the three stages, averaged over
    the batch. The encoder is frozen and kept in eval mode (its BatchNorm statistics do not change).

    Args:
        encoder_path: ``encoder.pt`` exported by the pretraining bundle (its ``encoder.json`` must be beside it).
        spatial_dims: spatial dimensions of the images (must match the encoder).
        in_channels: image channels (must match the encoder).
    """

    def __init__(self, encoder_path: str | os.PathLike, spatial_dims: int, in_channels: int) -> None:
        super().__init__()
        from ..networks.nets.multiscale_backbone import MultiScaleResNet
        from ..utils.encoder_io import load_pretrained_encoder, read_encoder_info

        info = read_encoder_info(encoder_path)
        self.encoder = MultiScaleResNet(info["backbone"], spatial_dims=spatial_dims, in_channels=in_channels)
        load_pretrained_encoder(
            self.encoder, encoder_path, backbone=info["backbone"], spatial_dims=spatial_dims, in_channels=in_channels
        )
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.info = info

    def train(self, mode: bool = True) -> EncoderPerceptualLoss:
        super().train(mode)
        self.encoder.eval()  # always frozen, including BatchNorm statistics
        return self

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``input``, ``target``: ``(B, C, H, W[, D])`` in the encoder's intensity range → scalar."""
        if input.shape != target.shape:
            raise ValueError(f"input {tuple(input.shape)} and target {tuple(target.shape)} differ in shape.")
        loss = input.new_zeros(())
        for f_in, f_tg in zip(self.encoder(input), self.encoder(target)):
            diff = (_normalize(f_in) - _normalize(f_tg)).pow(2).sum(dim=1)
            loss = loss + diff.flatten(1).mean(1).mean()
        return loss


def build_perceptual_loss(
    spatial_dims: int,
    in_channels: int = 1,
    weights_path: str | os.PathLike | None = None,
    network_type: str = "encoder",
    is_fake_3d: bool = True,
    fake_3d_ratio: float = 0.5,
    state_dict_key: str | None = None,
) -> nn.Module | None:
    """A perceptual loss from local weights, or ``None`` (logged) when no weights are given.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        weights_path: local weights file (see the module docstring); ``None``, ``""`` or ``"none"`` turn the
            perceptual loss off.
        network_type: one of :data:`PERCEPTUAL_NETWORKS`.
        is_fake_3d: ``resnet50`` on 3D images: 2.5D loss over slices of the three axes (MONAI's option).
        fake_3d_ratio: fraction of slices used by the 2.5D loss.
        state_dict_key: ``resnet50``: key of the state dict inside the file, if it is nested.

    Returns:
        a module ``f(reconstruction, target) -> scalar`` on the images' device is up to the caller (``.to(device)``),
        or ``None``.

    Raises:
        FileNotFoundError: ``weights_path`` does not exist.
        ValueError: unknown ``network_type``, or one that would download weights.
        ImportError: ``resnet50`` without torchvision.
    """
    if weights_path is None or str(weights_path).strip().lower() in ("", "none", "null", "false"):
        logger.info("perceptual loss: off (no local weights given; nothing is downloaded).")
        return None
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"perceptual loss weights {path} do not exist (perceptual_weights key).")
    kind = str(network_type).lower()
    if kind == "encoder":
        loss = EncoderPerceptualLoss(path, spatial_dims=spatial_dims, in_channels=in_channels)
        logger.info("perceptual loss: on, DCL-CsTP %s encoder from %s.", loss.info["backbone"], path)
        return loss
    if kind == "resnet50":
        _, has_torchvision = optional_import("torchvision")
        if not has_torchvision:
            raise ImportError("perceptual loss network_type='resnet50' needs torchvision (pip install torchvision).")
        from monai.losses import PerceptualLoss

        loss = PerceptualLoss(
            spatial_dims=spatial_dims,
            network_type="resnet50",
            is_fake_3d=is_fake_3d,
            fake_3d_ratio=fake_3d_ratio,
            pretrained=True,
            pretrained_path=str(path),
            pretrained_state_dict_key=state_dict_key,
        )
        logger.info("perceptual loss: on, torchvision ResNet-50 weights from %s.", path)
        return loss
    raise ValueError(
        f"perceptual network_type {network_type!r} is not supported offline; choose one of {PERCEPTUAL_NETWORKS} "
        "(MONAI's LPIPS, RadImageNet and MedicalNet networks download their weights)."
    )
