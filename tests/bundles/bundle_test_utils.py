"""Helpers shared by the bundle tests: tiny datalists of the embedded PneumoniaMNIST sample."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PNEUMONIA_SAMPLE = REPO / "data" / "samples" / "pneumoniamnist"


def tiny_datalist(folder: Path, n_train: int = 8, n_val: int = 4, sample: Path = PNEUMONIA_SAMPLE) -> Path:
    """Write ``folder/datalist.json``: the first ``n / 2`` images of each class of the embedded sample.

    Image paths are absolute, so the datalist works from any working directory. Returns the datalist path.
    """
    data = json.loads((sample / "datalist.json").read_text())

    def take(items: list[dict], n: int) -> list[dict]:
        out = []
        for c in (0, 1):
            out += [dict(it, image=str(sample / it["image"])) for it in items if it["label"] == c][: n // 2]
        return out

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "datalist.json"
    path.write_text(
        json.dumps(
            {
                "classes": data["classes"],
                "training": take(data["training"], n_train),
                "validation": take(data["validation"], n_val),
            }
        )
    )
    return path
