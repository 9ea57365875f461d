"""Helpers for the ``monai_dclcstp.data`` tests: tiny image files and dataset trees built in ``tmp_path``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def grey(size=(16, 16), value=None, seed=0) -> np.ndarray:
    """A random (or constant) uint8 grey image of shape ``size`` (H, W)."""
    if value is not None:
        return np.full(size, value, np.uint8)
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def write_image(path: Path, array: np.ndarray | None = None, **save_kwargs) -> Path:
    """Save ``array`` (default: a 16x16 grey image) with PIL; the suffix picks the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey() if array is None else array).save(path, **save_kwargs)
    return path


def write_mask(path: Path, size=(16, 16), values=(0, 255)) -> Path:
    """A mask with a foreground square (``values[1]``) on ``values[0]``."""
    m = np.full(size, values[0], np.uint8)
    m[size[0] // 4 : size[0] // 2, size[1] // 4 : size[1] // 2] = values[1]
    return write_image(path, m)


def write_nifti(path: Path, array: np.ndarray) -> Path:
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def copy_ct_small(path: Path) -> Path:
    """pydicom's bundled ``CT_small.dcm`` (128x128 CT slice) copied to ``path``."""
    from pydicom.data import get_testdata_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes (a truncated download)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return path
