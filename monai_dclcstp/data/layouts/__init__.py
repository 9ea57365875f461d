"""Known dataset layouts and their detection.

:data:`LAYOUTS` lists them from the most to the least specific; :func:`detect_layout` returns the first whose
detector accepts the folder for the task.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatalistError
from .base import TASKS, Layout, check_task, dataset_root
from .class_folders import CLASS_FOLDERS_LAYOUT, KERMANY_LAYOUT, read_class_folders, read_kermany
from .csv_labels import CSV_LABELS_LAYOUT, read_csv_labels
from .image_folder import IMAGE_FOLDER_LAYOUT, read_image_folder
from .json_file import JSON_LAYOUT, find_datalist_file
from .medmnist import MEDMNIST_LAYOUT, read_npz
from .segmentation import (
    IMAGES_MASKS_LAYOUT,
    ISIC2018_LAYOUT,
    JPEG_MASK_THRESHOLD,
    MASK_SUFFIXES,
    PH2_LAYOUT,
    pair_by_stem,
)

__all__ = [
    "TASKS",
    "LAYOUTS",
    "JPEG_MASK_THRESHOLD",
    "MASK_SUFFIXES",
    "Layout",
    "check_task",
    "dataset_root",
    "detect_layout",
    "get_layout",
    "read_layout",
    "find_datalist_file",
    "pair_by_stem",
    "read_class_folders",
    "read_csv_labels",
    "read_image_folder",
    "read_kermany",
    "read_npz",
]

#: Known layouts, most specific first.
LAYOUTS: tuple[Layout, ...] = (
    JSON_LAYOUT,
    MEDMNIST_LAYOUT,
    ISIC2018_LAYOUT,
    PH2_LAYOUT,
    IMAGES_MASKS_LAYOUT,
    CSV_LABELS_LAYOUT,
    KERMANY_LAYOUT,
    CLASS_FOLDERS_LAYOUT,
    IMAGE_FOLDER_LAYOUT,
)


def get_layout(name: str) -> Layout:
    """The layout called ``name`` (see :data:`LAYOUTS`)."""
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise DatalistError(f"unknown layout {name!r}; known: {[lay.name for lay in LAYOUTS]}")


def _root(dataset_dir: str | os.PathLike) -> Path:
    path = Path(os.path.abspath(Path(dataset_dir).expanduser()))
    if path.is_file() and path.suffix.lower() == ".npz":
        return path
    if path.is_file():
        raise DatalistError(f"dataset_dir must be a folder (or a MedMNIST .npz file), got the file {path}")
    return dataset_root(path)


def detect_layout(dataset_dir: str | os.PathLike, task: str = "pretrain") -> str:
    """Name of the first layout of :data:`LAYOUTS` that serves ``task`` and recognises ``dataset_dir``.

    Single-folder wrappers (``Kvasir-SEG/Kvasir-SEG/``) are skipped first.

    Args:
        dataset_dir: the dataset folder (or a MedMNIST ``.npz`` file).
        task: ``"pretrain"``, ``"classification"`` or ``"segmentation"``.

    Raises:
        DatalistError: missing or empty folder, or no layout matched (the message lists the layouts tried and what
            each expects).
    """
    check_task(task)
    root = _root(dataset_dir)
    if root.is_dir() and not any(True for _ in root.iterdir()):
        raise DatalistError(f"dataset_dir is empty: {root}")
    tried = [layout for layout in LAYOUTS if task in layout.tasks]
    for layout in tried:
        if layout.detect(root, task):
            return layout.name
    lines = "\n".join(f"  - {layout.name}: {layout.description}" for layout in tried)
    raise DatalistError(
        f"no known {task} dataset layout in {root}. Layouts tried:\n{lines}\n"
        "Pass a datalist JSON instead (see DESIGN.md, Contract 1)."
    )


def read_layout(dataset_dir: str | os.PathLike, task: str = "pretrain", layout: str = "auto", **options) -> dict:
    """Build the datalist of ``dataset_dir`` with the detected (or named) layout.

    Args:
        dataset_dir: the dataset folder (or a MedMNIST ``.npz`` file).
        task: ``"pretrain"``, ``"classification"`` or ``"segmentation"``.
        layout: ``"auto"`` or a layout name to skip detection.
        options: reader options: ``cache_dir``, ``three_class``, ``allow_unpaired``, ``spatial_dims``.

    Returns:
        the datalist with absolute paths and a top-level ``layout`` key (splits as the layout has them).
    """
    check_task(task)
    name = detect_layout(dataset_dir, task) if layout == "auto" else layout
    spec = get_layout(name)
    if task not in spec.tasks:
        raise DatalistError(f"layout {name!r} cannot serve the {task} task (it serves {spec.tasks})")
    datalist = spec.read(_root(dataset_dir), task, **options)
    datalist["layout"] = name
    return datalist
