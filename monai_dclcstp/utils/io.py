"""Crash-safe file output: atomic writes (temp file + rename) and output paths confined to an output folder."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["safe_output_path", "atomic_write", "atomic_torch_save", "atomic_json_dump", "sha256_file"]

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def safe_output_path(output_dir: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """Resolve ``relative`` inside ``output_dir`` and refuse anything that could escape it.

    Each path component must match ``[A-Za-z0-9][A-Za-z0-9._-]*`` (no ``..``, no hidden names, no separators other
    than ``/``), the path must be relative, and the resolved path (symlinks followed) must stay under the resolved
    ``output_dir``.

    Raises:
        ValueError: naming the offending path.
    """
    rel = str(relative)
    parts = rel.split("/")
    if os.path.isabs(rel) or not rel or any(not _SAFE_PART.match(p) for p in parts):
        raise ValueError(
            f"unsafe output name {rel!r}: use a relative path of names made of letters, digits, '.', '_', '-' "
            "(not starting with '.')."
        )
    root = Path(output_dir).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"output path {rel!r} resolves to {target}, outside the output folder {root}.")
    return target


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically.

    The temporary file is in the same folder and ends with the same suffixes as ``path`` (writers that pick the
    format from the extension, such as PIL and nibabel, keep working).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is ``False``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (pass overwrite=True to replace).")
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, fails if path exists
            except FileExistsError:
                raise FileExistsError(
                    f"{path} already exists; refusing to overwrite it (pass overwrite=True to replace)."
                ) from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise FileExistsError(f"{path} already exists; refusing to overwrite it.") from None
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: a crash leaves either the old file or the new one, never half."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), overwrite=overwrite)


def atomic_json_dump(obj: Any, path: str | os.PathLike, overwrite: bool = True, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""

    def _write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent)
            f.write("\n")

    return atomic_write(path, _write, overwrite=overwrite)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
