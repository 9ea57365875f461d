"""Grid of real vs synthetic images, per class, from the ldm bundle's sampling output.

Reads the synthetic datalist written by ``bundles/ldm/configs/sample.json`` (items flagged ``"synthetic": true``,
with a ``generation`` record) and a real datalist (default: the ``data_source`` recorded in the autoencoder's
``autoencoder.json`` beside the synthetic folder), and draws, for every class, a row of real images above a row of
synthetic ones. Images are loaded with MONAI's ``LoadImage`` and shown with their own intensity range.

Usage (after training and sampling with the ldm bundle)::

    python tools/docs/synthetic_grid.py --synthetic_datalist bundles/ldm/models/synthetic/datalist.json
    # → docs/img/real_vs_synthetic.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from docs_common import save_figure
from matplotlib import pyplot as plt
from monai.transforms import LoadImage

from monai_dclcstp.data import read_datalist


def pick(items: list[dict], label: int, count: int, seed: int) -> list[str]:
    chosen = [it["image"] for it in items if it.get("label") == label]
    rng = np.random.RandomState(seed)
    return [chosen[i] for i in sorted(rng.choice(len(chosen), size=min(count, len(chosen)), replace=False))]


def as_display(path: str) -> np.ndarray:
    img = np.asarray(LoadImage(image_only=True, ensure_channel_first=True)(path), dtype=np.float32)
    img = img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img.T if img.ndim == 2 else np.swapaxes(img, 0, 1)  # MONAI loads (W, H): back to (H, W)


def records(synthetic_datalist: Path) -> tuple[dict, dict]:
    """The synthetic datalist's ``generation`` record and the models' JSON descriptions next to it (if any)."""
    data = json.loads(synthetic_datalist.read_text())
    models = {}
    for name in ("autoencoder", "diffusion"):
        for folder in (synthetic_datalist.parent, synthetic_datalist.parent.parent):
            if (folder / f"{name}.json").is_file():
                models[name] = json.loads((folder / f"{name}.json").read_text())
                break
    return data.get("generation", {}), models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic_datalist", type=Path, required=True)
    parser.add_argument("--real_datalist", type=Path, default=None)
    parser.add_argument("--per_class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_dir", type=Path, default=None)
    args = parser.parse_args()

    generation, models = records(args.synthetic_datalist)
    real_path = args.real_datalist or Path(models.get("autoencoder", {}).get("data_source", ""))
    if not real_path or not Path(real_path).is_file():
        raise SystemExit(
            "give --real_datalist (the autoencoder.json beside the samples names no readable data_source)."
        )
    synthetic = read_datalist(args.synthetic_datalist)
    real = read_datalist(real_path)
    synthetic_items = [it for split in ("training", "validation", "test") for it in synthetic.get(split) or []]
    real_items = list(real.get("training") or [])
    classes = real.get("classes") or synthetic.get("classes")
    labels = sorted({int(it["label"]) for it in synthetic_items if "label" in it})
    if not labels:
        raise SystemExit(f"{args.synthetic_datalist}: no labelled synthetic items (class-conditional sampling needed).")
    names = [str(classes[c]) if classes and c < len(classes) else f"class {c}" for c in labels]

    n = args.per_class
    fig, axes = plt.subplots(2 * len(labels), n, figsize=(1.25 * n + 1.6, 2.7 * len(labels)), squeeze=False)
    for row, (label, name) in enumerate(zip(labels, names)):
        for kind, items, r in (("real", real_items, 2 * row), ("synthetic", synthetic_items, 2 * row + 1)):
            paths = pick(items, label, n, args.seed)
            for col in range(n):
                ax = axes[r, col]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if col < len(paths):
                    ax.imshow(as_display(paths[col]), cmap="gray", interpolation="nearest")
            axes[r, 0].set_ylabel(f"{name}\n{kind}", rotation=0, ha="right", va="center", fontsize=10)
    diffusion = models.get("diffusion", {})
    autoencoder = models.get("autoencoder", {})
    details = [
        f"{generation.get('scheduler', '?')}"
        + (
            f" ({generation['scheduler_options']['algorithm_type']})"
            if "algorithm_type" in (generation.get("scheduler_options") or {})
            else ""
        )
        + f", {generation.get('num_inference_steps', '?')} steps",
        f"autoencoder {autoencoder.get('epochs_trained', '?')} epochs",
        f"diffusion model {diffusion.get('epochs_trained', '?')} epochs",
        f"trained on {autoencoder.get('num_training_items', '?')} images",
    ]
    fig.suptitle("Real (top of each pair) vs synthetic (bottom) images per class — " + ", ".join(details), fontsize=10)
    fig.tight_layout()
    save_figure(fig, "real_vs_synthetic", args.out_dir)


if __name__ == "__main__":
    main()
