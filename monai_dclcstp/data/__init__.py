"""Dataset readers that build datalists (DESIGN.md, Contract 1) and the pre-flight check.

Main entry points:

- :func:`load_datalist` — datalist JSON or dataset folder (layout detected) → datalist dict with absolute paths
  and a seeded, stratified ``training``/``validation`` split.
- :func:`validate_datalist` — open every file once and name each bad one with its problem.
- :func:`read_datalist`, :func:`write_datalist` (atomic), :func:`split_datalist`, :func:`subsample`.
- :func:`detect_layout` and the per-layout readers (:data:`LAYOUTS`).
- :func:`adapt_channels`, :func:`binarize_mask` — the channel and mask policies for loading transforms.
"""

from __future__ import annotations

from .channels import adapt_channels, channel_policy
from .datalist import SPLITS, normalize_datalist, read_datalist, split_datalist, subsample, write_datalist
from .errors import DatalistError
from .export import convert_to_png, default_cache_dir, save_array
from .files import find_images, is_dicom_file, is_image_file, monai_can_read
from .image_info import ImageInfo, ImageReadError, inspect_image
from .layouts import (
    JPEG_MASK_THRESHOLD,
    LAYOUTS,
    TASKS,
    Layout,
    detect_layout,
    get_layout,
    pair_by_stem,
    read_class_folders,
    read_csv_labels,
    read_image_folder,
    read_kermany,
    read_layout,
    read_npz,
)
from .loader import load_datalist
from .masks import binarize_mask
from .validation import ValidationResult, validate_datalist

__all__ = [
    "DatalistError",
    "ImageInfo",
    "ImageReadError",
    "JPEG_MASK_THRESHOLD",
    "LAYOUTS",
    "Layout",
    "SPLITS",
    "TASKS",
    "ValidationResult",
    "adapt_channels",
    "binarize_mask",
    "channel_policy",
    "convert_to_png",
    "default_cache_dir",
    "detect_layout",
    "find_images",
    "get_layout",
    "inspect_image",
    "is_dicom_file",
    "is_image_file",
    "load_datalist",
    "monai_can_read",
    "normalize_datalist",
    "pair_by_stem",
    "read_class_folders",
    "read_csv_labels",
    "read_datalist",
    "read_image_folder",
    "read_kermany",
    "read_layout",
    "read_npz",
    "save_array",
    "split_datalist",
    "subsample",
    "validate_datalist",
    "write_datalist",
]
