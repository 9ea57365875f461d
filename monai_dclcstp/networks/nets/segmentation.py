"""U-Net for downstream segmentation whose encoder is the (pretrained) MONAI ResNet of DCL-CsTP.

MONAI's :class:`~monai.networks.nets.FlexibleUNet` with a ResNet backbone uses a
:class:`~monai.networks.nets.resnet.ResNetEncoder`, a subclass of :class:`~monai.networks.nets.ResNetFeatures`, so the
``encoder.pt`` exported by the pretraining bundle (a ``ResNetFeatures`` state dict, DESIGN.md Contract 2) loads into
``.encoder`` unchanged. This module adds what fine-tuning needs on top: loading and checking that encoder, freezing it
(its batch-norm statistics included) and a lower encoder learning rate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import FlexibleUNet
from torch import nn

from ...utils.encoder_io import load_pretrained_encoder
from .multiscale_backbone import SUPPORTED_BACKBONES

__all__ = ["PretrainedEncoderUNet"]

logger = logging.getLogger(__name__)


def _is_empty(path: Any) -> bool:
    return path is None or (isinstance(path, str) and path.strip() in ("", "None", "null"))


class PretrainedEncoderUNet(FlexibleUNet):
    """FlexibleUNet (ResNet encoder, U-Net decoder) initialised from an exported DCL-CsTP encoder.

    DCL-CsTP: "Dual-Stream Contrastive Learning with Cross-Scale Token Projection", IEEE Access 2025; the decoder is
    MONAI's FlexibleUNet decoder (Ronneberger et al., "U-Net", MICCAI 2015).

    Args:
        in_channels: input channels (1 grey, 3 RGB, ...); must match the encoder's.
        out_channels: output channels, the number of classes including background (2 for binary segmentation).
        backbone: MONAI ResNet name, one of :data:`~monai_dclcstp.networks.nets.SUPPORTED_BACKBONES`.
        spatial_dims: 2 or 3.
        pretrained_encoder: path of an ``encoder.pt`` with its ``encoder.json`` sidecar; ``None`` or ``""`` keeps the
            random initialisation. The sidecar is read first: a different backbone, ``spatial_dims`` or
            ``in_channels`` raises :class:`~monai_dclcstp.utils.EncoderMismatchError` naming the file.
        freeze_encoder: keep the encoder fixed: no gradients, and its batch-norm layers stay in eval mode (their
            running statistics are not updated) even while the rest of the network trains.
        decoder_channels, norm, act, dropout, decoder_bias, upsample, interp_mode, is_pad: as in
            :class:`~monai.networks.nets.FlexibleUNet`.

    Attributes:
        encoder_info: the sidecar description of the loaded encoder (empty when randomly initialised).

    Shapes:
        ``(B, in_channels, H, W[, D])`` → logits ``(B, out_channels, H, W[, D])``; any input size works (inputs are
        zero-padded to a multiple of :attr:`size_divisor` and the logits cropped back).
    """

    #: FlexibleUNet's five stride-2 stages need spatial sizes divisible by this.
    size_divisor = 32

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        backbone: str = "resnet18",
        spatial_dims: int = 2,
        pretrained_encoder: str | os.PathLike | None = None,
        freeze_encoder: bool = False,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        norm: str | tuple = ("batch", {"eps": 1e-3, "momentum": 0.1}),
        act: str | tuple = ("relu", {"inplace": True}),
        dropout: float | tuple = 0.0,
        decoder_bias: bool = False,
        upsample: str = "nontrainable",
        interp_mode: str = "nearest",
        is_pad: bool = True,
    ) -> None:
        if backbone not in SUPPORTED_BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(SUPPORTED_BACKBONES)}, got {backbone!r}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if out_channels < 1:
            raise ValueError(f"out_channels must be positive, got {out_channels}.")
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            backbone=backbone,
            pretrained=False,
            decoder_channels=tuple(decoder_channels),
            spatial_dims=spatial_dims,
            norm=norm,
            act=act,
            dropout=dropout,
            decoder_bias=decoder_bias,
            upsample=upsample,
            interp_mode=interp_mode,
            is_pad=is_pad,
        )
        self.backbone_name = backbone
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.encoder_info: dict[str, Any] = {}
        if not _is_empty(pretrained_encoder):
            self.load_encoder(pretrained_encoder)  # type: ignore[arg-type]
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()

    def load_encoder(self, path: str | os.PathLike) -> dict[str, Any]:
        """Load an exported encoder into ``self.encoder`` after checking its sidecar; returns the sidecar."""
        self.encoder_info = load_pretrained_encoder(
            self.encoder,
            path,
            backbone=self.backbone_name,
            spatial_dims=self.spatial_dims,
            in_channels=self.in_channels,
        )
        logger.info(
            "loaded pretrained encoder %s (%s, method %s, intensity %s)",
            path,
            self.encoder_info.get("backbone"),
            (self.encoder_info.get("method") or {}).get("name", "?"),
            self.encoder_info.get("intensity"),
        )
        return self.encoder_info

    def train(self, mode: bool = True) -> PretrainedEncoderUNet:
        """As :meth:`torch.nn.Module.train`, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the decoder and the segmentation head (everything but the encoder)."""
        for name, p in self.named_parameters():
            if not name.startswith("encoder."):
                yield p

    def parameter_groups(self, lr: float, encoder_lr_scale: float = 1.0) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the encoder at ``lr * encoder_lr_scale``, the rest at ``lr``.

        A frozen encoder (or ``encoder_lr_scale == 0``) contributes no group.

        Example (bundle config)::

            "optimizer": {"_target_": "torch.optim.AdamW",
                          "params": "$@network_def.parameter_groups(@lr, @encoder_lr_scale)", "lr": "@lr"}
        """
        if lr <= 0 or encoder_lr_scale < 0:
            raise ValueError(f"lr must be positive and encoder_lr_scale non-negative, got {lr}, {encoder_lr_scale}.")
        groups: list[dict[str, Any]] = [{"params": list(self.decoder_parameters()), "lr": lr, "name": "decoder"}]
        if not self.freeze_encoder and encoder_lr_scale > 0:
            groups.insert(
                0, {"params": list(self.encoder.parameters()), "lr": lr * encoder_lr_scale, "name": "encoder"}
            )
        return groups

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W[, D])`` → logits ``(B, out_channels, H, W[, D])``.

        FlexibleUNet needs sizes divisible by 32 (five stride-2 stages); other sizes are zero-padded at the end of each
        axis and the logits cropped back.
        """
        spatial = tuple(inputs.shape[2:])
        pads = [(-s) % self.size_divisor for s in spatial]
        if not any(pads):
            return super().forward(inputs)
        pad_arg: list[int] = []
        for p in reversed(pads):  # F.pad takes the last axis first
            pad_arg += [0, p]
        out = super().forward(F.pad(inputs, pad_arg))
        return out[(slice(None), slice(None), *(slice(0, s) for s in spatial))]
