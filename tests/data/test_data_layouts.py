from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from data_test_utils import SHARED, copy_ct_small, grey, write_image, write_mask, write_nifti

from monai_dclcstp.data import DatalistError, detect_layout, read_layout, read_npz

# ----------------------------------------------------------------------------------------------- MedMNIST npz


def _npz(path: Path, splits=("train", "val", "test"), n=6, shape=(28, 28)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for s in splits:
        arrays[f"{s}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


class TestMedMNIST:
    def test_exports_png_that_loadimage_reads_back(self, tmp_path):
        from monai.transforms import LoadImage

        npz = _npz(tmp_path / "pneumoniamnist.npz")
        dl = read_layout(npz, "classification", cache_dir=tmp_path / "cache")
        assert dl["layout"] == "medmnist-npz"
        assert [len(dl[k]) for k in ("training", "validation", "test")] == [6, 6, 6]
        assert dl["classes"] == ["normal", "pneumonia"]
        item = dl["validation"][3]
        assert Path(item["image"]).name == "val_00003.png" and item["label"] == 1
        assert item["source"] == "pneumoniamnist/val/3"
        loaded = LoadImage(image_only=True)(item["image"])
        expected = np.load(npz)["val_images"][3]
        np.testing.assert_array_equal(np.asarray(loaded), expected.T)  # PILReader returns (W, H)

    def test_second_call_reuses_the_files(self, tmp_path):
        npz = _npz(tmp_path / "x.npz", splits=("train",))
        first = read_npz(npz, cache_dir=tmp_path / "c")
        path = Path(first["training"][0]["image"])
        stamp = path.stat().st_mtime_ns
        assert read_npz(npz, cache_dir=tmp_path / "c") == first
        assert path.stat().st_mtime_ns == stamp
        assert first["classes"] == ["class_0", "class_1"]

    def test_3d_arrays_become_nifti(self, tmp_path):
        npz = _npz(tmp_path / "organmnist3d.npz", splits=("train",), n=2, shape=(8, 8, 8))
        dl = read_npz(npz, cache_dir=tmp_path / "c")
        assert dl["training"][0]["image"].endswith("train_00000.nii.gz")

    def test_folder_with_one_npz_is_detected(self, tmp_path):
        _npz(tmp_path / "breastmnist.npz")
        assert detect_layout(tmp_path, "classification") == "medmnist-npz"
        assert read_layout(tmp_path, "classification", cache_dir=tmp_path / "c")["classes"][0] == "malignant"

    def test_real_pneumoniamnist_train_val_only(self, pneumoniamnist_npz, npz_cache):
        dl = read_npz(pneumoniamnist_npz, cache_dir=npz_cache)
        assert len(dl["training"]) == 3882 and len(dl["validation"]) == 524 and "test" not in dl
        assert Counter(it["label"] for it in dl["training"]) == {0: 388, 1: 3494}


# ----------------------------------------------------------------------------------------------- classification


def _kermany(root: Path) -> Path:
    for split in ("train", "val", "test"):
        write_image(root / split / "NORMAL" / f"IM-000{split}-0001.jpeg")
        write_image(root / split / "PNEUMONIA" / f"person1_bacteria_{split}.jpeg")
        write_image(root / split / "PNEUMONIA" / f"person2_virus_{split}.jpeg")
    (root / "__MACOSX").mkdir()
    return root


class TestClassification:
    def test_kermany_two_and_three_classes(self, tmp_path):
        root = _kermany(tmp_path / "chest_xray")
        assert detect_layout(tmp_path, "classification") == "kermany"  # wrapper folder skipped
        two = read_layout(root, "classification")
        assert two["classes"] == ["normal", "pneumonia"]
        assert Counter(it["label"] for it in two["training"]) == {0: 1, 1: 2}
        assert {k: len(two[k]) for k in ("training", "validation", "test")} == {
            "training": 3,
            "validation": 3,
            "test": 3,
        }
        three = read_layout(root, "classification", three_class=True)
        assert three["classes"] == ["normal", "bacterial", "viral"]
        labels = {Path(it["image"]).name: it["label"] for it in three["test"]}
        assert labels == {"IM-000test-0001.jpeg": 0, "person1_bacteria_test.jpeg": 1, "person2_virus_test.jpeg": 2}

    def test_kermany_three_class_untyped_file_is_named(self, tmp_path):
        root = _kermany(tmp_path / "cx")
        write_image(root / "train" / "PNEUMONIA" / "person9_unknown.jpeg")
        with pytest.raises(DatalistError, match=r"person9_unknown\.jpeg: pneumonia image whose name says neither"):
            read_layout(root, "classification", three_class=True)

    def test_class_folders_sorted_recursive_without_masks(self, tmp_path):
        write_image(tmp_path / "malignant" / "a" / "m1.png")
        write_image(tmp_path / "benign" / "b1.bmp")
        write_image(tmp_path / "benign" / "b2.png")
        write_mask(tmp_path / "benign" / "b2_mask.png")  # BUSI-style mask beside its image
        write_mask(tmp_path / "normal" / "masks" / "n1.png")  # mask folder
        write_image(tmp_path / "normal" / "n1.jpg")
        (tmp_path / "normal" / "notes.txt").write_text("x")
        assert detect_layout(tmp_path, "classification") == "class-folders"
        dl = read_layout(tmp_path, "classification")
        assert dl["classes"] == ["benign", "malignant", "normal"]
        got = sorted((Path(it["image"]).name, it["label"]) for it in dl["training"])
        assert got == [("b1.bmp", 0), ("b2.png", 0), ("m1.png", 1), ("n1.jpg", 2)]

    def test_class_folders_under_split_folders(self, tmp_path):
        for split in ("train", "valid"):
            for c in ("cat", "dog"):
                write_image(tmp_path / split / c / "x.png")
        write_image(tmp_path / "test" / "unlabeled.png")
        dl = read_layout(tmp_path, "classification")
        assert dl["layout"] == "class-folders" and dl["classes"] == ["cat", "dog"]
        assert len(dl["training"]) == 2 and len(dl["validation"]) == 2
        assert dl["test"] == [{"image": str(tmp_path / "test" / "unlabeled.png"), "source": tmp_path.name}]


# ----------------------------------------------------------------------------------------------- image folder


class TestImageFolder:
    def test_all_formats_recursive_and_masks_skipped(self, tmp_path):
        write_image(tmp_path / "a.png")
        write_image(tmp_path / "sub" / "b.JPG")
        write_image(tmp_path / "sub" / "deeper" / "c.bmp")
        write_image(tmp_path / "d.tif")
        copy_ct_small(tmp_path / "dcm" / "e.dcm")
        copy_ct_small(tmp_path / "dcm" / "IM0001")  # extension-less DICOM
        write_nifti(tmp_path / "f.nii.gz", np.zeros((4, 4, 4), np.float32))
        (tmp_path / "readme.txt").write_text("not an image")
        (tmp_path / "IM_not_dicom").write_bytes(b"\0" * 200)
        write_mask(tmp_path / "labels" / "a.png")
        write_image(tmp_path / "._a.png")  # macOS resource fork
        assert detect_layout(tmp_path, "pretrain") == "image-folder"
        dl = read_layout(tmp_path, "pretrain")
        names = sorted(Path(it["image"]).name for it in dl["training"])
        assert names == ["IM0001", "a.png", "b.JPG", "c.bmp", "d.tif", "e.dcm", "f.nii.gz"]
        assert all("label" not in it for it in dl["training"])

    def test_3d_groups_dicom_series_and_skips_2d(self, tmp_path):
        for i in range(3):
            copy_ct_small(tmp_path / "series1" / f"{i}.dcm")
        write_nifti(tmp_path / "vol.nii.gz", np.zeros((4, 4, 4), np.float32))
        write_image(tmp_path / "slice.png")
        with pytest.warns(UserWarning, match="skipped 1 2D raster"):
            dl = read_layout(tmp_path, "pretrain", spatial_dims=3)
        assert sorted(it["image"] for it in dl["training"]) == [str(tmp_path / "series1"), str(tmp_path / "vol.nii.gz")]

    def test_image_folder_is_not_a_classification_layout(self, tmp_path):
        write_image(tmp_path / "a.png")
        with pytest.raises(DatalistError, match=r"(?s)no known classification dataset layout.*Layouts tried:.*kermany"):
            detect_layout(tmp_path, "classification")

    def test_empty_and_missing_folder(self, tmp_path):
        with pytest.raises(DatalistError, match="dataset_dir is empty"):
            detect_layout(tmp_path, "pretrain")
        with pytest.raises(DatalistError, match="does not exist"):
            detect_layout(tmp_path / "nope", "pretrain")

    def test_folder_without_images_lists_layouts(self, tmp_path):
        (tmp_path / "notes.txt").write_text("x")
        with pytest.raises(DatalistError, match=r"(?s)no known pretrain dataset layout.*image-folder"):
            detect_layout(tmp_path, "pretrain")


# ----------------------------------------------------------------------------------------------- segmentation


def _isic2018(root: Path) -> Path:
    for split, n in (("Training", 3), ("Validation", 2), ("Test", 1)):
        for i in range(n):
            write_image(root / f"ISIC2018_Task1-2_{split}_Input" / f"ISIC_{split[0]}{i:06d}.jpg", grey((16, 20)))
            write_mask(
                root / f"ISIC2018_Task1_{split}_GroundTruth" / f"ISIC_{split[0]}{i:06d}_segmentation.png", (16, 20)
            )
        (root / f"ISIC2018_Task1-2_{split}_Input" / "ATTRIBUTION.txt").write_text("cc")
    write_image(root / "ISIC2018_Task1-2_Training_Input" / "ISIC_T000000_superpixels.png")
    write_image(root / "ISIC2018_Task3_Training_Input" / "ISIC_9.jpg")  # classification task: ignored
    return root


class TestSegmentation:
    def test_isic2018(self, tmp_path):
        root = _isic2018(tmp_path)
        assert detect_layout(root, "segmentation") == "isic2018"
        dl = read_layout(root, "segmentation")
        assert [len(dl[k]) for k in ("training", "validation", "test")] == [3, 2, 1]
        item = dl["training"][0]
        assert Path(item["image"]).name == "ISIC_T000000.jpg"
        assert Path(item["label"]).name == "ISIC_T000000_segmentation.png"
        assert "mask_threshold" not in dl and dl["classes"] == ["background", "lesion"]

    def test_isic2018_test_without_ground_truth(self, tmp_path):
        root = _isic2018(tmp_path)
        for p in (root / "ISIC2018_Task1_Test_GroundTruth").iterdir():
            p.unlink()
        (root / "ISIC2018_Task1_Test_GroundTruth").rmdir()
        dl = read_layout(root, "segmentation")
        assert dl["test"] == [
            {"image": str(root / "ISIC2018_Task1-2_Test_Input" / "ISIC_T000000.jpg"), "source": "isic2018"}
        ]

    def test_unpaired_files_are_listed(self, tmp_path):
        write_image(tmp_path / "images" / "a.png")
        write_image(tmp_path / "images" / "b.png")
        write_mask(tmp_path / "masks" / "a_mask.png")
        write_mask(tmp_path / "masks" / "zzz.png")
        with pytest.raises(DatalistError) as err:
            read_layout(tmp_path, "segmentation")
        msg = str(err.value)
        assert "2 unpaired file(s)" in msg
        assert f"{tmp_path / 'images' / 'b.png'}: image has no mask" in msg
        assert f"{tmp_path / 'masks' / 'zzz.png'}: mask has no image with stem 'zzz'" in msg

    def test_allow_unpaired_drops_with_warnings(self, tmp_path):
        write_image(tmp_path / "images" / "a.png")
        write_image(tmp_path / "images" / "b.png")
        write_mask(tmp_path / "masks" / "a.png")
        with pytest.warns(UserWarning, match=r"b\.png: image has no mask"):
            dl = read_layout(tmp_path, "segmentation", allow_unpaired=True)
        assert [Path(it["image"]).name for it in dl["training"]] == ["a.png"]

    def test_pretraining_on_a_segmentation_layout_uses_images_only(self, tmp_path):
        write_image(tmp_path / "images" / "a.png")
        write_image(tmp_path / "images" / "b.png")
        write_mask(tmp_path / "masks" / "a.png")
        assert detect_layout(tmp_path, "pretrain") == "images-masks"
        dl = read_layout(tmp_path, "pretrain")
        assert [Path(it["image"]).name for it in dl["training"]] == ["a.png", "b.png"]
        assert all("label" not in it for it in dl["training"])

    def test_split_subfolders_and_jpeg_masks(self, tmp_path):
        for split in ("train", "val"):
            write_image(tmp_path / split / "images" / "p.jpg")
            write_mask(tmp_path / split / "masks" / "p.jpg")
        dl = read_layout(tmp_path, "segmentation")
        assert len(dl["training"]) == 1 and len(dl["validation"]) == 1
        assert dl["mask_threshold"] == 127 and dl["training"][0]["mask_threshold"] == 127

    def test_nnunet_channels_form_one_item(self, tmp_path):
        for case in ("c1", "c2"):
            for ch in range(2):
                write_nifti(tmp_path / "imagesTr" / f"{case}_{ch:04d}.nii.gz", np.zeros((4, 4, 4), np.float32))
            write_nifti(tmp_path / "labelsTr" / f"{case}.nii.gz", np.zeros((4, 4, 4), np.uint8))
        write_nifti(tmp_path / "imagesTs" / "c3_0000.nii.gz", np.zeros((4, 4, 4), np.float32))
        write_nifti(tmp_path / "imagesTs" / "c3_0001.nii.gz", np.zeros((4, 4, 4), np.float32))
        (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": 1}}))
        assert detect_layout(tmp_path, "segmentation") == "images-masks"
        dl = read_layout(tmp_path, "segmentation")
        item = dl["training"][0]
        assert [Path(p).name for p in item["image"]] == ["c1_0000.nii.gz", "c1_0001.nii.gz"]
        assert Path(item["label"]).name == "c1.nii.gz"
        assert len(dl["test"]) == 1 and len(dl["test"][0]["image"]) == 2

    def test_numbered_stems_are_not_taken_for_nnunet_channels(self, tmp_path):
        for i in (1, 2):
            write_image(tmp_path / "images" / f"patient_{i:04d}.png")
            write_mask(tmp_path / "masks" / f"patient_{i:04d}.png")
        dl = read_layout(tmp_path, "segmentation")
        assert [Path(it["image"]).name for it in dl["training"]] == ["patient_0001.png", "patient_0002.png"]

    def test_msd_dataset_json(self, tmp_path):
        write_nifti(tmp_path / "imagesTr" / "s_1.nii.gz", np.zeros((4, 4, 4), np.float32))
        write_nifti(tmp_path / "labelsTr" / "s_1.nii.gz", np.zeros((4, 4, 4), np.uint8))
        msd = {
            "labels": {"0": "background", "1": "spleen"},
            "training": [{"image": "./imagesTr/s_1.nii.gz", "label": "./labelsTr/s_1.nii.gz"}],
            "test": ["./imagesTs/s_2.nii.gz"],
        }
        (tmp_path / "dataset.json").write_text(json.dumps(msd))
        assert detect_layout(tmp_path, "segmentation") == "datalist-json"
        dl = read_layout(tmp_path, "segmentation")
        assert dl["classes"] == ["background", "spleen"]
        assert dl["training"][0]["label"] == str(tmp_path / "labelsTr" / "s_1.nii.gz")
        assert dl["test"] == [{"image": str(tmp_path / "imagesTs" / "s_2.nii.gz")}]

    def test_ph2_original_release(self, tmp_path):
        root = tmp_path / "PH2Dataset" / "PH2 Dataset images"
        for case in ("IMD002", "IMD003"):
            write_image(root / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp")
            write_mask(root / case / f"{case}_lesion" / f"{case}_lesion.bmp")
            write_mask(root / case / f"{case}_roi" / f"{case}_R1_Label4.bmp")
        assert detect_layout(tmp_path, "segmentation") == "ph2"
        dl = read_layout(tmp_path, "segmentation")
        assert [(Path(it["image"]).name, Path(it["label"]).name) for it in dl["training"]] == [
            ("IMD002.bmp", "IMD002_lesion.bmp"),
            ("IMD003.bmp", "IMD003_lesion.bmp"),
        ]


@pytest.mark.skipif(not SHARED.exists(), reason="shared data not available")
class TestSharedSamples:
    def test_isic_sample(self):
        dl = read_layout(SHARED / "isic-sample", "segmentation")
        assert dl["layout"] == "images-masks" and len(dl["training"]) == 5 and "mask_threshold" not in dl
        for it in dl["training"]:
            assert Path(it["image"]).stem == Path(it["label"]).stem

    def test_kvasir_sample_records_the_jpeg_threshold(self):
        dl = read_layout(SHARED / "kvasir-seg-sample", "segmentation")
        assert dl["layout"] == "images-masks" and len(dl["training"]) == 5
        assert dl["mask_threshold"] == 127 and all(it["mask_threshold"] == 127 for it in dl["training"])

    def test_ph2_with_diagnosis(self):
        seg = read_layout(SHARED / "ph2", "segmentation")
        assert seg["layout"] == "ph2" and len(seg["training"]) == 140
        assert seg["training"][0]["label"].endswith("IMD004_lesion.png") and seg["training"][0]["diagnosis"] == 1
        cls = read_layout(SHARED / "ph2", "classification")
        assert cls["classes"] == ["common_nevus", "atypical_nevus", "melanoma"]
        assert set(Counter(it["label"] for it in cls["training"])) == {0, 1, 2}
        assert all(not it["image"].endswith(".png") for it in cls["training"])

    def test_detect_each(self):
        assert detect_layout(SHARED / "isic-sample", "segmentation") == "images-masks"
        assert detect_layout(SHARED / "ph2", "pretrain") == "ph2"
        assert detect_layout(SHARED / "pneumoniamnist", "classification") == "medmnist-npz"
        assert os.path.isdir(SHARED / "kvasir-seg-sample" / "masks")


class TestCsvLabels:
    def test_ham10000_style_metadata(self, tmp_path):
        rows = ["lesion_id,image_id,dx,age"]
        for i, dx in enumerate(["nv", "mel", "nv", "bkl", "nv"]):
            write_image(tmp_path / f"HAM10000_images_part_{i % 2 + 1}" / f"ISIC_{i:07d}.jpg")
            rows.append(f"HAM_{i},ISIC_{i:07d},{dx},{40 + i}")
        write_image(tmp_path / "HAM10000_images_part_1" / "ISIC_9999999.jpg")  # no row
        (tmp_path / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
        assert detect_layout(tmp_path, "classification") == "csv-labels"
        with pytest.warns(UserWarning, match="1 image"):
            dl = read_layout(tmp_path, "classification")
        assert dl["classes"] == ["bkl", "mel", "nv"]
        assert [(Path(it["image"]).name, it["label"]) for it in dl["training"]] == [
            ("ISIC_0000000.jpg", 2),
            ("ISIC_0000001.jpg", 1),
            ("ISIC_0000002.jpg", 2),
            ("ISIC_0000003.jpg", 0),
            ("ISIC_0000004.jpg", 2),
        ]

    def test_isic_task3_one_hot_with_split_csvs(self, tmp_path):
        header = "image,MEL,NV,BCC"
        for split, onehots in (("Training", ["1,0,0", "0,0,1"]), ("Validation", ["0,1,0"])):
            lines = [header]
            for i, oh in enumerate(onehots):
                name = f"ISIC_{split[0]}{i}"
                write_image(tmp_path / f"ISIC2018_Task3_{split}_Input" / f"{name}.jpg")
                lines.append(f"{name},{oh.replace('1', '1.0')}")
            gt = tmp_path / f"ISIC2018_Task3_{split}_GroundTruth"
            gt.mkdir()
            (gt / f"ISIC2018_Task3_{split}_GroundTruth.csv").write_text("\n".join(lines) + "\n")
        assert detect_layout(tmp_path, "classification") == "csv-labels"
        dl = read_layout(tmp_path, "classification")
        assert dl["classes"] == ["mel", "nv", "bcc"]
        assert [it["label"] for it in dl["training"]] == [0, 2] and [it["label"] for it in dl["validation"]] == [1]

    def test_csv_that_names_no_image_is_ignored(self, tmp_path):
        write_image(tmp_path / "a.png")
        (tmp_path / "stats.csv").write_text("subject,score\nx,1\ny,2\n")
        assert detect_layout(tmp_path, "pretrain") == "image-folder"
