"""Image classifier on a (pretrained) MONAI ResNet backbone: backbone → global pooling → dropout → linear head."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from monai.networks.layers.factories import Pool
from torch import nn

from ...utils.encoder_io import load_pretrained_encoder
from .multiscale_backbone import MultiScaleResNet

__all__ = ["EncoderClassifier"]

logger = logging.getLogger(__name__)

_POOLS = {"avg": Pool.ADAPTIVEAVG, "max": Pool.ADAPTIVEMAX}


class EncoderClassifier(nn.Module):
    """Classifier for fine-tuning or linear probing of a DCL-CsTP encoder (Wu et al., IEEE Access 2025).

    ``backbone`` is a :class:`~monai_dclcstp.networks.MultiScaleResNet` (the state dict of MONAI's
    ``ResNetFeatures``, i.e. the file the pretraining bundle exports), followed by global pooling of its last stage
    (C5), dropout and a linear layer. As in timm, :meth:`forward_features` and :meth:`forward_head` are separate.

    Args:
        num_classes: number of output classes (>= 2; binary tasks use two logits and softmax).
        backbone: MONAI ResNet name (``resnet10`` ... ``resnet200``).
        spatial_dims: 2 or 3.
        in_channels: input channels (1 grey, 3 RGB, ...).
        pretrained_encoder: path of an exported ``encoder.pt`` (its ``encoder.json`` sidecar is checked first);
            ``None`` or ``""`` keeps the random initialisation.
        freeze_encoder: linear probe: the backbone gets ``requires_grad=False`` and stays in eval mode (its batch
            norm statistics are not updated), only the head trains.
        dropout: dropout probability before the linear layer.
        pooling: ``"avg"`` or ``"max"`` global pooling.

    Attributes:
        encoder_info: the sidecar of the loaded encoder (``None`` with random initialisation).
        feature_dim: width of the pooled feature vector (C5 channels).

    Raises:
        ValueError: bad arguments.
        FileNotFoundError: ``pretrained_encoder`` or its sidecar is missing.
        monai_dclcstp.utils.EncoderMismatchError: the encoder's backbone, ``spatial_dims``, ``in_channels`` or weights
            do not fit this network.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        spatial_dims: int = 2,
        in_channels: int = 1,
        pretrained_encoder: str | os.PathLike | None = None,
        freeze_encoder: bool = False,
        dropout: float = 0.0,
        pooling: str = "avg",
    ) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if pooling not in _POOLS:
            raise ValueError(f"pooling must be one of {sorted(_POOLS)}, got {pooling!r}.")
        self.num_classes = int(num_classes)
        self.backbone_name = backbone
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.backbone = MultiScaleResNet(backbone, spatial_dims=spatial_dims, in_channels=in_channels)
        self.feature_dim = self.backbone.feature_channels[-1]
        self.pool = Pool[_POOLS[pooling], spatial_dims](1)
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(self.feature_dim, self.num_classes)
        self.encoder_info: dict[str, Any] | None = None
        if pretrained_encoder is not None and str(pretrained_encoder).strip() not in ("", "None", "null"):
            self.encoder_info = load_pretrained_encoder(
                self.backbone,
                pretrained_encoder,
                backbone=backbone,
                spatial_dims=spatial_dims,
                in_channels=in_channels,
            )
            logger.info("backbone initialised from %s (%s)", pretrained_encoder, self.encoder_info.get("method", {}))
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> EncoderClassifier:
        """Set training mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.backbone.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W[, D])`` → pooled C5 features ``(B, feature_dim)``."""
        return torch.flatten(self.pool(self.backbone(x)[-1]), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` → logits ``(B, num_classes)``."""
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W[, D])`` → logits ``(B, num_classes)`` (apply softmax for probabilities)."""
        return self.forward_head(self.forward_features(x))

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
        """Optimiser parameter groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``.

        Parameters with ``requires_grad=False`` (a frozen backbone) are left out, and so is the backbone when
        ``backbone_lr_scale`` is 0. Pass the result as ``params`` of any ``torch.optim`` optimiser.

        Raises:
            ValueError: negative ``lr`` or ``backbone_lr_scale``.
        """
        if lr < 0 or backbone_lr_scale < 0:
            raise ValueError(f"lr and backbone_lr_scale must be >= 0, got {lr} and {backbone_lr_scale}.")
        head = [p for n, p in self.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
        groups = [{"params": head, "lr": float(lr), "name": "head"}]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone and backbone_lr_scale > 0:
            groups.append({"params": backbone, "lr": float(lr) * float(backbone_lr_scale), "name": "backbone"})
        return groups
