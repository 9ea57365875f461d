"""Fast per-file inspection for the pre-flight check: shape, channels, decodability, NaN/Inf, mask values.

2D raster files are fully decoded (a truncated PNG/JPEG fails here, not in epoch 7); large JPEG images are decoded
at 1/8 scale with PIL's ``draft``, which still parses the whole entropy-coded stream, so truncation is still caught.
Mask value statistics of masks above 4 MP use a strided sample.
DICOM and NIfTI files up to ``full_read_bytes`` are fully read, larger ones by header only.

Shapes are reported in MONAI's order after ``LoadImage``: ``(W, H)`` for PIL images (MONAI's ``PILReader`` swaps the
axes), ``(Columns, Rows[, frames])`` for DICOM, the header shape for NIfTI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import RASTER_SUFFIXES, TIFF_SUFFIXES, file_suffix, is_dicom_file

__all__ = ["ImageInfo", "ImageReadError", "inspect_image", "FULL_READ_BYTES"]

#: DICOM/NIfTI files up to this size are fully decoded; larger ones are checked by header only.
FULL_READ_BYTES = 64 * 2**20
_DRAFT_PIXELS = 1_500_000
_MASK_SAMPLE_PIXELS = 4_194_304

_PIL_CHANNELS = {"1": 1, "L": 1, "P": 1, "I": 1, "F": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "LAB": 3}
_PIL_CHANNELS.update({"HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4})


class ImageReadError(Exception):
    """The file cannot be decoded; the message says why (without the path, which the caller adds)."""


@dataclass
class ImageInfo:
    """What the pre-flight check needs to know about one image or mask file.

    Attributes:
        path: the file (or DICOM series folder).
        kind: ``"raster"`` (PIL), ``"dicom"``, ``"nifti"``, ``"numpy"`` or ``"other"``.
        spatial_shape: spatial size in MONAI's order (see the module docstring).
        channels: number of channels (1 for grey, 3 RGB, 4 RGBA ...).
        dtype: numpy dtype name of the pixel data.
        mode: PIL mode for raster files (``"L"``, ``"RGB"``, ``"P"`` ...), else ``None``.
        decoded: the pixel data was decoded (not only the header).
        nonfinite: NaN or Inf found in decoded float data.
        grey_colour: for 3/4-channel images, whether R, G and B are equal (grey stored as colour); ``None`` if unknown.
        mask_min: for masks, the minimum value (after reducing equal channels to one).
        mask_max: for masks, the maximum value.
        mask_values: for masks, number of distinct values (capped at 257).
        mask_integer: for masks, whether all values are integers.
    """

    path: str
    kind: str
    spatial_shape: tuple[int, ...]
    channels: int = 1
    dtype: str = ""
    mode: str | None = None
    decoded: bool = False
    nonfinite: bool = False
    grey_colour: bool | None = None
    mask_min: float | None = None
    mask_max: float | None = None
    mask_values: int | None = None
    mask_integer: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def spatial_dims(self) -> int:
        """2 or 3 (the number of spatial axes)."""
        return len(self.spatial_shape)


def _grey_colour(array: np.ndarray, max_value: float) -> bool:
    """Whether the first three channels (last axis) are equal up to JPEG noise (mean |R-G| + |G-B| <= 1 % of range).

    Decided on a strided sample of at most ~16k pixels.
    """
    n = array.shape[0] * array.shape[1]
    step = int(np.ceil(np.sqrt(n / 16_384))) if n > 16_384 else 1
    rgb = array[::step, ::step, :3].astype(np.float32)
    spread = np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])
    return float(spread.mean()) <= 0.01 * max_value


def _mask_stats(info: ImageInfo, array: np.ndarray, channel_axis: int | None) -> None:
    """Fill the mask fields; a multi-channel mask is reduced to its first channel when all channels are equal."""
    if channel_axis is not None and array.shape[channel_axis] > 1:
        moved = np.moveaxis(array, channel_axis, -1)
        first = moved[..., 0]
        step = max(1, int(np.ceil(np.sqrt(first.size / 262_144))))
        sample = moved[::step, ::step].astype(np.float32)
        spread = max(float(np.abs(sample[..., c] - sample[..., 0]).max()) for c in range(1, min(3, moved.shape[-1])))
        info.grey_colour = spread <= 0.1 * max(float(sample.max()), 1.0)
        array = np.ascontiguousarray(first)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim >= 2 and array.size > _MASK_SAMPLE_PIXELS:  # big masks: statistics on a strided sample
        step = int(np.ceil(np.sqrt(array.size / _MASK_SAMPLE_PIXELS)))
        array = array[::step, ::step]
    info.mask_min = float(array.min()) if array.size else 0.0
    info.mask_max = float(array.max()) if array.size else 0.0
    if array.dtype.kind in "ui" and array.dtype.itemsize <= 2:
        counts = np.bincount(array.ravel().astype(np.int64) - int(array.min()))
        info.mask_values = int(np.count_nonzero(counts))
        info.mask_integer = True
    else:
        values = np.unique(array)
        info.mask_values = int(min(len(values), 257))
        info.mask_integer = bool(np.all(np.mod(values, 1) == 0)) if np.isfinite(values).all() else False


def _check_finite(info: ImageInfo, array: np.ndarray) -> None:
    if array.dtype.kind in "fc":
        info.nonfinite = not bool(np.isfinite(array).all())


def _inspect_pil(path: str, is_mask: bool) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
            if not is_mask and im.format == "JPEG" and width * height > _DRAFT_PIXELS:
                im.draft(mode, (width // 8, height // 8))
            im.load()
            array = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"corrupt or truncated image ({type(e).__name__}: {e})") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image too large to decode safely ({e})") from e
    info = ImageInfo(
        path, "raster", (width, height), _PIL_CHANNELS.get(mode, array.shape[-1] if array.ndim == 3 else 1)
    )
    info.mode, info.dtype, info.decoded = mode, str(array.dtype), True
    _check_finite(info, array)
    if is_mask:
        _mask_stats(info, array, 2 if array.ndim == 3 else None)
    elif array.ndim == 3 and array.shape[2] >= 3:
        info.grey_colour = _grey_colour(array, 255.0 if array.dtype == np.uint8 else float(np.iinfo(array.dtype).max))
    return info


def _inspect_dicom(path: str, is_mask: bool, full_read_bytes: int) -> ImageInfo:
    import pydicom

    if os.path.isdir(path):
        files = sorted(p for p in Path(path).iterdir() if p.is_file() and is_dicom_file(p))
        if not files:
            raise ImageReadError("folder holds no DICOM file (a folder image is read as a DICOM series)")
        info = _inspect_dicom(str(files[0]), is_mask, full_read_bytes)
        info.path = path
        info.spatial_shape = info.spatial_shape[:2] + (len(files),)
        return info
    full = os.path.getsize(path) <= full_read_bytes
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not full)
    except Exception as e:  # pydicom raises many types for bad files
        raise ImageReadError(f"corrupt DICOM file ({type(e).__name__}: {e})") from e
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError("DICOM file holds no image (no Rows/Columns: a DICOMDIR, report or other object?)")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    shape = (int(ds.Columns), int(ds.Rows)) + ((frames,) if frames > 1 else ())
    info = ImageInfo(path, "dicom", shape, int(getattr(ds, "SamplesPerPixel", 1) or 1))
    if full:
        if "PixelData" not in ds:
            raise ImageReadError("DICOM file has no PixelData")
        try:
            array = ds.pixel_array
        except Exception as e:
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
            raise ImageReadError(f"cannot decode the DICOM pixel data (transfer syntax {syntax}: {e})") from e
        info.dtype, info.decoded = str(array.dtype), True
        _check_finite(info, array)
        if is_mask:
            _mask_stats(info, array, array.ndim - 1 if info.channels > 1 else None)
    return info


def _inspect_nifti(path: str, is_mask: bool, full_read_bytes: int) -> ImageInfo:
    import nibabel as nib

    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
    except Exception as e:
        raise ImageReadError(f"corrupt NIfTI file ({type(e).__name__}: {e})") from e
    if len(shape) < 2:
        raise ImageReadError(f"NIfTI data of shape {shape} is not an image")
    spatial = shape[:3]
    channels = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    info = ImageInfo(path, "nifti", spatial, channels, str(img.get_data_dtype()))
    if len(spatial) == 3 and spatial[2] == 1:
        info.notes.append("volume of depth 1")
    if os.path.getsize(path) <= full_read_bytes:
        try:
            array = np.asanyarray(img.dataobj)
        except Exception as e:
            raise ImageReadError(f"corrupt or truncated NIfTI data ({type(e).__name__}: {e})") from e
        info.decoded = True
        _check_finite(info, array)
        if is_mask:
            _mask_stats(info, array.reshape(array.shape[:3] + (-1,)) if array.ndim > 3 else array, None)
    return info


def _inspect_numpy(path: str, is_mask: bool) -> ImageInfo:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise ImageReadError(f"corrupt .npy file ({type(e).__name__}: {e})") from e
    info = ImageInfo(path, "numpy", tuple(int(s) for s in array.shape), 1, str(array.dtype), decoded=True)
    _check_finite(info, np.asarray(array))
    if is_mask:
        _mask_stats(info, np.asarray(array), None)
    return info


def _inspect_monai(path: str, is_mask: bool) -> ImageInfo:
    from monai.transforms import LoadImage

    try:
        array, meta = LoadImage(image_only=False)(path)
    except Exception as e:
        raise ImageReadError(f"MONAI cannot read the file ({type(e).__name__}: {e})") from e
    spatial = tuple(int(s) for s in np.asarray(meta.get("spatial_shape", array.shape)).reshape(-1))
    channels = int(np.prod(array.shape[len(spatial) :])) if array.ndim > len(spatial) else 1
    info = ImageInfo(path, "other", spatial, channels, str(array.dtype), decoded=True)
    array = np.asarray(array)
    _check_finite(info, array)
    if is_mask:
        _mask_stats(info, array, None)
    return info


def inspect_image(path: str | os.PathLike, is_mask: bool = False, full_read_bytes: int = FULL_READ_BYTES) -> ImageInfo:
    """Inspect one image (or mask) file; see the module docstring for how much is read.

    Args:
        path: image file, or a folder (read as a DICOM series).
        is_mask: also compute the mask fields (distinct values, maximum).
        full_read_bytes: DICOM/NIfTI files up to this size are decoded in full.

    Raises:
        ImageReadError: the file cannot be decoded (corrupt, truncated, not an image).
    """
    path = os.fspath(path)
    suffix = file_suffix(path)
    if suffix in RASTER_SUFFIXES or suffix in TIFF_SUFFIXES:
        return _inspect_pil(path, is_mask)
    if suffix in (".nii", ".nii.gz"):
        return _inspect_nifti(path, is_mask, full_read_bytes)
    if suffix == ".npy":
        return _inspect_numpy(path, is_mask)
    if os.path.isdir(path) or is_dicom_file(path):
        return _inspect_dicom(path, is_mask, full_read_bytes)
    return _inspect_monai(path, is_mask)
