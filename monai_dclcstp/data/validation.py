"""Pre-flight check of a datalist before training: every file is opened once, bad ones are named with the problem.

From a bundle config (after ``load_datalist``)::

    "checked": "$monai_dclcstp.data.validate_datalist(@datalist_dict, spatial_dims=@spatial_dims,
                in_channels=@in_channels, min_size=None, task='classification', skip_invalid=False)",
    "train#datalist": "$@checked.items['training']",

Checks per item: the file exists, has a type MONAI's ``LoadImage`` reads here, decodes (truncated PNG/JPEG, corrupt
DICOM/NIfTI), has 2 or 3 spatial axes as configured, a channel count the channel policy accepts (see
:mod:`monai_dclcstp.data.channels`: grey is repeated for RGB networks, grey-stored-as-RGB averaged for 1-channel
ones, real colour into ``in_channels=1`` is an error), is at least ``min_size``, holds no NaN/Inf; the label is a
class index of ``classes`` (classification) or a mask (segmentation) of the image's size whose values are binary
({0, v}, or anything when a ``mask_threshold`` is recorded; ``0..len(classes)-1`` when ``classes`` has more than two
entries). A few hundred small PNGs take well under a second (files are inspected in a thread pool).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from .channels import channel_policy
from .datalist import SPLITS
from .errors import DatalistError, format_file_problems
from .files import RASTER_SUFFIXES, TIFF_SUFFIXES, VOLUME_SUFFIXES, file_suffix, is_image_file, monai_can_read
from .image_info import FULL_READ_BYTES, ImageInfo, ImageReadError, inspect_image
from .layouts.base import check_task

__all__ = ["ValidationResult", "validate_datalist"]

logger = logging.getLogger(__name__)

_KNOWN = ", ".join(RASTER_SUFFIXES + TIFF_SUFFIXES + VOLUME_SUFFIXES + (".npy",))


class ValidationResult(NamedTuple):
    """Outcome of :func:`validate_datalist`.

    Attributes:
        items: the kept items (all of them unless ``skip_invalid``); a datalist dict when a dict was checked.
        num_dropped: number of items dropped (0 unless ``skip_invalid``).
        problems: ``(path, problem)`` for every bad file found.
        notes: conversions the loader will do, with their counts (e.g. ``{"grey repeated to 3 channels": 400}``).
    """

    items: list[dict] | dict
    num_dropped: int
    problems: list[tuple[str, str]]
    notes: dict[str, int]


def _paths(value: Any) -> list[str]:
    return [os.fspath(v) for v in value] if isinstance(value, (list, tuple)) else [os.fspath(value)]


def _file_problem(path: str) -> str | None:
    """Existence and type checks that need no decoding."""
    if not os.path.exists(path):
        return "file not found"
    if os.path.isdir(path):
        return None  # a DICOM series folder; inspected later
    if os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    if not is_image_file(path):
        return f"unsupported file type '{file_suffix(path) or '(no extension)'}' (known: {_KNOWN}, DICOM)"
    if not monai_can_read(path):
        suffix = file_suffix(path)
        hint = "load_datalist(convert=True) converts TIFF to PNG" if suffix in TIFF_SUFFIXES else "convert to NIfTI"
        return f"MONAI cannot load '{suffix}' files here (needs itk); {hint} or install itk"
    return None


def _inspect(args: tuple[str, bool, int]) -> ImageInfo | str:
    path, is_mask, full_read_bytes = args
    problem = _file_problem(path)
    if problem is not None:
        return problem
    try:
        return inspect_image(path, is_mask=is_mask, full_read_bytes=full_read_bytes)
    except ImageReadError as e:
        return str(e)
    except Exception as e:  # a reader failing in an unexpected way is still a bad file
        return f"cannot read the file ({type(e).__name__}: {e})"


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _image_problems(
    info: ImageInfo, spatial_dims: int, in_channels: int, min_size: Any, allow_colour_to_grey: bool, notes: Counter
) -> list[str]:
    out = []
    if info.spatial_dims != spatial_dims:
        what = "3D volume" if info.spatial_dims == 3 else "2D image"
        out.append(f"{what} (spatial shape {_fmt(info.spatial_shape)}) but spatial_dims={spatial_dims}")
    if info.mode in ("P", "PA"):
        out.append("palette image (PIL mode P): MONAI loads the palette indices, not the colours; save it as L or RGB")
    else:
        ok, text = channel_policy(info.channels, in_channels, info.grey_colour, info.mode, allow_colour_to_grey)
        if not ok:
            out.append(text)
        elif text:
            notes[text] += 1
    if min_size is not None and info.spatial_dims == spatial_dims:
        sizes = [int(min_size)] * spatial_dims if isinstance(min_size, (int, float)) else [int(s) for s in min_size]
        if any(s < m for s, m in zip(info.spatial_shape, sizes)):
            out.append(f"spatial shape {_fmt(info.spatial_shape)} is smaller than min_size {_fmt(sizes)}")
    if info.nonfinite:
        out.append("contains NaN or Inf values")
    return out


def _mask_problems(mask: ImageInfo, image: ImageInfo | None, threshold: Any, n_classes: int) -> list[str]:
    out = []
    if image is not None and tuple(mask.spatial_shape) != tuple(image.spatial_shape):
        out.append(f"mask size {_fmt(mask.spatial_shape)} differs from its image's {_fmt(image.spatial_shape)}")
    if mask.grey_colour is False:
        out.append(f"colour mask ({mask.channels} channels that differ); expected a single-channel mask")
    if mask.nonfinite:
        out.append("mask contains NaN or Inf values")
    if mask.mask_values is None or threshold is not None or mask.nonfinite:
        return out
    if n_classes <= 2:
        binary = mask.mask_values == 1 or (mask.mask_values == 2 and mask.mask_min == 0)
        if not binary:
            out.append(
                f"mask is not binary: {mask.mask_values}{'+' if mask.mask_values >= 257 else ''} distinct values "
                f"in [{mask.mask_min:g}, {mask.mask_max:g}]; expected {{0, v}} (record 'mask_threshold' in the "
                "datalist for lossy/soft masks)"
            )
    elif not mask.mask_integer or (mask.mask_min or 0) < 0 or (mask.mask_max or 0) >= n_classes:
        out.append(f"mask values [{mask.mask_min:g}, {mask.mask_max:g}] are not class indices 0..{n_classes - 1}")
    return out


def _label_problem(label: Any, task: str, n_classes: int | None, split: str) -> str | None:
    if task == "classification":
        if label is None:
            return None if split == "test" else "no label (the classification task needs an int class index)"
        values = label if isinstance(label, list) else [label]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int):
                return f"label {label!r} is not an int class index"
            if v < 0 or (n_classes is not None and v >= n_classes):
                return f"label {v} is outside the class list (0..{(n_classes or 1) - 1})"
        if isinstance(label, list) and n_classes is not None and len(label) != n_classes:
            return f"multi-label vector of length {len(label)} for {n_classes} classes"
    elif task == "segmentation":
        if label is None:
            return None if split == "test" else "no mask (the segmentation task needs a mask path as 'label')"
        if not isinstance(label, str):
            return f"label {label!r} is not a mask path"
    return None


def validate_datalist(
    items: Sequence[Mapping] | Mapping,
    *,
    spatial_dims: int,
    in_channels: int,
    task: str,
    min_size: int | Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    mask_threshold: float | None = None,
    skip_invalid: bool = False,
    allow_colour_to_grey: bool = False,
    num_workers: int | None = None,
    full_read_bytes: int = FULL_READ_BYTES,
) -> ValidationResult:
    """Check every file of a datalist before training (see the module docstring for the checks).

    Args:
        items: datalist items, or a whole datalist dict (then ``training``/``validation``/``test`` are checked and its
            ``classes``/``mask_threshold`` used unless given here).
        spatial_dims: 2 or 3, as configured.
        in_channels: network input channels.
        task: ``"pretrain"``, ``"classification"`` or ``"segmentation"``.
        min_size: smallest allowed spatial size (the crop size), an int or one value per spatial axis (in MONAI's
            axis order), or ``None``.
        classes: class names; classification labels must index them; for segmentation more than two entries
            allow multi-class masks ``0..len(classes)-1``.
        mask_threshold: foreground is ``mask > mask_threshold`` (JPEG masks); an item's own ``mask_threshold`` key
            wins. With no threshold, masks must be binary as stored.
        skip_invalid: drop bad items (one warning per file) instead of raising.
        allow_colour_to_grey: accept real colour images when ``in_channels=1``.
        num_workers: threads that inspect files (default ``min(8, cpu_count)``; 0 = inspect in this thread).
        full_read_bytes: DICOM/NIfTI files up to this size are decoded in full, larger ones by header only.

    Returns:
        :class:`ValidationResult` ``(items, num_dropped, problems, notes)``.

    Raises:
        DatalistError: the datalist is empty, or (unless ``skip_invalid``) a file has a problem; the message lists up to
            20 ``path: problem`` lines and the total count. With ``skip_invalid``, raised when no item is left.
    """
    check_task(task)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    is_dict = isinstance(items, Mapping)
    if is_dict:
        classes = classes if classes is not None else items.get("classes")
        mask_threshold = mask_threshold if mask_threshold is not None else items.get("mask_threshold")
        split_items = [(s, list(items.get(s) or [])) for s in SPLITS]
    else:
        split_items = [("training", list(items))]
    total = sum(len(v) for _, v in split_items)
    if total == 0:
        raise DatalistError("the datalist is empty: no items to check")
    n_classes = len(classes) if classes is not None else None
    seg = task == "segmentation"

    # inspect every distinct file once, in parallel
    jobs: dict[tuple[str, bool], tuple[str, bool, int]] = {}
    for _, lst in split_items:
        for item in lst:
            for p in _paths(item.get("image", "")):
                jobs.setdefault((p, False), (p, False, full_read_bytes))
            if seg and isinstance(item.get("label"), str):
                jobs.setdefault((item["label"], True), (item["label"], True, full_read_bytes))
    workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
    if workers > 0 and len(jobs) > 16:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = dict(zip(jobs, pool.map(_inspect, jobs.values(), chunksize=8)))
    else:
        results = {k: _inspect(v) for k, v in jobs.items()}

    notes: Counter = Counter()
    problems: list[tuple[str, str]] = []
    kept: dict[str, list[dict]] = {}
    dropped = 0
    for split, lst in split_items:
        kept[split] = []
        for item in lst:
            bad: list[tuple[str, str]] = []
            if "image" not in item:
                bad.append((str(item)[:80], "item has no 'image' key"))
                image_info = None
            else:
                infos = []
                for p in _paths(item["image"]):
                    res = results[(p, False)]
                    if isinstance(res, str):
                        bad.append((p, res))
                    else:
                        infos.append(res)
                image_info = infos[0] if len(infos) == len(_paths(item["image"])) and infos else None
                if image_info is not None and len(infos) > 1:  # several files stacked as channels
                    shapes = {tuple(i.spatial_shape) for i in infos}
                    if len(shapes) > 1:
                        bad.append((infos[0].path, f"channel files differ in size: {sorted(shapes)}"))
                    image_info = ImageInfo(
                        infos[0].path, infos[0].kind, infos[0].spatial_shape, sum(i.channels for i in infos)
                    )
                    image_info.nonfinite = any(i.nonfinite for i in infos)
                if image_info is not None:
                    for text in _image_problems(
                        image_info, spatial_dims, in_channels, min_size, allow_colour_to_grey, notes
                    ):
                        bad.append((image_info.path, text))
            first = _paths(item.get("image", "?"))[0]
            label = item.get("label")
            text = _label_problem(label, task, n_classes, split)
            if text is not None:
                bad.append((first, text))
            elif seg and isinstance(label, str):
                res = results[(label, True)]
                if isinstance(res, str):
                    bad.append((label, f"mask: {res}"))
                else:
                    threshold = item.get("mask_threshold", mask_threshold)
                    bad += [(label, t) for t in _mask_problems(res, image_info, threshold, n_classes or 2)]
            if bad:
                problems += bad
                if skip_invalid:
                    dropped += 1
                    per_file: dict[str, list[str]] = {}
                    for path, text in bad:
                        per_file.setdefault(path, []).append(text)
                    for path, texts in per_file.items():
                        warnings.warn(f"{path}: {'; '.join(texts)}; item dropped (skip_invalid=True)", stacklevel=2)
                    continue
            kept[split].append(dict(item))

    header = (
        f"pre-flight check ({task}, spatial_dims={spatial_dims}, in_channels={in_channels}): "
        f"{len(problems)} problem(s) in {total} item(s):"
    )
    if problems and not skip_invalid:
        raise DatalistError(
            format_file_problems(header, problems) + "\n(pass skip_invalid=True to drop the bad items instead)"
        )
    if skip_invalid and not any(kept.values()):
        raise DatalistError(format_file_problems(header + " no item is left", problems))
    if skip_invalid and is_dict and items.get("training") and not kept["training"]:
        raise DatalistError(format_file_problems(header + " no training item is left", problems))
    if is_dict:
        train_paths = {_paths(it["image"])[0] for it in kept.get("training", []) if "image" in it}
        for split in ("validation", "test"):
            shared = [
                p for it in kept.get(split, []) if "image" in it for p in _paths(it["image"])[:1] if p in train_paths
            ]
            if shared:
                warnings.warn(
                    f"{len(shared)} {split} image(s) are also in training (leakage), e.g. {shared[0]}", stacklevel=2
                )
    if notes:
        logger.info("pre-flight check: the loader will convert channels: %s", dict(notes))
    if dropped:
        logger.warning("pre-flight check: dropped %d of %d item(s)", dropped, total)
    if is_dict:
        out_items: list[dict] | dict = {k: v for k, v in items.items() if k not in SPLITS}
        out_items.update({s: kept[s] for s, _ in split_items if s in items})
    else:
        out_items = kept["training"]
    return ValidationResult(out_items, dropped, problems, dict(notes))
