from __future__ import annotations

from .correspondence import identity_geometry, positive_mask, token_centres
from .dense_info_nce import DenseInfoNCELoss
from .dual_stream_loss import DualStreamLoss
from .info_nce import GlobalInfoNCELoss

__all__ = [
    "DenseInfoNCELoss",
    "DualStreamLoss",
    "GlobalInfoNCELoss",
    "identity_geometry",
    "positive_mask",
    "token_centres",
]
