"""Rebuild this embedded PH2 sample from the 140-pair PH2 copy (``python data/samples/ph2/make_sample.py SRC``).

Picks 24 pairs stratified by diagnosis (seed 0), downscales them to a longest side of 128 px (images: Lanczos, JPEG
quality 95; masks: area-averaged then thresholded at 127, PNG 0/255), copies their ``diagnosis.csv`` rows and writes
``datalist.json`` with a fixed 18 / 6 training / validation split (also stratified by diagnosis).
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

LONGEST_SIDE = 128
PER_DIAGNOSIS = {0: 10, 1: 9, 2: 5}  # 24 pairs, the proportions of PH2 (56 / 56 / 28)
VAL_PER_DIAGNOSIS = {0: 2, 1: 2, 2: 2}


def _size(w: int, h: int) -> tuple[int, int]:
    scale = LONGEST_SIDE / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def main(src: str, dst: str | None = None) -> None:
    src_dir = Path(src)
    out = Path(dst) if dst else Path(__file__).resolve().parent
    with open(src_dir / "diagnosis.csv", newline="") as f:
        rows = {r["name"]: int(r["diagnosis"]) for r in csv.DictReader(f)}
    rng = random.Random(0)
    chosen: dict[int, list[str]] = {}
    for d, n in PER_DIAGNOSIS.items():
        names = sorted(k for k, v in rows.items() if v == d)
        chosen[d] = sorted(rng.sample(names, n))
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    datalist: dict = {
        "description": "Embedded default sample: 24 PH2 dermoscopy images with lesion masks, longest side 128 px. "
        "Research use; cite Mendonca et al., EMBC 2013.",
        "classes": ["background", "lesion"],
        "training": [],
        "validation": [],
    }
    for d, names in chosen.items():
        val = set(rng.sample(names, VAL_PER_DIAGNOSIS[d]))
        for name in names:
            image = Image.open(src_dir / "images" / f"{name}.jpg").convert("RGB")
            size = _size(*image.size)
            image.resize(size, Image.Resampling.LANCZOS).save(out / "images" / f"{name}.jpg", quality=95)
            mask = Image.open(src_dir / "masks" / f"{name}_lesion.png").convert("L").resize(size, Image.Resampling.BOX)
            Image.fromarray(((np.asarray(mask) > 127) * 255).astype(np.uint8)).save(
                out / "masks" / f"{name}_lesion.png"
            )
            item = {"image": f"images/{name}.jpg", "label": f"masks/{name}_lesion.png", "source": "ph2", "diagnosis": d}
            datalist["validation" if name in val else "training"].append(item)
    for split in ("training", "validation"):
        datalist[split].sort(key=lambda it: it["image"])
    with open(out / "datalist.json", "w") as f:
        json.dump(datalist, f, indent=1)
        f.write("\n")
    with open(out / "diagnosis.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "diagnosis"])
        for name in sorted(n for names in chosen.values() for n in names):
            w.writerow([name, rows[name]])


if __name__ == "__main__":
    main(*sys.argv[1:])
