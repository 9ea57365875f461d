from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from monai_dclcstp.data import DatalistError, read_datalist, split_datalist, subsample, write_datalist


def _items(counts: dict[int, int], synthetic: int = 0) -> list[dict]:
    items = [{"image": f"/d/{c}_{i}.png", "label": c} for c, n in counts.items() for i in range(n)]
    items += [{"image": f"/d/syn_{i}.png", "label": 0, "synthetic": True} for i in range(synthetic)]
    return items


class TestReadWrite:
    def test_relative_paths_resolve_against_the_file_folder(self, tmp_path):
        folder = tmp_path / "ds"
        folder.mkdir()
        data = {
            "classes": ["a", "b"],
            "training": [
                {"image": "img/x.png", "label": 1, "synthetic": True, "source": "ldm"},
                {"image": "/abs/y.png", "label": "a"},
            ],
            "val": [{"image": "img/z.png", "label": 0}],
            "test": ["img/t.png"],
        }
        (folder / "dl.json").write_text(json.dumps(data))
        dl = read_datalist(folder / "dl.json")
        assert dl["training"][0] == {
            "image": str(folder / "img" / "x.png"),
            "label": 1,
            "synthetic": True,
            "source": "ldm",
        }
        assert dl["training"][1] == {"image": "/abs/y.png", "label": 0}  # class name → index
        assert dl["validation"] == [{"image": str(folder / "img" / "z.png"), "label": 0}]  # "val" alias
        assert dl["test"] == [{"image": str(folder / "img" / "t.png")}]  # MSD-style string entries
        assert dl["classes"] == ["a", "b"]

    def test_mask_labels_are_resolved_too(self, tmp_path):
        (tmp_path / "dl.json").write_text(json.dumps({"training": [{"image": "i/a.jpg", "label": "m/a.png"}]}))
        item = read_datalist(tmp_path / "dl.json")["training"][0]
        assert item["label"] == str(tmp_path / "m" / "a.png")

    def test_invalid_json_names_file_and_line(self, tmp_path):
        path = tmp_path / "bad.json"
        path.write_text('{"training": [\n  {"image": "a.png",}\n]}')
        with pytest.raises(DatalistError, match=r"bad\.json.*not valid JSON \(line 2"):
            read_datalist(path)

    def test_item_without_image_is_reported(self, tmp_path):
        path = tmp_path / "dl.json"
        path.write_text(json.dumps({"training": [{"image": "a.png"}, {"label": 1}]}))
        with pytest.raises(DatalistError, match=r"(?s)dl\.json.*training\[1\]: item has no 'image' key"):
            read_datalist(path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(DatalistError, match="datalist file not found"):
            read_datalist(tmp_path / "nope.json")

    def test_write_is_atomic_relative_and_round_trips(self, tmp_path):
        folder = tmp_path / "out"
        dl = {
            "training": [{"image": str(folder / "a.png"), "label": 1, "synthetic": True}],
            "validation": [{"image": "/elsewhere/b.png", "label": 0}],
            "classes": ["n", "p"],
        }
        path = write_datalist(dl, folder / "datalist.json")
        raw = json.loads(path.read_text())
        assert raw["training"][0]["image"] == "a.png"  # under the folder → relative
        assert raw["validation"][0]["image"] == "/elsewhere/b.png"  # elsewhere → absolute
        assert read_datalist(path) == dl
        assert os.listdir(folder) == ["datalist.json"]  # no temporary file left

    def test_failed_write_keeps_the_old_file(self, tmp_path):
        path = write_datalist({"training": [{"image": "a.png"}]}, tmp_path / "dl.json")
        before = path.read_text()
        with pytest.raises(TypeError):
            write_datalist({"training": [{"image": "b.png", "bad": object()}]}, path)
        assert path.read_text() == before
        assert os.listdir(tmp_path) == ["dl.json"]


class TestSplit:
    def test_deterministic_and_seed_dependent(self):
        items = _items({0: 30, 1: 70})
        a = split_datalist(items, 0.2, seed=3)
        assert a == split_datalist(items, 0.2, seed=3)
        assert a != split_datalist(items, 0.2, seed=4)

    def test_stratified_disjoint_and_complete(self):
        items = _items({0: 10, 1: 90, 2: 3})
        train, val = split_datalist(items, 0.2, seed=0)
        assert Counter(it["label"] for it in val) == {0: 2, 1: 18, 2: 1}
        assert sorted(it["image"] for it in train + val) == sorted(it["image"] for it in items)
        assert not {it["image"] for it in train} & {it["image"] for it in val}

    def test_small_classes_keep_one_in_each_split(self):
        train, val = split_datalist(_items({0: 2, 1: 1}), 0.1, seed=0)
        assert Counter(it["label"] for it in val) == {0: 1}
        assert Counter(it["label"] for it in train) == {0: 1, 1: 1}

    def test_synthetic_items_stay_in_training(self):
        train, val = split_datalist(_items({0: 10, 1: 10}, synthetic=50), 0.5, seed=0)
        assert not any(it.get("synthetic") for it in val)
        assert sum(bool(it.get("synthetic")) for it in train) == 50
        assert len(val) == 10

    def test_mask_path_labels_are_not_stratified(self):
        items = [{"image": f"/i/{i}.png", "label": f"/m/{i}.png"} for i in range(10)]
        train, val = split_datalist(items, 0.3, seed=0)
        assert len(val) == 3 and len(train) == 7

    def test_zero_fraction_and_bad_fraction(self):
        items = _items({0: 5})
        assert split_datalist(items, 0.0) == (items, [])
        with pytest.raises(ValueError, match="val_fraction"):
            split_datalist(items, 1.0)


class TestSubsample:
    def test_stratified_with_at_least_one_per_class(self):
        items = _items({0: 100, 1: 900, 2: 5})
        sub = subsample(items, 0.01, seed=0)
        assert Counter(it["label"] for it in sub) == {0: 1, 1: 9, 2: 1}

    def test_deterministic_and_nested(self):
        items = _items({0: 50, 1: 150})
        small, large = subsample(items, 0.1, seed=7), subsample(items, 0.5, seed=7)
        assert small == subsample(items, 0.1, seed=7)
        assert {it["image"] for it in small} <= {it["image"] for it in large}
        assert small != subsample(items, 0.1, seed=8)

    def test_full_fraction_and_bad_fraction(self):
        items = _items({0: 3, 1: 3})
        assert subsample(items, 1.0) == items
        with pytest.raises(ValueError, match="fraction"):
            subsample(items, 0.0)
