from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_dclcstp.utils import IntensityFromDescription, intensity_description, intensity_transform


def test_auto_divides_8_bit_and_scales_other_types_by_percentiles():
    scale = IntensityFromDescription("auto")
    u8 = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    assert torch.allclose(scale(u8), torch.tensor([[[0.0, 0.2, 1.0]]]))
    ct = torch.linspace(-1000, 3000, 1000).reshape(1, 10, 100)
    out = scale(ct)
    assert out.dtype == torch.float32 and float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert float(out.reshape(-1)[500]) == pytest.approx(0.5, abs=0.01)  # the middle stays in the middle
    u16 = (np.arange(100, dtype=np.uint16) * 40).reshape(1, 10, 10)
    assert float(torch.as_tensor(scale(u16)).max()) == 1.0  # not divided by 255


@pytest.mark.parametrize(
    "desc, value, expected",
    [
        ({"mode": "divide", "divisor": 100}, 50.0, 0.5),
        ({"mode": "window", "a_min": -1000, "a_max": 1000}, 0.0, 0.5),
        ({"mode": "window", "a_min": -1000, "a_max": 1000}, 5000.0, 1.0),
        ({"mode": "window", "a_min": 0, "a_max": 10, "output_range": [-1, 1]}, 5.0, 0.0),
    ],
)
def test_fixed_modes(desc, value, expected):
    img = torch.full((1, 4, 4), value)
    img[0, 0, 0] = 0.0
    assert float(IntensityFromDescription(desc)(img)[0, 1, 1]) == pytest.approx(expected)


def test_minmax_constant_and_metatensor_kept():
    img = MetaTensor(torch.full((1, 3, 3), 7.0), meta={"filename_or_obj": "x.nii.gz"})
    out = IntensityFromDescription("minmax")(img)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.nii.gz"
    assert torch.equal(out.as_tensor(), torch.zeros(1, 3, 3))


def test_description_round_trip_and_errors():
    desc = intensity_description("percentile", lower=1, upper=99)
    assert desc["mode"] == "percentile" and desc["lower"] == 1.0 and desc["output_range"] == [0.0, 1.0]
    assert "percentiles 1-99" in desc["text"]
    assert intensity_description(desc) == desc  # a recorded description rebuilds itself
    assert intensity_transform({"intensity": desc}, keys="image").scaler.description == desc  # a whole sidecar
    d = intensity_transform("auto", keys=["image"])({"image": torch.tensor([[[255]]], dtype=torch.uint8), "y": 1})
    assert float(d["image"]) == 1.0 and d["y"] == 1
    with pytest.raises(ValueError, match="unknown intensity mode"):
        intensity_description("zscore")
    with pytest.raises(ValueError, match="unknown"):
        intensity_description("divide", lower=1)
    with pytest.raises(ValueError, match="lower < upper"):
        intensity_description("percentile", lower=90, upper=10)
    with pytest.raises(ValueError, match="a_min < a_max"):
        intensity_description("window", a_min=1, a_max=0)
