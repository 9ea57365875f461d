"""Segmentation-only transforms: masks to class indices, and writing predicted masks in the input's format.

- :class:`ToClassIndexMask` / :class:`ToClassIndexMaskd`: a loaded mask ``(C, *spatial)`` → ``(1, *spatial)`` class
  indices. Binary tasks threshold it (``mask > threshold``; JPEG masks carry ``"mask_threshold": 127`` in the
  datalist, see :mod:`monai_dclcstp.data.layouts.segmentation`), multi-class tasks take the stored values as indices.
- :class:`ResizeToOriginalSize` / :class:`ResizeToOriginalSized`: resize network outputs back to the input's original
  spatial shape (recorded by ``LoadImage`` in the metadata), with (tri)linear interpolation of the probabilities,
  whatever resampling brought the input to the network's size.
- :class:`WriteSegmentationMask` / :class:`WriteSegmentationMaskd`: write a predicted mask next to nothing but the
  output folder, named after its input, in the input's format: an 8-bit PNG of the input's pixel size for 2D raster
  inputs (PNG, JPEG, BMP, TIFF), NIfTI with the input's affine for anything else (NIfTI, DICOM, 3D volumes).
  Names are sanitised and confined to the output folder (:func:`~monai_dclcstp.utils.safe_output_path`), and files are
  written atomically.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Resize, Transform

from ..data.files import RASTER_SUFFIXES, TIFF_SUFFIXES, file_stem, file_suffix
from ..data.masks import binarize_mask
from ..utils.io import atomic_write, safe_output_path

__all__ = [
    "ResizeToOriginalSize",
    "ResizeToOriginalSized",
    "ResizeToOriginalSizeD",
    "ResizeToOriginalSizeDict",
    "ToClassIndexMask",
    "ToClassIndexMaskd",
    "ToClassIndexMaskD",
    "ToClassIndexMaskDict",
    "WriteSegmentationMask",
    "WriteSegmentationMaskd",
    "WriteSegmentationMaskD",
    "WriteSegmentationMaskDict",
    "output_name",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_name(source: str | os.PathLike, postfix: str = "_seg", ext: str = ".png") -> str:
    """File name for the prediction of ``source``: its stem, sanitised, + ``postfix`` + ``ext``.

    Only the stem of the last path component is used, characters outside ``[A-Za-z0-9._-]`` become ``_`` and leading
    dots/underscores are dropped, so ``"../../x y.png"`` gives ``"x_y_seg.png"``; an empty result becomes ``"image"``.
    """
    stem = file_stem(os.path.basename(os.fspath(source))) if source else ""
    stem = _UNSAFE.sub("_", stem).lstrip("._-")[:150] or "image"
    return f"{stem}{postfix}{ext}"


def _original_shape(meta: Mapping) -> tuple[int, ...] | None:
    shape = meta.get("spatial_shape")
    if shape is None:
        return None
    return tuple(int(s) for s in np.asarray(shape.cpu() if isinstance(shape, torch.Tensor) else shape).reshape(-1))


class ResizeToOriginalSize(Transform):
    """Resize a channel-first prediction ``(C, *spatial)`` to the input's original spatial shape.

    The shape is the ``spatial_shape`` that MONAI's ``LoadImage`` records in the metadata (of the prediction itself or
    of ``meta``). Probabilities are interpolated (bilinear in 2D, trilinear in 3D) before the ``argmax``, so the
    restored mask has smooth boundaries even when the input was downsampled with ``"area"`` (box) averaging, whose
    inverse (``Invertd``) would replicate pixels. Predictions already at the original size pass through unchanged.

    Args:
        mode: interpolation mode; ``None`` chooses ``"bilinear"`` / ``"trilinear"`` from the number of spatial axes.
        align_corners: as in :class:`~monai.transforms.Resize`.
    """

    def __init__(self, mode: str | None = None, align_corners: bool | None = False) -> None:
        self.mode = mode
        self.align_corners = align_corners

    def __call__(self, pred: torch.Tensor, meta: Mapping | None = None) -> torch.Tensor:
        """``(C, *spatial)`` → ``(C, *original_spatial)``; a ``ValueError`` when no original shape is known."""
        if meta is None:
            meta = pred.meta if isinstance(pred, MetaTensor) else {}
        shape = _original_shape(meta)
        if shape is None:
            raise ValueError("no 'spatial_shape' in the metadata: cannot restore the input's size.")
        if tuple(pred.shape[1:]) == shape:
            return pred
        if len(shape) != pred.ndim - 1:
            raise ValueError(f"prediction {tuple(pred.shape)} does not match the input's spatial shape {shape}.")
        mode = self.mode or ("bilinear" if len(shape) == 2 else "trilinear")
        align = None if mode in ("nearest", "nearest-exact", "area") else self.align_corners
        return Resize(spatial_size=shape, mode=mode, align_corners=align)(pred)


class ResizeToOriginalSized(MapTransform):
    """Dictionary wrapper of :class:`ResizeToOriginalSize`; the original shape comes from ``ref_key``'s metadata
    (e.g. the ``"image"`` ``MetaTensor``), or from each key's own metadata when ``ref_key`` is ``None``."""

    def __init__(
        self,
        keys: KeysCollection,
        ref_key: str | None = "image",
        mode: str | None = None,
        align_corners: bool | None = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resizer = ResizeToOriginalSize(mode, align_corners)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d.get(self.ref_key) if self.ref_key is not None else None
        meta = ref.meta if isinstance(ref, MetaTensor) else None
        for key in self.key_iterator(d):
            out = self.resizer(d[key], meta)
            if isinstance(out, MetaTensor) and meta is not None:  # carry the input's file name and geometry
                for k in ("filename_or_obj", "spatial_shape", "original_affine", "original_channel_dim"):
                    if k in meta:
                        out.meta[k] = meta[k]
                if "original_affine" in meta and tuple(out.shape[1:]) == _original_shape(meta):
                    out.affine = torch.as_tensor(np.asarray(meta["original_affine"]), dtype=torch.float64)
            d[key] = out
        return d


class ToClassIndexMask(Transform):
    """Loaded mask ``(C, *spatial)`` → ``(1, *spatial)`` float32 class indices.

    Args:
        num_classes: classes including background. With 2, the mask is binarised (foreground ``mask > threshold``,
            first channel only: RGB-stored masks have equal channels); with more, the first channel's values are the
            class indices (rounded) and must lie in ``0..num_classes-1``.
        threshold: default threshold for binary masks (``None`` = 0, i.e. masks stored as ``{0, v}``).

    Raises:
        ValueError: a multi-class mask holds values outside ``0..num_classes-1``.
    """

    def __init__(self, num_classes: int = 2, threshold: float | None = None) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}.")
        self.num_classes = num_classes
        self.threshold = threshold

    def __call__(self, mask: torch.Tensor | np.ndarray, threshold: float | None = None) -> torch.Tensor | np.ndarray:
        """``(C, *spatial)`` → ``(1, *spatial)``; ``threshold`` overrides the default (binary case only)."""
        if self.num_classes == 2:
            return binarize_mask(mask, self.threshold if threshold is None else threshold)
        first = mask[:1]
        if isinstance(first, torch.Tensor):
            out = torch.round(first.float())
            lo, hi = float(out.min()), float(out.max())
        else:
            out = np.round(np.asarray(first, dtype=np.float32))
            lo, hi = float(out.min()), float(out.max())
        if lo < 0 or hi > self.num_classes - 1:
            src = mask.meta.get("filename_or_obj", "") if isinstance(mask, MetaTensor) else ""
            raise ValueError(
                f"mask{' ' + str(src) if src else ''} holds values in [{lo:g}, {hi:g}], outside the class indices 0..{self.num_classes - 1} "
                f"(num_classes={self.num_classes}); store class indices, or use num_classes=2 for binary masks."
            )
        return out


class ToClassIndexMaskd(MapTransform):
    """Dictionary wrapper of :class:`ToClassIndexMask`; an item's own ``threshold_key`` entry (e.g. the datalist's
    per-item ``"mask_threshold"``) overrides the default threshold."""

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int = 2,
        threshold: float | None = None,
        threshold_key: str | None = "mask_threshold",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ToClassIndexMask(num_classes, threshold)
        self.threshold_key = threshold_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        value = d.get(self.threshold_key) if self.threshold_key else None
        threshold = None if value is None else float(value)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], threshold)
        return d


class WriteSegmentationMask(Transform):
    """Write a predicted mask ``(1, H, W[, D])`` (class indices; ``(H, W[, D])`` is accepted when the metadata give the
    input's ``spatial_shape``) in the format and geometry of its input.

    2D raster inputs (PNG, JPEG, BMP, TIFF; loaded by MONAI's ``PILReader`` as ``(W, H)``) give an 8-bit PNG of the
    input's ``H x W`` size; binary masks are stored as ``{0, 255}`` (like the PH2/ISIC/Kvasir ground truths) unless
    ``scale_binary=False``, multi-class masks as class indices. Any other input (NIfTI, DICOM, volumes) gives
    ``<name>.nii.gz`` with the input's affine (``original_affine`` of the loaded image, i.e. the file's own, when the
    mask has the input's shape) and uint8 class indices.

    The mask must already have the input's spatial shape (invert any resizing first, e.g. with ``Invertd``);
    otherwise a ``ValueError`` names the input. Output names come from :func:`output_name`; a name already written by
    this instance gets ``_2``, ``_3`` ... so that inputs with the same stem in different folders do not overwrite each
    other.

    Args:
        output_dir: folder for the masks (created).
        postfix: added to the input's stem.
        num_classes: classes including background (2 = binary).
        scale_binary: store binary PNG masks as ``{0, 255}``.
        overwrite: replace existing files (from a previous run).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        postfix: str = "_seg",
        num_classes: int = 2,
        scale_binary: bool = True,
        overwrite: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.num_classes = num_classes
        self.scale_binary = scale_binary
        self.overwrite = overwrite
        self._used: set[str] = set()

    def _unique(self, name: str) -> str:
        base, ext = (name[: -len(".nii.gz")], ".nii.gz") if name.endswith(".nii.gz") else os.path.splitext(name)
        candidate, i = name, 1
        while candidate in self._used:
            i += 1
            candidate = f"{base}_{i}{ext}"
        self._used.add(candidate)
        return candidate

    def __call__(self, mask: torch.Tensor | np.ndarray, meta: Mapping | None = None) -> Path:
        """Write ``mask`` (metadata from ``mask.meta`` or ``meta``) and return the written path."""
        if meta is None:
            meta = mask.meta if isinstance(mask, MetaTensor) else {}
        source = meta.get("filename_or_obj", "")
        if isinstance(source, (list, tuple)):
            source = source[0] if source else ""
        source = os.fspath(source) if source else ""
        arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        original = _original_shape(meta)
        unchanneled = original is not None and arr.ndim == len(original)  # e.g. squeezed 2D masks (MONAI Label)
        if not unchanneled:
            if arr.ndim not in (3, 4) or arr.shape[0] != 1:
                raise ValueError(
                    f"{source or 'mask'}: expected a channel-first one-channel mask (1, *spatial) of class indices, "
                    f"got shape {arr.shape}."
                )
            arr = arr[0]
        if original is not None:
            if tuple(arr.shape) != original:
                raise ValueError(
                    f"{source or 'mask'}: predicted mask has spatial shape {tuple(arr.shape)} but the input has "
                    f"{original}; invert the resizing (Invertd) before writing."
                )
        arr = np.rint(arr).astype(np.uint8 if self.num_classes <= 256 else np.uint16)
        suffix = file_suffix(source) if source else ""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if arr.ndim == 2 and suffix in RASTER_SUFFIXES + TIFF_SUFFIXES:
            path = safe_output_path(self.output_dir, self._unique(output_name(source, self.postfix, ".png")))
            pixels = arr.T  # MONAI's PILReader loads (W, H); PNG rows are H
            if self.num_classes == 2 and self.scale_binary:
                pixels = (pixels > 0).astype(np.uint8) * 255
            from PIL import Image

            atomic_write(path, lambda tmp: Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG"), True)
            return path
        import nibabel as nib

        affine = meta.get("original_affine") if original is not None else None
        if affine is None:
            affine = meta.get("affine")
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):  # 2D affine (3x3): embed in 3D
            full = np.eye(4)
            full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
            affine = full
        path = safe_output_path(self.output_dir, self._unique(output_name(source, self.postfix, ".nii.gz")))
        atomic_write(path, lambda tmp: nib.save(nib.Nifti1Image(arr, affine), str(tmp)), self.overwrite)
        return path


class WriteSegmentationMaskd(MapTransform):
    """Dictionary wrapper of :class:`WriteSegmentationMask`; stores the written path under ``f"{key}_file"``.

    Metadata come from the mask itself (a ``MetaTensor`` carrying its input's ``filename_or_obj``, ``affine``,
    ``original_affine`` and ``spatial_shape``, as after ``Invertd``) or from ``meta_key`` (e.g. ``"image"``, whose
    ``MetaTensor.meta`` is then used).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        postfix: str = "_seg",
        num_classes: int = 2,
        scale_binary: bool = True,
        overwrite: bool = True,
        meta_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.writer = WriteSegmentationMask(output_dir, postfix, num_classes, scale_binary, overwrite)
        self.meta_key = meta_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = None
            if self.meta_key is not None and isinstance(d.get(self.meta_key), MetaTensor):
                meta = d[self.meta_key].meta
            d[f"{key}_file"] = str(self.writer(d[key], meta))
        return d


ResizeToOriginalSizeD = ResizeToOriginalSizeDict = ResizeToOriginalSized
ToClassIndexMaskD = ToClassIndexMaskDict = ToClassIndexMaskd
WriteSegmentationMaskD = WriteSegmentationMaskDict = WriteSegmentationMaskd
