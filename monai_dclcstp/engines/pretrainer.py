"""Ignite trainer for DCL-CsTP dual-stream contrastive pretraining."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer
from monai.utils import CommonKeys
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from ..utils import dist
from ..utils.momentum import cosine_schedule
from .prepare_batch import PrepareTwoViewBatch

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["DCLCsTPTrainer", "SKIP_STEP_KEY"]

#: a handler that sets ``engine.state.output[SKIP_STEP_KEY] = True`` at ``LOSS_COMPLETED`` vetoes the optimiser step
SKIP_STEP_KEY = "skip_step"


class DCLCsTPTrainer(SupervisedTrainer):
    """One iteration of DCL-CsTP: two-view forward, dual-stream loss, backward, clipped step, momentum update.

    A :class:`monai.engines.SupervisedTrainer` whose ``_iteration`` is replaced (everything else — handlers, events,
    AMP scaler, ``state`` — is MONAI's). ``network`` is a :class:`~monai_dclcstp.networks.DCLCsTPNet` (optionally
    wrapped in ``DistributedDataParallel``), ``loss_function`` a :class:`~monai_dclcstp.losses.DualStreamLoss`.
    After each optimiser step the momentum twin is updated with the coefficient
    ``cosine_schedule(iteration, max_epochs * epoch_length, momentum_start, momentum_end)`` (BYOL's schedule).

    ``engine.state.output`` holds ``CommonKeys.IMAGE`` (view 1), ``CommonKeys.LOSS``, ``loss_global``, ``loss_local``
    (detached floats for logging), ``lr`` (before this step's scheduler update), ``momentum`` and ``grad_norm`` (before
    clipping; NaN without clipping).

    Under ``DistributedDataParallel`` the gradients are all-reduced, so every rank takes the same optimiser step and the
    same momentum update. Batch-norm running statistics (buffers of the online and the momentum encoder) are updated by
    each rank's own forward pass, so after every iteration the trainer copies rank 0's buffers to all ranks
    (:meth:`sync_buffers`; DDP's own per-forward ``broadcast_buffers`` is then redundant): the ranks hold identical
    networks at every event, e.g. when a kNN monitor embeds each rank's shard at the end of an epoch.

    The loss and its two parts are already in ``engine.state.output`` when ``IterationEvents.LOSS_COMPLETED`` fires,
    so a handler can inspect them before the backward pass and veto the step by setting
    ``engine.state.output[SKIP_STEP_KEY] = True`` (see :class:`~monai_dclcstp.handlers.NonFiniteLossGuard`); the output
    then carries ``skip_step=True``. Without AMP, a step whose clipped gradient norm is not finite is skipped too (AMP's
    scaler does this itself).

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function, epoch_length, non_blocking,
            train_handlers, amp, event_names, event_to_attr, optim_set_to_none, to_kwargs, amp_kwargs:
            as in :class:`monai.engines.SupervisedTrainer`. ``amp`` is honoured only on CUDA.
        prepare_batch: parses a batch into views and geometries (default :class:`PrepareTwoViewBatch`).
        inferer: kept as ``engine.inferer`` for MONAI's bundle properties (``train#inferer``); the two-view step calls
            the network directly.
        momentum_start, momentum_end: momentum coefficient at the first and last iteration.
        grad_clip_norm: clip the global gradient norm to this value (``None`` = no clipping).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable | None = None,
        inferer: Inferer | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        optim_set_to_none: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        momentum_start: float = 0.99,
        momentum_end: float = 1.0,
        grad_clip_norm: float | None = 3.0,
    ) -> None:
        if not 0.0 <= momentum_start <= momentum_end <= 1.0:
            raise ValueError(f"need 0 <= momentum_start <= momentum_end <= 1, got {momentum_start}, {momentum_end}.")
        device = torch.device(device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking and device.type == "cuda",
            prepare_batch=PrepareTwoViewBatch() if prepare_batch is None else prepare_batch,
            inferer=inferer,
            train_handlers=train_handlers,
            amp=amp and device.type == "cuda",
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=False,
            optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.momentum_start = momentum_start
        self.momentum_end = momentum_end
        self.grad_clip_norm = grad_clip_norm

    @property
    def model(self) -> torch.nn.Module:
        """The :class:`DCLCsTPNet`, unwrapped from ``DistributedDataParallel`` if needed."""
        net = self.network
        return net.module if isinstance(net, DistributedDataParallel) else net

    def current_momentum(self) -> float:
        """Momentum coefficient of the current iteration."""
        total = max(int(self.state.max_epochs or 1) * int(self.state.epoch_length or 1), 1)
        return cosine_schedule(min(self.state.iteration, total), total, self.momentum_start, self.momentum_end)

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Copy rank 0's buffers (e.g. batch-norm running statistics) of the DDP-wrapped network to every rank.

        One broadcast per buffer dtype (flattened); nothing when the network is not wrapped in
        ``DistributedDataParallel`` or runs in a single process.
        """
        if not isinstance(self.network, DistributedDataParallel) or dist.world_size() == 1:
            return
        groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for buffer in self.model.buffers():
            groups.setdefault((buffer.dtype, buffer.device), []).append(buffer)
        for buffers in groups.values():
            flat = torch.cat([b.reshape(-1) for b in buffers])
            torch.distributed.broadcast(flat, src=0)
            offset = 0
            for b in buffers:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        (view1, view2), (geom1, geom2) = engine.prepare_batch(
            batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs
        )
        engine.state.output = {CommonKeys.IMAGE: view1}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        with torch.autocast("cuda", enabled=bool(engine.amp and engine.scaler is not None), **engine.amp_kwargs):
            outputs = engine.network(view1, view2)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            losses = engine.loss_function(outputs, geom1, geom2)
            loss = losses["loss"]
            engine.state.output.update(
                {
                    CommonKeys.LOSS: loss,
                    "loss_global": losses["loss_global"].detach(),
                    "loss_local": losses["loss_local"].detach(),
                }
            )
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        lr = float(engine.optimizer.param_groups[0]["lr"])
        if engine.state.output.get(SKIP_STEP_KEY, False):  # a handler (e.g. the non-finite loss guard) vetoed the step
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            engine.state.output = self._logged_output(view1, losses, lr, momentum=float("nan"), grad_norm=float("nan"))
            engine.state.output[SKIP_STEP_KEY] = True
            self.sync_buffers()
            return engine.state.output

        params = [p for p in engine.network.parameters() if p.requires_grad]
        grad_norm = float("nan")
        stepped = True
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if self.grad_clip_norm is not None:
                engine.scaler.unscale_(engine.optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm))
            engine.scaler.step(engine.optimizer)  # the scaler skips steps with inf/NaN gradients itself
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if self.grad_clip_norm is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm))
            if math.isfinite(grad_norm) or self.grad_clip_norm is None:
                engine.optimizer.step()
            else:  # a finite loss with non-finite gradients: stepping would destroy the weights
                stepped = False
                engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        momentum = self.current_momentum()
        if stepped:
            self.model.update_momentum(momentum)
        self.sync_buffers()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output = self._logged_output(view1, losses, lr, momentum, grad_norm)
        if not stepped:
            engine.state.output[SKIP_STEP_KEY] = True
        return engine.state.output

    @staticmethod
    def _logged_output(
        view1: torch.Tensor, losses: dict[str, torch.Tensor], lr: float, momentum: float, grad_norm: float
    ) -> dict[str, Any]:
        return {
            CommonKeys.IMAGE: view1,
            CommonKeys.LOSS: losses["loss"].detach(),
            "loss_global": float(losses["loss_global"].detach()),
            "loss_local": float(losses["loss_local"].detach()),
            "lr": lr,
            "momentum": momentum,
            "grad_norm": grad_norm,
        }
