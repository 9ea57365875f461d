"""t-SNE maps of frozen embeddings of the PneumoniaMNIST val split, before and after DCL-CsTP pretraining.

The images go through the pretrain bundle's own loading transforms (the config's ``validate#dataset`` and
``validate#bank_dataset``, with the run's overrides), the embeddings are the ones the kNN monitor and the downstream
bundles use (global average pool of C5, L2-normalised: ``monai_dclcstp.handlers.embed_images``), and each panel
reports the 20-NN balanced accuracy on the val split with the train split as memory bank
(``weighted_knn_predict``, ``balanced_accuracy``).

- before: the backbone with its random initialisation (``set_determinism(seed)``, as the bundle seeds it);
- after: the same backbone with the run's exported ``encoder.pt`` loaded through ``load_pretrained_encoder``.

Usage::

    python tools/docs/embedding_map.py --run_dir /tmp/monai_dclcstp_docs_run   # → docs/img/embedding_tsne.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from docs_common import CLASS_COLOURS, DEFAULT_RUN_DIR, PRETRAIN_BUNDLE, save_figure
from matplotlib import pyplot as plt
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from tsne import tsne

from monai_dclcstp.handlers import balanced_accuracy, embed_images, weighted_knn_predict
from monai_dclcstp.networks import MultiScaleResNet
from monai_dclcstp.utils import load_pretrained_encoder


def load_split(parser: ConfigParser, dataset_id: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, C, *spatial)`` and int labels ``(N,)`` of one of the bundle's datasets."""
    dataset = parser.get_parsed_content(dataset_id)
    images, labels = [], []
    for item in dataset:
        images.append(torch.as_tensor(item["image"]).float())
        labels.append(int(item["label"]))
    return torch.stack(images), torch.tensor(labels)


@torch.no_grad()
def embed(backbone: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    backbone.eval()
    return torch.cat([embed_images(backbone, images[i : i + batch], "backbone") for i in range(0, len(images), batch)])


def bundle_parser(run_dir: Path, config_file: Path) -> ConfigParser:
    """The pretrain config with the run's overrides, reading the run's data cache."""
    record_path = run_dir / "docs_run.json"
    if not record_path.is_file():
        raise SystemExit(f"{record_path} not found: make the run with tools/docs/pretrain_run.py first.")
    record = json.loads(record_path.read_text())
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.update(
        {
            "bundle_root": str(PRETRAIN_BUNDLE),
            "output_dir": str(run_dir),
            "dataset_dir": record["dataset_dir"],
            "num_workers": 0,
            **{k: v for k, v in record["overrides"].items() if k not in ("progress_bar",)},
        }
    )
    return parser


def draw(maps: list[tuple[str, np.ndarray, float]], labels: np.ndarray, classes: list[str], subtitle: str):
    fig, axes = plt.subplots(1, len(maps), figsize=(6.2 * len(maps), 5.6))
    for ax, (title, y, bacc) in zip(np.atleast_1d(axes), maps):
        for c, name in enumerate(classes):
            sel = labels == c
            ax.scatter(y[sel, 0], y[sel, 1], s=9, alpha=0.75, color=CLASS_COLOURS[c], label=f"{name} ({sel.sum()})")
        ax.set_title(f"{title}\n20-NN balanced accuracy {bacc:.3f}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=9, frameon=False, markerscale=2)
    fig.suptitle(subtitle, fontsize=10.5)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument("--config_file", type=Path, default=PRETRAIN_BUNDLE / "configs" / "train.json")
    parser.add_argument("--perplexity", type=float, default=30.0)
    parser.add_argument("--out_dir", type=Path, default=None)
    args = parser.parse_args()

    encoder_path = args.run_dir / "encoder.pt"
    info = json.loads((args.run_dir / "encoder.json").read_text())
    config = bundle_parser(args.run_dir, args.config_file)
    seed = int(config.get_parsed_content("seed"))
    classes = [str(c) for c in config.get_parsed_content("datalist_dict").get("classes") or []]
    val_x, val_y = load_split(config, "validate#dataset")
    bank_x, bank_y = load_split(config, "validate#bank_dataset")
    classes = classes or [str(c) for c in range(int(val_y.max()) + 1)]

    def backbone() -> MultiScaleResNet:
        return MultiScaleResNet(info["backbone"], spatial_dims=info["spatial_dims"], in_channels=info["in_channels"])

    set_determinism(seed=seed)
    before = backbone()
    after = backbone()
    load_pretrained_encoder(
        after,
        encoder_path,
        backbone=info["backbone"],
        spatial_dims=info["spatial_dims"],
        in_channels=info["in_channels"],
    )
    maps = []
    for title, net in (("random initialisation (before pretraining)", before), ("after DCL-CsTP pretraining", after)):
        val_e, bank_e = embed(net, val_x), embed(net, bank_x)
        pred = weighted_knn_predict(val_e, bank_e, bank_y, num_classes=len(classes), k=20)
        bacc = balanced_accuracy(pred, val_y)
        print(f"{title}: 20-NN balanced accuracy {bacc:.4f}")
        maps.append((title, tsne(val_e.numpy(), perplexity=args.perplexity), bacc))
    method = info.get("method", {})
    subtitle = (
        f"PneumoniaMNIST val split ({len(val_y)} images, {info['image_size']} px), frozen {info['backbone']} C5 "
        f"features, t-SNE (perplexity {args.perplexity:g}); pretraining: {method.get('epochs')} epochs on "
        f"{method.get('data_size')} unlabelled train images"
    )
    save_figure(draw(maps, val_y.numpy(), classes, subtitle), "embedding_tsne", args.out_dir)


if __name__ == "__main__":
    main()
