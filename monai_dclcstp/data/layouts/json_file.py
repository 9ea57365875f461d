"""A dataset folder that carries its own datalist: ``datalist.json`` (this package, the embedded samples) or the
Medical Segmentation Decathlon's ``dataset.json``."""

from __future__ import annotations

import json
from pathlib import Path

from ..datalist import read_datalist
from ..errors import DatalistError
from .base import Layout

__all__ = ["JSON_NAMES", "find_datalist_file", "JSON_LAYOUT"]

#: File names looked for in ``dataset_dir``, in order.
JSON_NAMES = ("datalist.json", "dataset.json")


def find_datalist_file(root: Path) -> Path | None:
    """The first ``datalist.json``/``dataset.json`` in ``root`` that holds a ``training`` list, else ``None``.

    An nnU-Net v2 ``dataset.json`` (no ``training`` key) is not a datalist and is skipped.
    """
    for name in JSON_NAMES:
        path = root / name
        if not path.is_file():
            continue
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            if name == "datalist.json":
                raise DatalistError(f"{path}: not valid JSON ({e})") from e
            continue
        if isinstance(data, list) or (isinstance(data, dict) and isinstance(data.get("training"), list)):
            return path
    return None


def _detect(root: Path, task: str) -> bool:
    return find_datalist_file(root) is not None


def _read(root: Path, task: str, **options) -> dict:
    path = find_datalist_file(root)
    if path is None:
        raise DatalistError(f"no datalist.json or dataset.json with a 'training' list in {root}")
    datalist = read_datalist(path)
    labels = datalist.get("labels")
    if "classes" not in datalist and isinstance(labels, dict):
        # MSD: {"0": "background", "1": "spleen"}
        try:
            datalist["classes"] = [labels[k] for k in sorted(labels, key=int)]
        except (ValueError, TypeError):
            pass
    datalist["datalist_file"] = str(path)
    return datalist


JSON_LAYOUT = Layout(
    name="datalist-json",
    tasks=("pretrain", "classification", "segmentation"),
    description="a datalist.json (or MSD dataset.json) with a 'training' list in dataset_dir",
    detect=_detect,
    read=_read,
)
