"""Loss curves of a real pretraining run, read from its TensorBoard event files.

Reads what the pretrain bundle's ``TensorBoardStatsHandler`` and ``KNNMonitor`` wrote under ``<run_dir>/runs``
(``loss``, ``loss_global``, ``loss_local``, ``lr``, ``momentum`` per iteration; ``knn_accuracy``,
``knn_balanced_accuracy`` per evaluation) and, if present, the ``docs_run.json`` written by ``pretrain_run.py``.

Usage::

    python tools/docs/loss_curves.py --run_dir /tmp/monai_dclcstp_docs_run   # → docs/img/pretrain_loss.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from docs_common import CLASS_COLOURS, DEFAULT_RUN_DIR, save_figure
from matplotlib import pyplot as plt


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All scalar series of the event files under ``run_dir`` → ``{tag: (steps, values)}`` (sorted by step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir}; run tools/docs/pretrain_run.py first.")
    series: dict[str, dict[int, float]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                series.setdefault(tag, {})[int(event.step)] = float(event.value)
    return {tag: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)])) for tag, v in series.items() if len(v) > 0}


def smooth(values: np.ndarray, weight: float = 0.8) -> np.ndarray:
    """TensorBoard's exponential moving average with bias correction."""
    out, last, norm = np.empty_like(values, dtype=float), 0.0, 0.0
    for i, v in enumerate(values):
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = last / norm
    return out


def describe_run(run_dir: Path) -> str:
    record_path = run_dir / "docs_run.json"
    if not record_path.is_file():
        return str(run_dir)
    record = json.loads(record_path.read_text())
    overrides = ", ".join(f"{k}={v}" for k, v in record.get("overrides", {}).items() if k != "progress_bar")
    data = Path(record.get("dataset_dir", "")).name
    minutes = record.get("wall_time_s", 0) / 60
    return f"pretrain bundle on {data} ({overrides}); {minutes:.0f} min on 2 shared CPU cores"


def draw(
    scalars: dict[str, tuple[np.ndarray, np.ndarray]],
    subtitle: str,
    iters_per_epoch: int | None,
    global_candidates: int | None = None,
):
    has_knn = "knn_balanced_accuracy" in scalars
    fig, axes = plt.subplots(1, 3 if has_knn else 2, figsize=(15 if has_knn else 10.5, 4.2))
    ax = axes[0]
    for (tag, label), colour in zip(
        (("loss", "total"), ("loss_global", "global stream"), ("loss_local", "local stream")), CLASS_COLOURS
    ):
        if tag not in scalars:
            continue
        steps, values = scalars[tag]
        ax.plot(steps, values, color=colour, alpha=0.25, lw=0.8)
        ax.plot(steps, smooth(values), color=colour, lw=1.8, label=f"{label} ({values[-5:].mean():.2f} at the end)")
    if global_candidates:
        ax.axhline(np.log(global_candidates), color=CLASS_COLOURS[1], lw=0.9, ls="--")
        ax.annotate(
            f"chance, global: log({global_candidates}) (batch keys + full queue)",
            (0.02, np.log(global_candidates)),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=8,
            color=CLASS_COLOURS[1],
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("losses (faint: per iteration; bold: smoothed)", fontsize=10)
    ax.legend(fontsize=8.5, frameon=False)

    ax = axes[1]
    if "lr" in scalars:
        steps, values = scalars["lr"]
        ax.plot(steps, values, color=CLASS_COLOURS[0], lw=1.6, label="learning rate (warm-up + cosine)")
        ax.set_ylabel("learning rate", color=CLASS_COLOURS[0])
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if "momentum" in scalars:
        twin = ax.twinx()
        twin.spines["right"].set_visible(True)
        steps, values = scalars["momentum"]
        twin.plot(steps, values, color=CLASS_COLOURS[1], lw=1.6)
        twin.set_ylabel("momentum-encoder coefficient m", color=CLASS_COLOURS[1])
    ax.set_xlabel("iteration")
    ax.set_title("schedules", fontsize=10)

    if has_knn:
        ax = axes[2]
        for (tag, label), colour in zip(
            (("knn_accuracy", "accuracy"), ("knn_balanced_accuracy", "balanced accuracy")), CLASS_COLOURS
        ):
            if tag in scalars:
                steps, values = scalars[tag]
                ax.plot(steps, values, "o-", color=colour, lw=1.6, label=label)
                for s, v in zip(steps, values):
                    ax.annotate(f"{v:.3f}", (s, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.set_xlabel("epoch (0 = before training)")
        ax.set_title("20-NN classifier on frozen backbone features, val split", fontsize=10)
        ax.legend(fontsize=8.5, frameon=False, loc="center right")
        ax.set_xticks(scalars["knn_balanced_accuracy"][0])
    if iters_per_epoch:
        for ax in axes[:2]:
            for e in range(iters_per_epoch, int(scalars["loss"][0][-1]) + 1, iters_per_epoch):
                ax.axvline(e, color="#999999", lw=0.6, ls=":")
    fig.suptitle(subtitle, fontsize=10.5)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument("--out_dir", type=Path, default=None)
    args = parser.parse_args()
    scalars = read_scalars(args.run_dir)
    if "loss" not in scalars:
        raise SystemExit(f"{args.run_dir}: the event files hold no 'loss' series (tags: {sorted(scalars)}).")
    iters_per_epoch, candidates = None, None
    info = args.run_dir / "encoder.json"
    if info.is_file():
        method = json.loads(info.read_text()).get("method", {})
        if method.get("epochs"):
            iters_per_epoch = int(method["iterations"]) // int(method["epochs"])
        if method.get("batch_size") and method.get("queue_size") is not None:
            candidates = int(method["batch_size"]) + int(method["queue_size"])
    fig = draw(scalars, describe_run(args.run_dir), iters_per_epoch, candidates)
    save_figure(fig, "pretrain_loss", args.out_dir)


if __name__ == "__main__":
    main()
