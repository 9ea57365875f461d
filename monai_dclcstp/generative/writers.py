"""Safe, atomic writers for synthetic images (PNG, NIfTI) and datalist JSON files.

Every file is written to a temporary name in its target folder and then moved into place in one step, so a reader
never sees a half-written file. Without ``overwrite=True`` the move refuses an existing target (``os.link`` is
atomic and fails on an existing name), and every target must lie inside the given output folder.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["safe_output_path", "to_uint8", "save_png", "save_nifti", "save_json", "atomic_write"]

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def safe_output_path(output_dir: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """Resolve ``relative`` inside ``output_dir`` and refuse anything that could escape it.

    Each path component must match ``[A-Za-z0-9][A-Za-z0-9._-]*`` (no ``..``, no hidden names, no separators other
    than ``/``), the path must be relative, and the resolved path (symlinks followed) must stay under the resolved
    ``output_dir``.

    Raises:
        ValueError: naming the offending path.
    """
    rel = str(relative)
    parts = rel.split("/")
    if os.path.isabs(rel) or not rel or any(not _SAFE_PART.match(p) for p in parts):
        raise ValueError(
            f"unsafe output name {rel!r}: use a relative path of names made of letters, digits, '.', '_', '-' "
            "(not starting with '.')."
        )
    root = Path(output_dir).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"output path {rel!r} resolves to {target}, outside the output folder {root}.")
    return target


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically.

    The temporary file is in the same folder and ends with the same suffixes as ``path`` (writers that pick the
    format from the extension, such as PIL and nibabel, keep working).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is ``False``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (pass overwrite=True to replace).")
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, fails if path exists
            except FileExistsError:
                raise FileExistsError(
                    f"{path} already exists; refusing to overwrite it (pass overwrite=True to replace)."
                ) from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise FileExistsError(f"{path} already exists; refusing to overwrite it.") from None
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
