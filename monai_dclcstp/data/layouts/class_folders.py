"""Classification layouts: one folder per class, optionally under split folders; Kermany's chest X-ray set.

- class-per-folder: ``root/<class>/**/*.png|jpg|...`` or ``root/train|val|test/<class>/**/*``; classes are the folder
  names, sorted (the union over splits, so indices agree between splits). Mask folders (``masks``, ``labels`` ...)
  and masks stored beside their images (BUSI's ``benign (1)_mask.png``) are left out.
- Kermany et al. 2018 (``chest_xray``): ``train|val|test/NORMAL|PNEUMONIA/*.jpeg``; classes ``normal``,
  ``pneumonia``, or with ``three_class=True`` ``normal``, ``bacterial``, ``viral`` from the file names
  (``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatalistError, format_file_problems
from ..files import MASK_DIR_NAMES, drop_sibling_masks, find_images, has_image, is_image_file, split_of
from .base import Layout, child_dirs

__all__ = ["KERMANY_LAYOUT", "CLASS_FOLDERS_LAYOUT", "read_class_folders", "read_kermany"]

_IMAGE_DIR_NAMES = {"images", "image", "imgs", "img", "imagestr", "imagests", "input", "inputs"}
#: At most this many class folders are taken as classes when building a pretraining datalist.
MAX_PRETRAIN_CLASSES = 50


def _images(folder: Path) -> list[Path]:
    """Images under ``folder``, without mask folders and masks stored beside their images."""
    return drop_sibling_masks(find_images(folder, skip_dirs=MASK_DIR_NAMES))[0]


def _split_dirs(root: Path) -> dict[str, Path]:
    return {split_of(d.name): d for d in child_dirs(root) if split_of(d.name) is not None}


def _class_dirs(folder: Path) -> list[Path]:
    return [
        d
        for d in child_dirs(folder)
        if split_of(d.name) is None and d.name.lower() not in MASK_DIR_NAMES and has_image(d, MASK_DIR_NAMES)
    ]


def _looks_like_segmentation(dirs: list[Path]) -> bool:
    names = {d.name.lower() for d in dirs}
    return bool(names & _IMAGE_DIR_NAMES) and bool(names & set(MASK_DIR_NAMES))


def _detect_class_folders(root: Path, task: str) -> bool:
    splits = _split_dirs(root)
    folders = list(splits.values()) if splits else [root]
    names: set[str] = set()
    for folder in folders:
        dirs = _class_dirs(folder)
        if dirs and any(p.is_file() and is_image_file(p, sniff_dicom=False) for p in folder.iterdir()):
            return False  # loose images beside the "class" folders: not a class-per-folder tree
        if _looks_like_segmentation(dirs):
            return False
        names.update(d.name for d in dirs)
    limit = MAX_PRETRAIN_CLASSES if task == "pretrain" else 100_000
    return 2 <= len(names) <= limit


def read_class_folders(root: str | Path, task: str = "classification", **options) -> dict:
    """Datalist of a class-per-folder tree (see the module docstring).

    Files directly in a split folder (no class folder) become unlabeled items of that split (e.g. an unlabeled
    ``test/``). Returns ``training`` (and ``validation``/``test`` when split folders exist) and sorted ``classes``.
    """
    root = Path(root)
    splits = _split_dirs(root)
    folders = splits if splits else {"training": root}
    per_split = {key: _class_dirs(folder) for key, folder in folders.items()}
    classes = sorted({d.name for dirs in per_split.values() for d in dirs})
    index = {name: i for i, name in enumerate(classes)}
    datalist: dict = {"classes": classes}
    for key, folder in folders.items():
        items = []
        for d in per_split[key]:
            items += [{"image": str(p), "label": index[d.name], "source": root.name} for p in _images(d)]
        if not per_split[key]:
            items = [{"image": str(p), "source": root.name} for p in _images(folder)]
        datalist[key] = items
    datalist.setdefault("training", [])
    return datalist


_KERMANY_CLASSES = ("normal", "pneumonia")


def _detect_kermany(root: Path, task: str) -> bool:
    splits = _split_dirs(root)
    for folder in splits.values() if splits else [root]:
        names = {d.name.lower() for d in child_dirs(folder)}
        if set(_KERMANY_CLASSES) <= names:
            return True
    return False


def read_kermany(root: str | Path, task: str = "classification", three_class: bool = False, **options) -> dict:
    """Datalist of Kermany's chest X-ray folders (``train|val|test/NORMAL|PNEUMONIA``).

    Args:
        root: the ``chest_xray`` folder.
        task: task name (unused: labels are always kept).
        three_class: labels normal 0 / bacterial 1 / viral 2 from the file names instead of normal / pneumonia.

    Raises:
        DatalistError: with ``three_class``, pneumonia files whose name says neither ``bacteria`` nor ``virus``.
    """
    root = Path(root)
    splits = _split_dirs(root) or {"training": root}
    classes = ["normal", "bacterial", "viral"] if three_class else list(_KERMANY_CLASSES)
    datalist: dict = {"classes": classes}
    unknown = []
    for key, folder in splits.items():
        items = []
        for d in child_dirs(folder):
            name = d.name.lower()
            if name not in _KERMANY_CLASSES:
                continue
            for p in _images(d):
                if name == "normal":
                    label = 0
                elif not three_class:
                    label = 1
                elif "bacteria" in p.name.lower():
                    label = 1
                elif "virus" in p.name.lower():
                    label = 2
                else:
                    unknown.append((str(p), "pneumonia image whose name says neither 'bacteria' nor 'virus'"))
                    continue
                items.append({"image": str(p), "label": label, "source": f"kermany/{folder.name}/{d.name}"})
        datalist[key] = items
    if unknown:
        raise DatalistError(format_file_problems(f"three_class=True: {len(unknown)} file(s) cannot be typed:", unknown))
    datalist.setdefault("training", [])
    return datalist


KERMANY_LAYOUT = Layout(
    name="kermany",
    tasks=("pretrain", "classification"),
    description="Kermany chest X-ray: [train|val|test/]NORMAL|PNEUMONIA/*.jpeg",
    detect=_detect_kermany,
    read=read_kermany,
)

CLASS_FOLDERS_LAYOUT = Layout(
    name="class-folders",
    tasks=("pretrain", "classification"),
    description="one folder per class, >= 2 classes, no loose images: [train|val|test/]<class>/**/<image>",
    detect=_detect_class_folders,
    read=read_class_folders,
)
