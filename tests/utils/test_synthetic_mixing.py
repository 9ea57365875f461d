from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from monai_dclcstp.utils import load_synthetic_items, mix_synthetic, synthetic_fraction


def _real(n):
    return [{"image": f"r{i}.png", "label": i % 2} for i in range(n)]


def _synthetic(n):
    return [{"image": f"s{i}.png", "synthetic": True} for i in range(n)]


def test_ratio_is_reached_and_flags_are_kept():
    mixed = mix_synthetic(_real(30), _synthetic(100), ratio=0.25, seed=0)
    assert len(mixed) == 40 and synthetic_fraction(mixed) == pytest.approx(0.25)
    assert all(it["synthetic"] is (it["image"][0] == "s") for it in mixed)
    assert mixed == mix_synthetic(_real(30), _synthetic(100), ratio=0.25, seed=0)  # seeded
    assert mixed != mix_synthetic(_real(30), _synthetic(100), ratio=0.25, seed=1)


def test_zero_ratio_no_synthetic_and_too_few():
    assert mix_synthetic(_real(4), _synthetic(4), ratio=0.0) == [dict(it, synthetic=False) for it in _real(4)]
    assert synthetic_fraction(mix_synthetic(_real(4), [], ratio=0.5)) == 0.0
    with pytest.warns(UserWarning, match="only 2 are available"):
        mixed = mix_synthetic(_real(6), _synthetic(2), ratio=0.5)
    assert len(mixed) == 8
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mix_synthetic(_real(2), _synthetic(2), ratio=1.0)


def test_load_synthetic_items_flags_and_checks(tmp_path):
    assert load_synthetic_items("", spatial_dims=2, in_channels=1) == []
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray((np.random.RandomState(i).rand(8, 8) * 255).astype(np.uint8)).save(
            tmp_path / f"images/s{i}.png"
        )
    items = [{"image": f"images/s{i}.png", "label": 1} for i in range(3)]  # flag missing: it is set anyway
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items}))
    loaded = load_synthetic_items(tmp_path / "datalist.json", spatial_dims=2, in_channels=1)
    assert len(loaded) == 3 and all(it["synthetic"] is True for it in loaded)
    assert all(it["image"].startswith(str(tmp_path)) for it in loaded)
    items.append({"image": "images/missing.png"})
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items}))
    with pytest.raises(Exception, match="missing.png"):
        load_synthetic_items(tmp_path / "datalist.json", spatial_dims=2, in_channels=1)
