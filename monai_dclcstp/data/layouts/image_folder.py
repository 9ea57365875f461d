"""Any folder tree of images, searched recursively: unlabeled items for pretraining (and the LDM).

Reads PNG/JPEG/BMP/TIFF, DICOM (``.dcm`` and extension-less files with the DICOM magic), NIfTI and MHA/NRRD (the
last two only load with ``itk``/``pynrrd`` installed; the pre-flight check says so). Folders named like mask folders
(``masks``, ``labels``, ``groundtruth`` ... see :data:`~monai_dclcstp.data.files.MASK_DIR_NAMES`) are skipped so
segmentation masks never enter pretraining; so are masks stored beside their images (``x.png`` +
``x_mask.png``). With ``spatial_dims=3``, DICOM files are grouped into one series item
per folder (MONAI reads a folder as a DICOM series) and 2D raster files are left out.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

from ..files import (
    MASK_DIR_NAMES,
    RASTER_SUFFIXES,
    TIFF_SUFFIXES,
    drop_sibling_masks,
    file_suffix,
    find_images,
    has_image,
    is_dicom_file,
)
from .base import Layout

__all__ = ["read_image_folder", "IMAGE_FOLDER_LAYOUT"]


def _detect(root: Path, task: str) -> bool:
    return has_image(root, skip_dirs=MASK_DIR_NAMES)


def read_image_folder(root: str | Path, task: str = "pretrain", spatial_dims: int | None = None, **options) -> dict:
    """Unlabeled datalist of every image under ``root`` (see the module docstring).

    Args:
        root: folder to search.
        task: task name (the items carry no label whatever the task).
        spatial_dims: 3 to build DICOM series items and skip 2D raster files; 2 or ``None`` for one item per file.
    """
    root = Path(root)
    files = drop_sibling_masks(find_images(root, skip_dirs=MASK_DIR_NAMES))[0]
    if spatial_dims == 3:
        series: dict[Path, list[Path]] = defaultdict(list)
        volumes, skipped = [], 0
        for p in files:
            if is_dicom_file(p):
                series[p.parent].append(p)
            elif file_suffix(p) in RASTER_SUFFIXES + TIFF_SUFFIXES:
                skipped += 1
            else:
                volumes.append(p)
        if skipped:
            warnings.warn(f"{root}: skipped {skipped} 2D raster file(s) for spatial_dims=3", stacklevel=2)
        paths = sorted(volumes + [d if len(s) > 1 else s[0] for d, s in series.items()])
    else:
        paths = files
    return {"training": [{"image": str(p), "source": root.name} for p in paths]}


IMAGE_FOLDER_LAYOUT = Layout(
    name="image-folder",
    tasks=("pretrain",),
    description="any folder tree of images (PNG/JPEG/BMP/TIFF/DICOM/NIfTI), unlabeled, for pretraining",
    detect=_detect,
    read=read_image_folder,
)
