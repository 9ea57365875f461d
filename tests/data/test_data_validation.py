from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from data_test_utils import SHARED, copy_ct_small, grey, truncate, write_image, write_mask, write_nifti
from PIL import Image

from monai_dclcstp.data import DatalistError, load_datalist, validate_datalist

CLS = {"spatial_dims": 2, "in_channels": 1, "task": "classification", "classes": ["a", "b"]}
SEG = {"spatial_dims": 2, "in_channels": 3, "task": "segmentation"}


def _rgb(size=(16, 16), colour=True, seed=0) -> np.ndarray:
    g = grey(size, seed=seed)
    if not colour:
        return np.stack([g, g, g], -1)
    return np.stack([g, 255 - g, np.roll(g, 3)], -1)


def _fails(items, match: str, **kwargs) -> str:
    with pytest.raises(DatalistError, match=match) as err:
        validate_datalist(items, **{**CLS, **kwargs})
    return str(err.value)


class TestFileProblems:
    def test_good_items_pass(self, tmp_path):
        items = [{"image": str(write_image(tmp_path / f"{i}.png")), "label": i % 2} for i in range(4)]
        result = validate_datalist(items, **CLS)
        assert result.items == items and result.num_dropped == 0 and result.problems == [] and result.notes == {}

    def test_missing_file(self, tmp_path):
        _fails([{"image": str(tmp_path / "gone.png"), "label": 0}], r"gone\.png: file not found")

    def test_unsupported_extension(self, tmp_path):
        path = tmp_path / "a.gif"
        Image.fromarray(grey()).save(path)
        _fails([{"image": str(path), "label": 0}], r"a\.gif: unsupported file type '\.gif'")

    def test_empty_file(self, tmp_path):
        path = tmp_path / "zero.png"
        path.write_bytes(b"")
        _fails([{"image": str(path), "label": 0}], r"zero\.png: empty file \(0 bytes\)")

    def test_truncated_png(self, tmp_path):
        path = truncate(write_image(tmp_path / "cut.png", grey((64, 64))), 0.6)
        _fails([{"image": str(path), "label": 0}], r"cut\.png: corrupt or truncated image")

    def test_truncated_jpeg(self, tmp_path):
        path = truncate(write_image(tmp_path / "cut.jpg", grey((64, 64))), 0.6)
        _fails([{"image": str(path), "label": 0}], r"cut\.jpg: corrupt or truncated image")

    def test_truncated_large_jpeg_decoded_at_reduced_scale(self, tmp_path):
        big = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)  # above the draft limit
        path = truncate(write_image(tmp_path / "big.jpg", big), 0.9)
        _fails([{"image": str(path), "label": 0}], r"big\.jpg: corrupt or truncated image", in_channels=3)

    def test_not_an_image_with_image_suffix(self, tmp_path):
        path = tmp_path / "text.png"
        path.write_text("hello, I am not a PNG")
        _fails([{"image": str(path), "label": 0}], r"text\.png: corrupt or truncated image")

    def test_corrupt_dicom(self, tmp_path):
        path = tmp_path / "bad.dcm"
        path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 3)
        _fails([{"image": str(path), "label": 0}], r"bad\.dcm: .*DICOM")

    def test_truncated_nifti(self, tmp_path):
        path = truncate(write_nifti(tmp_path / "v.nii.gz", grey((32, 32)).astype(np.float32)), 0.5)
        _fails([{"image": str(path), "label": 0}], r"v\.nii\.gz: corrupt or truncated NIfTI")

    def test_tiff_without_itk_is_explained(self, tmp_path):
        pytest.importorskip("PIL")
        from monai_dclcstp.data import monai_can_read

        path = write_image(tmp_path / "a.tif")
        if monai_can_read(path):
            pytest.skip("itk installed: MONAI reads TIFF here")
        _fails([{"image": str(path), "label": 0}], r"a\.tif: MONAI cannot load '\.tif' files here .*convert")

    def test_empty_datalist(self):
        with pytest.raises(DatalistError, match="the datalist is empty"):
            validate_datalist([], **CLS)
        with pytest.raises(DatalistError, match="the datalist is empty"):
            validate_datalist({"training": [], "validation": []}, **CLS)

    def test_real_dicom_passes_in_2d_and_fails_in_3d(self, tmp_path):
        item = {"image": str(copy_ct_small(tmp_path / "CT_small.dcm"))}
        assert validate_datalist([item], spatial_dims=2, in_channels=1, task="pretrain").num_dropped == 0
        with pytest.raises(
            DatalistError, match=r"CT_small\.dcm: 2D image \(spatial shape 128x128\) but spatial_dims=3"
        ):
            validate_datalist([item], spatial_dims=3, in_channels=1, task="pretrain")

    def test_dicom_series_folder_is_3d(self, tmp_path):
        for i in range(3):
            copy_ct_small(tmp_path / "series" / f"{i}.dcm")
        validate_datalist([{"image": str(tmp_path / "series")}], spatial_dims=3, in_channels=1, task="pretrain")


class TestImageProperties:
    def test_colour_image_into_one_channel(self, tmp_path):
        path = write_image(tmp_path / "colour.png", _rgb())
        msg = _fails([{"image": str(path), "label": 0}], r"colour\.png: colour image \(3 channel\(s\) \(mode RGB\)\)")
        assert "set in_channels=3" in msg

    def test_colour_to_grey_can_be_allowed(self, tmp_path):
        path = write_image(tmp_path / "colour.png", _rgb())
        result = validate_datalist([{"image": str(path), "label": 0}], **CLS, allow_colour_to_grey=True)
        assert result.notes == {"colour averaged to 1 channel": 1}

    def test_grey_stored_as_rgb_and_grey_into_rgb_are_converted(self, tmp_path):
        grey_rgb = write_image(tmp_path / "greyrgb.jpg", _rgb(colour=False))
        assert validate_datalist([{"image": str(grey_rgb), "label": 0}], **CLS).notes == {
            "grey stored as colour averaged to 1 channel": 1
        }
        plain = write_image(tmp_path / "g.png")
        result = validate_datalist([{"image": str(plain), "label": 0}], **{**CLS, "in_channels": 3})
        assert result.notes == {"grey repeated to 3 channels": 1}

    def test_multi_channel_mismatch(self, tmp_path):
        la = tmp_path / "la.png"
        Image.fromarray(np.stack([grey(), grey(seed=1)], -1), mode="LA").save(la)
        _fails(
            [{"image": str(la), "label": 0}],
            r"la\.png: found 2 channel\(s\) \(mode LA\) but in_channels=3",
            in_channels=3,
        )
        files = [str(write_image(tmp_path / f"c_{i:04d}.png")) for i in range(2)]
        _fails([{"image": files, "label": 0}], r"c_0000\.png: found 2 channel\(s\) but in_channels=1")

    def test_palette_image(self, tmp_path):
        path = tmp_path / "pal.png"
        Image.fromarray(grey()).convert("P").save(path)
        _fails([{"image": str(path), "label": 0}], r"pal\.png: palette image")

    def test_smaller_than_min_size(self, tmp_path):
        path = write_image(tmp_path / "small.png", grey((20, 30)))
        _fails(
            [{"image": str(path), "label": 0}],
            r"small\.png: spatial shape 30x20 is smaller than min_size 32x32",
            min_size=32,
        )
        validate_datalist([{"image": str(path), "label": 0}], **CLS, min_size=(30, 20))

    def test_3d_volume_in_2d_config(self, tmp_path):
        path = write_nifti(tmp_path / "vol.nii.gz", np.zeros((8, 8, 4), np.float32))
        _fails(
            [{"image": str(path), "label": 0}], r"vol\.nii\.gz: 3D volume \(spatial shape 8x8x4\) but spatial_dims=2"
        )

    def test_2d_image_in_3d_config(self, tmp_path):
        path = write_image(tmp_path / "flat.png")
        _fails(
            [{"image": str(path), "label": 0}],
            r"flat\.png: 2D image \(spatial shape 16x16\) but spatial_dims=3",
            spatial_dims=3,
        )

    def test_nan_and_inf(self, tmp_path):
        arr = np.ones((8, 8), np.float32)
        arr[2, 3] = np.nan
        nan = write_nifti(tmp_path / "nan.nii.gz", arr)
        arr[2, 3] = np.inf
        inf = write_nifti(tmp_path / "inf.nii", arr)
        msg = _fails([{"image": str(nan), "label": 0}, {"image": str(inf), "label": 1}], "NaN or Inf")
        assert "nan.nii.gz: contains NaN or Inf values" in msg and "inf.nii: contains NaN or Inf values" in msg


class TestLabels:
    def test_label_outside_class_list(self, tmp_path):
        path = write_image(tmp_path / "x.png")
        _fails([{"image": str(path), "label": 2}], r"x\.png: label 2 is outside the class list \(0\.\.1\)")

    def test_label_not_an_index(self, tmp_path):
        path = write_image(tmp_path / "x.png")
        _fails([{"image": str(path), "label": "cat"}], r"x\.png: label 'cat' is not an int class index")
        _fails([{"image": str(path)}], r"x\.png: no label")

    def test_test_split_may_be_unlabeled(self, tmp_path):
        path = str(write_image(tmp_path / "x.png"))
        dl = {"training": [{"image": path, "label": 0}], "test": [{"image": path}], "classes": ["a", "b"]}
        assert validate_datalist(dl, **CLS).items == dl


class TestMasks:
    def _pair(self, tmp_path, mask_array=None, image_size=(16, 16), name="m.png"):
        image = write_image(tmp_path / "i.png", _rgb(image_size))
        mask = write_image(tmp_path / name, mask_array) if mask_array is not None else write_mask(tmp_path / name)
        return {"image": str(image), "label": str(mask)}

    def test_binary_mask_passes(self, tmp_path):
        validate_datalist([self._pair(tmp_path)], **SEG)

    def test_mask_not_binary(self, tmp_path):
        soft = (np.arange(256).reshape(16, 16)).astype(np.uint8)
        with pytest.raises(DatalistError, match=r"m\.png: mask is not binary: 256 distinct values in \[0, 255\]"):
            validate_datalist([self._pair(tmp_path, soft)], **SEG)
        with pytest.raises(DatalistError, match=r"m\.png: mask is not binary: 2 distinct values in \[1, 2\]"):
            validate_datalist([self._pair(tmp_path, np.where(soft > 100, 2, 1).astype(np.uint8))], **SEG)

    def test_threshold_makes_soft_masks_acceptable(self, tmp_path):
        soft = (np.arange(256).reshape(16, 16)).astype(np.uint8)
        validate_datalist([self._pair(tmp_path, soft)], **SEG, mask_threshold=127)
        item = {**self._pair(tmp_path, soft), "mask_threshold": 127}
        validate_datalist([item], **SEG)

    def test_multiclass_masks_with_classes(self, tmp_path):
        m = (np.arange(256).reshape(16, 16) % 3).astype(np.uint8)
        validate_datalist([self._pair(tmp_path, m)], **SEG, classes=["bg", "a", "b"])
        with pytest.raises(DatalistError, match=r"m\.png: mask is not binary: 3 distinct values in \[0, 2\]"):
            validate_datalist([self._pair(tmp_path, m)], **SEG, classes=["bg", "a"])
        m5 = (np.arange(256).reshape(16, 16) % 5).astype(np.uint8)
        with pytest.raises(DatalistError, match=r"m\.png: mask values \[0, 4\] are not class indices 0\.\.2"):
            validate_datalist([self._pair(tmp_path, m5)], **SEG, classes=["bg", "a", "b"])

    def test_mask_size_differs(self, tmp_path):
        item = self._pair(tmp_path, image_size=(16, 20))
        with pytest.raises(DatalistError, match=r"m\.png: mask size 16x16 differs from its image's 20x16"):
            validate_datalist([item], **SEG)

    def test_colour_mask(self, tmp_path):
        with pytest.raises(DatalistError, match=r"m\.png: colour mask \(3 channels that differ\)"):
            validate_datalist([self._pair(tmp_path, _rgb())], **SEG)

    def test_missing_and_corrupt_mask(self, tmp_path):
        item = self._pair(tmp_path)
        Path(item["label"]).unlink()
        with pytest.raises(DatalistError, match=r"m\.png: mask: file not found"):
            validate_datalist([item], **SEG)
        truncate(write_mask(Path(item["label"]), (64, 64)), 0.3)
        with pytest.raises(DatalistError, match=r"m\.png: mask: corrupt or truncated image"):
            validate_datalist([item], **SEG)

    def test_segmentation_item_without_mask(self, tmp_path):
        item = {"image": self._pair(tmp_path)["image"], "label": 1}
        with pytest.raises(DatalistError, match=r"i\.png: label 1 is not a mask path"):
            validate_datalist([item], **SEG)


class TestSkipAndReport:
    def _mixed(self, tmp_path, n_good=5, n_bad=3):
        good = [{"image": str(write_image(tmp_path / f"g{i}.png")), "label": 0} for i in range(n_good)]
        bad = [{"image": str(tmp_path / f"missing{i}.png"), "label": 0} for i in range(n_bad)]
        return good[:2] + bad + good[2:]

    def test_skip_invalid_drops_with_one_warning_per_file(self, tmp_path):
        items = self._mixed(tmp_path)
        with pytest.warns(UserWarning) as record:
            result = validate_datalist(items, **CLS, skip_invalid=True)
        messages = [str(w.message) for w in record if "skip_invalid" in str(w.message)]
        assert len(messages) == 3 and all("file not found; item dropped" in m for m in messages)
        assert result.num_dropped == 3 and len(result.items) == 5 and len(result.problems) == 3
        assert [Path(it["image"]).name for it in result.items] == [f"g{i}.png" for i in range(5)]

    def test_skip_invalid_with_a_datalist_dict(self, tmp_path):
        items = self._mixed(tmp_path)
        dl = {"training": items[:4], "validation": items[4:], "classes": ["a", "b"], "layout": "x"}
        with pytest.warns(UserWarning):
            result = validate_datalist(dl, **CLS, skip_invalid=True)
        assert result.items["layout"] == "x" and result.items["classes"] == ["a", "b"]
        assert len(result.items["training"]) == 2 and len(result.items["validation"]) == 3

    def test_skip_invalid_with_nothing_left(self, tmp_path):
        with pytest.warns(UserWarning), pytest.raises(DatalistError, match="no item is left"):
            validate_datalist([{"image": str(tmp_path / "a.png"), "label": 0}], **CLS, skip_invalid=True)

    def test_leakage_between_splits_is_warned(self, tmp_path):
        items = [{"image": str(write_image(tmp_path / f"{i}.png")), "label": i % 2} for i in range(3)]
        dl = {"training": items, "validation": items[:1], "classes": ["a", "b"]}
        with pytest.warns(
            UserWarning, match=r"1 validation image\(s\) are also in training \(leakage\), e.g. .*0\.png"
        ):
            validate_datalist(dl, **CLS)

    def test_listing_is_capped(self, tmp_path):
        items = [{"image": str(tmp_path / f"missing{i:02d}.png"), "label": 0} for i in range(30)]
        msg = _fails(items, "30 problem")
        assert msg.count("file not found") == 20 and "... and 10 more" in msg and "skip_invalid=True" in msg

    def test_few_hundred_small_pngs_are_fast(self, tmp_path):
        items = [
            {"image": str(write_image(tmp_path / f"{i}.png", grey((28, 28), seed=i))), "label": i % 2}
            for i in range(300)
        ]
        start = time.perf_counter()
        validate_datalist(items, **CLS)
        assert time.perf_counter() - start < 3.0  # well under a second on an idle 2-core machine


@pytest.mark.skipif(not SHARED.exists(), reason="shared data not available")
class TestSharedData:
    def test_kvasir_needs_its_recorded_threshold(self):
        dl = load_datalist(dataset_dir=SHARED / "kvasir-seg-sample", task="segmentation")
        result = validate_datalist(dl, spatial_dims=2, in_channels=3, task="segmentation", min_size=64)
        assert len(result.items["training"]) == 4 and result.num_dropped == 0
        items = [{k: v for k, v in it.items() if k != "mask_threshold"} for it in dl["training"]]
        with pytest.raises(DatalistError, match=r"masks/cju.*\.jpg: mask is not binary"):
            validate_datalist(items, spatial_dims=2, in_channels=3, task="segmentation")

    def test_isic_and_ph2_samples_pass(self):
        for name in ("isic-sample", "ph2"):
            dl = load_datalist(dataset_dir=SHARED / name, task="segmentation")
            validate_datalist(dl, spatial_dims=2, in_channels=3, task="segmentation", min_size=128)

    def test_embedded_sample_passes_for_rgb_networks(self):
        sample = Path(__file__).resolve().parents[2] / "data" / "samples" / "pneumoniamnist"
        dl = load_datalist(sample, task="classification")
        result = validate_datalist(dl, spatial_dims=2, in_channels=3, task="classification", min_size=28)
        assert result.notes == {"grey repeated to 3 channels": 400}
