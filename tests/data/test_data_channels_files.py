from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_test_utils import copy_ct_small, write_image

from monai_dclcstp.data import adapt_channels, binarize_mask, channel_policy, is_dicom_file
from monai_dclcstp.data.files import drop_sibling_masks, file_stem, file_suffix


class TestChannelPolicy:
    @pytest.mark.parametrize(
        "found, in_channels, grey_colour, mode, ok, text",
        [
            (3, 3, None, "RGB", True, ""),
            (1, 3, None, "L", True, "grey repeated to 3 channels"),
            (4, 3, None, "RGBA", True, "alpha dropped"),
            (2, 1, None, "LA", True, "alpha dropped"),
            (3, 1, True, "RGB", True, "grey stored as colour averaged to 1 channel"),
            (3, 1, False, "RGB", False, "colour image"),
            (4, 3, None, None, False, "no automatic conversion"),
            (5, 3, None, None, False, "found 5 channel(s) but in_channels=3"),
        ],
    )
    def test_cases(self, found, in_channels, grey_colour, mode, ok, text):
        got_ok, got_text = channel_policy(found, in_channels, grey_colour, mode)
        assert got_ok == ok and text in got_text


class TestAdaptChannels:
    @pytest.mark.parametrize("spatial", [(5, 6), (4, 5, 6)])
    def test_repeat_grey_tensor_and_array(self, spatial):
        x = torch.rand(1, *spatial)
        y = adapt_channels(x, 3)
        assert y.shape == (3, *spatial) and torch.equal(y[2], x[0])
        z = adapt_channels(x.numpy(), 3)
        assert z.shape == (3, *spatial)

    def test_drop_alpha_and_average(self):
        rgba = torch.stack([torch.full((4, 4), v) for v in (10, 20, 30, 255)]).to(torch.uint8)
        assert torch.equal(adapt_channels(rgba, 3), rgba[:3])
        grey = adapt_channels(rgba, 1)
        assert grey.shape == (1, 4, 4) and grey.dtype == torch.float32 and float(grey[0, 0, 0]) == 20.0
        assert adapt_channels(np.ones((3, 2, 2), np.uint8), 1).dtype == np.float32

    def test_metatensor_keeps_meta(self):
        from monai.data import MetaTensor

        x = MetaTensor(torch.rand(1, 4, 4), meta={"filename_or_obj": "a.png"})
        y = adapt_channels(x, 3)
        assert isinstance(y, MetaTensor) and y.meta["filename_or_obj"] == "a.png"

    def test_unsupported(self):
        with pytest.raises(ValueError, match="cannot adapt an image with 5 channels to in_channels=3"):
            adapt_channels(torch.zeros(5, 2, 2), 3)


class TestBinarizeMask:
    def test_threshold_and_first_channel(self):
        mask = torch.tensor([[[0, 100, 128, 255]]] * 3, dtype=torch.float32)  # (3, 1, 4), RGB-stored
        assert binarize_mask(mask).tolist() == [[[0.0, 1.0, 1.0, 1.0]]]
        assert binarize_mask(mask, 127).tolist() == [[[0.0, 0.0, 1.0, 1.0]]]
        assert binarize_mask(mask.numpy(), 127).dtype == np.float32


class TestFiles:
    def test_suffix_and_stem(self):
        assert file_suffix("/a/b.NII.GZ") == ".nii.gz" and file_stem("/a/ISIC_1.nii.gz") == "ISIC_1"
        assert file_suffix("IM0001") == "" and file_stem("x.seg.nrrd") == "x"

    def test_dicom_sniffing(self, tmp_path):
        assert is_dicom_file(copy_ct_small(tmp_path / "IM0001"))
        (tmp_path / "IM0002").write_bytes(b"\0" * 300)
        assert not is_dicom_file(tmp_path / "IM0002")
        assert not is_dicom_file(write_image(tmp_path / "a.png"))

    def test_sibling_masks(self, tmp_path):
        paths = [Path(tmp_path / n) for n in ("benign (1).png", "benign (1)_mask.png", "benign (1)_mask_1.png")]
        paths += [Path(tmp_path / "lone_mask.png")]  # no "lone" image: kept as an image
        images, masks = drop_sibling_masks(paths)
        assert [p.name for p in images] == ["benign (1).png", "lone_mask.png"]
        assert [p.name for p in masks] == ["benign (1)_mask.png", "benign (1)_mask_1.png"]
