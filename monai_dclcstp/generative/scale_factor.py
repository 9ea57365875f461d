"""The latent scale factor (and latent range) of a latent diffusion run, estimated once and kept in its checkpoints."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .latent import _batch_images, compute_scale_factor, encode_latents

__all__ = ["LatentScaleFactor"]

logger = logging.getLogger(__name__)


def _from_rank0(value: torch.Tensor) -> torch.Tensor:
    """``value`` of rank 0 on every rank (a collective: all ranks call it), or ``value`` in a single process."""
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
        return value
    value = value.clone()
    tdist.broadcast(value, src=0)
    return value


@torch.no_grad()
def _latent_range(
    autoencoder: nn.Module, data: Iterable[Any] | torch.Tensor, num_batches: int, scale_factor: float, image_key: str
) -> torch.Tensor:
    """``(2, C)``: per-channel min and max of the scaled latents (posterior samples) of the first batches."""
    device = next(autoencoder.parameters()).device
    batches: Iterable[Any] = [data] if isinstance(data, torch.Tensor) else data
    was_training = autoencoder.training
    autoencoder.eval()
    low = high = None
    try:
        for i, batch in enumerate(batches):
            if i >= num_batches:
                break
            z = encode_latents(autoencoder, _batch_images(batch, image_key).to(device), scale_factor).float()
            dims = [0, *range(2, z.ndim)]
            b_low, b_high = z.amin(dim=dims), z.amax(dim=dims)
            low = b_low if low is None else torch.minimum(low, b_low)
            high = b_high if high is None else torch.maximum(high, b_high)
    finally:
        autoencoder.train(was_training)
    if low is None:
        raise ValueError("no data to estimate the latent range from.")
    return torch.stack([low, high]).double()


class LatentScaleFactor:
    """``1 / std(z)`` of the frozen autoencoder's latents, estimated on first use and saved with the checkpoints.

    Behaves like a float (``float(sf)``; :class:`~monai_dclcstp.generative.prepare_batch.LatentDiffusionPrepareBatch`
    reads it at every batch) and has ``state_dict``/``load_state_dict``, so listing it in a checkpoint's
    ``save_dict`` stores it, and a resumed run gets the stored value back instead of estimating a new one (the
    estimate uses posterior samples, so it differs slightly from run to run).

    With the factor, the per-channel range of the scaled latents on the same batches is recorded
    (:attr:`latent_range`); samplers use it to keep their predicted clean latents in range
    (:class:`~monai_dclcstp.generative.latent_clipping.LatentClippedModel`).

    Under ``torch.distributed`` every rank uses rank 0's estimates (all ranks must read the value the first time
    together, as they do at their first training batch).

    Args:
        autoencoder: trained ``AutoencoderKL`` (only needed when ``value`` is not given).
        data: data loader (or image tensor) for the estimate, see
            :func:`~monai_dclcstp.generative.latent.compute_scale_factor`. Use a loader that is not being iterated
            by the trainer at the same time (e.g. a second ``DataLoader`` on the same dataset).
        num_batches: batches used for the estimate.
        value: a fixed scale factor (e.g. the one of a published model); skips the estimate.
        image_key: key of the image in dict batches.
        latent_range: a fixed ``[[min per channel], [max per channel]]`` of the scaled latents.
    """

    def __init__(
        self,
        autoencoder: nn.Module | None = None,
        data: Iterable[Any] | torch.Tensor | None = None,
        num_batches: int = 4,
        value: float | None = None,
        image_key: str = "image",
        latent_range: Sequence[Sequence[float]] | None = None,
    ) -> None:
        if value is None and (autoencoder is None or data is None):
            raise ValueError("LatentScaleFactor needs either value or both autoencoder and data.")
        self.autoencoder = autoencoder
        self.data = data
        self.num_batches = int(num_batches)
        self.image_key = image_key
        self._value: float | None = None
        self._range: torch.Tensor | None = None
        if value is not None:
            self._set(value, "given")
        if latent_range is not None:
            self._set_range(torch.as_tensor(latent_range, dtype=torch.float64))

    def _set(self, value: float, how: str) -> None:
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"latent scale factor must be a positive finite number, got {value}.")
        self._value = value
        logger.info("latent scale factor %.6g (%s).", value, how)

    def _set_range(self, latent_range: torch.Tensor) -> None:
        if latent_range.ndim != 2 or latent_range.shape[0] != 2 or bool((latent_range[1] < latent_range[0]).any()):
            raise ValueError(
                f"latent_range must be [[min per channel], [max per channel]], got {latent_range.tolist()}."
            )
        self._range = latent_range.double().cpu()

    def _estimate(self) -> None:
        device = next(self.autoencoder.parameters()).device
        est = compute_scale_factor(self.autoencoder, self.data, self.num_batches, image_key=self.image_key)
        est = float(_from_rank0(torch.tensor([est], dtype=torch.float64, device=device)).item())
        self._set(est, f"estimated on {self.num_batches} batch(es) of the training data")
        if self._range is None:
            rng = _latent_range(self.autoencoder, self.data, self.num_batches, est, self.image_key)
            self._set_range(_from_rank0(rng.to(device)))
            logger.info(
                "scaled latent range per channel: min %s, max %s.",
                *[[round(v, 3) for v in r] for r in self._range.tolist()],
            )

    @property
    def value(self) -> float:
        """The scale factor (estimated on first access)."""
        if self._value is None:
            self._estimate()
        return self._value  # type: ignore[return-value]

    @property
    def latent_range(self) -> list[list[float]] | None:
        """``[[min per channel], [max per channel]]`` of the scaled latents (``None`` when unknown, e.g. after
        restoring a checkpoint written without it and no data to estimate it from)."""
        if self._range is None and self.autoencoder is not None and self.data is not None:
            rng = _latent_range(self.autoencoder, self.data, self.num_batches, self.value, self.image_key)
            self._set_range(rng)
        return None if self._range is None else self._range.tolist()

    @property
    def is_set(self) -> bool:
        return self._value is not None

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"LatentScaleFactor({self._value if self._value is not None else 'not estimated yet'})"

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"scale_factor": torch.tensor(self.value, dtype=torch.float64)}
        if self._range is not None:
            state["latent_range"] = self._range.clone()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if "scale_factor" not in state_dict:
            raise KeyError(f"checkpoint entry has no 'scale_factor' (keys: {sorted(state_dict)}).")
        self._set(float(state_dict["scale_factor"]), "restored from the checkpoint")
        if "latent_range" in state_dict:
            self._set_range(torch.as_tensor(state_dict["latent_range"]))
