"""File-level helpers shared by the dataset readers: image suffixes, DICOM sniffing, stems and folder walking.

Nothing here reads pixels. The suffix tables say what *MONAI's default* ``LoadImage`` can read in this environment,
because every bundle loads images through ``LoadImaged`` with automatic reader selection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from monai.utils import optional_import

__all__ = [
    "RASTER_SUFFIXES",
    "TIFF_SUFFIXES",
    "VOLUME_SUFFIXES",
    "SPLIT_ALIASES",
    "MASK_DIR_NAMES",
    "MASK_SUFFIXES",
    "drop_sibling_masks",
    "file_suffix",
    "file_stem",
    "is_dicom_file",
    "is_image_file",
    "is_junk",
    "iter_files",
    "find_images",
    "has_image",
    "monai_can_read",
    "split_of",
]

_, HAS_ITK = optional_import("itk")
_, HAS_NRRD = optional_import("nrrd")

#: 2D raster formats read by MONAI's ``PILReader``.
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: TIFF: decodable by PIL but read by MONAI only through ITK (``load_datalist`` converts them to PNG otherwise).
TIFF_SUFFIXES = (".tif", ".tiff")
#: Volume / medical formats. ``.mha``/``.mhd``/``.nrrd`` need ``itk`` (or ``pynrrd`` for nrrd) to be loadable.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".dicom", ".mha", ".mhd", ".nrrd", ".seg.nrrd")

#: Folder names that mean a data split, mapped to the datalist key.
SPLIT_ALIASES = {
    "train": "training",
    "training": "training",
    "tr": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "ts": "test",
}

#: Folder names that hold segmentation masks (lower case); the plain-folder reader skips them for pretraining.
MASK_DIR_NAMES = (
    "masks",
    "mask",
    "labels",
    "label",
    "labelstr",
    "labelsts",
    "groundtruth",
    "ground_truth",
    "gt",
    "annotations",
    "segmentations",
    "segmentation",
    "seg",
)

#: Suffixes that mark a mask file's stem (lower case): ``ISIC_1_segmentation.png``, ``IMD002_lesion.png``, ...
MASK_SUFFIXES = ("_segmentation", "_lesion", "_mask", "_masks", "_seg", "_gt", "_label", "_labels", "_annotation")

_JUNK_DIRS = {"__macosx", ".ds_store", "__pycache__", ".git", ".ipynb_checkpoints", "@eadir"}


def file_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix including compound ones: ``a.nii.gz`` → ``.nii.gz``, ``b.seg.nrrd`` → ``.seg.nrrd``."""
    name = os.path.basename(os.fspath(path)).lower()
    for compound in (".nii.gz", ".seg.nrrd"):
        if name.endswith(compound):
            return compound
    return os.path.splitext(name)[1]


def file_stem(path: str | os.PathLike) -> str:
    """File name without its (compound) suffix: ``/x/ISIC_001.nii.gz`` → ``ISIC_001``."""
    name = os.path.basename(os.fspath(path))
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def is_junk(name: str) -> bool:
    """Hidden files, macOS resource forks (``._x.png``) and archive/OS leftovers (``__MACOSX``, ``Thumbs.db``)."""
    low = name.lower()
    return low.startswith(".") or low in _JUNK_DIRS or low in {"thumbs.db", "desktop.ini"}


def is_dicom_file(path: str | os.PathLike) -> bool:
    """``True`` for a ``.dcm``/``.dicom`` file, or an extension-less file with the ``DICM`` magic at byte 128."""
    suffix = file_suffix(path)
    if suffix in (".dcm", ".dicom"):
        return True
    if suffix:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_image_file(path: str | os.PathLike, sniff_dicom: bool = True) -> bool:
    """Whether ``path`` has an image/volume suffix this package knows (or is an extension-less DICOM file).

    Args:
        path: file path.
        sniff_dicom: open extension-less files and look for the DICOM magic (a 132-byte read).
    """
    suffix = file_suffix(path)
    if suffix in RASTER_SUFFIXES or suffix in TIFF_SUFFIXES or suffix in VOLUME_SUFFIXES:
        return True
    return sniff_dicom and not suffix and is_dicom_file(path)


def monai_can_read(path: str | os.PathLike) -> bool:
    """Whether MONAI's default ``LoadImage`` (automatic reader choice) can read ``path`` with what is installed.

    PIL formats, DICOM (``.dcm`` and extension-less), NIfTI and ``.npy`` always; TIFF/MHA/MHD need ``itk``; NRRD
    needs ``itk`` or ``pynrrd``. A folder is read as a DICOM series.
    """
    if os.path.isdir(path):
        return True
    suffix = file_suffix(path)
    if suffix in RASTER_SUFFIXES or suffix in (".nii", ".nii.gz", ".npy", ".npz", ".dcm", ".dicom"):
        return True
    if suffix in TIFF_SUFFIXES or suffix in (".mha", ".mhd"):
        return bool(HAS_ITK)
    if suffix in (".nrrd", ".seg.nrrd"):
        return bool(HAS_ITK or HAS_NRRD)
    return not suffix and is_dicom_file(path)


def split_of(name: str) -> str | None:
    """Datalist key (``training``/``validation``/``test``) for a split folder name, else ``None``."""
    return SPLIT_ALIASES.get(name.lower())


def iter_files(root: str | os.PathLike, skip_dirs: tuple[str, ...] = ()) -> Iterator[Path]:
    """Walk ``root`` recursively (sorted, following no symlinked dirs twice), yielding non-junk files.

    Args:
        root: folder to walk.
        skip_dirs: lower-case folder names not to descend into (besides junk such as ``__MACOSX``).
    """
    skip = {d.lower() for d in skip_dirs}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d) and d.lower() not in skip)
        for name in sorted(filenames):
            if not is_junk(name):
                yield Path(dirpath) / name


def find_images(
    root: str | os.PathLike, recursive: bool = True, skip_dirs: tuple[str, ...] = (), sniff_dicom: bool = True
) -> list[Path]:
    """Sorted image/volume files under ``root`` (see :func:`is_image_file`).

    Args:
        root: folder to search.
        recursive: search sub-folders too.
        skip_dirs: lower-case folder names to skip when recursive.
        sniff_dicom: detect extension-less DICOM files (one 132-byte read per extension-less file).
    """
    root = Path(root)
    if recursive:
        files = iter_files(root, skip_dirs)
    else:
        files = (p for p in sorted(root.iterdir()) if p.is_file() and not is_junk(p.name))
    return [p for p in files if is_image_file(p, sniff_dicom)]


def has_image(root: str | os.PathLike, skip_dirs: tuple[str, ...] = ()) -> bool:
    """``True`` as soon as one image file is found under ``root`` (early exit, for cheap layout detection)."""
    return any(is_image_file(p) for p in iter_files(root, skip_dirs))


_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def nnunet_case(stem: str) -> tuple[str, int] | None:
    """Split an nnU-Net image stem ``case_0000`` into ``("case", 0)``; ``None`` if it has no channel suffix."""
    m = _NNUNET_CHANNEL.match(stem)
    return (m.group("case"), int(m.group("channel"))) if m else None


_SIBLING_MASK = re.compile(r"^(?P<base>.+?)(?:" + "|".join(MASK_SUFFIXES) + r")(?:_\d+)?$")


def drop_sibling_masks(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Separate mask files stored beside their images (BUSI: ``benign (1).png`` + ``benign (1)_mask.png``).

    A file is a sibling mask when its stem is another file's stem in the same folder plus a mask suffix
    (:data:`MASK_SUFFIXES`, optionally followed by ``_<n>``).

    Returns:
        ``(images, masks)``, each in input order.
    """
    stems = {(p.parent, file_stem(p).lower()) for p in paths}
    images, masks = [], []
    for p in paths:
        m = _SIBLING_MASK.match(file_stem(p).lower())
        (masks if m and (p.parent, m.group("base")) in stems else images).append(p)
    return images, masks
