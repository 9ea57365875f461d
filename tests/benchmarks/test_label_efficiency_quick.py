"""Smoke tests of ``benchmarks/bench_label_efficiency.py``: helpers compute correctly, a tiny run goes end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_label_efficiency as ble  # noqa: E402
import run_all  # noqa: E402

SAMPLE = REPO / "data" / "samples" / "pneumoniamnist" / "datalist.json"


def test_knn_scores_weighted_vote():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    scores = ble.knn_scores(query, bank, labels, k=2)
    assert scores.shape == (2, 2)
    assert torch.allclose(scores.sum(1), torch.ones(2, dtype=scores.dtype))
    assert scores[0, 0] == pytest.approx(1.0) and scores[1, 1] == pytest.approx(1.0)  # both neighbours agree
    mixed = ble.knn_scores(torch.tensor([[1.0, 1.0]]), bank, labels, k=4)
    assert 0.4 < float(mixed[0, 1]) < 0.6  # symmetric query: the vote is split


def test_probe_metrics_separable_features():
    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 2
        x = torch.randn(n, 8, generator=g, dtype=torch.float64) + 3.0 * y[:, None]
        return x, y

    feats = {}
    for name, n in (("training", 40), ("validation", 20), ("test", 30)):
        feats[name], feats[f"{name}_labels"] = split(n)
    out = ble.probe_metrics(feats, list(range(10)), l2_grid=[1e-2, 1.0])
    assert out["num_labelled"] == 10 and out["labelled_counts"] == [5, 5]
    assert out["linear_auc"] > 0.95 and out["linear_balanced_accuracy"] > 0.85
    assert out["knn_auc"] > 0.95
    assert out["linear_l2"] in (1e-2, 1.0) and 0.0 <= out["linear_threshold"] <= 1.0


def test_fit_logistic_matches_class_weighting():
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1])
    w, b = ble.fit_logistic(x, y, l2=1e-3, class_weights=torch.tensor([1.0, 1.0], dtype=torch.float64))
    p = torch.sigmoid(x[:, 0] * w[0] + b)
    assert (p[:2] < 0.5).all() and (p[2:] > 0.5).all()


def test_mean_std_and_paired_deltas():
    assert ble.mean_std([0.5, None, 0.7]) == pytest.approx((0.6, 0.1414213, 2))
    assert ble.mean_std([]) == (None, None, 0)
    assert ble.pm([0.8, 0.9]) == "0.850 ± 0.071"

    def run(seed, f, auc):
        return {"seed": seed, "fraction": f, "metrics": {k: auc for k in ble.SUMMARY_METRICS}}

    res = {
        "finetune": {
            "random": {"a": run(0, 0.1, 0.80), "b": run(1, 0.1, 0.70)},
            "full": {"c": run(0, 0.1, 0.85), "d": run(1, 0.1, 0.80)},
        },
        "probes": {},
    }
    rows = {r["variant"]: r for r in ble.summarize_pneumonia(res, [0.1])}
    mean, sd, n = rows["full"]["delta_auc_calibrated@0.1"]
    assert n == 2 and mean == pytest.approx(0.075) and sd == pytest.approx(0.03535534)
    assert "delta_auc_calibrated@0.1" not in rows["random"]


def test_bundle_command_is_a_cli_line():
    cmd = ble.bundle_command(
        ble.SEG_EVAL_CFG, {"network_def#encoder#scales": ["c5"], "lambda_local": 0.0, "datalist": str(SAMPLE)}
    )
    assert cmd.startswith("python -m monai.bundle run --config_file ")
    assert "bundles/segmentation/configs/train.json" in cmd and "evaluate.json" in cmd
    assert "'--network_def#encoder#scales' '[\"c5\"]'" in cmd and "--lambda_local 0.0" in cmd
    assert "--datalist data/samples/pneumoniamnist/datalist.json" in cmd  # relative to the repository


def test_pinned_settings_cover_the_keys_the_benchmark_varies():
    args = ble.parse_args(["--quick"])
    pinned = ble.pretrain_pinned(args, in_channels=1, image_size=32, epochs=1)
    for variant in ble.VARIANTS.values():  # every ablation overrides a key that is pinned for all variants
        assert set(variant.overrides or {}) <= set(pinned)
    assert ble.classification_pinned(args)["image_size"] == 32  # random init must not fall back to 64 px


@pytest.mark.skipif(not SAMPLE.is_file(), reason="embedded PneumoniaMNIST sample missing")
def test_quick_run_end_to_end(tmp_path):
    """Pretrain one ablation, probe and fine-tune it and random init on 40 images, render the report."""
    argv = ["--quick", "--parts", "pneumonia", "--variants", "global", "--fractions", "1.0", "--limit", "40"]
    argv += ["--work-dir", str(tmp_path / "work"), "--out", str(tmp_path), "--plot", str(tmp_path / "le.png")]
    payload = ble.main(argv)
    pn = payload["pneumonia"]
    assert set(pn["finetune"]) == {"random", "global"}
    run = next(iter(pn["finetune"]["global"].values()))
    assert run["threshold_source"] == "youden_on_calibration_split"  # threshold from dev, metrics on test
    assert 0.0 <= run["metrics"]["auc_calibrated"] <= 1.0
    assert "--lambda_local 0.0" in pn["pretrain"]["global"]["command"]
    assert pn["pretrain"]["global"]["iterations"] >= 1
    assert not list((tmp_path / "work").rglob("checkpoint*.pt"))  # bundle checkpoints cleaned up
    saved = json.loads((tmp_path / "label_efficiency-quick.json").read_text())
    assert saved["settings"]["quick"] is True and saved["machine"]["torch"] == torch.__version__
    md = (tmp_path / "label_efficiency-quick.md").read_text()
    assert "global stream only" in md and "random init" in md and "python -m monai.bundle run" in md
    assert (tmp_path / "le.png").is_file()
    # cached: a second call re-renders without running anything
    again = ble.main(argv + ["--report-only"])
    assert again["pneumonia"]["finetune"]["global"] == pn["finetune"]["global"]


def test_run_all_registers_the_label_efficiency_section():
    bench = {b.name: b for b in run_all.BENCHMARKS}["label_efficiency"]
    assert bench.section == "label-efficiency" and bench.group == "label-efficiency"
    assert "label-efficiency" in run_all.section_names(run_all.PAGE_TEMPLATE)


def test_same_iterations_keeps_the_pretraining_budget_with_synthetic_images():
    base = {"max_epochs": 2, "warmup_epochs": 1}
    assert ble.same_iterations(base, 0.5) == {"max_epochs": 1, "warmup_epochs": 0.5, "save_interval": 1}
    assert ble.same_iterations({"max_epochs": 4, "warmup_epochs": 1}, 0.75)["max_epochs"] == 1
    with pytest.raises(ValueError, match="whole number of epochs"):
        ble.same_iterations(base, 0.25)


def test_run_tasks_keeps_the_order_and_runs_concurrently():
    import threading

    barrier = threading.Barrier(2, timeout=10)  # both tasks must be running at the same time to pass it

    def task(i):
        barrier.wait()
        return i

    assert ble.run_tasks([lambda: task(0), lambda: task(1)], jobs=2) == [0, 1]
    assert ble.run_tasks([lambda: 3, lambda: 4], jobs=1) == [3, 4]


@pytest.mark.skipif(not SAMPLE.is_file(), reason="embedded PneumoniaMNIST sample missing")
def test_quick_run_with_two_jobs_in_subprocesses(tmp_path):
    """``--jobs 2``: bundle runs as `python -m monai.bundle run` subprocesses, two at a time, each with its own CPU time."""
    argv = ["--quick", "--parts", "pneumonia", "--variants", "global", "--fractions", "1.0", "--limit", "40"]
    argv += ["--seeds", "0", "1", "--jobs", "2", "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path)]
    payload = ble.main(argv + ["--plot", str(tmp_path / "le.png")])
    assert payload["settings"]["subprocess"] is True
    finetune = payload["pneumonia"]["finetune"]
    assert sorted(finetune["random"]) == ["finetune-random-f1-s0", "finetune-random-f1-s1"]
    for runs in finetune.values():
        for run in runs.values():
            assert run["cpu_s"] > 0.5 and 0.0 <= run["metrics"]["auc_calibrated"] <= 1.0
