"""Safe, atomic writers for synthetic images (PNG, NIfTI) and datalist JSON files.

Every file is written to a temporary name in its target folder and then moved into place in one step, so a reader
never sees a half-written file. Without ``overwrite=True`` the move refuses an existing target (``os.link`` is
atomic and fails on an existing name), and every target must lie inside the given output folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_write, safe_output_path

__all__ = ["safe_output_path", "to_uint8", "save_png", "save_nifti", "save_json", "atomic_write"]


def _to_numpy(image: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return np.asarray(image)


def to_uint8(image: np.ndarray | torch.Tensor, intensity_range: Sequence[float] = (0.0, 1.0)) -> np.ndarray:
    """Map intensities linearly from ``intensity_range`` (the training range) to ``[0, 255]``, clip and round."""
    lo, hi = float(intensity_range[0]), float(intensity_range[1])
    if not hi > lo:
        raise ValueError(f"intensity_range must be (low, high) with high > low, got {tuple(intensity_range)}.")
    arr = (_to_numpy(image).astype(np.float64) - lo) / (hi - lo)
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def save_png(
    image: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    intensity_range: Sequence[float] = (0.0, 1.0),
    reverse_indexing: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a 2D image ``(C, H, W)`` (C = 1 grey, 3 RGB) or ``(H, W)`` as an 8-bit PNG, atomically.

    Args:
        image: channel-first image in the training intensity range.
        path: target ``.png`` file.
        intensity_range: the range mapped to ``0..255``.
        reverse_indexing: transpose the spatial axes before writing, matching MONAI's ``PILReader`` default
            (``reverse_indexing=True``), so that ``LoadImage(ensure_channel_first=True)`` reads back the same array
            layout the network produced.
        overwrite: replace an existing file.
    """
    from PIL import Image

    arr = to_uint8(image, intensity_range)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"save_png expects (C, H, W) with C in (1, 3) or (H, W), got shape {arr.shape} for {path}.")
    arr = np.moveaxis(arr, 0, -1)  # (H, W, C) as array indices
    if reverse_indexing:
        arr = arr.transpose(1, 0, 2)
    pil = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"), overwrite=overwrite)


def save_nifti(
    image: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    affine: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 3D image ``(C, H, W, D)`` (or ``(H, W, D)``) as float32 NIfTI (``.nii`` or ``.nii.gz``), atomically.

    One channel is stored as ``(H, W, D)``, several as ``(H, W, D, C)``; MONAI's ``LoadImage(ensure_channel_first=True)``
    reads either back as ``(C, H, W, D)``. ``affine`` defaults to the identity.
    """
    import nibabel as nib

    arr = _to_numpy(image).astype(np.float32)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    if arr.ndim not in (3, 4):
        raise ValueError(f"save_nifti expects (C, H, W, D) or (H, W, D), got shape {arr.shape} for {path}.")
    img = nib.Nifti1Image(arr, np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64))
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)), overwrite=overwrite)


def save_json(obj: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"), overwrite=overwrite)
