"""Segmentation layouts: image files paired with mask files by stem.

- ``isic2018``: ``ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_*.jpg`` with
  ``ISIC2018_Task1_{Training,Validation,Test}_GroundTruth/ISIC_*_segmentation.png`` (the 2016/2017 folder names,
  ``..._Data`` and ``..._Part1_GroundTruth``, work too; ``*_superpixels`` files are ignored).
- ``ph2``: ``images/IMDnnn.jpg`` + ``masks/IMDnnn_lesion.png`` with an optional ``diagnosis.csv`` (``name,diagnosis``;
  0 common nevus, 1 atypical nevus, 2 melanoma), which adds a ``diagnosis`` key to each item and lets PH2 serve the
  classification task; the original release (``IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp`` +
  ``IMDnnn/IMDnnn_lesion/IMDnnn_lesion.bmp``) is read too.
- ``images-masks``: ``images/`` + ``masks/`` (also ``image|imgs|img`` and ``mask|labels|label|gt|groundtruth|...``),
  at the top or under ``train|val|test/``, and MSD / nnU-Net ``imagesTr`` + ``labelsTr`` (+ ``imagesTs``; nnU-Net
  channel files ``case_0000``, ``case_0001`` become one multi-channel item). This covers ISIC-style samples
  (``masks/ISIC_x.png``) and Kvasir-SEG (``images/*.jpg`` + ``masks/*.jpg``).

Pairing: a mask pairs with the image of the same stem (case-insensitive), after removing one of the suffixes
:data:`MASK_SUFFIXES` (``_segmentation``, ``_lesion``, ``_mask`` ...). Unpaired files are an error listing them, unless
``allow_unpaired=True`` (then they are dropped with a warning) or the task is pretraining (masks are not used).

Mask threshold: JPEG masks (Kvasir-SEG) are lossy and hold values around 0 and 255, so the datalist records
``"mask_threshold": 127`` (top level and on each item). Loading transforms must then take ``mask > 127`` as foreground.
When absent, masks are expected binary as stored ({0, v}; foreground is ``mask > 0``).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections import defaultdict
from pathlib import Path

from ..errors import DatalistError, format_file_problems
from ..files import MASK_DIR_NAMES, MASK_SUFFIXES, file_stem, file_suffix, find_images, nnunet_case, split_of
from .base import Layout, child_dirs

__all__ = [
    "MASK_SUFFIXES",
    "JPEG_MASK_THRESHOLD",
    "pair_by_stem",
    "read_image_mask_dirs",
    "ISIC2018_LAYOUT",
    "PH2_LAYOUT",
    "IMAGES_MASKS_LAYOUT",
]

#: Threshold recorded for JPEG masks: foreground is ``mask > 127``.
JPEG_MASK_THRESHOLD = 127

_IMAGE_DIRS = {"images": None, "image": None, "imgs": None, "img": None, "input": None, "inputs": None}
_IMAGE_DIRS.update({"imagestr": "training", "imagests": "test"})
_MASK_DIRS = {name: None for name in MASK_DIR_NAMES}
_MASK_DIRS.update({"labelstr": "training", "labelsts": "test"})

PairDirs = dict[str, tuple[Path, "Path | None"]]


def _nnunet_groups(images: list[Path], root: Path) -> dict[str, list[Path]] | None:
    """nnU-Net ``imagesTr/case_0000.nii.gz, case_0001...`` → ``{case: [channel files]}``; ``None`` if not that shape.

    Only for folders named ``imagesTr``/``imagesTs`` whose every case has channels ``0..k-1`` with one ``k``.
    """
    if root.name.lower() not in ("imagestr", "imagests") or not images:
        return None
    cases: dict[str, dict[int, Path]] = defaultdict(dict)
    for p in images:
        parsed = nnunet_case(file_stem(p))
        if parsed is None:
            return None
        cases[parsed[0].lower()][parsed[1]] = p
    counts = {len(ch) for ch in cases.values()}
    if len(counts) != 1 or any(sorted(ch) != list(range(len(ch))) for ch in cases.values()):
        return None
    return {case: [ch[i] for i in sorted(ch)] for case, ch in cases.items()}


def _image_key_groups(images: list[Path], root: Path) -> tuple[dict[str, list[Path]], bool]:
    """Key → image file(s). Keys are lower-case stems, or ``<relative folder>/<stem>`` when a stem repeats across
    sub-folders (then returned ``relative=True`` so masks are keyed the same way). nnU-Net channel files of one case
    form one group; otherwise every group holds one file."""
    nnunet = _nnunet_groups(images, root)
    if nnunet is not None:
        return nnunet, False
    stems = [file_stem(p).lower() for p in images]
    relative = len(set(stems)) < len(stems)
    groups: dict[str, list[Path]] = {}
    for p, stem in zip(images, stems):
        key = f"{p.parent.relative_to(root).as_posix()}/{stem}" if relative else stem
        if key in groups:  # same stem, same folder, another suffix (x.png + x.jpg): keep both, unpairable
            key = f"{key}{file_suffix(p)}"
        groups[key] = [p]
    return groups, relative


def pair_by_stem(
    images: list[Path], masks: list[Path], image_root: Path, mask_root: Path
) -> tuple[list[tuple[list[Path], Path]], list[Path], list[tuple[Path, str]]]:
    """Pair image and mask files by stem.

    Args:
        images: image files under ``image_root``.
        masks: mask files under ``mask_root``.
        image_root: folder the images are searched in (for relative keys when stems repeat across sub-folders).
        mask_root: same for masks.

    Returns:
        ``(pairs, unpaired_images, bad_masks)``: pairs are ``(image files, mask)`` (several image files for nnU-Net
        channels), in image order; ``bad_masks`` are ``(mask, reason)``.
    """
    groups, relative = _image_key_groups(images, image_root)
    owner: dict[str, Path] = {}
    bad: list[tuple[Path, str]] = []
    for m in masks:
        stem = file_stem(m).lower()
        prefix = f"{m.parent.relative_to(mask_root).as_posix()}/" if relative else ""
        candidates = [stem] + [stem[: -len(s)] for s in MASK_SUFFIXES if stem.endswith(s) and len(stem) > len(s)]
        match = next((prefix + c for c in candidates if prefix + c in groups), None)
        if match is None:
            bad.append((m, f"mask has no image with stem '{candidates[-1]}' in {image_root}"))
        elif match in owner:
            bad.append((m, f"second mask for image '{match}' (first: {owner[match].name})"))
        else:
            owner[match] = m
    pairs = [(files, owner[k]) for k, files in groups.items() if k in owner]
    unpaired = [files[0] for k, files in groups.items() if k not in owner]
    return pairs, unpaired, bad


def _image_value(files: list[Path]) -> str | list[str]:
    return str(files[0]) if len(files) == 1 else [str(p) for p in files]


def read_image_mask_dirs(
    pair_dirs: PairDirs,
    task: str,
    source: str,
    allow_unpaired: bool = False,
    image_filter=None,
    foreground: str = "foreground",
) -> dict:
    """Datalist from ``{split: (image_dir, mask_dir or None)}``.

    Args:
        pair_dirs: split key → (image folder, mask folder or ``None`` for an unlabeled split).
        task: ``"segmentation"`` pairs masks; ``"pretrain"`` (and ``"classification"``) list images only.
        source: the items' ``source`` text.
        allow_unpaired: drop unpaired files with a warning instead of raising.
        image_filter: optional predicate on image paths (e.g. to skip ISIC ``*_superpixels.png``).
        foreground: name of class 1 in ``classes``.

    Raises:
        DatalistError: unpaired images or masks (listing them), or a split with no image.
    """
    datalist: dict = {"classes": ["background", foreground]}
    problems: list[tuple[str, str]] = []
    jpeg_masks = False
    for split, (image_dir, mask_dir) in pair_dirs.items():
        images = [p for p in find_images(image_dir) if image_filter is None or image_filter(p)]
        if task != "segmentation" or mask_dir is None:
            groups, _ = _image_key_groups(images, image_dir)
            datalist[split] = [{"image": _image_value(files), "source": source} for files in groups.values()]
            continue
        masks = find_images(mask_dir)
        pairs, unpaired, bad = pair_by_stem(images, masks, image_dir, mask_dir)
        issues = [(str(p), f"image has no mask in {mask_dir}") for p in unpaired]
        issues += [(str(m), reason) for m, reason in bad]
        if issues and allow_unpaired:
            for path, reason in issues:
                warnings.warn(f"{path}: {reason}; dropped (allow_unpaired=True)", stacklevel=3)
        elif issues:
            problems += issues
        items = []
        for files, mask in pairs:
            item: dict = {"image": _image_value(files), "label": str(mask), "source": source}
            if file_suffix(mask) in (".jpg", ".jpeg"):
                item["mask_threshold"] = JPEG_MASK_THRESHOLD
                jpeg_masks = True
            items.append(item)
        datalist[split] = items
    if problems:
        raise DatalistError(
            format_file_problems(
                f"{len(problems)} unpaired file(s) (pairing is by stem; pass allow_unpaired=True to drop them):",
                problems,
            )
        )
    if jpeg_masks:
        datalist["mask_threshold"] = JPEG_MASK_THRESHOLD
    datalist.setdefault("training", [])
    return datalist


# ---------------------------------------------------------------- images/ + masks/ (ISIC sample, Kvasir-SEG, MSD)


def _find_pair_dirs(root: Path) -> PairDirs:
    """Split → (image dir, mask dir or None) at ``root`` and under split folders of ``root``."""
    found: dict[str, dict[str, Path]] = defaultdict(dict)

    def scan(folder: Path, default_split: str) -> None:
        for d in child_dirs(folder):
            name = d.name.lower()
            if name in _IMAGE_DIRS:
                found[_IMAGE_DIRS[name] or default_split].setdefault("image", d)
            elif name in _MASK_DIRS:
                found[_MASK_DIRS[name] or default_split].setdefault("mask", d)

    scan(root, "training")
    for d in child_dirs(root):
        split = split_of(d.name)
        if split is not None:
            scan(d, split)
    return {s: (v["image"], v.get("mask")) for s, v in found.items() if "image" in v}


def _detect_images_masks(root: Path, task: str) -> bool:
    return any(mask is not None for _, mask in _find_pair_dirs(root).values())


def _read_images_masks(root: Path, task: str, allow_unpaired: bool = False, **options) -> dict:
    return read_image_mask_dirs(_find_pair_dirs(root), task, root.name, allow_unpaired)


# ---------------------------------------------------------------- ISIC 2016-2018 challenge folders

_ISIC_SPLIT = re.compile(r"(training|validation|test)", re.IGNORECASE)
_ISIC_OTHER_TASK = re.compile(r"(task|part)_?[23]", re.IGNORECASE)
_ISIC_TASK1 = re.compile(r"(task|part)_?1", re.IGNORECASE)


def _isic_dirs(root: Path) -> PairDirs:
    found: dict[str, dict[str, Path]] = defaultdict(dict)
    for d in child_dirs(root):
        name = d.name.lower()
        split = _ISIC_SPLIT.search(name)
        if not name.startswith("isic") or split is None:
            continue
        if _ISIC_OTHER_TASK.search(name) and not _ISIC_TASK1.search(name):
            continue  # Task 2 (attributes) / Task 3 (classification) folders
        key = {"training": "training", "validation": "validation", "test": "test"}[split.group(1).lower()]
        if "groundtruth" in name:
            found[key].setdefault("mask", d)
        elif "input" in name or "data" in name:
            found[key].setdefault("image", d)
    return {s: (v["image"], v.get("mask")) for s, v in found.items() if "image" in v}


def _detect_isic(root: Path, task: str) -> bool:
    dirs = _isic_dirs(root)
    return "training" in dirs and (task != "segmentation" or dirs["training"][1] is not None)


def _read_isic(root: Path, task: str, allow_unpaired: bool = False, **options) -> dict:
    return read_image_mask_dirs(
        _isic_dirs(root),
        task,
        "isic2018",
        allow_unpaired,
        image_filter=lambda p: not file_stem(p).lower().endswith("_superpixels"),
        foreground="lesion",
    )


# ---------------------------------------------------------------- PH2

_PH2_ID = re.compile(r"^imd\d+$", re.IGNORECASE)
PH2_DIAGNOSES = ["common_nevus", "atypical_nevus", "melanoma"]


def _ph2_flat(root: Path) -> bool:
    dirs = _find_pair_dirs(root)
    if "training" not in dirs or dirs["training"][1] is None:
        return False
    stems = [file_stem(p) for p in find_images(dirs["training"][0], recursive=False, sniff_dicom=False)]
    return bool(stems) and all(_PH2_ID.match(s) for s in stems)


def _ph2_original(root: Path) -> list[tuple[Path, Path | None]]:
    """(image, mask) of the original PH2 release: ``IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp``."""
    pairs = []
    for dirpath, dirnames, _ in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth > 3:
            dirnames[:] = []
            continue
        for d in sorted(dirnames):
            if not _PH2_ID.match(d):
                continue
            case = Path(dirpath) / d
            image_dir, mask_dir = case / f"{d}_Dermoscopic_Image", case / f"{d}_lesion"
            images = find_images(image_dir, recursive=False) if image_dir.is_dir() else []
            if not images:
                continue
            masks = find_images(mask_dir, recursive=False) if mask_dir.is_dir() else []
            image, mask = images[0], (masks[0] if masks else None)
            pairs.append((image, mask))
        dirnames[:] = [d for d in dirnames if not _PH2_ID.match(d)]
    return sorted(pairs)


def _read_diagnosis(root: Path) -> dict[str, int]:
    path = root / "diagnosis.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    out = {}
    for i, row in enumerate(rows):
        if len(row) < 2 or (i == 0 and not row[1].strip().lstrip("-").isdigit()):
            continue  # header or blank line
        try:
            out[row[0].strip().lower()] = int(row[1])
        except ValueError as e:
            raise DatalistError(f"{path}: line {i + 1}: diagnosis {row[1]!r} is not an integer") from e
    return out


def _detect_ph2(root: Path, task: str) -> bool:
    if task == "classification" and not (root / "diagnosis.csv").is_file():
        return False
    return _ph2_flat(root) or bool(_ph2_original(root))


def _read_ph2(root: Path, task: str, allow_unpaired: bool = False, **options) -> dict:
    if _ph2_flat(root):
        pair_task = "segmentation" if task == "classification" else task
        datalist = read_image_mask_dirs(_find_pair_dirs(root), pair_task, "ph2", allow_unpaired, foreground="lesion")
    else:
        items, missing = [], []
        for image, mask in _ph2_original(root):
            if task == "segmentation" and mask is None:
                missing.append((str(image), "image has no IMDnnn_lesion mask"))
                continue
            item = {"image": str(image), "source": "ph2"}
            if task == "segmentation":
                item["label"] = str(mask)
            items.append(item)
        if missing and not allow_unpaired:
            raise DatalistError(format_file_problems(f"{len(missing)} PH2 image(s) without a mask:", missing))
        datalist = {"training": items, "classes": ["background", "lesion"]}
    diagnosis = _read_diagnosis(root)
    missing = []
    for split in ("training", "validation", "test"):
        for item in datalist.get(split, []):
            first = item["image"] if isinstance(item["image"], str) else item["image"][0]
            d = diagnosis.get(file_stem(first).lower())
            if d is not None:
                item["diagnosis"] = d
            elif diagnosis:
                missing.append((first, "no row in diagnosis.csv"))
            if task == "classification":
                item.pop("label", None)
                item.pop("mask_threshold", None)
                if d is not None:
                    item["label"] = d
    if task == "classification":
        if missing:
            raise DatalistError(format_file_problems(f"{len(missing)} PH2 image(s) without a diagnosis:", missing))
        datalist["classes"] = list(PH2_DIAGNOSES)
        datalist.pop("mask_threshold", None)
    elif diagnosis:
        datalist["diagnosis_classes"] = list(PH2_DIAGNOSES)
    return datalist


ISIC2018_LAYOUT = Layout(
    name="isic2018",
    tasks=("pretrain", "segmentation"),
    description="ISIC 2018 Task 1: ISIC2018_Task1-2_Training_Input/ + ISIC2018_Task1_Training_GroundTruth/ (+ "
    "Validation/Test)",
    detect=_detect_isic,
    read=_read_isic,
)

PH2_LAYOUT = Layout(
    name="ph2",
    tasks=("pretrain", "segmentation", "classification"),
    description="PH2: images/IMDnnn.jpg + masks/IMDnnn_lesion.png [+ diagnosis.csv], or the original IMDnnn/ folders",
    detect=_detect_ph2,
    read=_read_ph2,
)

IMAGES_MASKS_LAYOUT = Layout(
    name="images-masks",
    tasks=("pretrain", "segmentation"),
    description="images/ + masks/ with the same stems (Kvasir-SEG, ISIC samples; also train|val|test/ sub-folders, "
    "imagesTr/ + labelsTr/)",
    detect=_detect_images_masks,
    read=_read_images_masks,
)
