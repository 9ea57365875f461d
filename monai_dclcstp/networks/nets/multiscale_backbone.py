"""Multi-scale ResNet backbone returning the C3, C4, C5 feature maps."""

from __future__ import annotations

import torch
from monai.networks.nets.resnet import ResNetFeatures, resnet_params

__all__ = ["MultiScaleResNet", "SUPPORTED_BACKBONES", "backbone_feature_channels"]

SUPPORTED_BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")
_BASE_WIDTHS = (128, 256, 512)  # layer2..layer4 widths of MONAI's ResNet (``get_inplanes()[1:]``)


def backbone_feature_channels(backbone: str) -> tuple[int, int, int]:
    """Channels of (C3, C4, C5) for a MONAI ResNet name, e.g. ``(128, 256, 512)`` for ``resnet18``."""
    if backbone not in resnet_params:
        raise ValueError(f"unknown backbone {backbone!r}; supported: {', '.join(SUPPORTED_BACKBONES)}.")
    expansion = 4 if resnet_params[backbone][0] == "bottleneck" else 1
    return tuple(w * expansion for w in _BASE_WIDTHS)  # type: ignore[return-value]


class MultiScaleResNet(ResNetFeatures):
    """MONAI ResNet that returns the stride-8/16/32 feature maps (C3, C4, C5) of FPN (Lin et al. 2017).

    A thin subclass of :class:`monai.networks.nets.ResNetFeatures`, so its ``state_dict`` is exactly the one
    ``ResNetFeatures`` and ``FlexibleUNet``'s ``ResNetEncoder`` use: the exported encoder loads into either.
    Never downloads weights (``pretrained=False``).

    Args:
        backbone: MONAI ResNet name, one of :data:`SUPPORTED_BACKBONES`.
        spatial_dims: 2 or 3.
        in_channels: number of input channels (1 grey, 3 RGB, any other count).

    Attributes:
        feature_channels: channels of (C3, C4, C5).
        feature_strides: nominal strides (8, 16, 32) of (C3, C4, C5) relative to the input.
    """

    feature_strides = (8, 16, 32)

    def __init__(self, backbone: str = "resnet18", spatial_dims: int = 2, in_channels: int = 1) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        self.feature_channels = backbone_feature_channels(backbone)
        super().__init__(backbone, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels)
        self.backbone_name = backbone
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels

    def forward(self, inputs: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """``(B, in_channels, H, W[, D])`` → ``[C3 (B, c3, H/8, ...), C4 (B, c4, H/16, ...), C5 (B, c5, H/32, ...)]``.

        Sizes are rounded up at every stride-2 stage, so any input size >= 1 works.
        """
        return super().forward(inputs)[2:]
