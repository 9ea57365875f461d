from __future__ import annotations

from .cross_scale_token_projection import CrossScaleTokenProjection, resample_to_grid
from .heads import GlobalProjectionHead, LocalProjectionHead, ProjectionMLP
from .linear_attention import LinearAttentionBlock
from .position_embedding import sincos_position_embedding

__all__ = [
    "CrossScaleTokenProjection",
    "GlobalProjectionHead",
    "LinearAttentionBlock",
    "LocalProjectionHead",
    "ProjectionMLP",
    "resample_to_grid",
    "sincos_position_embedding",
]
