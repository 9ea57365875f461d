"""Helpers that bundle configs call: where the bundle is, which device to use, how many loader workers.

MONAI 1.6 resolves a ``bundle_root`` of ``"."`` against the working directory, so a config run from the repo root
would look for its data and write its outputs in the wrong place. Configs instead set
``"bundle_root": "$monai_dclcstp.utils.find_bundle_root()"``, which finds the folder of the running config, and
``--bundle_root`` on the command line still overrides it.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
import warnings
from pathlib import Path

import torch

__all__ = ["find_bundle_root", "resolve_device", "default_num_workers"]


def _root_of(config_file: str | os.PathLike) -> Path:
    folder = Path(config_file).resolve().parent
    return folder.parent if folder.name == "configs" else folder


def _config_file_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value:
            if value.lstrip().startswith("["):  # "['a.json','b.json']": the first file decides
                try:
                    files = ast.literal_eval(value)
                    value = files[0] if files else None
                except (ValueError, SyntaxError):
                    value = value.strip("[]").split(",")[0].strip(" '\"")
            return value
    return None


def find_bundle_root(fallback: str | os.PathLike | None = None) -> str:
    """Absolute path of the bundle whose config is being run (the folder above ``configs/``).

    Looked up, in order: the ``config_root_path`` of the MONAI ``ConfigWorkflow`` that is parsing the config (found on
    the call stack, so it also works for ``ConfigWorkflow`` used from Python), the ``--config_file`` argument of the
    command line, then ``fallback``, then the working directory (with a warning).
    """
    for frame_info in inspect.stack()[1:]:
        owner = frame_info.frame.f_locals.get("self")
        if any(c.__name__ == "ConfigWorkflow" for c in type(owner).__mro__):
            root = owner.__dict__.get("config_root_path")
            if root is not None:
                return str(_root_of(Path(root) / "config.json"))
    config_file = _config_file_from_argv(sys.argv)
    if config_file:
        return str(_root_of(config_file))
    if fallback is not None:
        return str(Path(fallback).resolve())
    warnings.warn("could not locate the bundle folder; using the working directory as bundle_root.", stacklevel=2)
    return str(Path.cwd())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when available (``cuda:LOCAL_RANK`` under torchrun), else ``cpu``; other values as given.

    Raises:
        ValueError: a CUDA device was requested but CUDA is not available.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was requested but CUDA is not available on this machine; use 'auto' or 'cpu'."
        )
    return dev


def default_num_workers(limit: int = 4) -> int:
    """Loader worker processes: the usable CPU cores minus one for the trainer, at most ``limit``, at least 0."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(limit, cores - 1))
