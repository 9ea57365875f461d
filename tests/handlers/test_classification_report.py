from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from monai_dclcstp.handlers.class_probability_writer import ClassProbabilityWriter
from monai_dclcstp.handlers.classification_collector import ClassificationCollector
from monai_dclcstp.handlers.classification_metrics import classification_metrics, select_threshold
from monai_dclcstp.handlers.classification_outputs import probs_and_labels, probs_and_onehot
from monai_dclcstp.handlers.classification_report import ClassificationReport


def _batches(probs, labels, batch_size=4, with_labels=True, prefix="img"):
    """Decollated evaluator outputs: a list of per-image dicts per iteration."""
    out = []
    for start in range(0, len(probs), batch_size):
        batch = []
        for i in range(start, min(start + batch_size, len(probs))):
            image = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": f"/data/{prefix}_{i}.png"})
            item = {"image": image, "pred": torch.tensor(probs[i], dtype=torch.float32)}
            item["label"] = torch.tensor([labels[i]]) if with_labels else None
            batch.append(item)
        out.append(batch)
    return out


def _run(handler, batches):
    engine = Engine(lambda e, b: b)
    handler.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def _case(seed=0, n=30):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1)
    return np.stack([1 - s, s], 1), y


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_collector_gathers_all_images():
    p, y = _case()
    collector = ClassificationCollector()
    _run(collector, _batches(p, y))
    np.testing.assert_allclose(collector.probs, p, atol=1e-6)
    np.testing.assert_array_equal(collector.labels, y)
    assert collector.filenames == [f"/data/img_{i}.png" for i in range(len(y))]
    assert collector.has_labels


def test_report_files_and_values(tmp_path):
    p, y = _case(1)
    report = ClassificationReport(tmp_path / "eval", classes=["normal", "pneumonia"], threshold="auto", split="test")
    _run(report, _batches(p, y))
    data = json.loads((tmp_path / "eval" / "report.json").read_text())
    expected = classification_metrics(p, y, classes=["normal", "pneumonia"])
    for key in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "balanced_accuracy"):
        assert data["default"][key] == pytest.approx(expected[key], abs=1e-6)
    assert data["threshold_source"] == "youden_on_evaluated_split"
    assert data["threshold"] == pytest.approx(select_threshold(p, y), abs=1e-6)
    assert data["calibrated"]["balanced_accuracy"] >= data["default"]["balanced_accuracy"] - 1e-9
    rows = _read_csv(tmp_path / "eval" / "report.csv")
    assert rows[0] == ["metric", "default", "calibrated"]
    assert {r[0] for r in rows} >= {"accuracy", "auc", "normal/sensitivity", "threshold"}
    cm = _read_csv(tmp_path / "eval" / "report_confusion_matrix.csv")
    assert cm[0][1:] == ["normal", "pneumonia"]
    assert sum(int(v) for row in cm[1:] for v in row[1:]) == len(y)
    preds = _read_csv(tmp_path / "eval" / "report_predictions.csv")
    assert len(preds) == len(y) + 1


def test_report_threshold_from_calibration_collector(tmp_path):
    p_val, y_val = _case(2)
    p_test, y_test = _case(3)
    calibration = ClassificationCollector()
    _run(calibration, _batches(p_val, y_val, prefix="val"))
    report = ClassificationReport(tmp_path, classes=["a", "b"], calibration=calibration, prefix="r")
    _run(report, _batches(p_test, y_test, prefix="test"))
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["threshold_source"] == "youden_on_calibration_split"
    assert data["threshold"] == pytest.approx(select_threshold(p_val, y_val), abs=1e-6)
    assert data["threshold_note"] is None


def test_report_needs_labels(tmp_path):
    p, y = _case()
    report = ClassificationReport(tmp_path, classes=["a", "b"])
    with pytest.raises(ValueError, match="no label"):
        _run(report, _batches(p, y, with_labels=False))


def test_report_rejects_unsafe_prefix(tmp_path):
    with pytest.raises(ValueError, match="unsafe"):
        ClassificationReport(tmp_path, classes=["a", "b"], prefix="../escape")


def test_probability_writer(tmp_path):
    p, y = _case(4, n=9)
    writer = ClassProbabilityWriter(tmp_path, classes=["normal", "pneumonia"], filename="sub/pred.csv")
    _run(writer, _batches(p, y, with_labels=False))
    rows = _read_csv(tmp_path / "sub" / "pred.csv")
    assert rows[0] == ["image", "prob_normal", "prob_pneumonia", "predicted", "predicted_class"]
    assert len(rows) == 10
    assert rows[1][0] == "/data/img_0.png"
    assert float(rows[1][2]) == pytest.approx(p[0, 1], abs=1e-5)
    assert rows[1][4] == ["normal", "pneumonia"][int(p[0].argmax())]
    # with labels and a threshold
    writer = ClassProbabilityWriter(tmp_path, classes=["normal", "pneumonia"], threshold=0.99)
    _run(writer, _batches(p, y))
    rows = _read_csv(tmp_path / "predictions.csv")
    assert rows[0][1] == "label"
    assert all(r[-1] == "normal" for r in rows[1:])


@pytest.mark.parametrize("name", ["../x.csv", "/tmp/x.csv", ".hidden.csv", "a/../../b.csv"])
def test_probability_writer_confined_to_output_dir(tmp_path, name):
    with pytest.raises(ValueError):
        ClassProbabilityWriter(tmp_path, classes=["a", "b"], filename=name)


def test_output_transforms():
    out = [
        {"pred": torch.tensor([0.2, 0.8]), "label": torch.tensor([1])},
        {"pred": torch.tensor([0.6, 0.4]), "label": 0},
    ]
    p, y = probs_and_labels(out)
    assert p.shape == (2, 2) and y.tolist() == [1, 0]
    p, oh = probs_and_onehot(out)
    assert oh.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    p, y = probs_and_labels({"pred": torch.tensor([[0.1, 0.9]]), "label": torch.tensor([[0.0, 1.0]])})
    assert y.tolist() == [1]
