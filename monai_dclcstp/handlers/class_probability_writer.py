"""Inference output of a classifier: one CSV row per image with its class probabilities and predicted class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..utils.io import safe_output_path
from .classification_collector import NO_LABEL, ClassificationCollector
from .classification_metrics import predict_classes
from .classification_report import write_csv

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ClassProbabilityWriter"]


class ClassProbabilityWriter(ClassificationCollector):
    """Write ``image, [label,] prob_<class>..., predicted, predicted_class`` per image to a CSV when the run ends.

    The file is written once, atomically, on the main rank (outputs of all ranks are gathered first); its name must
    be a plain relative name inside ``output_dir`` (checked when the handler is built, see
    :func:`~monai_dclcstp.utils.safe_output_path`). The ``label`` column is written when every image has one.

    Args:
        output_dir: folder of the CSV (created).
        classes: class names, in index order (the probability columns are ``prob_<name>``).
        filename: CSV name relative to ``output_dir``.
        threshold: two classes only: predict ``positive_class`` when its probability >= ``threshold``
            (e.g. the ``threshold`` of the evaluation report); ``None`` = argmax.
        positive_class: see ``threshold``.
        pred_key, label_key, image_key, softmax: see :class:`ClassificationCollector`.

    Raises:
        ValueError: an unsafe ``filename``; at the end, probabilities that do not have one column per class.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Sequence[str],
        filename: str = "predictions.csv",
        threshold: float | None = None,
        positive_class: int = 1,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        softmax: bool = False,
    ) -> None:
        super().__init__(pred_key=pred_key, label_key=label_key, image_key=image_key, softmax=softmax)
        self.classes = [str(c) for c in classes]
        self.path = safe_output_path(output_dir, filename)
        self.threshold = None if threshold is None else float(threshold)
        self.positive_class = int(positive_class)

    def finalize(self, engine: Engine) -> None:
        """Write the CSV."""
        k = len(self.classes)
        if len(self.filenames) and self.probs.shape[1] != k:
            raise ValueError(f"the network outputs {self.probs.shape[1]} probabilities but there are {k} classes.")
        pred = predict_classes(self.probs, self.threshold, self.positive_class) if len(self.filenames) else []
        with_label = self.has_labels
        header = ["image", *(["label"] if with_label else []), *[f"prob_{c}" for c in self.classes]]
        header += ["predicted", "predicted_class"]
        rows = [
            [name, *([int(y)] if with_label and y != NO_LABEL else []), *[f"{v:.6f}" for v in p], int(c)]
            + [self.classes[int(c)]]
            for name, y, p, c in zip(self.filenames, self.labels, self.probs, pred)
        ]
        write_csv(self.path, header, rows)
        self.logger.info("class probabilities of %d image(s) written to %s", len(rows), self.path)
