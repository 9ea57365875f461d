"""Smoke tests of ``benchmarks/``: the quick step benchmark runs and writes its results; helpers compute correctly."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench_lightly  # noqa: E402
import bench_step  # noqa: E402
import common  # noqa: E402
import run_all  # noqa: E402


def test_bench_step_quick_writes_results(tmp_path, monkeypatch):
    argv = ["bench_step.py", "--quick", "--configs", "floor", "default", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    bench_step.main()
    payload = json.loads((tmp_path / "step-quick.json").read_text())
    rows = {r["config"]: r for r in payload["rows"]}
    assert set(rows) == {"floor", "default"}
    assert rows["floor"]["ratio_cpu_median"] == pytest.approx(1.0)
    assert rows["default"]["wall_min_ms"] > 0 and rows["default"]["views_per_s_best"] > 0
    assert len(payload["wall_s"]["default"]) == payload["args"]["rounds"]
    assert payload["machine"]["torch"] == torch.__version__
    md = (tmp_path / "step-quick.md").read_text()
    assert "| floor |" in md and "Machine:" in md


def test_interleaved_timing_order_and_summary():
    calls = []
    steps = {"a": lambda n: calls.append(("a", n)), "b": lambda n: calls.append(("b", n))}
    wall, cpu = common.interleaved_timing(steps, rounds=3, iters_per_round=2, warmup=1, log=None)
    assert calls == [("a", 2), ("b", 2)] * 4  # warm-up round, then A B A B A B
    assert len(wall["a"]) == len(cpu["b"]) == 3
    summary = common.summarize_times({"ref": [1.0, 2.0, 4.0], "x": [1.5, 2.0, 4.4]}, reference="ref")
    assert summary["x"]["ratio_median"] == pytest.approx(1.1)
    assert summary["x"]["ratio_of_min"] == pytest.approx(1.5)
    assert summary["ref"]["median_s"] == 2.0


def test_knn_metrics_and_auc():
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    bank_y = torch.tensor([0, 0, 1, 1])
    query = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.2, 1.0]]), dim=1)
    query_y = torch.tensor([0, 1, 0])
    m = bench_lightly.knn_metrics(bank, bank_y, query, query_y, k=2)
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["bacc"] == pytest.approx(0.75)  # class 0: 1/2, class 1: 1/1
    # AUC by hand: positives' scores vs negatives', ties count 1/2
    assert bench_lightly.roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert bench_lightly.roc_auc(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0, 1, 1])) == pytest.approx(0.5)


def test_time_to_target_uses_smoothed_curve_of_trained_points():
    points = [(0, 0.95), (10, 0.5), (20, 0.9), (30, 0.6), (40, 0.8), (50, 0.85)]
    curve = [{"step": i, "cpu_s": t, "bacc": v} for i, (t, v) in enumerate(points)]
    # step 0 (random init) is ignored; trailing means of the rest: 0.5, 0.7, 0.667, 0.767, 0.75
    assert bench_lightly.first_time(curve, "bacc", 0.75) == 40
    assert bench_lightly.first_time(curve, "bacc", 0.7) == 20
    assert bench_lightly.first_time(curve, "bacc", 0.9) is None
    assert bench_lightly.best_level(curve, "bacc") == pytest.approx(0.7667, abs=1e-4)  # not the random-init 0.95
    assert bench_lightly.plateau(curve, "bacc") == pytest.approx(0.75)
    assert bench_lightly.level_at(curve, "bacc", 35) == pytest.approx(0.6667, abs=1e-4)  # last point within 35 s
    assert bench_lightly.level_at(curve, "bacc", 5) is None  # nothing trained yet


@pytest.mark.skipif(not common.PNEUMONIAMNIST_NPZ.is_file(), reason="PneumoniaMNIST (../shared/data) missing")
def test_lightly_benchmark_quick_with_the_package_methods(tmp_path):
    """Both DCL-CsTP steps run without lightly; the report has both targets and the per-metric ratio table."""
    argv = ["bench_lightly.py", "--quick", "--methods", "dclcstp", "dclcstp_asym", "--target-from", "dclcstp"]
    argv += ["--out", str(tmp_path), "--plot", str(tmp_path / "knn.png")]
    with mock.patch.object(sys, "argv", argv):
        bench_lightly.main()
    saved = json.loads((tmp_path / "lightly-quick.json").read_text())
    assert [r["encoder_passes_per_view"] for r in saved["rows"]] == [2, 1]
    assert set(saved["best_targets"]) == set(saved["targets"]) and saved["runs"]["dclcstp_asym"]["steps"] == 2
    md = (tmp_path / "lightly-quick.md").read_text()
    assert "best level" in md and "DCL-CsTP, asymmetric" in md and (tmp_path / "knn.png").is_file()


def test_docs_sections_are_replaced_and_others_kept(tmp_path):
    page = tmp_path / "benchmarks.md"
    text = run_all.PAGE_TEMPLATE.replace("*Not run yet.*", "LABEL EFFICIENCY RESULTS")
    page.write_text(text)
    results = tmp_path / "results"
    results.mkdir()
    (results / "memory.md").write_text("MEMORY TABLE\n")
    (results / "memory.json").write_text(
        json.dumps(
            {
                "command": "python benchmarks/bench_memory.py",
                "target_gib": 8.0,
                "args": {"backbone": "resnet50", "image_size": 224, "batch_size": 32},
                "rows": [{"config": "default", "peak_rss_gib": 5.0, "within_target": True}],
            }
        )
    )
    run_all.build_docs(results, page)
    out = page.read_text()
    assert "LABEL EFFICIENCY RESULTS" in out
    assert "MEMORY TABLE" in out and "python benchmarks/bench_memory.py" in out
    assert "5.00 GiB" in out  # headline row
    assert out.count("<!-- BEGIN speed-memory -->") == 1
    run_all.build_docs(results, page)  # idempotent
    assert page.read_text() == out
