"""DCL-CsTP dual-stream network: backbone → cross-scale tokens → global and local heads, with a momentum twin."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ...utils.momentum import deactivate_requires_grad, update_momentum
from ..blocks.cross_scale_token_projection import CrossScaleTokenProjection
from ..blocks.heads import GlobalProjectionHead, LocalProjectionHead
from .multiscale_backbone import MultiScaleResNet

__all__ = ["DualStreamEncoder", "DCLCsTPNet", "SCALE_NAMES"]

SCALE_NAMES = ("c3", "c4", "c5")


class DualStreamEncoder(nn.Module):
    """Backbone + cross-scale token projection + global and local projection heads (one branch of DCL-CsTP).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        backbone: MONAI ResNet name (``resnet18``, ``resnet34``, ``resnet50``, ...).
        scales: which backbone maps feed the token projection (subset of ``("c3", "c4", "c5")``); ``("c5",)`` is the
            "no cross-scale projection" ablation.
        grid: the scale whose grid the tokens are brought to (must be in ``scales``).
        embed_dim, num_layers, num_heads, mlp_ratio, attention: see :class:`CrossScaleTokenProjection`. The defaults
            (width 128, one block) keep the whole step within 1.25x of the bare two-view backbone step (measured in
            ``benchmarks/``); the paper-scale setting is ``embed_dim=256, num_layers=2``.
        head_hidden_dim: hidden width of both projection heads.
        out_dim: embedding width of both streams.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        backbone: str = "resnet18",
        scales: Sequence[str] = SCALE_NAMES,
        grid: str = "c4",
        embed_dim: int = 128,
        num_layers: int = 1,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        attention: str = "softmax",
        head_hidden_dim: int = 512,
        out_dim: int = 128,
    ) -> None:
        super().__init__()
        scales = tuple(s.lower() for s in scales)
        unknown = [s for s in scales if s not in SCALE_NAMES]
        if unknown or not scales or len(set(scales)) != len(scales):
            raise ValueError(f"scales must be distinct names from {SCALE_NAMES}, got {scales}.")
        if grid.lower() not in scales:
            raise ValueError(f"grid {grid!r} must be one of the used scales {scales}.")
        self.scale_indices = tuple(SCALE_NAMES.index(s) for s in scales)
        self.backbone = MultiScaleResNet(backbone, spatial_dims=spatial_dims, in_channels=in_channels)
        self.projection = CrossScaleTokenProjection(
            spatial_dims,
            [self.backbone.feature_channels[i] for i in self.scale_indices],
            embed_dim=embed_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            grid_scale=scales.index(grid.lower()),
            attention=attention,
        )
        self.global_head = GlobalProjectionHead(embed_dim, head_hidden_dim, out_dim)
        self.local_head = LocalProjectionHead(embed_dim, head_hidden_dim, out_dim)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` → fused token map ``(B, E, *grid)``."""
        features = self.backbone(x)
        return self.projection([features[i] for i in self.scale_indices])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, *spatial)`` → global ``(B, out_dim)`` and local ``(B, out_dim, *grid)`` embeddings (L2-normalised)."""
        tokens = self.forward_tokens(x)
        return self.global_head(tokens), self.local_head(tokens)


class DCLCsTPNet(nn.Module):
    """DCL-CsTP pretraining network: an online :class:`DualStreamEncoder` and its momentum (EMA) twin.

    ``forward(view1, view2)`` runs both views through the online encoder (one batched pass of ``2B`` images) and, without
    gradients, through the momentum encoder. The momentum coefficient is set by the trainer from
    :func:`monai_dclcstp.utils.cosine_schedule` (0.99 → 1, as in BYOL) and applied by :meth:`update_momentum`.

    Args:
        encoder: the online encoder; a deep copy becomes the frozen momentum twin.
        momentum: whether to keep a momentum twin; ``False`` uses the online encoder (detached) for the keys, i.e. a
            SimCLR-style symmetric setup.
        symmetric: ``True`` (default, as MoCo v3) sends both views through both encoders and the loss is symmetrised;
            ``False`` (as MoCo v2 / DenseCL) sends view 1 through the online encoder only and view 2 through the
            momentum encoder only, which halves the cost of a step (one query term per step instead of two).

    Outputs of ``forward`` (dict): ``global_q1, global_q2`` ``(B, D)`` and ``local_q1, local_q2`` ``(B, D, *grid)``
    from the online encoder (with gradients), ``global_k1, global_k2, local_k1, local_k2`` from the momentum encoder;
    with ``symmetric=False`` only ``global_q1, local_q1, global_k2, local_k2``.
    """

    def __init__(self, encoder: DualStreamEncoder, momentum: bool = True, symmetric: bool = True) -> None:
        super().__init__()
        self.online = encoder
        self.momentum_encoder = deactivate_requires_grad(copy.deepcopy(encoder)) if momentum else None
        self.symmetric = bool(symmetric)

    @property
    def backbone(self) -> MultiScaleResNet:
        """The online backbone (what downstream tasks fine-tune)."""
        return self.online.backbone

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """Plain ``state_dict`` of the online backbone (detached CPU tensors), loadable into ``ResNetFeatures``."""
        return {k: v.detach().cpu().clone() for k, v in self.online.backbone.state_dict().items()}

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """EMA step ``momentum = m * momentum + (1 - m) * online``."""
        if self.momentum_encoder is not None:
            update_momentum(self.online, self.momentum_encoder, m)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Two views ``(B, C, *spatial)`` each → dict of global ``(B, D)`` and local ``(B, D, *grid)`` embeddings."""
        if view1.shape != view2.shape:
            raise ValueError(
                f"the two views must have the same shape, got {tuple(view1.shape)} and {tuple(view2.shape)}."
            )
        if not self.symmetric:
            g_q, l_q = self.online(view1)
            key_encoder = self.momentum_encoder if self.momentum_encoder is not None else self.online
            with torch.no_grad():
                g_k, l_k = key_encoder(view2)
            return {"global_q1": g_q, "local_q1": l_q, "global_k2": g_k, "local_k2": l_k}
        b = view1.shape[0]
        both = torch.cat([view1, view2], dim=0)
        g_q, l_q = self.online(both)
        with torch.no_grad():
            if self.momentum_encoder is not None:
                g_k, l_k = self.momentum_encoder(both)
            else:
                g_k, l_k = g_q.detach(), l_q.detach()
        return {
            "global_q1": g_q[:b],
            "global_q2": g_q[b:],
            "local_q1": l_q[:b],
            "local_q2": l_q[b:],
            "global_k1": g_k[:b],
            "global_k2": g_k[b:],
            "local_k1": l_k[:b],
            "local_k2": l_k[b:],
        }
