"""MedMNIST ``.npz`` files (PneumoniaMNIST and the rest): arrays ``{split}_images`` and ``{split}_labels``.

``LoadImaged`` takes file paths, so the arrays are exported once to lossless files in a cache folder and the datalist
points at them: ``<cache_dir>/<npz stem>-<hash>/<split>/<split>_<index:05d>.png`` (``.nii.gz`` for the 3D sets),
the naming of the embedded sample ``data/samples/pneumoniamnist``. Existing files are reused, so only the first call
pays (about one second for PneumoniaMNIST's 4 406 images). Splits ``train``/``val``/``test`` map to
``training``/``validation``/``test``; any subset may be present (the shared copy has train and val only).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DatalistError
from ..export import save_array, source_cache_dir
from .base import Layout

__all__ = ["MEDMNIST_CLASSES", "find_npz_files", "read_npz", "MEDMNIST_LAYOUT"]

#: Class names of MedMNIST sets, by the file name's prefix (others get ``class_<i>``).
MEDMNIST_CLASSES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal, benign"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
}

_SPLITS = {"train": "training", "val": "validation", "test": "test"}


def _npz_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]
    except (OSError, zipfile.BadZipFile):
        return []


def find_npz_files(root: Path) -> list[Path]:
    """``root`` itself if it is a MedMNIST-style ``.npz``, else such files directly inside the folder ``root``."""
    candidates = [root] if root.is_file() else sorted(root.glob("*.npz")) if root.is_dir() else []
    return [p for p in candidates if p.suffix.lower() == ".npz" and any(k.endswith("_images") for k in _npz_keys(p))]


def _detect(root: Path, task: str) -> bool:
    return bool(find_npz_files(root))


def _is_3d(stem: str, images: np.ndarray) -> bool:
    if images.ndim == 3:
        return False
    if images.ndim == 4:
        return "3d" in stem.lower() or images.shape[-1] not in (1, 3)
    raise DatalistError(f"unsupported image array shape {images.shape} (expected (N, H, W[, C]) or (N, D, H, W))")


def _to_storable(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype in (np.uint8, np.uint16):
        return image
    if np.issubdtype(image.dtype, np.integer) and image.min() >= 0 and image.max() <= 255:
        return image.astype(np.uint8)
    return image


def read_npz(path: str | Path, cache_dir: str | Path | None = None) -> dict:
    """Export the arrays of one MedMNIST ``.npz`` to image files and return the datalist.

    Args:
        path: the ``.npz`` file.
        cache_dir: cache root (default :func:`~monai_dclcstp.data.export.default_cache_dir`).

    Returns:
        datalist with ``training``/``validation``/``test`` as present, int ``label`` (a list of ints for multi-label
        sets), ``source`` ``"<stem>/<split>/<index>"`` and ``classes``.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    out_root = source_cache_dir(path, cache_dir)
    stem = path.name[: -len(".npz")]
    datalist: dict = {}
    max_label = -1
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatalistError(f"{path}: cannot read the .npz file ({e})") from e
    with npz:
        keys = set(npz.files)
        for split, key in _SPLITS.items():
            if f"{split}_images" not in keys:
                continue
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"] if f"{split}_labels" in keys else None
            if labels is not None and len(labels) != len(images):
                raise DatalistError(
                    f"{path}: {split}_images has {len(images)} entries but {split}_labels has {len(labels)}"
                )
            is_3d = _is_3d(stem, images)
            ext = ".nii.gz" if is_3d else ".png"
            items = []
            split_dir = out_root / split
            existing = set(os.listdir(split_dir)) if split_dir.is_dir() else set()
            for i in range(len(images)):
                target = split_dir / f"{split}_{i:05d}{ext}"
                if target.name not in existing:
                    save_array(_to_storable(np.asarray(images[i])), target)
                item: dict = {"image": str(target)}
                if labels is not None:
                    lab = np.asarray(labels[i]).reshape(-1)
                    item["label"] = int(lab[0]) if lab.size == 1 else [int(v) for v in lab]
                    max_label = max(max_label, int(lab.max()) if lab.size == 1 else lab.size - 1)
                item["source"] = f"{stem}/{split}/{i}"
                items.append(item)
            datalist[key] = items
    if not datalist:
        raise DatalistError(f"{path}: no train/val/test '_images' arrays (keys: {sorted(keys)})")
    prefix = stem.split("_")[0].lower()
    classes = MEDMNIST_CLASSES.get(prefix)
    if classes is None or len(classes) <= max_label:
        classes = [f"class_{i}" for i in range(max_label + 1)]
    datalist["classes"] = classes
    datalist["npz_file"] = str(path)
    return datalist


def _read(root: Path, task: str, cache_dir: str | Path | None = None, **options) -> dict:
    files = find_npz_files(root)
    if len(files) != 1:
        raise DatalistError(
            f"{root}: found {len(files)} MedMNIST .npz files ({', '.join(p.name for p in files)}); "
            "pass the one to use as dataset_dir"
        )
    return read_npz(files[0], cache_dir=cache_dir)


MEDMNIST_LAYOUT = Layout(
    name="medmnist-npz",
    tasks=("pretrain", "classification"),
    description="a MedMNIST .npz (arrays train_images/train_labels, val_*, test_*) as dataset_dir or inside it",
    detect=_detect,
    read=_read,
)
