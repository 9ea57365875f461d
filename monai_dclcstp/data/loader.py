"""The one entry point bundles call: ``load_datalist(datalist, dataset_dir, task, ...)`` → datalist dict.

From a bundle config (both sources default to null, the embedded sample is the fallback, so a user overrides either
``datalist`` or ``dataset_dir``)::

    "datalist": null,
    "dataset_dir": null,
    "sample_dir": "$@bundle_root + '/../../data/samples/pneumoniamnist'",
    "datalist_dict": "$monai_dclcstp.data.load_datalist(@datalist, @dataset_dir, task='classification',
                      seed=@seed, cache_dir=@output_dir + '/data_cache', default=@sample_dir)",
    "train#datalist": "$@datalist_dict['training']",
    "validate#datalist": "$@datalist_dict['validation']",

``dataset_dir`` is a folder in a known layout (see :data:`~monai_dclcstp.data.layouts.LAYOUTS`; any image folder
works for pretraining); ``datalist`` a JSON file (or a folder holding ``datalist.json``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .datalist import SPLITS, normalize_datalist, read_datalist, split_datalist, subsample
from .errors import DatalistError, format_file_problems
from .export import convert_to_png
from .files import TIFF_SUFFIXES, file_suffix, monai_can_read
from .layouts import check_task, find_datalist_file, read_layout

__all__ = ["load_datalist"]


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None", "null"))


def _existing(datalist: dict, n: int = 20) -> int:
    """How many of the first ``n`` training images exist (to choose the folder relative paths resolve against)."""
    items = (datalist.get("training") or [])[:n]
    return sum(os.path.exists(it["image"] if isinstance(it["image"], str) else it["image"][0]) for it in items)


def _from_datalist_arg(datalist: Any, alt_base: str | os.PathLike | None = None) -> dict:
    if isinstance(datalist, Mapping) or (isinstance(datalist, Sequence) and not isinstance(datalist, (str, bytes))):
        out = normalize_datalist(datalist, alt_base)
        out.setdefault("layout", "datalist")
        return out
    path = Path(os.fspath(datalist)).expanduser()
    if path.is_dir():
        path = find_datalist_file(path)  # type: ignore[assignment]
    out = read_datalist(path)
    if alt_base is not None and _existing(out) == 0:
        other = read_datalist(path, base_dir=alt_base)
        if _existing(other) > 0:
            out = other
            out["base_dir"] = os.path.abspath(alt_base)
    out["layout"] = "datalist"
    out["datalist_file"] = os.path.abspath(path)
    return out


def _is_json_file(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and os.path.isfile(value) and str(value).lower().endswith(".json")


def _is_datalist_folder(value: Any) -> bool:
    return (
        isinstance(value, (str, os.PathLike)) and os.path.isdir(value) and find_datalist_file(Path(value)) is not None
    )


def _sources(datalist: Any, dataset_dir: Any, default: Any) -> tuple[Any, Any, Any]:
    """Decide ``(datalist, dataset_dir, alt_base)`` from the arguments (see :func:`load_datalist`)."""
    has_datalist, has_dir = not _is_empty(datalist), not _is_empty(dataset_dir)
    if not has_datalist and not has_dir:
        if _is_empty(default):
            raise DatalistError(
                "give exactly one of datalist (a datalist JSON) and dataset_dir (a dataset folder); got neither "
                "(both are null)"
            )
        return (default, None, None) if _is_json_file(default) else (None, default, None)
    if has_datalist and has_dir:
        inside = isinstance(datalist, (str, os.PathLike)) and os.path.abspath(datalist).startswith(
            os.path.join(os.path.abspath(dataset_dir), "")
        )
        if not inside:
            raise DatalistError(
                "give exactly one of datalist (a datalist JSON) and dataset_dir (a dataset folder); got both "
                f"(datalist={datalist!r}, dataset_dir={dataset_dir!r}). Set the other to null (a datalist inside "
                "dataset_dir is accepted: its relative paths may then be relative to dataset_dir)."
            )
        return datalist, None, dataset_dir
    if has_dir and _is_json_file(dataset_dir):
        return dataset_dir, None, None  # a datalist file given as dataset_dir
    if has_datalist and isinstance(datalist, (str, os.PathLike)) and os.path.isdir(datalist):
        if not _is_datalist_folder(datalist):
            return None, datalist, None  # a dataset folder given as datalist: detect its layout
    return (datalist, None, None) if has_datalist else (None, dataset_dir, None)


def _adapt_to_task(datalist: dict, task: str, origin: str) -> None:
    """Drop what the task does not use and check that the labels it needs are there."""
    if task == "pretrain":
        labeled = False
        for split in SPLITS:
            for item in datalist.get(split) or []:
                if isinstance(item.get("label"), str):  # a mask path: not used for pretraining
                    item.pop("label")
                item.pop("mask_threshold", None)
                labeled |= "label" in item
        datalist.pop("mask_threshold", None)
        if not labeled:
            datalist.pop("classes", None)
        return
    want = "a mask path" if task == "segmentation" else "an int class index"
    problems = []
    for split in ("training", "validation"):
        for item in datalist.get(split) or []:
            label = item.get("label")
            ok = isinstance(label, str) if task == "segmentation" else isinstance(label, (int, list))
            if not ok or isinstance(label, bool):
                first = item["image"] if not isinstance(item["image"], list) else item["image"][0]
                found = "no label" if label is None else f"label {label!r}"
                problems.append((str(first), f"{found}; the {task} task needs {want}"))
    if problems:
        raise DatalistError(format_file_problems(f"{origin}: {len(problems)} item(s) unusable for {task}:", problems))
    if task == "classification" and "classes" not in datalist:
        labels = [it["label"] for s in SPLITS for it in datalist.get(s) or [] if isinstance(it.get("label"), int)]
        datalist["classes"] = [f"class_{i}" for i in range(max(labels) + 1)] if labels else []


def _convert_unreadable(datalist: dict, cache_dir: str | os.PathLike | None) -> None:
    """Replace TIFF paths MONAI cannot load here by cached PNG copies (``<key>_original`` keeps the source path)."""
    for split in SPLITS:
        for item in datalist.get(split) or []:
            for key in ("image", "label"):
                value = item.get(key)
                if isinstance(value, str) and file_suffix(value) in TIFF_SUFFIXES and not monai_can_read(value):
                    if os.path.isfile(value):
                        item[key] = str(convert_to_png(value, cache_dir))
                        item[f"{key}_original"] = value


def load_datalist(
    datalist: str | os.PathLike | Mapping | Sequence | None = None,
    dataset_dir: str | os.PathLike | None = None,
    task: str = "pretrain",
    val_fraction: float | None = None,
    seed: int = 0,
    *,
    train_fraction: float = 1.0,
    layout: str = "auto",
    spatial_dims: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    three_class: bool = False,
    allow_unpaired: bool = False,
    convert: bool = True,
    stratify_key: str | None = "label",
    default: str | os.PathLike | None = None,
) -> dict:
    """Datalist dict (absolute paths, ``training`` and ``validation`` splits) from a datalist or a dataset folder.

    Args:
        datalist: a datalist JSON path (relative paths inside resolve against its folder), a folder holding
            ``datalist.json``, or an already-parsed dict/list.
        dataset_dir: a dataset folder in a known layout (or a MedMNIST ``.npz``); detected with
            :func:`~monai_dclcstp.data.detect_layout`, or named by ``layout``.
        task: ``"pretrain"`` (labels optional, mask paths dropped), ``"classification"`` (int labels required) or
            ``"segmentation"`` (mask paths required).
        val_fraction: used only when the source has no (or an empty) validation split: that fraction of the real
            training items goes to validation (seeded, stratified by ``stratify_key``; synthetic items stay in
            training). Default 0.2, except 0 for unlabeled pretraining data (validation is then empty).
        seed: seed of the split and of ``train_fraction``.
        train_fraction: keep this fraction of the real training items (stratified, at least one per class; nested
            across fractions for one seed) for label-efficiency runs. Validation and test are untouched.
        layout: ``"auto"`` or a layout name (``dataset_dir`` only).
        spatial_dims: 3 makes the plain image-folder reader build DICOM series items and skip 2D files.
        cache_dir: where MedMNIST arrays and converted TIFFs are written (default
            :func:`~monai_dclcstp.data.export.default_cache_dir`); bundles should pass a folder under their output.
        three_class: Kermany labels normal / bacterial / viral.
        allow_unpaired: segmentation layouts drop unpaired images/masks with a warning instead of raising.
        convert: convert TIFF files MONAI cannot load here (no ``itk``) to PNG in ``cache_dir``.
        stratify_key: item key for stratified splitting/subsampling (``None`` for a plain random split).
        default: source used when both ``datalist`` and ``dataset_dir`` are null (a datalist JSON or a dataset
            folder, e.g. the embedded sample), so a bundle can default both to null and still run with no arguments,
            and a user overrides either one.

    Returns:
        ``{"training": [...], "validation": [...], ["test": [...]], "classes": [...], "layout": name, "task": task,
        ...}``; segmentation datalists of JPEG masks also carry ``"mask_threshold": 127``. Items keep extra keys
        (``source``, ``synthetic``, ``diagnosis`` ...).

    Sources: exactly one of ``datalist`` and ``dataset_dir`` (or ``default``). Both are accepted only when the
    datalist file lies inside ``dataset_dir`` (MONAI's ``base_dir`` convention: relative paths that do not exist
    beside the datalist are resolved against ``dataset_dir``). A folder passed as ``datalist`` without a
    ``datalist.json`` is read as a dataset folder, and a ``.json`` passed as ``dataset_dir`` as a datalist.

    Raises:
        DatalistError: neither or both sources given, missing/empty folder, unknown layout (lists those tried),
            unpaired segmentation files, labels missing for the task, or no training item.
    """
    check_task(task)
    datalist, dataset_dir, alt_base = _sources(datalist, dataset_dir, default)
    if datalist is not None:
        out = _from_datalist_arg(datalist, alt_base)
        origin = str(out.get("datalist_file", "datalist"))
    else:
        out = read_layout(
            dataset_dir,
            task,
            layout,
            cache_dir=cache_dir,
            three_class=three_class,
            allow_unpaired=allow_unpaired,
            spatial_dims=spatial_dims,
        )
        out["dataset_dir"] = os.path.abspath(Path(os.fspath(dataset_dir)).expanduser())
        origin = f"{out['dataset_dir']} ({out['layout']} layout)"
    _adapt_to_task(out, task, origin)
    out["task"] = task

    training = out.get("training") or []
    if not training:
        raise DatalistError(f"{origin}: no training items")
    if not out.get("validation"):
        labeled = any(isinstance(it.get("label"), (int, list)) for it in training)
        fraction = val_fraction if val_fraction is not None else (0.2 if task != "pretrain" or labeled else 0.0)
        key = None if task == "segmentation" else stratify_key
        out["training"], out["validation"] = split_datalist(training, fraction, seed, key)
        out["split"] = {"val_fraction": fraction, "seed": seed, "stratify_key": key}
        if not out["training"]:
            raise DatalistError(f"{origin}: no training items left after the validation split")
    if train_fraction < 1.0:
        real = [it for it in out["training"] if not it.get("synthetic", False)]
        synthetic = [it for it in out["training"] if it.get("synthetic", False)]
        key = None if task == "segmentation" else stratify_key
        out["training"] = subsample(real, train_fraction, seed, key) + synthetic
        out["train_fraction"] = train_fraction
    if convert:
        _convert_unreadable(out, cache_dir)
    if task == "classification":
        counts = {}
        for it in out["training"]:
            if isinstance(it["label"], int):
                counts[it["label"]] = counts.get(it["label"], 0) + 1
        if len(counts) < 2 and len(out.get("classes", [])) >= 2:
            warnings.warn(f"{origin}: the training split holds a single class ({counts})", stacklevel=2)
    return out
