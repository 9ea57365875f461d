"""Datalist JSON (DESIGN.md, Contract 1): read, normalise, write atomically, split and subsample.

A datalist is MONAI decathlon style::

    {"training": [{"image": "images/a.png", "label": 1, "synthetic": false, "source": "x"}, ...],
     "validation": [...], "test": [...], "classes": ["normal", "pneumonia"]}

``image`` (and a mask ``label``) may be relative to the datalist file's folder or absolute. Items keep any extra keys.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatalistError
from .files import RASTER_SUFFIXES, TIFF_SUFFIXES, VOLUME_SUFFIXES, file_suffix

__all__ = [
    "SPLITS",
    "PATH_KEYS",
    "normalize_datalist",
    "read_datalist",
    "write_datalist",
    "split_datalist",
    "subsample",
]

#: The split keys of a datalist, in order.
SPLITS = ("training", "validation", "test")
#: Item keys that hold file paths (``label`` only when it is a path, i.e. a segmentation mask).
PATH_KEYS = ("image", "label", "mask", "seg")

_SPLIT_ALIASES = {"train": "training", "val": "validation", "valid": "validation", "testing": "test"}
_PATH_SUFFIXES = RASTER_SUFFIXES + TIFF_SUFFIXES + VOLUME_SUFFIXES + (".npy", ".npz")


def _looks_like_path(value: str) -> bool:
    return "/" in value or os.sep in value or file_suffix(value) in _PATH_SUFFIXES


def _resolve(value: Any, base_dir: Path, key: str) -> Any:
    """Absolute path string(s) for a path-valued key; other values (class names, ints) unchanged."""
    if isinstance(value, (list, tuple)):
        return [_resolve(v, base_dir, key) for v in value]
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if key == "label" and not _looks_like_path(text):
            return text  # a class name, not a mask path
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(text)))
    return value


def normalize_datalist(data: Mapping | Sequence, base_dir: str | os.PathLike | None = None) -> dict:
    """Return a new datalist dict with absolute paths and list-of-dict splits.

    Accepts a dict (decathlon style; ``train``/``val``/``valid`` keys are renamed) or a bare list of items (taken as
    ``training``). String entries (as in MSD ``test`` lists) become ``{"image": path}``. String labels that name a
    class of ``classes`` become its index; ``"1"`` and ``1.0`` become ``1``.

    Args:
        data: the parsed JSON.
        base_dir: folder relative paths are resolved against (the datalist file's folder; default the working dir).

    Raises:
        DatalistError: wrong structure (not a dict/list, a split that is not a list, an item without ``image``).
    """
    base = Path(os.path.abspath(Path(base_dir if base_dir is not None else os.getcwd()).expanduser()))
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        data = {"training": list(data)}
    if not isinstance(data, Mapping):
        raise DatalistError(f"a datalist must be a JSON object with a 'training' list, got {type(data).__name__}")
    out = {k: copy.deepcopy(v) for k, v in data.items() if k not in SPLITS and k not in _SPLIT_ALIASES}
    for alias, key in _SPLIT_ALIASES.items():
        if alias in data and key not in data:
            out[key] = data[alias]
    for key in SPLITS:
        if key in data:
            out[key] = data[key]
    classes = out.get("classes")
    class_index = {str(c): i for i, c in enumerate(classes)} if isinstance(classes, list) else {}
    problems = []
    for split in SPLITS:
        if split not in out or out[split] is None:
            continue
        if not isinstance(out[split], list):
            raise DatalistError(f"datalist split '{split}' must be a list of items, got {type(out[split]).__name__}")
        items = []
        for i, item in enumerate(out[split]):
            if isinstance(item, (str, os.PathLike)):
                item = {"image": item}
            if not isinstance(item, Mapping) or "image" not in item:
                problems.append(f"{split}[{i}]: item has no 'image' key ({str(item)[:80]})")
                continue
            item = dict(copy.deepcopy(item))
            for key in PATH_KEYS:
                if key in item and item[key] is not None:
                    item[key] = _resolve(item[key], base, key)
            label = item.get("label")
            if isinstance(label, str) and label in class_index and not _looks_like_path(label):
                item["label"] = class_index[label]
            elif isinstance(label, str) and label.strip().isdigit():
                item["label"] = int(label)  # "1" from a CSV-made datalist
            elif isinstance(label, float) and label.is_integer():
                item["label"] = int(label)
            items.append(item)
        out[split] = items
    if problems:
        raise DatalistError("bad datalist items:\n  " + "\n  ".join(problems[:20]))
    out.setdefault("training", [])
    return out


def read_datalist(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> dict:
    """Read a datalist JSON file; relative paths are resolved against its folder (or ``base_dir``).

    Args:
        path: the ``.json`` file.
        base_dir: resolve relative paths against this folder instead of the file's folder.

    Returns:
        the datalist dict (see :func:`normalize_datalist`) with absolute path strings.

    Raises:
        DatalistError: missing file, invalid JSON (with line and column) or wrong structure.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatalistError(f"datalist file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatalistError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatalistError(f"{path}: cannot read the datalist ({e})") from e
    try:
        return normalize_datalist(data, base_dir if base_dir is not None else Path(os.path.abspath(path)).parent)
    except DatalistError as e:
        raise DatalistError(f"{path}: {e}") from e


def _relative(value: Any, folder: Path) -> Any:
    if isinstance(value, list):
        return [_relative(v, folder) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        try:
            rel = Path(value).relative_to(folder)
        except ValueError:
            return value
        return rel.as_posix()
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_datalist(datalist: Mapping | Sequence, path: str | os.PathLike, relative: bool = True) -> Path:
    """Write a datalist JSON atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        datalist: a datalist dict or a bare list of items (written as ``training``).
        path: target ``.json`` file; its folder is created.
        relative: store absolute paths that lie under the file's folder relative to it (portable datalists);
            paths elsewhere stay absolute.

    Returns:
        the written path.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(datalist, Sequence) and not isinstance(datalist, (str, bytes)):
        datalist = {"training": list(datalist)}
    data = _to_json(datalist)
    if relative:
        for split in SPLITS:
            for item in data.get(split) or []:
                if isinstance(item, dict):
                    for key in PATH_KEYS:
                        if key in item:
                            item[key] = _relative(item[key], path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _group_key(item: Mapping, key: str | None) -> Hashable:
    """Stratification group of an item: its label when that is a class (int/str/list), else one common group."""
    if key is None or key not in item:
        return None
    value = item[key]
    if isinstance(value, (list, tuple)):
        value = tuple(value)
    if isinstance(value, str) and _looks_like_path(value):
        return None  # a mask path: no stratification
    try:
        hash(value)
    except TypeError:
        return None
    return value


def _groups(items: Sequence[Mapping], stratify_key: str | None) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[_group_key(item, stratify_key)].append(i)
    return dict(sorted(groups.items(), key=lambda kv: repr(kv[0])))


def split_datalist(
    items: Sequence[Mapping], val_fraction: float = 0.2, seed: int = 0, stratify_key: str | None = "label"
) -> tuple[list[dict], list[dict]]:
    """Seeded, stratified train/validation split.

    Each class (value of ``stratify_key``; mask paths and missing keys form one group) gives
    ``round(n_class * val_fraction)`` items to validation, at least one and at most ``n_class - 1`` when the class has
    two or more items and ``val_fraction > 0``. Synthetic items (``"synthetic": true``) always stay in training, so
    validation holds real images only. Both outputs keep the input order.

    Args:
        items: datalist items.
        val_fraction: fraction in ``[0, 1)`` sent to validation.
        seed: seed of the shuffle; the same seed and items give the same split.
        stratify_key: item key to stratify by, or ``None``.

    Returns:
        ``(training, validation)`` lists of (the same) item dicts.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    real = [i for i, item in enumerate(items) if not item.get("synthetic", False)]
    rng = np.random.default_rng(seed)
    val_idx: set[int] = set()
    if val_fraction > 0:
        for members in _groups([items[i] for i in real], stratify_key).values():
            n = len(members)
            k = int(round(n * val_fraction))
            if n >= 2:
                k = min(max(k, 1), n - 1)
            else:
                k = 0
            for j in rng.permutation(n)[:k]:
                val_idx.add(real[members[j]])
    train = [dict(item) for i, item in enumerate(items) if i not in val_idx]
    val = [dict(item) for i, item in enumerate(items) if i in val_idx]
    return train, val


def subsample(
    items: Sequence[Mapping], fraction: float, seed: int = 0, stratify_key: str | None = "label"
) -> list[dict]:
    """Seeded, stratified subset for label-efficiency runs.

    Keeps ``round(n_class * fraction)`` items of every class, at least one per class. For one seed the subsets are
    nested: the 1 % subset is contained in the 10 % subset, which is contained in the 50 % one. The input order is kept.

    Args:
        items: datalist items (usually the real training items).
        fraction: fraction in ``(0, 1]`` to keep.
        seed: seed of the per-class shuffle.
        stratify_key: item key to stratify by, or ``None``.

    Returns:
        the kept items (copies of the dicts).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return [dict(item) for item in items]
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for members in _groups(items, stratify_key).values():
        n = len(members)
        k = min(n, max(1, int(round(n * fraction))))
        keep.update(members[j] for j in rng.permutation(n)[:k])
    return [dict(item) for i, item in enumerate(items) if i in keep]
