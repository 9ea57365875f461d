"""The latent scale factor of a latent diffusion run, estimated from the data once and kept in its checkpoints."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .latent import compute_scale_factor

__all__ = ["LatentScaleFactor"]

logger = logging.getLogger(__name__)


def _from_rank0(value: float, device: torch.device) -> float:
    """``value`` of rank 0 on every rank (a collective: all ranks call it), or ``value`` in a single process."""
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    tdist.broadcast(t, src=0)
    return float(t.item())


class LatentScaleFactor:
    """``1 / std(z)`` of the frozen autoencoder's latents, estimated on first use and saved with the checkpoints.

    Behaves like a float (``float(sf)``; :class:`~monai_dclcstp.generative.prepare_batch.LatentDiffusionPrepareBatch`
    reads it at every batch) and has ``state_dict``/``load_state_dict``, so listing it in a checkpoint's
    ``save_dict`` stores it, and a resumed run gets the stored value back instead of estimating a new one (the
    estimate uses posterior samples, so it differs slightly from run to run).

    Args:
        autoencoder: trained ``AutoencoderKL`` (only needed when ``value`` is not given).
        data: data loader (or image tensor) for the estimate, see
            :func:`~monai_dclcstp.generative.latent.compute_scale_factor`. Use a loader that is not being iterated
            by the trainer at the same time (e.g. a second ``DataLoader`` on the same dataset).
        num_batches: batches used for the estimate.
        value: a fixed scale factor (e.g. the one of a published model); skips the estimate.
        image_key: key of the image in dict batches.
    """

    def __init__(
        self,
        autoencoder: nn.Module | None = None,
        data: Iterable[Any] | torch.Tensor | None = None,
        num_batches: int = 4,
        value: float | None = None,
        image_key: str = "image",
    ) -> None:
        if value is None and (autoencoder is None or data is None):
            raise ValueError("LatentScaleFactor needs either value or both autoencoder and data.")
        self.autoencoder = autoencoder
        self.data = data
        self.num_batches = int(num_batches)
        self.image_key = image_key
        self._value: float | None = None
        if value is not None:
            self._set(value, "given")

    def _set(self, value: float, how: str) -> None:
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"latent scale factor must be a positive finite number, got {value}.")
        self._value = value
        logger.info("latent scale factor %.6g (%s).", value, how)

    @property
    def value(self) -> float:
        """The scale factor (estimated on first access; under ``torch.distributed`` rank 0's estimate is used)."""
        if self._value is None:
            est = compute_scale_factor(self.autoencoder, self.data, self.num_batches, image_key=self.image_key)
            self._set(
                _from_rank0(est, next(self.autoencoder.parameters()).device),
                f"estimated on {self.num_batches} batch(es) of the training data",
            )
        return self._value  # type: ignore[return-value]

    @property
    def is_set(self) -> bool:
        return self._value is not None

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"LatentScaleFactor({self._value if self._value is not None else 'not estimated yet'})"

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"scale_factor": torch.tensor(self.value, dtype=torch.float64)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if "scale_factor" not in state_dict:
            raise KeyError(f"checkpoint entry has no 'scale_factor' (keys: {sorted(state_dict)}).")
        self._set(float(state_dict["scale_factor"]), "restored from the checkpoint")
