from __future__ import annotations

from .classifier import EncoderClassifier
from .dual_stream import SCALE_NAMES, DCLCsTPNet, DualStreamEncoder
from .multiscale_backbone import SUPPORTED_BACKBONES, MultiScaleResNet, backbone_feature_channels
from .segmentation import PretrainedEncoderUNet

__all__ = [
    "DCLCsTPNet",
    "DualStreamEncoder",
    "EncoderClassifier",
    "MultiScaleResNet",
    "PretrainedEncoderUNet",
    "SCALE_NAMES",
    "SUPPORTED_BACKBONES",
    "backbone_feature_channels",
]
