"""Diffusers scheduler adapter and scheduler factory: equivalence with MONAI, exactness, inferer compatibility."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from monai.inferers import DiffusionInferer, LatentDiffusionInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from monai_dclcstp.generative import DiffusersSchedulerAdapter, build_scheduler

SCHEDULE = {"schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0195}


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("clip_sample", [False, True])
def test_diffusers_ddim_matches_monai_ddim(tiny_unet, prediction_type, clip_sample, steps=10):
    """Required: the same tiny U-Net, noise and steps give the same sample through the adapter and MONAI's DDIM."""
    net = tiny_unet(2)
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    monai_ddim = DDIMScheduler(clip_sample=clip_sample, prediction_type=prediction_type, **SCHEDULE)
    adapted = DiffusersSchedulerAdapter(
        "DDIMScheduler",
        clip_sample=clip_sample,
        prediction_type=prediction_type,
        timestep_spacing="linspace",
        **SCHEDULE,
    )
    monai_ddim.set_timesteps(steps)
    adapted.set_timesteps(steps)
    assert torch.equal(monai_ddim.timesteps, adapted.timesteps)
    inferer = DiffusionInferer(monai_ddim)
    expected = inferer.sample(noise, net, scheduler=monai_ddim, verbose=False)
    actual = inferer.sample(noise, net, scheduler=adapted, verbose=False)
    assert expected.abs().max() > 0.1 and not torch.allclose(expected, noise, atol=1e-2)  # the network did something
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_factory_diffusers_ddim_matches_monai(tiny_unet):
    net = tiny_unet(2)
    noise = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    a, b = build_scheduler("ddim", **SCHEDULE), build_scheduler("diffusers_ddim", **SCHEDULE)
    a.set_timesteps(8)
    b.set_timesteps(8)
    inferer = DiffusionInferer(a)
    torch.testing.assert_close(
        inferer.sample(noise, net, scheduler=b, verbose=False),
        inferer.sample(noise, net, scheduler=a, verbose=False),
        atol=1e-4,
        rtol=1e-4,
    )


def _oracle(prediction_type: str, clean: torch.Tensor):
    """Exact denoiser for data that is the single point ``clean``: any correct deterministic sampler returns it."""
    alphas_cumprod = DDPMScheduler(**SCHEDULE).alphas_cumprod.double()

    def model(x, timesteps, context=None):
        a = alphas_cumprod[int(timesteps.reshape(-1)[0])]
        eps = (x - a.sqrt() * clean) / (1 - a).sqrt()
        if prediction_type == "epsilon":
            return eps
        if prediction_type == "v_prediction":
            return a.sqrt() * eps - (1 - a).sqrt() * clean
        return clean.expand_as(x)

    return model


@pytest.mark.parametrize(
    "name", ["ddpm", "ddim", "pndm", "dpm_solver++", "sde_dpm_solver++", "unipc", "diffusers_ddim", "diffusers_ddpm"]
)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_schedulers_recover_point_mass(name, prediction_type):
    """With an exact noise prediction every sampler must land on the data point (checks betas and timestep wiring)."""
    if name == "pndm" and prediction_type != "epsilon":
        with pytest.raises(ValueError, match="epsilon"):
            build_scheduler(name, prediction_type=prediction_type, **SCHEDULE)
        return
    clean = torch.linspace(-0.8, 0.8, 2 * 64).reshape(2, 1, 8, 8).double()
    scheduler = build_scheduler(name, prediction_type=prediction_type, **SCHEDULE)
    scheduler.set_timesteps(10)
    torch.manual_seed(0)
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    out = DiffusionInferer(scheduler).sample(noise, _oracle(prediction_type, clean), verbose=False)
    assert (out - clean).abs().max() < 1e-4


def test_wrong_betas_are_detected():
    """The point-mass check is sensitive: a solver with another schedule misses the point."""
    clean = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    scheduler = build_scheduler("dpm_solver++", schedule="linear_beta")  # oracle uses scaled_linear_beta
    scheduler.set_timesteps(10)
    out = DiffusionInferer(scheduler).sample(torch.randn(1, 1, 4, 4).double(), _oracle("epsilon", clean), verbose=False)
    assert (out - clean).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["dpm_solver++", "unipc"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fast_solvers_through_latent_inferer(tiny_unet, tiny_autoencoder, name, spatial_dims):
    autoencoder = tiny_autoencoder(spatial_dims)
    unet = tiny_unet(spatial_dims, in_channels=3)
    scheduler = build_scheduler(name, **SCHEDULE)
    scheduler.set_timesteps(5)
    assert len(scheduler.timesteps) == 5
    size = (16, 16) if spatial_dims == 2 else (8, 8, 8)
    noise = torch.randn(2, 3, *[s // 2 for s in size])
    images = LatentDiffusionInferer(scheduler, scale_factor=0.8).sample(noise, autoencoder, unet, verbose=False)
    assert images.shape == (2, 1, *size)
    assert torch.isfinite(images).all()


def test_adapter_add_noise_and_velocity_match_monai():
    monai_ddpm = DDPMScheduler(**SCHEDULE)
    adapted = build_scheduler("dpm_solver++", **SCHEDULE)
    torch.testing.assert_close(adapted.betas, monai_ddpm.betas)
    torch.testing.assert_close(
        adapted.diffusers_scheduler.alphas_cumprod.float(), monai_ddpm.alphas_cumprod, atol=1e-6, rtol=1e-5
    )
    x, noise = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(adapted.add_noise(x, noise, t), monai_ddpm.add_noise(x, noise, t))
    torch.testing.assert_close(adapted.get_velocity(x, noise, t), monai_ddpm.get_velocity(x, noise, t))


def test_adapter_step_returns_pred_original_sample():
    scheduler = build_scheduler("dpm_solver++", **SCHEDULE)
    scheduler.set_timesteps(4)
    clean = torch.full((1, 1, 4, 4), 0.3)
    t = scheduler.timesteps[0]
    a = scheduler.alphas_cumprod[t]
    eps = torch.randn(1, 1, 4, 4)
    x_t = a.sqrt() * clean + (1 - a).sqrt() * eps
    prev, x0 = scheduler.step(eps, t, x_t)
    assert prev.shape == x_t.shape
    torch.testing.assert_close(x0, clean, atol=1e-4, rtol=1e-4)


def test_set_timesteps_resets_multistep_state(tiny_unet):
    net = tiny_unet(2)
    noise = torch.randn(1, 1, 16, 16)
    scheduler = build_scheduler("unipc", **SCHEDULE)
    inferer = DiffusionInferer(scheduler)
    runs = []
    for _ in range(2):
        scheduler.set_timesteps(6)
        runs.append(inferer.sample(noise, net, verbose=False))
    torch.testing.assert_close(runs[0], runs[1])


def test_adapter_errors():
    with pytest.raises(ValueError, match="not supported"):
        DiffusersSchedulerAdapter("EulerDiscreteScheduler")
    with pytest.raises(ValueError, match="noise schedule"):
        DiffusersSchedulerAdapter("DDIMScheduler", schedule="no_such_schedule")
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusersSchedulerAdapter("DDIMScheduler", prediction_type="noise")
    with pytest.raises(ValueError, match="cannot clip"):
        DiffusersSchedulerAdapter("DPMSolverMultistepScheduler", clip_sample=True)
    with pytest.raises(ValueError, match="symmetric"):
        DiffusersSchedulerAdapter("DDIMScheduler", clip_sample=True, clip_sample_min=0.0)
    with pytest.raises(ValueError, match="solver_oder"):
        DiffusersSchedulerAdapter("DPMSolverMultistepScheduler", solver_oder=2)
    with pytest.raises(ValueError, match="trained_betas"):
        DiffusersSchedulerAdapter("DDIMScheduler", trained_betas=[0.1])
    scheduler = DiffusersSchedulerAdapter("DDIMScheduler", num_train_timesteps=100)
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler.set_timesteps(101)


def test_factory_errors_and_monai_types():
    assert isinstance(build_scheduler("ddpm"), DDPMScheduler)
    assert build_scheduler("ddpm").clip_sample is False
    assert isinstance(build_scheduler("DPM-Solver++"), DiffusersSchedulerAdapter)
    with pytest.raises(ValueError, match="unknown scheduler"):
        build_scheduler("euler")
    with pytest.raises(ValueError, match="invalid option"):
        build_scheduler("ddim", solver_order=2)
    with pytest.raises(ValueError, match="clip"):
        build_scheduler("monai_pndm", clip_sample=True)


def test_factory_from_bundle_config():
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "imports": ["$from monai_dclcstp import generative"],
            "train_scheduler": {"_target_": "monai_dclcstp.generative.build_scheduler", "name": "ddpm", **SCHEDULE},
            "sample_scheduler": "$generative.build_scheduler('dpm_solver++', schedule='cosine')",
        }
    )
    parser.parse()
    assert isinstance(parser.get_parsed_content("train_scheduler"), DDPMScheduler)
    assert isinstance(parser.get_parsed_content("sample_scheduler"), DiffusersSchedulerAdapter)


def test_package_import_is_light():
    """Importing the package, and building a MONAI scheduler, must not import diffusers."""
    code = (
        "import sys, monai_dclcstp.generative as g; g.build_scheduler('ddim'); g.compute_scale_factor; "
        "assert 'diffusers' not in sys.modules, 'diffusers imported'; "
        "g.build_scheduler('unipc'); assert 'diffusers' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
