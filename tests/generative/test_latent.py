"""Latent scale factor, latent shape and encode/decode helpers on a tiny AutoencoderKL."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from monai_dclcstp.generative import compute_scale_factor, decode_latents, encode_latents, latent_shape


class _Images(Dataset):
    def __init__(self, n: int, size=(16, 16), scale: float = 3.0):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, *size, generator=g) * scale

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": i % 2}


def test_scale_factor_equals_pooled_std(tiny_autoencoder):
    ae = tiny_autoencoder(2)
    data = _Images(10)
    loader = DataLoader(data, batch_size=3)  # batches of 3, 3, 3, 1
    sf = compute_scale_factor(ae, loader, num_batches=3, sample_posterior=False)
    with torch.no_grad():
        z, _ = ae.encode(data.images[:9])
    assert sf == pytest.approx(1.0 / z.double().std().item(), rel=1e-6)
    # the whole loader (4 uneven batches) pooled exactly
    sf_all = compute_scale_factor(ae, loader, num_batches=100, sample_posterior=False)
    with torch.no_grad():
        z_all, _ = ae.encode(data.images)
    assert sf_all == pytest.approx(1.0 / z_all.double().std().item(), rel=1e-6)
    with torch.no_grad():
        scaled = encode_latents(ae, data.images, sf_all, sample_posterior=False)
    assert scaled.std().item() == pytest.approx(1.0, rel=1e-4)


def test_scale_factor_with_posterior_samples_and_tensor_input(tiny_autoencoder):
    ae = tiny_autoencoder(2).train()
    images = _Images(8).images
    torch.manual_seed(0)
    sf = compute_scale_factor(ae, images)
    torch.manual_seed(0)
    with torch.no_grad():
        z = ae.encode_stage_2_inputs(images)
    assert sf == pytest.approx(1.0 / z.double().std().item(), rel=1e-6)
    assert ae.training  # mode restored


def test_scale_factor_tuple_batches_and_errors(tiny_autoencoder):
    ae = tiny_autoencoder(2)
    images = _Images(4).images
    assert compute_scale_factor(ae, [(images, None)], sample_posterior=False) == pytest.approx(
        compute_scale_factor(ae, images, sample_posterior=False)
    )
    with pytest.raises(KeyError, match="img"):
        compute_scale_factor(ae, DataLoader(_Images(2)), image_key="img")
    with pytest.raises(ValueError, match="no data"):
        compute_scale_factor(ae, [])
    with pytest.raises(ValueError, match="num_batches"):
        compute_scale_factor(ae, images, num_batches=0)


@pytest.mark.parametrize("spatial_dims,size", [(2, (16, 16)), (2, (15, 17)), (2, (7, 9)), (3, (8, 9, 10))])
def test_latent_shape_matches_encoder(tiny_autoencoder, spatial_dims, size):
    ae = tiny_autoencoder(spatial_dims, latent_channels=4)
    with torch.no_grad():
        z = ae.encode_stage_2_inputs(torch.zeros(1, 1, *size))
    assert latent_shape(ae, size) == tuple(z.shape[1:])


def test_latent_shape_errors(tiny_autoencoder):
    with pytest.raises(ValueError, match="spatial_dims"):
        latent_shape(tiny_autoencoder(2), (8, 8, 8))
    with pytest.raises(TypeError, match="AutoencoderKL"):
        latent_shape(torch.nn.Linear(2, 2), 8)
    assert latent_shape(tiny_autoencoder(2), 16) == (3, 8, 8)


def test_encode_decode_roundtrip_shapes(tiny_autoencoder):
    ae = tiny_autoencoder(3)
    x = torch.rand(2, 1, 8, 8, 8)
    with torch.no_grad():
        z = encode_latents(ae, x, scale_factor=2.0, sample_posterior=False)
        mu, _ = ae.encode(x)
        torch.testing.assert_close(z, 2.0 * mu)
        y = decode_latents(ae, z, scale_factor=2.0)
        torch.testing.assert_close(y, ae.decode_stage_2_outputs(mu))
    assert y.shape == x.shape
