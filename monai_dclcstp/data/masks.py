"""Mask policy for loading transforms: the counterpart of the mask checks of the pre-flight validation.

Masks may be stored as grey PNG {0, 255} or {0, 1}, as RGB files whose channels are equal (Kvasir-SEG's JPEG masks),
and lossy (JPEG) masks carry ``"mask_threshold": 127`` in the datalist. :func:`binarize_mask` turns any of them into
a one-channel {0, 1} float mask. Bundles apply it after ``EnsureChannelFirstd``::

    {"_target_": "Lambdad", "keys": "label",
     "func": "$lambda x: monai_dclcstp.data.binarize_mask(x, @datalist_dict.get('mask_threshold'))"}
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["binarize_mask"]


def binarize_mask(mask: torch.Tensor | np.ndarray, threshold: float | None = None) -> torch.Tensor | np.ndarray:
    """Channel-first mask ``(C, H, W[, D])`` → ``(1, H, W[, D])`` float32 in {0, 1}.

    Args:
        mask: the loaded mask; only the first channel is used (the channels of RGB-stored masks are equal).
        threshold: foreground is ``mask > threshold``; ``None`` means 0 (binary masks as stored).
    """
    first = mask[:1]
    t = 0.0 if threshold is None else float(threshold)
    if isinstance(first, torch.Tensor):
        return (first > t).to(torch.float32)
    return (np.asarray(first) > t).astype(np.float32)
