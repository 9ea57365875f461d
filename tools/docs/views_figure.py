"""Figure of the local stream's positives: two augmented views of a real image and their geometry-matched tokens.

The views come from the library's :class:`~monai_dclcstp.transforms.TwoViewAugment` (seeded), the token grid from
the C4 map of :class:`~monai_dclcstp.networks.MultiScaleResNet` (the grid the cross-scale tokens live on), and the
positive pairs from :func:`~monai_dclcstp.losses.positive_mask` — the same call the dense loss makes.

Usage::

    python tools/docs/views_figure.py            # → docs/img/views_positives.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from docs_common import REPO_ROOT, save_figure
from matplotlib import patches
from matplotlib import pyplot as plt
from PIL import Image

from monai_dclcstp.losses import positive_mask, token_centres
from monai_dclcstp.networks import MultiScaleResNet
from monai_dclcstp.transforms import TwoViewAugment

DEFAULT_IMAGE = REPO_ROOT / "data" / "samples" / "ph2" / "images" / "IMD020.jpg"
VIEW_COLOURS = ("#0072B2", "#D55E00")


def make_views(image: np.ndarray, size: int, seed: int):
    """``image`` (H, W, 3) uint8 → two views (3, size, size), their geometries (3, 2), and the C4 grid."""
    x = torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1) / 255.0
    aug = TwoViewAugment(spatial_size=size, scale=(0.3, 0.7), jitter_prob=0.0, blur_prob=0.0, noise_prob=0.0)
    aug.set_random_state(seed)
    v1, g1, v2, g2 = aug(x)
    with torch.no_grad():
        c4 = MultiScaleResNet("resnet18", spatial_dims=2, in_channels=3)(v1[None])[1]
    return v1, g1, v2, g2, tuple(c4.shape[2:])


def pick_query(pos: torch.Tensor) -> int:
    """A view-1 token with positives (the one with the most, ties → first), to highlight."""
    counts = pos.sum(dim=1)
    return int(torch.argmax(counts))


def draw(image: np.ndarray, v1, g1, v2, g2, grid, threshold: float):
    pos = positive_mask(g1[None], g2[None], grid, grid, threshold)[0]  # (N1, N2)
    c1, _ = token_centres(g1[None], grid)
    c2, _ = token_centres(g2[None], grid)
    query = pick_query(pos)
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.1), gridspec_kw={"width_ratios": [1.25, 1, 1, 1]})
    ax = axes[0]
    ax.imshow(image)
    for g, colour, label in ((g1, VIEW_COLOURS[0], "view 1"), (g2, VIEW_COLOURS[1], "view 2")):
        (y0, x0), (h, w), flip = g[0].tolist(), g[1].tolist(), g[2].tolist()
        ax.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, ec=colour, lw=2))
        ax.text(
            x0 + 1.5,
            y0 + h - 2.5,
            label + (" (flipped)" if any(f > 0.5 for f in flip) else ""),
            color="white",
            fontsize=8.5,
            bbox={"fc": colour, "ec": "none", "pad": 1.5},
        )
    ax.plot(c1[0, query, 1], c1[0, query, 0], "o", ms=8, mfc="none", mec=VIEW_COLOURS[0], mew=2)
    for j in torch.nonzero(pos[query]).flatten().tolist():
        ax.plot(c2[0, j, 1], c2[0, j, 0], "x", ms=7, color=VIEW_COLOURS[1], mew=2)
    ax.set_title("original image: crop boxes, one token\nof view 1 (o) and its positives in view 2 (x)", fontsize=9)
    ax.axis("off")

    size = v1.shape[1:]
    for ax, view, colour, title, marks in (
        (axes[1], v1, VIEW_COLOURS[0], "view 1", [query]),
        (axes[2], v2, VIEW_COLOURS[1], "view 2", torch.nonzero(pos[query]).flatten().tolist()),
    ):
        ax.imshow(view.permute(1, 2, 0).clamp(0, 1).numpy())
        step = (size[0] / grid[0], size[1] / grid[1])
        for i in range(1, grid[0]):
            ax.axhline(i * step[0] - 0.5, color="white", lw=0.6, alpha=0.7)
        for j in range(1, grid[1]):
            ax.axvline(j * step[1] - 0.5, color="white", lw=0.6, alpha=0.7)
        for t in marks:
            r, c = divmod(t, grid[1])
            ax.add_patch(
                patches.Rectangle(
                    (c * step[1] - 0.5, r * step[0] - 0.5), step[1], step[0], fill=False, ec=colour, lw=2.5
                )
            )
        ax.set_title(f"{title}: {size[0]}×{size[1]} px, C4 token grid {grid[0]}×{grid[1]}", fontsize=9)
        ax.axis("off")

    ax = axes[3]
    ax.imshow(pos.numpy(), cmap="Greys", interpolation="nearest")
    ax.set_title(
        f"positive_mask: {int(pos.sum())} positive pairs\n(threshold {threshold:g} × token-bin diagonal)", fontsize=9
    )
    ax.set_xlabel("view-2 token")
    ax.set_ylabel("view-1 token")
    ax.axhline(query, color=VIEW_COLOURS[0], lw=0.8)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--out_dir", type=Path, default=None)
    args = parser.parse_args()
    image = np.array(Image.open(args.image).convert("RGB"))
    torch.manual_seed(0)
    v1, g1, v2, g2, grid = make_views(image, args.size, args.seed)
    save_figure(draw(image, v1, g1, v2, g2, grid, args.threshold), "views_positives", args.out_dir)


if __name__ == "__main__":
    main()
