"""Shared paths and plotting helpers of the documentation figure scripts (``tools/docs/*.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
IMG_DIR = REPO_ROOT / "docs" / "img"
PRETRAIN_BUNDLE = REPO_ROOT / "bundles" / "pretrain"
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"
PNEUMONIAMNIST_NPZ = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
DEFAULT_RUN_DIR = Path(os.environ.get("DOCS_RUN_DIR", "/tmp/monai_dclcstp_docs_run"))

#: class colours used by every figure (colour-blind safe: Okabe-Ito)
CLASS_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "font.size": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "svg.hashsalt": "monai_dclcstp",
    }
)


def save_figure(fig: plt.Figure, name: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Save ``fig`` as ``<out_dir>/<name>.png`` without volatile metadata (stable bytes for the same pixels)."""
    out = Path(out_dir) if out_dir is not None else IMG_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Software": None})
    os.replace(tmp, path)
    plt.close(fig)
    print(f"wrote {path}")
    return path
