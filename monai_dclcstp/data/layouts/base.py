"""What a dataset layout is (a detector plus a reader), and the shared helpers the readers use."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatalistError
from ..files import is_image_file, is_junk

__all__ = ["TASKS", "Layout", "dataset_root", "check_task", "child_dirs"]

#: Tasks a datalist can be built for.
TASKS = ("pretrain", "classification", "segmentation")


@dataclass(frozen=True)
class Layout:
    """One known dataset layout.

    Attributes:
        name: short name reported by :func:`~monai_dclcstp.data.detect_layout` (e.g. ``"kermany"``).
        tasks: tasks the layout can serve.
        description: one line shown in "layout unknown" errors (what the folder must look like).
        detect: ``detect(root, task) -> bool``, cheap (no pixel reads, early exits).
        read: ``read(root, task, **options) -> dict`` returning a datalist with absolute paths.
    """

    name: str
    tasks: tuple[str, ...]
    description: str
    detect: Callable[[Path, str], bool]
    read: Callable[..., dict]


def check_task(task: str) -> str:
    """Validate a task name."""
    if task not in TASKS:
        raise DatalistError(f"task must be one of {TASKS}, got {task!r}")
    return task


def child_dirs(root: Path) -> list[Path]:
    """Sorted non-junk sub-folders of ``root``."""
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not is_junk(p.name))
    except OSError:
        return []


def dataset_root(path: str | os.PathLike, max_depth: int = 3) -> Path:
    """Skip single-folder wrappers (``Kvasir-SEG.zip`` → ``Kvasir-SEG/Kvasir-SEG/``): descend while the folder holds
    exactly one non-junk sub-folder and no image file (README/licence files are allowed).

    Raises:
        DatalistError: ``path`` does not exist or is not a folder.
    """
    root = Path(os.path.abspath(Path(path).expanduser()))
    if not root.exists():
        raise DatalistError(f"dataset_dir does not exist: {root}")
    if not root.is_dir():
        raise DatalistError(f"dataset_dir is not a folder: {root}")
    for _ in range(max_depth):
        entries = [p for p in root.iterdir() if not is_junk(p.name)]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) != 1 or any(p.is_file() and is_image_file(p, sniff_dicom=False) for p in entries):
            break
        if any(p.is_file() and p.name.lower() in ("datalist.json", "dataset.json") for p in entries):
            break
        if any(p.is_file() and p.suffix.lower() == ".npz" for p in entries):
            break
        root = dirs[0]
    return root
