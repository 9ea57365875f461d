"""kNN monitor: accuracy of a k-nearest-neighbour classifier on frozen embeddings, evaluated during pretraining.

The standard way to watch a self-supervised representation improve (InstDisc, Wu et al. 2018; MoCo; DINO): embed the
labelled training items (the memory bank) and the validation items with the current encoder, classify each validation
item by a similarity-weighted vote of its ``k`` nearest bank items, and report accuracy and balanced accuracy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..utils import dist

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["KNNMonitor", "embed_images", "weighted_knn_predict", "balanced_accuracy", "KNN_HISTORY_ATTR"]

#: ``engine.state`` attribute holding the list of evaluations (dicts with epoch, iteration, accuracy, ...)
KNN_HISTORY_ATTR = "knn_history"
FEATURE_KINDS = ("backbone", "global")


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, DistributedDataParallel) else network


@torch.no_grad()
def embed_images(
    network: nn.Module, images: torch.Tensor, features: str | Sequence[str] = "backbone"
) -> torch.Tensor | list[torch.Tensor]:
    """L2-normalised image embeddings ``(B, F)`` of ``images`` ``(B, C, *spatial)``.

    Args:
        network: a :class:`~monai_dclcstp.networks.DCLCsTPNet` (its online encoder is used), a
            :class:`~monai_dclcstp.networks.DualStreamEncoder`, or a backbone returning a list of feature maps.
        images: input batch.
        features: ``"backbone"`` — global average pool of the last backbone map (C5; what the exported encoder gives
            downstream tasks), ``"global"`` — the global-stream projection head output, or a sequence of both (one
            backbone pass, a list of embeddings returned).
    """
    kinds = [features] if isinstance(features, str) else list(features)
    if any(k not in FEATURE_KINDS for k in kinds):
        raise ValueError(f"features must be in {FEATURE_KINDS}, got {features!r}.")
    model = _unwrap(network)
    encoder = getattr(model, "online", model)
    backbone = getattr(encoder, "backbone", encoder)
    if "global" in kinds and not hasattr(encoder, "global_head"):
        raise ValueError(f"features='global' needs a network with a global head, got {type(model).__name__}.")
    maps = backbone(images)
    maps = list(maps) if isinstance(maps, (list, tuple)) else [maps]
    out = []
    for kind in kinds:
        if kind == "global":
            tokens = encoder.projection([maps[i] for i in encoder.scale_indices])  # = encoder.forward_tokens(images)
            emb = encoder.global_head(tokens)
        else:
            emb = maps[-1].flatten(2).mean(dim=2) if maps[-1].ndim > 2 else maps[-1]
        out.append(F.normalize(emb.float(), dim=1))
    return out[0] if isinstance(features, str) else out


@torch.no_grad()
def weighted_knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Similarity-weighted kNN vote (Wu et al. 2018, Sec. 3.4): class scores ``sum_{top k} exp(sim / T)``.

    Args:
        query: ``(Nq, F)`` L2-normalised embeddings.
        bank: ``(Nb, F)`` L2-normalised embeddings of the labelled items.
        bank_labels: ``(Nb,)`` int class indices.
        num_classes: number of classes.
        k: neighbours (clipped to ``Nb``).
        temperature: softmax temperature of the vote weights.
        chunk_size: queries per similarity block (bounds memory to ``chunk_size * Nb``).

    Returns:
        ``(Nq,)`` predicted class indices.
    """
    if bank.shape[0] == 0:
        raise ValueError("the kNN memory bank is empty.")
    k = min(int(k), bank.shape[0])
    preds = []
    for start in range(0, query.shape[0], chunk_size):
        sim = query[start : start + chunk_size] @ bank.T  # (n, Nb)
        top_sim, top_idx = sim.topk(k, dim=1)  # (n, k)
        weights = (top_sim / temperature).exp()
        scores = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=weights.dtype)
        scores.scatter_add_(1, bank_labels[top_idx], weights)  # (n, C)
        preds.append(scores.argmax(dim=1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=query.device)


def balanced_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean recall over the classes present in ``target`` (equals accuracy on balanced data)."""
    recalls = [float((pred[target == c] == c).float().mean()) for c in torch.unique(target)]
    return sum(recalls) / len(recalls) if recalls else float("nan")


def _gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ``(n_r, ...)`` of every rank (sizes may differ); ``x`` itself in a single process.

    A rank with no rows (a shard left empty by ``DistributedSampler(even_divisible=False)``) may pass any trailing
    shape: rows are padded to the largest shape of the ranks, and only the real rows are kept.
    """
    if dist.world_size() == 1:
        return x
    shape = torch.tensor([x.shape[0], *x.shape[1:]] if x.ndim > 1 else [x.shape[0]], device=x.device)
    shapes = dist.gather_no_grad(shape[None]).cpu()  # (W, ndim)
    sizes = shapes[:, 0]
    trailing = [int(v) for v in shapes[sizes > 0, 1:].max(dim=0).values] if bool((sizes > 0).any()) else []
    trailing = trailing if trailing else list(x.shape[1:])
    longest = int(sizes.max())
    padded = torch.zeros((longest, *trailing), dtype=x.dtype, device=x.device)
    if x.shape[0]:
        padded[: x.shape[0]] = x
    everything = dist.gather_no_grad(padded)
    return torch.cat([everything[i * longest : i * longest + int(n)] for i, n in enumerate(sizes)])


class KNNMonitor:
    """Trainer handler that evaluates a kNN classifier on frozen embeddings every ``interval`` epochs.

    At each evaluation the network (in ``eval`` mode, no gradients) embeds every batch of ``bank_loader`` (labelled
    training items) and ``val_loader`` (labelled validation items), with deterministic preprocessing; under
    ``torch.distributed`` each rank embeds its shard and the embeddings are gathered. Results go to
    ``engine.state.metrics`` (``<prefix>_accuracy``, ``<prefix>_balanced_accuracy``, removed again at the next
    ``EPOCH_STARTED`` so MONAI's ``StatsHandler`` prints them only for evaluated epochs), to the list
    ``engine.state.knn_history`` (read by :class:`EncoderExport` and :class:`RunSummary`), to the log and, when a
    ``summary_writer`` is given, to TensorBoard (step = epoch).

    Evaluations happen at ``STARTED`` (the "before" value, epoch 0, or the resumed epoch) when ``eval_at_start``,
    after every ``interval``-th epoch, and at ``COMPLETED`` if the last epoch was not evaluated. Without labelled
    items in either loader the monitor logs why and does nothing.

    Args:
        network: see :func:`embed_images`.
        bank_loader: batches with ``image`` ``(B, C, *spatial)`` and int ``label`` ``(B,)``: the memory bank.
        val_loader: the same for the evaluated items.
        device: where to run the network (default: where its parameters are).
        interval: evaluate every ``interval`` epochs (``0`` or less: only at start and end).
        k: neighbours of the vote.
        temperature: vote temperature.
        features: ``"backbone"`` or ``"global"`` (see :func:`embed_images`), or several of them: the first gives
            ``<prefix>_accuracy`` and ``<prefix>_balanced_accuracy``, the others ``<prefix>_<kind>_accuracy`` ...
        eval_at_start: evaluate once before training.
        summary_writer: optional TensorBoard ``SummaryWriter`` (only rank 0 writes).
        prefix: metric name prefix.
        image_key, label_key: batch keys.
        name: logger name (default: this module's logger).
    """

    def __init__(
        self,
        network: nn.Module,
        bank_loader: Iterable,
        val_loader: Iterable,
        device: str | torch.device | None = None,
        interval: int = 1,
        k: int = 20,
        temperature: float = 0.07,
        features: str | Sequence[str] = "backbone",
        eval_at_start: bool = True,
        summary_writer: Any | None = None,
        prefix: str = "knn",
        image_key: str = "image",
        label_key: str = "label",
        name: str | None = None,
    ) -> None:
        kinds = (features,) if isinstance(features, str) else tuple(features)
        if not kinds or any(f not in FEATURE_KINDS for f in kinds) or len(set(kinds)) != len(kinds):
            raise ValueError(f"features must be distinct names from {FEATURE_KINDS}, got {features!r}.")
        if k < 1 or temperature <= 0:
            raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
        self.network = network
        self.bank_loader = bank_loader
        self.val_loader = val_loader
        self.device = torch.device(device) if device is not None else None
        self.interval = int(interval)
        self.k = int(k)
        self.temperature = float(temperature)
        self.features = kinds
        self.eval_at_start = eval_at_start
        self.summary_writer = summary_writer
        self.prefix = prefix
        self.image_key = image_key
        self.label_key = label_key
        self.logger = logging.getLogger(name or __name__)
        self.history: list[dict[str, Any]] = []
        self._last_evaluated_epoch: int | None = None

    def _metric_names(self) -> list[str]:
        names = [f"{self.prefix}_accuracy", f"{self.prefix}_balanced_accuracy"]
        for kind in self.features[1:]:
            names += [f"{self.prefix}_{kind}_accuracy", f"{self.prefix}_{kind}_balanced_accuracy"]
        return names

    @staticmethod
    def _size(loader: Iterable) -> int | None:
        try:
            return len(loader.dataset)  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            return None

    def attach(self, engine: Engine) -> None:
        """Register the evaluation events on ``engine`` (nothing when a loader is empty)."""
        sizes = self._size(self.bank_loader), self._size(self.val_loader)
        if 0 in sizes:
            self.logger.info(
                "kNN monitor off: %s (needs labelled training items for the memory bank and labelled validation "
                "items; the datalist has %s bank and %s validation items with an int 'label').",
                "no labels" if sizes == (0, 0) else "a split without labels",
                sizes[0],
                sizes[1],
            )
            return
        if self.eval_at_start:
            engine.add_event_handler(Events.STARTED, self)
        engine.add_event_handler(Events.EPOCH_STARTED, self._clear_metrics)
        if self.interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self._final)
        if not hasattr(engine.state, KNN_HISTORY_ATTR):
            setattr(engine.state, KNN_HISTORY_ATTR, self.history)

    def _clear_metrics(self, engine: Engine) -> None:
        for key in self._metric_names():
            engine.state.metrics.pop(key, None)

    def _final(self, engine: Engine) -> None:
        if self._last_evaluated_epoch != engine.state.epoch:
            self(engine)

    def _embed_loader(self, loader: Iterable, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Embeddings of every kind in ``self.features`` (each ``(N, F_kind)``) and the labels ``(N,)``."""
        feats: list[list[torch.Tensor]] = [[] for _ in self.features]
        labels = []
        use_amp = device.type == "cuda"
        for batch in loader:
            images = batch[self.image_key]
            images = images.as_tensor() if hasattr(images, "as_tensor") else torch.as_tensor(images)
            images = images.to(device)
            with torch.autocast("cuda", enabled=use_amp):
                for store, emb in zip(feats, embed_images(self.network, images, self.features)):
                    store.append(emb)
            labels.append(torch.as_tensor(batch[self.label_key]).reshape(-1).long().to(device))
        if not labels:  # nothing here (or an empty shard): still take part in the gathers of the other ranks
            empty = torch.zeros(0, 1, device=device)
            return [_gather_rows(empty) for _ in self.features], _gather_rows(
                torch.zeros(0, dtype=torch.long, device=device)
            )
        return [_gather_rows(torch.cat(f)) for f in feats], _gather_rows(torch.cat(labels))

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Embed both loaders and classify: ``{"accuracy", "balanced_accuracy", "num_bank", "num_val"}`` for the first
        feature kind, plus ``"<kind>_accuracy"`` and ``"<kind>_balanced_accuracy"`` for every further kind."""
        device = self.device or next(self.network.parameters()).device
        was_training = self.network.training
        self.network.eval()
        try:
            banks, bank_labels = self._embed_loader(self.bank_loader, device)
            queries, query_labels = self._embed_loader(self.val_loader, device)
        finally:
            self.network.train(was_training)
        result: dict[str, Any] = {"num_bank": int(bank_labels.shape[0]), "num_val": int(query_labels.shape[0])}
        for i, (kind, bank, query) in enumerate(zip(self.features, banks, queries)):
            names = ("accuracy", "balanced_accuracy") if i == 0 else (f"{kind}_accuracy", f"{kind}_balanced_accuracy")
            if bank.shape[0] == 0 or query.shape[0] == 0:
                result.update({names[0]: math.nan, names[1]: math.nan})
                continue
            num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
            pred = weighted_knn_predict(query, bank, bank_labels, num_classes, self.k, self.temperature)
            result[names[0]] = float((pred == query_labels).float().mean())
            result[names[1]] = balanced_accuracy(pred, query_labels)
        return result

    def __call__(self, engine: Engine) -> None:
        """Evaluate now and record the result (all ranks compute; rank 0 logs and writes TensorBoard)."""
        result = self.evaluate()
        epoch, iteration = int(engine.state.epoch), int(engine.state.iteration)
        self._last_evaluated_epoch = epoch
        metrics = {
            f"{self.prefix}_{k}": v for k, v in result.items() if k.endswith("accuracy")
        }  # knn_accuracy, knn_balanced_accuracy, knn_global_accuracy ...
        engine.state.metrics.update(metrics)
        record = {"epoch": epoch, "iteration": iteration, "features": self.features[0], "k": self.k, **result}
        self.history.append(record)
        if dist.is_main_process():
            extra = "".join(
                f"; {kind} features: accuracy {result[kind + '_accuracy']:.4f}, balanced accuracy "
                f"{result[kind + '_balanced_accuracy']:.4f}"
                for kind in self.features[1:]
            )
            self.logger.info(
                "kNN (k=%d, %d bank / %d val items) after epoch %d: %s features: accuracy %.4f, balanced accuracy %.4f%s",
                self.k,
                result["num_bank"],
                result["num_val"],
                epoch,
                self.features[0],
                result["accuracy"],
                result["balanced_accuracy"],
                extra,
            )
            if self.summary_writer is not None:
                for name, value in metrics.items():
                    self.summary_writer.add_scalar(name, value, epoch)
                self.summary_writer.flush()

    def summary(self) -> Mapping[str, Any]:
        """First and last evaluation (``{}`` before any)."""
        if not self.history:
            return {}
        return {"start": self.history[0], "final": self.history[-1]}
