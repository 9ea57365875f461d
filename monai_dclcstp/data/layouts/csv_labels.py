"""Classification labels in a CSV file beside a folder of images (HAM10000, ISIC 2018 Task 3, many Kaggle sets).

A CSV in ``dataset_dir`` or one folder below qualifies when one column (``image``, ``image_id``, ``filename``,
``name``, ``id``, ``path`` ... else the first column) names at least half of the images found under ``dataset_dir``
(matched by file stem, case-insensitive). Labels come from a label column (``label``, ``class``, ``diagnosis``,
``dx``, ``target`` ...; integers are used as they are, names are sorted into ``classes``) or from one-hot columns
(ISIC 2018 Task 3: ``image,MEL,NV,BCC,...``; ``classes`` are the column names). A CSV whose name says ``train``,
``val``/``valid``/``validation`` or ``test`` fills that split; otherwise ``training``. Images without a row are left
out (with a warning).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path

from ..errors import DatalistError
from ..files import MASK_DIR_NAMES, drop_sibling_masks, file_stem, find_images
from .base import Layout, child_dirs

__all__ = ["CSV_LABELS_LAYOUT", "read_csv_labels"]

_ID_COLUMNS = ("image", "image_id", "imageid", "image_name", "filename", "file_name", "file", "name", "id", "path")
_ID_COLUMNS += ("img", "isic_id", "image_path", "img_name", "img_path", "fname")
_LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "category", "diagnosis", "dx", "target")
_LABEL_COLUMNS += ("y", "class_id", "label_id", "finding", "benign_malignant")
_SPLIT_WORDS = (("validation", "validation"), ("valid", "validation"), ("val", "validation"), ("test", "test"))
_MAX_CSV_BYTES = 64 * 2**20


def _csv_files(root: Path) -> list[Path]:
    folders = [root] + child_dirs(root)
    return [
        p
        for folder in folders
        for p in sorted(folder.glob("*.csv"))
        if p.is_file() and not p.name.startswith(".") and p.stat().st_size <= _MAX_CSV_BYTES
    ]


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
            header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return [], []
    return header, rows


def _key(value: str) -> str:
    return file_stem(os.path.basename(value.replace("\\", "/"))).lower()


def _id_column(header: list[str], rows: list[dict[str, str]], stems: set[str]) -> str | None:
    """The column whose values name the most images (at least half of the rows or of the images)."""
    candidates = [c for c in _ID_COLUMNS if c in header] + [c for c in header if c not in _ID_COLUMNS]
    best, best_hits = None, 0
    for col in candidates:
        hits = sum(_key(r.get(col, "")) in stems for r in rows)
        if hits > best_hits:
            best, best_hits = col, hits
    if best is None or best_hits < 0.5 * min(len(rows), len(stems)):
        return None
    return best


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.0+)?", text) is not None


def _labels(header: list[str], rows: list[dict[str, str]], id_col: str) -> tuple[list[int], list[str]] | None:
    """Per-row int labels and class names, from a label column or one-hot columns; ``None`` if neither."""
    for col in _LABEL_COLUMNS:
        if col in header and col != id_col:
            values = [r.get(col, "") for r in rows]
            if all(_is_int(v) for v in values):
                ints = [int(float(v)) for v in values]
                return ints, [f"class_{i}" for i in range(max(ints) + 1)]
            names = sorted(set(values))
            return [names.index(v) for v in values], names
    onehot = [c for c in header if c != id_col and all(_is_num(r.get(c, "")) for r in rows)]
    if len(onehot) >= 2:
        labels = []
        for r in rows:
            hot = [i for i, c in enumerate(onehot) if float(r[c]) == 1.0]
            if len(hot) != 1 or any(float(r[c]) not in (0.0, 1.0) for c in onehot):
                return None
            labels.append(hot[0])
        return labels, onehot
    return None


def _is_num(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_of_csv(path: Path) -> str:
    words = re.split(r"[^a-z]+", path.stem.lower())
    for word, split in _SPLIT_WORDS:
        if word in words:
            return split
    return "training"


def _images(root: Path) -> dict[str, Path]:
    images = drop_sibling_masks(find_images(root, skip_dirs=MASK_DIR_NAMES))[0]
    return {file_stem(p).lower(): p for p in images}


def _label_csvs(
    root: Path, images: dict[str, Path]
) -> list[tuple[Path, str, list[dict[str, str]], list[int], list[str]]]:
    found = []
    stems = set(images)
    for path in _csv_files(root):
        header, rows = _read_rows(path)
        if not rows:
            continue
        id_col = _id_column(header, rows, stems)
        if id_col is None:
            continue
        labels = _labels(header, rows, id_col)
        if labels is not None:
            found.append((path, id_col, rows, *labels))
    return found


def _detect(root: Path, task: str) -> bool:
    if not _csv_files(root):
        return False
    return bool(_label_csvs(root, _images(root)))


def read_csv_labels(root: str | Path, task: str = "classification", **options) -> dict:
    """Datalist of images labelled by a CSV (see the module docstring)."""
    root = Path(root)
    images = _images(root)
    csvs = _label_csvs(root, images)
    if not csvs:
        raise DatalistError(f"{root}: no CSV file whose rows name the images and give a label")
    lists = [c[4] for c in csvs]
    if all(lst == lists[0] for lst in lists):
        classes = list(lists[0])
    elif all(n.startswith("class_") for lst in lists for n in lst):
        classes = [f"class_{i}" for i in range(max(len(lst) for lst in lists))]
    else:
        classes = sorted({n for lst in lists for n in lst})
    datalist: dict = {"classes": classes}
    seen: set[str] = set()
    for path, id_col, rows, labels, row_classes in csvs:
        items = datalist.setdefault(_split_of_csv(path), [])
        for row, label in zip(rows, labels):
            key = _key(row.get(id_col, ""))
            if key in images and key not in seen:
                seen.add(key)
                item = {"image": str(images[key]), "label": classes.index(row_classes[label])}
                items.append({**item, "source": f"{root.name}/{path.name}"})
    unlabeled = len(images) - len(seen)
    if unlabeled:
        warnings.warn(f"{root}: {unlabeled} image(s) have no row in the label CSV(s) and are left out", stacklevel=2)
    datalist.setdefault("training", [])
    datalist["label_csv"] = [str(c[0]) for c in csvs]
    return datalist


CSV_LABELS_LAYOUT = Layout(
    name="csv-labels",
    tasks=("pretrain", "classification"),
    description="images + a CSV (in dataset_dir or one level down) with an image-name column and a label column or "
    "one-hot class columns",
    detect=_detect,
    read=read_csv_labels,
)
