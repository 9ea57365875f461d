from __future__ import annotations

from .dual_stream import SCALE_NAMES, DCLCsTPNet, DualStreamEncoder
from .multiscale_backbone import SUPPORTED_BACKBONES, MultiScaleResNet, backbone_feature_channels

__all__ = [
    "DCLCsTPNet",
    "DualStreamEncoder",
    "MultiScaleResNet",
    "SCALE_NAMES",
    "SUPPORTED_BACKBONES",
    "backbone_feature_channels",
]
