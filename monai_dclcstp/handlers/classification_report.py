"""Evaluation report of a classifier: metrics at argmax and at a validation-chosen threshold, JSON + CSV files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..utils.io import atomic_json_dump, atomic_write, safe_output_path
from .classification_collector import NO_LABEL, ClassificationCollector
from .classification_metrics import classification_metrics, predict_classes, select_threshold

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ClassificationReport", "write_csv"]

_HEADLINE = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "auc")


def write_csv(path: str | os.PathLike, header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV file atomically (``None`` cells are left empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    text = buffer.getvalue()

    def _write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    atomic_write(path, _write, overwrite=True)


class ClassificationReport(ClassificationCollector):
    """Write the evaluation report of a classification evaluator when its run completes.

    Metrics (see :func:`~monai_dclcstp.handlers.classification_metrics.classification_metrics`): accuracy, balanced
    accuracy, sensitivity, specificity, precision, F1, ROC-AUC, per-class values and the confusion matrix, computed
    twice for two classes: at the argmax (``default``) and at a decision threshold (``calibrated``). The threshold is a
    number, or ``"auto"``: Youden's J on ``calibration`` (a :class:`ClassificationCollector` attached to an evaluator
    that ran on the validation split first), else on the evaluated data itself (then flagged as optimistic).

    Files, under ``output_dir`` (names confined to it):
    ``<prefix>.json`` (everything), ``<prefix>.csv`` (``metric,default,calibrated``),
    ``<prefix>_confusion_matrix.csv`` (rows true, columns predicted class; at the calibrated threshold when there is
    one) and ``<prefix>_predictions.csv`` (one row per image).

    Args:
        output_dir: folder of the report files (created).
        classes: class names, in index order.
        threshold: ``None`` (argmax only), a float, or ``"auto"``; ignored for more than two classes.
        positive_class: class index whose sensitivity/specificity are reported for two classes.
        calibration: collector holding validation outputs to choose the ``"auto"`` threshold on.
        prefix: file name stem.
        split: name of the evaluated split, recorded in the report.
        extra: further entries for the JSON report (e.g. checkpoint and datalist paths).
        pred_key, label_key, image_key, softmax: see :class:`ClassificationCollector`.

    Raises:
        ValueError: at the end of the run, when an image has no label or the probabilities do not have one column per
            class.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Sequence[str],
        threshold: float | str | None = "auto",
        positive_class: int = 1,
        calibration: ClassificationCollector | None = None,
        prefix: str = "report",
        split: str = "",
        extra: Mapping[str, Any] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        softmax: bool = False,
    ) -> None:
        super().__init__(pred_key=pred_key, label_key=label_key, image_key=image_key, softmax=softmax)
        if isinstance(threshold, str) and threshold != "auto":
            raise ValueError(f"threshold must be a number, null or 'auto', got {threshold!r}.")
        self.output_dir = output_dir
        self.classes = [str(c) for c in classes]
        self.threshold = threshold
        self.positive_class = int(positive_class)
        self.calibration = calibration
        self.prefix = prefix
        self.split = split
        self.extra = dict(extra or {})
        safe_output_path(output_dir, f"{prefix}_predictions.csv")  # fail early on a bad prefix
        self.report: dict[str, Any] | None = None

    def _choose_threshold(self) -> tuple[float | None, str | None]:
        if len(self.classes) != 2 or self.threshold is None:
            return None, None
        if self.threshold != "auto":
            return float(self.threshold), "given"
        cal = self.calibration
        if cal is not None and cal.has_labels and cal.probs.shape[1:] == (2,):
            return select_threshold(cal.probs, cal.labels, self.positive_class), "youden_on_calibration_split"
        if cal is not None:
            self.logger.warning("calibration collector holds no labelled outputs; choosing the threshold on %s", self)
        return (
            select_threshold(self.probs, self.labels, self.positive_class),
            "youden_on_evaluated_split",
        )

    def finalize(self, engine: Engine) -> None:
        """Compute the metrics and write the report files."""
        k = len(self.classes)
        if len(self.labels) and self.probs.shape[1] != k:
            raise ValueError(f"the network outputs {self.probs.shape[1]} probabilities but there are {k} classes.")
        missing = [n for n, y in zip(self.filenames, self.labels) if y == NO_LABEL]
        if missing:
            raise ValueError(
                f"{len(missing)} evaluated image(s) have no label (first: {missing[0]}); evaluation needs labels."
            )
        threshold, source = self._choose_threshold()
        default = classification_metrics(self.probs, self.labels, None, self.positive_class, self.classes)
        calibrated = (
            classification_metrics(self.probs, self.labels, threshold, self.positive_class, self.classes)
            if threshold is not None
            else None
        )
        self.report = {
            "split": self.split,
            "num_samples": int(len(self.labels)),
            "classes": self.classes,
            "threshold": threshold,
            "threshold_source": source,
            "threshold_note": (
                "optimistic: chosen and measured on the same images" if source == "youden_on_evaluated_split" else None
            ),
            "default": default,
            "calibrated": calibrated,
            **self.extra,
        }
        final = calibrated or default
        atomic_json_dump(self.report, safe_output_path(self.output_dir, f"{self.prefix}.json"))
        rows = [[m, default[m], calibrated[m] if calibrated else None] for m in _HEADLINE]
        for name, values in default["per_class"].items():
            cal = calibrated["per_class"][name] if calibrated else {}
            rows += [[f"{name}/{m}", values[m], cal.get(m)] for m in values]
        rows.append(["threshold", None, threshold])
        write_csv(safe_output_path(self.output_dir, f"{self.prefix}.csv"), ["metric", "default", "calibrated"], rows)
        write_csv(
            safe_output_path(self.output_dir, f"{self.prefix}_confusion_matrix.csv"),
            ["true \\ predicted", *self.classes],
            [[name, *row] for name, row in zip(self.classes, final["confusion_matrix"])],
        )
        self._write_predictions(threshold)
        self.logger.info(
            "%s report (%d images, threshold %s): %s; written to %s",
            self.split or "evaluation",
            len(self.labels),
            "argmax" if threshold is None else f"{threshold:.4f}",
            ", ".join(f"{m}={final[m]:.4f}" for m in _HEADLINE if final[m] is not None),
            safe_output_path(self.output_dir, f"{self.prefix}.json"),
        )

    def _write_predictions(self, threshold: float | None) -> None:
        pred = predict_classes(self.probs, threshold, self.positive_class) if len(self.labels) else []
        header = ["image", "label", *[f"prob_{c}" for c in self.classes], "predicted", "predicted_class"]
        rows = [
            [name, int(y), *[f"{v:.6f}" for v in p], int(c), self.classes[int(c)]]
            for name, y, p, c in zip(self.filenames, self.labels, self.probs, pred)
        ]
        write_csv(safe_output_path(self.output_dir, f"{self.prefix}_predictions.csv"), header, rows)
