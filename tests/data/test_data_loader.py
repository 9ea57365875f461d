from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from data_test_utils import SHARED, copy_ct_small, grey, write_image, write_mask

from monai_dclcstp.data import DatalistError, load_datalist, write_datalist

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "pneumoniamnist"


def _class_tree(root: Path, counts=None) -> Path:
    for c, n in (counts or {"neg": 20, "pos": 10}).items():
        for i in range(n):
            write_image(root / c / f"{c}_{i}.png", grey(seed=i))
    return root


class TestSources:
    @pytest.mark.parametrize("datalist, dataset_dir", [(None, None), ("", None), ("null", "")])
    def test_neither_source(self, datalist, dataset_dir):
        with pytest.raises(DatalistError, match="give exactly one of datalist .* got neither"):
            load_datalist(datalist, dataset_dir, task="classification")

    def test_both_sources(self, tmp_path):
        with pytest.raises(DatalistError, match="give exactly one of datalist .* got both"):
            load_datalist(SAMPLE / "datalist.json", tmp_path, task="classification")

    def test_default_is_used_when_neither_is_given(self, tmp_path):
        dl = load_datalist(None, None, task="classification", default=SAMPLE)
        assert len(dl["training"]) == 300
        _class_tree(tmp_path)
        assert load_datalist(None, tmp_path, task="classification", default=SAMPLE)["layout"] == "class-folders"

    def test_datalist_inside_dataset_dir_may_be_relative_to_it(self, tmp_path):
        _class_tree(tmp_path / "ds", {"a": 3, "b": 3})
        items = [{"image": f"a/a_{i}.png", "label": 0} for i in range(3)]
        items += [{"image": f"b/b_{i}.png", "label": 1} for i in range(3)]
        path = write_datalist({"training": items}, tmp_path / "ds" / "lists" / "fold0.json")
        dl = load_datalist(path, tmp_path / "ds", task="classification")
        assert dl["base_dir"] == str(tmp_path / "ds")
        assert all(Path(it["image"]).exists() for it in dl["training"] + dl["validation"])

    def test_swapped_kinds_are_understood(self, tmp_path):
        _class_tree(tmp_path / "ds")
        assert load_datalist(tmp_path / "ds", task="classification")["layout"] == "class-folders"
        assert load_datalist(dataset_dir=SAMPLE / "datalist.json", task="classification")["layout"] == "datalist"

    def test_unknown_task(self, tmp_path):
        with pytest.raises(DatalistError, match="task must be one of"):
            load_datalist(dataset_dir=tmp_path, task="detection")

    def test_embedded_sample_as_datalist_or_dataset_dir(self):
        a = load_datalist(SAMPLE / "datalist.json", task="classification")
        b = load_datalist(dataset_dir=SAMPLE, task="classification")
        c = load_datalist(SAMPLE, task="classification")  # a folder holding datalist.json
        assert len(a["training"]) == 300 and len(a["validation"]) == 100
        assert a["training"] == b["training"] == c["training"]
        assert Path(a["training"][0]["image"]).is_absolute() and Path(a["training"][0]["image"]).exists()
        assert a["classes"] == ["normal", "pneumonia"]

    def test_parsed_dict(self, tmp_path):
        dl = load_datalist({"training": [{"image": str(tmp_path / "a.png"), "label": 0}] * 5}, task="classification")
        assert len(dl["training"]) + len(dl["validation"]) == 5 and dl["classes"] == ["class_0"]

    def test_empty_folder_given_as_datalist(self, tmp_path):
        with pytest.raises(DatalistError, match="dataset_dir is empty"):
            load_datalist(tmp_path, task="pretrain")


class TestSplitting:
    def test_split_created_seeded_and_stratified(self, tmp_path):
        root = _class_tree(tmp_path)
        a = load_datalist(dataset_dir=root, task="classification", seed=1)
        assert a == load_datalist(dataset_dir=root, task="classification", seed=1)
        assert Counter(it["label"] for it in a["validation"]) == {0: 4, 1: 2}
        assert a["split"] == {"val_fraction": 0.2, "seed": 1, "stratify_key": "label"}
        assert a["validation"] != load_datalist(dataset_dir=root, task="classification", seed=2)["validation"]

    def test_existing_validation_split_is_kept(self):
        dl = load_datalist(dataset_dir=SAMPLE, task="classification", val_fraction=0.5)
        assert len(dl["validation"]) == 100 and "split" not in dl

    def test_unlabeled_pretraining_keeps_everything_for_training(self, tmp_path):
        for i in range(10):
            write_image(tmp_path / "x" / f"{i}.png")
        write_image(tmp_path / "top.png")
        dl = load_datalist(dataset_dir=tmp_path, task="pretrain")
        assert dl["layout"] == "image-folder" and len(dl["training"]) == 11 and dl["validation"] == []
        dl = load_datalist(dataset_dir=tmp_path, task="pretrain", val_fraction=0.2)
        assert len(dl["validation"]) == 2

    def test_train_fraction_subsamples_training_only(self, tmp_path):
        root = _class_tree(tmp_path, {"a": 50, "b": 50})
        full = load_datalist(dataset_dir=root, task="classification", seed=0)
        part = load_datalist(dataset_dir=root, task="classification", seed=0, train_fraction=0.1)
        assert part["validation"] == full["validation"]
        assert Counter(it["label"] for it in part["training"]) == {0: 4, 1: 4}
        assert {it["image"] for it in part["training"]} <= {it["image"] for it in full["training"]}

    def test_synthetic_items_never_reach_validation(self, tmp_path):
        items = [{"image": f"r{i}.png", "label": i % 2} for i in range(10)]
        items += [{"image": f"s{i}.png", "label": i % 2, "synthetic": True, "source": "ldm"} for i in range(30)]
        path = write_datalist({"training": items, "classes": ["a", "b"]}, tmp_path / "dl.json")
        dl = load_datalist(path, task="classification", val_fraction=0.3, train_fraction=0.5)
        assert not any(it.get("synthetic") for it in dl["validation"])
        assert sum(bool(it.get("synthetic")) for it in dl["training"]) == 30


class TestTaskAdaptation:
    def test_segmentation_layout_for_pretraining_drops_masks(self, tmp_path):
        for i in range(3):
            write_image(tmp_path / "images" / f"{i}.jpg")
            write_mask(tmp_path / "masks" / f"{i}.jpg")
        dl = load_datalist(dataset_dir=tmp_path, task="pretrain")
        assert all(set(it) == {"image", "source"} for it in dl["training"])
        assert "mask_threshold" not in dl and "classes" not in dl

    def test_classification_needs_class_labels(self, tmp_path):
        path = write_datalist({"training": [{"image": "a.png"}, {"image": "b.png", "label": 1}]}, tmp_path / "d.json")
        with pytest.raises(DatalistError, match=r"(?s)1 item\(s\) unusable for classification.*a\.png: no label"):
            load_datalist(path, task="classification")

    def test_segmentation_needs_masks(self, tmp_path):
        path = write_datalist({"training": [{"image": "a.png", "label": 0}]}, tmp_path / "d.json")
        with pytest.raises(DatalistError, match=r"a\.png: label 0; the segmentation task needs a mask path"):
            load_datalist(path, task="segmentation")

    def test_image_folder_for_segmentation_is_rejected_with_layouts(self, tmp_path):
        write_image(tmp_path / "a.png")
        with pytest.raises(DatalistError, match=r"(?s)no known segmentation dataset layout.*isic2018.*images-masks"):
            load_datalist(dataset_dir=tmp_path, task="segmentation")

    def test_empty_datalist(self, tmp_path):
        path = write_datalist({"training": []}, tmp_path / "d.json")
        with pytest.raises(DatalistError, match="no training items"):
            load_datalist(path, task="pretrain")


class TestFilesMonaiCanLoad:
    def test_tiff_converted_to_png(self, tmp_path):
        from monai.transforms import LoadImage

        arr = grey((12, 10))
        write_image(tmp_path / "data" / "a.tif", arr)
        dl = load_datalist(dataset_dir=tmp_path / "data", task="pretrain", cache_dir=tmp_path / "cache")
        item = dl["training"][0]
        assert item["image"].endswith("a.png") and item["image_original"].endswith("a.tif")
        np.testing.assert_array_equal(np.asarray(LoadImage(image_only=True)(item["image"])), arr.T)

    def test_dicom_folder_for_pretraining(self, tmp_path):
        copy_ct_small(tmp_path / "ct" / "CT_small.dcm")
        dl = load_datalist(dataset_dir=tmp_path, task="pretrain")
        assert [Path(it["image"]).name for it in dl["training"]] == ["CT_small.dcm"]

    def test_monai_dataset_loads_every_layout_item(self, tmp_path, pneumoniamnist_npz, npz_cache):
        from monai.data import Dataset
        from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

        dl = load_datalist(dataset_dir=pneumoniamnist_npz, task="classification", cache_dir=npz_cache)
        assert len(dl["training"]) == 3882 and len(dl["validation"]) == 524
        ds = Dataset(dl["validation"][:4], Compose([LoadImaged("image"), EnsureChannelFirstd("image")]))
        assert tuple(ds[0]["image"].shape) == (1, 28, 28) and ds[0]["label"] in (0, 1)


@pytest.mark.skipif(not SHARED.exists(), reason="shared data not available")
class TestSharedSegmentation:
    def test_kvasir_masks_load_and_binarize(self):
        from monai.data import Dataset
        from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

        from monai_dclcstp.data import binarize_mask

        dl = load_datalist(dataset_dir=SHARED / "kvasir-seg-sample", task="segmentation", seed=0)
        assert len(dl["training"]) == 4 and len(dl["validation"]) == 1 and dl["mask_threshold"] == 127
        item = Dataset(
            dl["validation"], Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"])])
        )[0]
        mask = binarize_mask(item["label"], dl["mask_threshold"])
        assert mask.shape[0] == 1 and mask.shape[1:] == item["image"].shape[1:]
        assert set(np.unique(mask.numpy()).tolist()) == {0.0, 1.0}

    def test_shared_data_written_datalist_round_trip(self, tmp_path):
        dl = load_datalist(dataset_dir=SHARED / "ph2", task="segmentation", seed=0)
        path = write_datalist(dl, tmp_path / "ph2.json")
        again = load_datalist(path, task="segmentation")
        assert again["training"] == dl["training"] and again["validation"] == dl["validation"]
        assert json.loads(path.read_text())["layout"] == "ph2"
