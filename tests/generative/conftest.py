"""Tiny generative networks shared by the tests in this folder (seconds on a CPU)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet


def make_unet(
    spatial_dims: int = 2, in_channels: int = 1, num_class_embeds: int | None = None, cls=None, seed: int = 0
):
    """A tiny ``DiffusionModelUNet`` whose zero-initialised output layers are re-drawn, so its output is not 0."""
    torch.manual_seed(seed)
    net = (cls or DiffusionModelUNet)(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=in_channels,
        channels=(8, 16),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        num_class_embeds=num_class_embeds,
    )
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0.0, 0.05)
    return net.eval()


def make_autoencoder(spatial_dims: int = 2, latent_channels: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    return AutoencoderKL(
        spatial_dims=spatial_dims,
        in_channels=1,
        out_channels=1,
        channels=(8, 16),
        attention_levels=(False, False),
        latent_channels=latent_channels,
        num_res_blocks=1,
        norm_num_groups=8,
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    ).eval()


@pytest.fixture
def tiny_unet():
    return make_unet


@pytest.fixture
def tiny_autoencoder():
    return make_autoencoder
