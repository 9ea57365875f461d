"""Determinism (set_random_state, set_determinism + DataLoader), MetaTensor input, dictionary wrappers (one draw for
all keys), MONAI Dataset + DataLoader collating views and geometry."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose
from monai.utils import set_determinism

from monai_dclcstp.losses import token_centres
from monai_dclcstp.transforms import (
    GEOMETRY_META_KEY,
    RandIntensityJitterd,
    RandShotNoised,
    RandViewFlip,
    RandViewFlipd,
    RandViewResizedCrop,
    RandViewResizedCropd,
    TwoViewAugment,
    TwoViewAugmentD,
    TwoViewAugmentd,
    TwoViewAugmentDict,
)


def _image(shape=(1, 40, 36), seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape, size", [((1, 40, 36), 24), ((3, 40, 36), (24, 20)), ((1, 20, 18, 16), 12)])
def test_set_random_state_determinism(shape, size):
    img = _image(shape)
    a = TwoViewAugment(size, blur_prob=1.0, noise_prob=1.0).set_random_state(7)(img)
    b = TwoViewAugment(size, blur_prob=1.0, noise_prob=1.0).set_random_state(7)(img)
    c = TwoViewAugment(size, blur_prob=1.0, noise_prob=1.0).set_random_state(8)(img)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    assert not torch.equal(a[0], a[2])  # the two views differ
    out_size = (size,) * (len(shape) - 1) if isinstance(size, int) else size
    assert a[0].shape == a[2].shape == (shape[0], *out_size)
    assert a[1].shape == a[3].shape == (3, len(shape) - 1)
    # re-seeding the same instance replays it
    augment = TwoViewAugment(size).set_random_state(7)
    first = augment(img)
    augment.set_random_state(7)
    assert all(torch.equal(x, y) for x, y in zip(first, augment(img)))


def _loader_batches(seed, data):
    set_determinism(seed)
    try:
        transform = Compose([TwoViewAugmentd(keys="image", spatial_size=16)])
        loader = DataLoader(Dataset(data, transform), batch_size=2, num_workers=0)
        return [batch for batch in loader]
    finally:
        set_determinism(None)


def test_set_determinism_with_dataloader():
    data = [{"image": _image(seed=i)} for i in range(4)]
    a, b, c = _loader_batches(3, data), _loader_batches(3, data), _loader_batches(4, data)
    for key in ("view1", "view2", "geometry1", "geometry2"):
        assert all(torch.equal(x[key], y[key]) for x, y in zip(a, b))
    assert not all(torch.equal(x["geometry1"], y["geometry1"]) for x, y in zip(a, c))


def test_dataset_dataloader_collates_geometry():
    data = [{"image": _image(seed=i), "label": i % 2} for i in range(5)]
    transform = Compose([TwoViewAugmentd(keys="image", spatial_size=(16, 12))])
    loader = DataLoader(Dataset(data, transform), batch_size=2, num_workers=0)
    batches = list(loader)
    assert [b["view1"].shape[0] for b in batches] == [2, 2, 1]
    batch = batches[0]
    assert set(batch) == {"view1", "view2", "geometry1", "geometry2", "label"}
    assert batch["view1"].shape == batch["view2"].shape == (2, 1, 16, 12)
    assert batch["geometry1"].shape == batch["geometry2"].shape == (2, 3, 2)
    assert batch["geometry1"].dtype == torch.float32
    centres, _ = token_centres(batch["geometry1"], (2, 2))  # the collated geometry feeds the loss directly
    assert centres.shape == (2, 4, 2)
    # 3D volumes collate to (B, 3, 3)
    data3d = [{"image": _image((1, 12, 12, 10), seed=i)} for i in range(2)]
    batch3d = next(iter(DataLoader(Dataset(data3d, TwoViewAugmentd(keys="image", spatial_size=8)), batch_size=2)))
    assert batch3d["view1"].shape == (2, 1, 8, 8, 8) and batch3d["geometry2"].shape == (2, 3, 3)


def test_metatensor_input():
    img = MetaTensor(_image(), affine=torch.eye(3), meta={"filename_or_obj": "a.png"})
    v1, g1, v2, g2 = TwoViewAugment(16).set_random_state(0)(img)
    assert v1.shape == (1, 16, 16) and g1.shape == (3, 2)
    crop = RandViewResizedCropd(keys="image", spatial_size=16).set_random_state(0)({"image": img})["image"]
    assert isinstance(crop, MetaTensor) and crop.meta["filename_or_obj"] == "a.png"
    assert GEOMETRY_META_KEY in crop.meta and GEOMETRY_META_KEY not in img.meta  # input metadata untouched


def test_two_view_dict_keys_and_aliases():
    assert TwoViewAugmentD is TwoViewAugmentd and TwoViewAugmentDict is TwoViewAugmentd
    out = TwoViewAugmentd(
        keys="img", view_keys=("a", "b"), geometry_keys=("ga", "gb"), spatial_size=8, keep_source=True
    )({"img": _image(), "other": 1})
    assert set(out) == {"img", "a", "b", "ga", "gb", "other"}
    with pytest.raises(ValueError, match="one image key"):
        TwoViewAugmentd(keys=["a", "b"], spatial_size=8)
    with pytest.raises(ValueError, match="two keys"):
        TwoViewAugmentd(keys="a", view_keys=("x",), spatial_size=8)


def test_dict_wrapper_reseeding_replays():
    """The dict wrapper seeds its inner TwoViewAugment from its own state: same seed, same views and geometry."""
    img = _image()
    augment = TwoViewAugmentd(keys="image", spatial_size=16).set_random_state(5)
    a = augment({"image": img})
    augment.set_random_state(5)
    b = augment({"image": img})
    augment.set_random_state(6)
    c = augment({"image": img})
    assert all(torch.equal(a[k], b[k]) for k in ("view1", "view2", "geometry1", "geometry2"))
    assert not torch.equal(a["geometry1"], c["geometry1"])


def test_crop_and_flip_dict_apply_one_draw_to_all_keys():
    """Image and mask are cut with the same box and flipped the same way (the mask channel is 2x the image)."""
    img = torch.stack(torch.meshgrid(torch.arange(30.0), torch.arange(40.0), indexing="ij"))  # (2, 30, 40)
    data = {"image": img, "mask": 2 * img[:1]}
    pipeline = Compose(
        [RandViewResizedCropd(keys=["image", "mask"], spatial_size=(15, 20)), RandViewFlipd(keys=["image", "mask"])]
    )
    for seed in range(4):
        pipeline.set_random_state(seed)
        out = pipeline(dict(data))
        assert torch.equal(out["image"].meta[GEOMETRY_META_KEY], out["mask"].meta[GEOMETRY_META_KEY])
        torch.testing.assert_close(out["mask"].as_tensor(), 2 * out["image"].as_tensor()[:1])


def test_intensity_dict_wrappers_share_one_draw():
    img = _image((3, 16, 16))
    data = {"a": img, "b": img.clone()}
    for wrapper in (RandIntensityJitterd(keys=["a", "b"], prob=1.0), RandShotNoised(keys=["a", "b"], prob=1.0)):
        out = wrapper.set_random_state(1)(dict(data))
        assert not torch.equal(out["a"], img)
        assert torch.equal(out["a"], out["b"])


def test_dict_wrapper_missing_keys():
    crop = RandViewResizedCropd(keys=["image", "mask"], spatial_size=8, allow_missing_keys=True)
    out = crop({"image": _image()})
    assert out["image"].shape == (1, 8, 8) and "mask" not in out
    with pytest.raises(KeyError):
        RandViewResizedCropd(keys=["image", "mask"], spatial_size=8)({"image": _image()})


def test_crop_modes_per_key_keep_masks_binary_and_update_affine():
    d = RandViewResizedCropd(keys=["image", "mask"], mode=("linear", "nearest"), spatial_size=7).set_random_state(1)
    out = d({"image": torch.rand(1, 20, 20), "mask": (torch.rand(1, 20, 20) > 0.5).float()})
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    assert len(out["image"].unique()) > 2
    # view voxel j sits at input voxel start + (j + 0.5) * size / out - 0.5, then the input affine applies
    img = MetaTensor(torch.rand(1, 10, 10), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    crop = RandViewResizedCrop(5, scale=(0.25, 0.25), ratio=(1, 1)).set_random_state(0)
    view = crop(img)
    start = [float(s) for s in crop._start]
    assert torch.allclose(view.affine[:2, 3].float(), torch.tensor([2.0 * start[0], 3.0 * start[1]]))
    flipped = RandViewFlip(prob=1.0).set_random_state(0)(view)
    assert torch.allclose(flipped.affine[:2, 3].float(), torch.tensor([2.0 * (start[0] + 4), 3.0 * (start[1] + 4)]))
    assert torch.allclose(flipped.affine[:2, :2].float(), -view.affine[:2, :2].float())
