"""Architecture figure of DCL-CsTP, drawn from the pretrain bundle's real network and loss.

The network and loss are built from ``bundles/pretrain/configs/train.json`` (``network_def`` and ``loss``, so the
defaults shown are the bundle's), a dummy two-view batch of the bundle's ``image_size`` is run through them, and every
box is labelled with the module's class name and the tensor shapes recorded by forward hooks. Nothing is typed in
by hand except the layout.

Usage::

    python tools/docs/architecture.py            # → docs/img/architecture.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from docs_common import PRETRAIN_BUNDLE, save_figure
from matplotlib import patches
from matplotlib import pyplot as plt
from monai.bundle import ConfigParser

# colours: inputs, backbone, projection, heads, momentum branch, losses
C_IN, C_BB, C_PROJ, C_HEAD, C_MOM, C_LOSS = "#E8EEF4", "#CFE2F3", "#FCE5CD", "#D9EAD3", "#EAE6F2", "#F4CCCC"


def shape_str(t: torch.Tensor | list | tuple, batch: str = "B") -> str:
    """``(2, 128, 4, 4)`` → ``"(B, 128, 4×4)"`` for a tensor; a list of tensors → one string per tensor."""
    if isinstance(t, (list, tuple)):
        return ", ".join(shape_str(x, batch) for x in t)
    dims = list(t.shape[1:])
    if len(dims) <= 1:
        return f"({batch}, {dims[0]})" if dims else f"({batch},)"
    return f"({batch}, {dims[0]}, {'×'.join(str(d) for d in dims[1:])})"


def collect(config_file: Path) -> dict[str, Any]:
    """Build the bundle's network and loss, run one dummy step, and record names, sizes and shapes."""
    parser = ConfigParser()
    parser.read_config(str(config_file))
    net = parser.get_parsed_content("network_def", instantiate=True)
    loss = parser.get_parsed_content("loss", instantiate=True)
    image_size = int(parser.get_parsed_content("image_size"))
    spatial_dims = int(parser.get_parsed_content("spatial_dims"))
    in_channels = int(parser.get_parsed_content("in_channels"))
    enc = net.online
    shapes: dict[str, Any] = {}

    def hook(name: str):
        def fn(_module, _inputs, output):
            shapes.setdefault(name, output)

        return fn

    handles = [
        enc.backbone.register_forward_hook(hook("backbone")),
        enc.projection.register_forward_hook(hook("projection")),
        enc.global_head.register_forward_hook(hook("global_head")),
        enc.local_head.register_forward_hook(hook("local_head")),
    ]
    size = (image_size,) * spatial_dims
    torch.manual_seed(0)
    view = torch.rand(1, in_channels, *size)
    geometry = torch.stack([torch.zeros(spatial_dims), torch.tensor(size, dtype=torch.float32), torch.zeros(2)])[None]
    with torch.no_grad():
        out = net(view, view)
        losses = loss(out, geometry, geometry)
    for h in handles:
        h.remove()
    proj = enc.projection
    block = type(proj.blocks[0]).__name__ if len(proj.blocks) else "none"
    head_dims = [m.out_features for m in enc.global_head.mlp if isinstance(m, torch.nn.Linear)]
    return {
        "input": f"(B, {in_channels}, {'×'.join(map(str, size))})",
        "backbone": f"{type(enc.backbone).__name__}\n({enc.backbone.backbone_name})",
        "scales": [shape_str(f) for f in shapes["backbone"]],
        "proj_name": type(proj).__name__,
        "embed_dim": proj.embed_dim,
        "num_layers": len(proj.blocks),
        "block": block,
        "grid_scale": ("C3", "C4", "C5")[enc.scale_indices[proj.grid_scale]],
        "tokens": shape_str(shapes["projection"]),
        "global_head": type(enc.global_head).__name__,
        "local_head": type(enc.local_head).__name__,
        "head_dims": f"{proj.embed_dim}→{'→'.join(map(str, head_dims))}",
        "global_out": shape_str(shapes["global_head"]),
        "local_out": shape_str(shapes["local_head"]),
        "net": type(net).__name__,
        "loss": type(loss).__name__,
        "global_loss": type(loss.global_loss).__name__,
        "local_loss": type(loss.local_loss).__name__,
        "lambda": loss.lambda_local,
        "temperature": loss.global_loss.temperature,
        "queue_size": loss.global_loss.queue_size,
        "pos_threshold": loss.local_loss.pos_threshold,
        "momentum_start": float(parser.get_parsed_content("momentum_start")),
        "params_m": round(sum(p.numel() for p in enc.parameters()) / 1e6, 1),
        "loss_keys": sorted(losses),
    }


def box(ax, x, y, w, h, title, lines=(), colour=C_IN, fontsize=8.5, bold=True):
    ax.add_patch(
        patches.FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.8", fc=colour, ec="#444444", lw=0.9, zorder=2
        )
    )
    text = title if not lines else title + "\n" + "\n".join(lines)
    ax.text(
        x + w / 2,
        y + h / 2,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        zorder=3,
        fontweight="bold" if bold and not lines else "normal",
        linespacing=1.35,
    )


def arrow(ax, start, end, label=None, style="-|>", colour="#333333", ls="-", rad=0.0, label_offset=(0, 1.2)):
    ax.add_patch(
        patches.FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=11,
            color=colour,
            lw=1.1,
            ls=ls,
            connectionstyle=f"arc3,rad={rad}",
            zorder=1,
        )
    )
    if label:
        mx, my = (start[0] + end[0]) / 2 + label_offset[0], (start[1] + end[1]) / 2 + label_offset[1]
        ax.text(mx, my, label, ha="center", va="bottom", fontsize=7.5, color=colour, zorder=3)


def draw(info: dict[str, Any]):
    fig, ax = plt.subplots(figsize=(16, 7.6))
    ax.set_xlim(0, 162)
    ax.set_ylim(0, 77)
    ax.axis("off")

    # inputs: two augmented views with their geometry, concatenated into one batch of 2B images
    box(ax, 1, 31, 12, 10, "image", [info["input"].replace("B, ", "")], C_IN)
    box(
        ax,
        16,
        29,
        17,
        14,
        "TwoViewAugmentd",
        ["crop, flip, jitter,", "blur, shot noise;", "records geometry", "(start, size, flip)"],
        C_IN,
        fontsize=8,
    )
    arrow(ax, (13, 36), (16, 36))
    box(
        ax,
        37,
        30,
        15,
        12,
        "view 1 ‖ view 2",
        [info["input"].replace("(B,", "(2B,"), "one batched pass"],
        C_IN,
        fontsize=8,
    )
    arrow(ax, (33, 36), (37, 36))

    # online encoder (top) and its momentum twin (bottom): same modules
    for y0, grad in ((46, True), (6, False)):
        colour = None if grad else C_MOM
        ax.add_patch(
            patches.FancyBboxPatch(
                (55, y0 - 2), 68, 24, boxstyle="round,pad=0.3", fc="none", ec="#888888", lw=0.8, ls="--", zorder=0
            )
        )
        title = (
            "online encoder: DualStreamEncoder"
            if grad
            else "momentum encoder: EMA copy of the online encoder, no gradient"
        )
        ax.text(56, y0 + 19.6, title, fontsize=8, color="#555555")
        scales = [f"{n} {s}" for n, s in zip(("C3", "C4", "C5"), info["scales"])]
        box(ax, 57, y0, 16, 18, info["backbone"], scales, colour or C_BB, fontsize=7.3)
        proj_lines = [
            f"1×1 conv → E = {info['embed_dim']}",
            f"resample to the {info['grid_scale']} grid",
            "+ scale & sin-cos pos. emb.",
            f"{info['num_layers']}× {info['block']}",
            "softmax-weighted scale fusion",
            info["tokens"],
        ]
        box(ax, 76, y0, 23, 18, info["proj_name"], proj_lines, colour or C_PROJ, fontsize=7.3)
        arrow(ax, (73, y0 + 9), (76, y0 + 9))
        box(
            ax,
            102,
            y0 + 10,
            20,
            8,
            info["global_head"],
            ["pool + MLP " + info["head_dims"], info["global_out"]],
            colour or C_HEAD,
            fontsize=7.1,
        )
        box(
            ax,
            102,
            y0,
            20,
            8,
            info["local_head"],
            ["MLP per token " + info["head_dims"], info["local_out"]],
            colour or C_HEAD,
            fontsize=7.1,
        )
        arrow(ax, (99, y0 + 11), (102, y0 + 14))
        arrow(ax, (99, y0 + 7), (102, y0 + 4))
    arrow(ax, (44.5, 42), (57, 55))
    arrow(ax, (44.5, 30), (57, 15))
    arrow(ax, (112, 44), (112, 28), colour="#6A5ACD", ls="--")
    ax.text(
        111,
        36,
        f"EMA after each step\nm: {info['momentum_start']:g} → 1 (cosine)",
        fontsize=7.5,
        color="#6A5ACD",
        va="center",
        ha="right",
    )

    # losses
    box(
        ax,
        128,
        46,
        32,
        15,
        info["global_loss"],
        [
            "q: online global, k: momentum global",
            f"InfoNCE, T = {info['temperature']:g}",
            f"negatives: batch + queue of {info['queue_size']}",
            "symmetric over the two views",
        ],
        C_LOSS,
        fontsize=7.5,
    )
    box(
        ax,
        128,
        11,
        32,
        15,
        info["local_loss"],
        [
            "q: online tokens, k: momentum tokens",
            "positives: positive_mask(geometry)",
            f"centre distance < {info['pos_threshold']:g} × token bin",
            "symmetric over the two views",
        ],
        C_LOSS,
        fontsize=7.5,
    )
    box(
        ax,
        128,
        30,
        32,
        12,
        info["loss"],
        ["L = (1 − λ) L_global + λ L_local", f"λ = {info['lambda']:g}"],
        "#F9E0E0",
        fontsize=8,
    )
    arrow(ax, (122, 60), (128, 56), label="q", label_offset=(0, 0.3))
    arrow(ax, (122, 20), (128, 50), label="k", colour="#6A5ACD", label_offset=(-2.2, 3))
    arrow(ax, (122, 50), (128, 22), label="q", label_offset=(2.2, 3))
    arrow(ax, (122, 10), (128, 16), label="k", colour="#6A5ACD", label_offset=(0, 0.3))
    arrow(ax, (144, 46), (144, 42))
    arrow(ax, (144, 26), (144, 30))
    # the views' geometry goes around the encoders to the local loss
    geo = "#B45F06"
    ax.plot([24.5, 24.5, 152], [29, 1.2, 1.2], color=geo, lw=1.1, ls=":", zorder=1)
    arrow(ax, (152, 1.2), (152, 11), colour=geo, ls=":")
    ax.text(
        88,
        1.8,
        "geometry1, geometry2: where each view lies in the original image",
        fontsize=7.5,
        color=geo,
        ha="center",
    )

    ax.text(
        1,
        74,
        f"DCL-CsTP pretraining network ({info['net']}) as built by bundles/pretrain/configs/train.json "
        f"(online encoder: {info['params_m']:.1f} M parameters)",
        fontsize=11,
        fontweight="bold",
    )
    ax.text(
        1,
        70.6,
        "After training only the online backbone is exported (models/encoder.pt + encoder.json) for the "
        "classification and segmentation bundles.",
        fontsize=8.5,
        color="#444444",
    )
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_file", type=Path, default=PRETRAIN_BUNDLE / "configs" / "train.json")
    parser.add_argument("--out_dir", type=Path, default=None)
    args = parser.parse_args()
    info = collect(args.config_file)
    path = save_figure(draw(info), "architecture", args.out_dir)
    # what the figure shows, so that tests/docs can tell when the bundle defaults change and the figure is stale
    path.with_suffix(".json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
