"""Resume training from the newest readable checkpoint of a folder (``resume`` key of the bundles)."""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, min_version, optional_import

from ..utils import dist
from .collective import collective_device

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["LatestCheckpointLoader", "UnsafeCheckpointError", "find_checkpoints"]

_NUMBER = re.compile(r"=(\d+)\.pt$")


def find_checkpoints(directory: str | os.PathLike, prefix: str = "checkpoint") -> list[Path]:
    """``<prefix>*.pt`` files of ``directory``, newest first (modification time, then the number in the name)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []

    def key(p: Path) -> tuple[float, int]:
        m = _NUMBER.search(p.name)
        return p.stat().st_mtime, int(m.group(1)) if m else -1

    return sorted((p for p in folder.glob(f"{prefix}*.pt") if p.is_file()), key=key, reverse=True)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds pickled objects other than tensors and plain containers (possibly code): never loaded."""


def _intact(path: Path) -> str | None:
    """``None`` when ``path`` is a complete ``torch.save`` zip archive (CRC of every member checked), else why not.

    Raises:
        UnsafeCheckpointError: ``path`` is a bare pickle (the legacy ``torch.save`` format or ``pickle.dump``), which
            the bundles never write and which cannot be checked without unpickling it.
    """
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return None if bad is None else f"corrupt member {bad}"
    except (zipfile.BadZipFile, OSError) as e:
        if _is_bare_pickle(path):
            raise UnsafeCheckpointError(_unsafe_message(path, "a bare pickle, not a torch.save archive")) from None
        return f"not a complete torch.save archive ({e})"


def _is_bare_pickle(path: Path) -> bool:
    """Whether ``path`` is a pickle stream (any protocol), decided by reading its opcodes without executing them."""
    try:
        with open(path, "rb") as f:
            if f.read(2) in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):  # protocol 2+ header
                return True
            f.seek(0)
            reader = _BoundedReader(f)
            for _ in pickletools.genops(reader):  # protocols 0 and 1 have no header: parse, never run
                pass
            return f.tell() == reader.size > 1  # one complete stream, ending with STOP where the file ends
    except (ValueError, OSError, EOFError, UnicodeDecodeError, MemoryError):
        return False


class _BoundedReader:
    """A binary file whose ``read(n)`` never asks for more than what is left (a length field of a corrupt or crafted
    file must not make the parser allocate gigabytes)."""

    def __init__(self, f) -> None:
        self.f = f
        self.size = os.fstat(f.fileno()).st_size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.size - self.f.tell())
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.f.readline()

    def tell(self) -> int:
        return self.f.tell()


def _unsafe_message(path: Path, why: str) -> str:
    return (
        f"refusing to load checkpoint {path}: {why}. Checkpoints are loaded with torch.load(weights_only=True), which "
        "only accepts tensors and plain containers; this file was not written by a bundle's checkpoint saver and may "
        "run code when unpickled. Remove it (or move it out of the folder) to resume from an older checkpoint."
    )


class LatestCheckpointLoader:
    """At ``STARTED``, restore ``load_dict`` from the newest intact checkpoint in ``directory``, with MONAI's loader.

    Candidates are the ``<prefix>*.pt`` files (MONAI ``CheckpointSaver`` names: ``checkpoint_epoch=N.pt``,
    ``checkpoint_final.pt`` ...), newest first; a truncated or unreadable one is skipped with a warning and the next
    one is tried, so an interrupted save never blocks a resume. Loading is done by
    :class:`monai.handlers.CheckpointLoader` (``torch.load(weights_only=True)``, then Ignite's
    ``Checkpoint.load_objects``), which also restores the trainer's epoch and iteration: the run continues with the
    next epoch. With no checkpoint the run starts from scratch (logged), unless ``required``.

    A file that ``weights_only=True`` refuses (pickled objects other than tensors, e.g. a ``__reduce__`` payload) or a
    bare pickle is never unpickled and never skipped silently: :class:`UnsafeCheckpointError` stops the run, naming
    the file. Under ``torch.distributed`` rank 0 chooses the checkpoint (with the fallbacks above) and broadcasts its
    path, every other rank loads that same file, and a fingerprint of the restored objects (epoch, iteration, sum of
    every tensor) is compared across ranks, so all ranks continue from the same state or the run stops.

    Args:
        directory: folder of the checkpoints.
        load_dict: objects to restore, e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": sched,
            "loss": loss, "trainer": trainer}`` (the ``save_dict`` of the saver).
        prefix: checkpoint file name prefix.
        map_location: passed to ``torch.load`` (e.g. the training device).
        strict: require every key of the state dicts to match.
        required: raise ``FileNotFoundError`` when no checkpoint exists.
        engine_key: also restore the engine this handler is attached to from this key of the checkpoint (written by
            :class:`AtomicCheckpointSaver` with the same ``engine_key``); ``None`` to skip.
        name: logger name (default: this module's logger).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        load_dict: Mapping[str, Any],
        prefix: str = "checkpoint",
        map_location: Any = None,
        strict: bool = True,
        required: bool = False,
        engine_key: str | None = "trainer",
        name: str | None = None,
    ) -> None:
        if not load_dict:
            raise ValueError("load_dict must name at least one object to restore.")
        self.directory = Path(directory)
        self.load_dict = dict(load_dict)
        self.prefix = prefix
        self.map_location = str(map_location) if isinstance(map_location, torch.device) else map_location
        self.strict = strict
        self.required = required
        self.engine_key = engine_key
        self.logger = logging.getLogger(name or __name__)
        self.loaded_path: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Restore the newest usable checkpoint (under ``torch.distributed``: the one rank 0 chose, on every rank).

        Raises:
            UnsafeCheckpointError: a candidate holds pickled objects that ``weights_only=True`` refuses (never
                skipped: such a file was not written by the saver and is reported instead of silently bypassed).
            FileNotFoundError: ``required`` and nothing to restore.
            RuntimeError: under ``torch.distributed``, a rank could not load rank 0's choice, or the ranks restored
                different states.
        """
        load_dict = dict(self.load_dict)
        if self.engine_key is not None:
            load_dict[self.engine_key] = engine
        candidates = find_checkpoints(self.directory, self.prefix)
        if dist.world_size() == 1:
            self._finish(engine, self._load_newest(engine, load_dict, candidates), candidates)
            return
        # rank 0 picks (with the usual fallbacks), every other rank loads exactly that file: all ranks start equal
        chosen: list[Any] = [None]
        error: BaseException | None = None
        if dist.is_main_process():
            try:
                path = self._load_newest(engine, load_dict, candidates)
                chosen = [None if path is None else str(path)]
            except Exception as e:  # tell the other ranks to stop too, then raise here
                error, chosen = e, [f"!{type(e).__name__}: {e}"]
        torch.distributed.broadcast_object_list(chosen, src=0)
        if error is not None:
            raise error
        if isinstance(chosen[0], str) and chosen[0].startswith("!"):
            raise RuntimeError(f"rank {dist.rank()}: rank 0 could not resume from {self.directory}: {chosen[0][1:]}")
        path = None if chosen[0] is None else Path(chosen[0])
        if path is not None and not dist.is_main_process():
            try:
                self._load(engine, load_dict, path)
            except Exception as e:
                raise RuntimeError(
                    f"rank {dist.rank()}: cannot restore {path}, the checkpoint rank 0 resumed from ({e}); with several "
                    "nodes, output_dir must be on a file system every node sees."
                ) from e
        if path is not None:
            self._check_same_state(load_dict, path)
        self._finish(engine, path, candidates)

    def _load(self, engine: Engine, load_dict: dict[str, Any], path: Path) -> None:
        try:
            loader = CheckpointLoader(str(path), dict(load_dict), map_location=self.map_location, strict=self.strict)
            loader.logger = self.logger
            loader(engine)
        except pickle.UnpicklingError as e:
            if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
                raise UnsafeCheckpointError(_unsafe_message(path, f"it holds objects other than tensors ({e})")) from e
            raise

    def _load_newest(self, engine: Engine, load_dict: dict[str, Any], candidates: list[Path]) -> Path | None:
        """Load the newest intact candidate (skipping truncated/mismatching ones with a warning); its path or ``None``."""
        for path in candidates:
            problem = _intact(path)
            if problem is None:
                try:
                    self._load(engine, load_dict, path)
                except UnsafeCheckpointError:
                    raise
                except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as e:
                    problem = f"cannot be restored ({type(e).__name__}: {e})"
            if problem is not None:
                self.logger.warning("skipping checkpoint %s: %s; trying an older one.", path, problem)
                continue
            return path
        return None

    def _check_same_state(self, load_dict: dict[str, Any], path: Path) -> None:
        """All-gather a fingerprint of the restored objects and fail if any rank differs from rank 0."""
        totals = [0.0, 0.0]
        for obj in load_dict.values():
            if isinstance(obj, Engine):
                totals[0] += float(obj.state.epoch) * 1e6 + float(obj.state.iteration)
                continue
            state = obj.state_dict() if hasattr(obj, "state_dict") else {}
            for value in _tensors(state):
                totals[1] += float(value.detach().double().sum()) if value.numel() else 0.0
        mine = torch.tensor([totals], dtype=torch.float64)
        everyone = dist.gather_no_grad(mine.to(collective_device()))
        if not torch.equal(everyone.cpu(), mine.expand_as(everyone.cpu())):
            raise RuntimeError(
                f"rank {dist.rank()}: the ranks restored different states from {path} "
                f"(epoch/iteration and parameter sums per rank: {everyone.tolist()})."
            )

    def _finish(self, engine: Engine, path: Path | None, candidates: list[Path]) -> None:
        where = f"rank {dist.rank()}: " if dist.world_size() > 1 else ""
        if path is not None:
            self.loaded_path = path
            self.logger.info(
                "%sresumed from %s: epoch %d, iteration %d done; continuing to epoch %d.",
                where,
                path,
                engine.state.epoch,
                engine.state.iteration,
                engine.state.max_epochs,
            )
            return
        what = "no usable checkpoint" if candidates else "no checkpoint"
        if self.required:
            raise FileNotFoundError(f"resume: {what} ({self.prefix}*.pt) in {self.directory}.")
        self.logger.info(
            "%sresume: %s (%s*.pt) in %s; starting from scratch.", where, what, self.prefix, self.directory
        )


def _tensors(value: Any):
    """Every tensor in a nested state dict."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
