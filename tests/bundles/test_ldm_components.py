"""The library pieces behind the LDM bundle: losses, trainer, perceptual loss, scale factor, model files, grids.

(They live in ``monai_dclcstp/generative/``; their tests are here beside the bundle tests that use them.)
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.inferers import DiffusionInferer
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from PIL import Image

from monai_dclcstp.generative import (
    AutoencoderKLLoss,
    AutoencoderKLTrainer,
    ClassConditionalDiffusionUNet,
    DiffusionSamplePreview,
    EncoderPerceptualLoss,
    GenerativeModelExport,
    LatentClippedModel,
    LatentDiffusionPrepareBatch,
    LatentScaleFactor,
    ModelEMAUpdater,
    PatchDiscriminatorLoss,
    PatchGeneratorLoss,
    build_diffusion_unet,
    build_ema,
    build_network,
    build_perceptual_loss,
    build_scheduler,
    clip_bounds,
    encode_latents,
    export_generative_model,
    image_grid,
    infer_num_classes,
    kl_divergence,
    load_generative_weights,
    read_model_info,
    resolve_class_counts,
    resolve_model_info,
)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "pneumoniamnist"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one torch thread is faster, and much faster on a busy machine (no OpenMP spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_old_layout(state: dict) -> dict:
    """Rename a current MONAI state dict to MONAI Generative's key layout (inverse of ``load_old_state_dict``)."""
    old = {}
    for k, v in state.items():
        k = re.sub(r"\.attn\.(to_[qkv]\.(weight|bias))$", r".\1", k)
        k = re.sub(r"\.attn\.out_proj\.(weight|bias)$", r".proj_attn.\1", k)
        old[k.replace("postconv", "conv")] = v
    return old


def real_batch(n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` embedded-sample chest X-rays (half of each class), resized to ``size`` px, in [0, 1]."""
    items = json.loads((SAMPLE / "datalist.json").read_text())["training"]
    chosen = [it for it in items if it["label"] == 0][: n // 2] + [it for it in items if it["label"] == 1][: n // 2]
    arr = np.stack([np.asarray(Image.open(SAMPLE / it["image"]).convert("L"), dtype=np.float32) / 255 for it in chosen])
    x = torch.nn.functional.interpolate(torch.from_numpy(arr)[:, None], size=(size, size), mode="bilinear")
    return x, torch.tensor([it["label"] for it in chosen])


def tiny_autoencoder(attention: bool = False, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 16, 16),
        latent_channels=3,
        num_res_blocks=1,
        attention_levels=(False, False, attention),
        norm_num_groups=8,
        with_encoder_nonlocal_attn=attention,
        with_decoder_nonlocal_attn=attention,
    )


def tiny_unet(num_classes: int = 0, seed: int = 0) -> DiffusionModelUNet:
    torch.manual_seed(seed)
    return build_diffusion_unet(
        num_classes=num_classes,
        spatial_dims=2,
        in_channels=3,
        out_channels=3,
        channels=(16, 32),
        attention_levels=(False, True),
        num_res_blocks=1,
        num_head_channels=(0, 16),
        norm_num_groups=8,
    )


# ------------------------------------------------------------------------------------------- old checkpoints
@pytest.mark.parametrize("which", ["autoencoder", "unet"])
def test_old_monai_generative_state_dict_loads(tmp_path, which):
    net = tiny_autoencoder(attention=True) if which == "autoencoder" else tiny_unet(num_classes=2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    state = net.state_dict()
    old = to_old_layout(state)
    renamed = set(old) - set(state)
    assert any(".to_q." in k for k in renamed) and any("proj_attn" in k for k in renamed)
    assert any(".conv.conv." in k for k in renamed)  # upsampling "postconv" was "conv"
    torch.save(old, tmp_path / "old.pt")
    torch.save({"state_dict": old}, tmp_path / "old_wrapped.pt")

    def fresh():
        return tiny_autoencoder(attention=True, seed=1) if which == "autoencoder" else tiny_unet(num_classes=2, seed=1)

    for path, mode in ((tmp_path / "old.pt", "auto"), (tmp_path / "old_wrapped.pt", True)):
        loaded = load_generative_weights(fresh(), path, old_format=mode)
        assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="do not fit"):
        load_generative_weights(fresh(), tmp_path / "old.pt", old_format=False)
    torch.save(state, tmp_path / "new.pt")  # current layout: plain load in auto mode
    loaded = load_generative_weights(fresh(), tmp_path / "new.pt")
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_load_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_generative_weights(tiny_unet(), tmp_path / "missing.pt")
    torch.save({"epoch": torch.tensor(1)}, tmp_path / "nostate.pt")
    with pytest.raises(ValueError, match="do not fit|no state dict"):
        load_generative_weights(tiny_unet(), tmp_path / "nostate.pt")
    torch.save(tiny_unet(num_classes=0).state_dict(), tmp_path / "other.pt")  # no class embedding
    with pytest.raises(ValueError, match="do not fit ClassConditionalDiffusionUNet"):
        load_generative_weights(tiny_unet(num_classes=2), tmp_path / "other.pt", old_format=False)


def test_export_and_rebuild_from_description(tmp_path):
    net = tiny_unet(num_classes=2)
    kwargs = {"spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [16, 32],
              "attention_levels": [False, True], "num_res_blocks": 1, "num_head_channels": [0, 16], "norm_num_groups": 8}  # fmt: skip
    pt, js = export_generative_model(net, tmp_path / "diffusion.pt", kwargs, {"scale_factor": torch.tensor(0.5)})
    info = read_model_info(pt)
    assert info["network"] == "ClassConditionalDiffusionUNet" and info["kwargs"]["num_class_embeds"] == 2
    assert info["scale_factor"] == 0.5 and len(info["sha256"]) == 64 and js.name == "diffusion.json"
    rebuilt = load_generative_weights(build_network(info["network"], info["kwargs"]), pt, old_format=False)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in rebuilt.state_dict().items())
    with pytest.raises(ValueError, match="unknown generative network"):
        build_network("os.system", {})
    with pytest.raises(ValueError, match="scale_factor unknown"):
        resolve_model_info(tmp_path / "nothing.pt", required=("scale_factor",))
    assert resolve_model_info(pt, required=("scale_factor",), scale_factor=2.0)["scale_factor"] == 2.0


def test_export_handler_resolves_callables(tmp_path):
    from ignite.engine import Engine

    net = tiny_autoencoder()
    sf = LatentScaleFactor(value=0.25)
    engine = Engine(lambda e, b: None)
    GenerativeModelExport(net, tmp_path / "ae.pt", {"spatial_dims": 2}, {"scale_factor": lambda: float(sf)}).attach(
        engine
    )
    engine.run([0, 1], max_epochs=1)
    info = read_model_info(tmp_path / "ae.pt")
    assert info["scale_factor"] == 0.25 and info["epochs_trained"] == 1 and info["iterations_trained"] == 2


# ----------------------------------------------------------------------------------------------------- losses
def test_kl_divergence_closed_form_and_autoencoder_loss():
    mu, sigma = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert kl_divergence(mu, sigma).item() == pytest.approx(0.0, abs=1e-6)
    mu, sigma = torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 4, 4), 2.0)
    per_elem = 0.5 * (0.25 + 4.0 - np.log(4.0) - 1.0)
    assert kl_divergence(mu, sigma).item() == pytest.approx(48 * per_elem, rel=1e-5)
    x, rec = torch.zeros(2, 1, 8, 8), torch.full((2, 1, 8, 8), 0.5)
    parts = AutoencoderKLLoss(l1_weight=2.0, kl_weight=0.1)(rec, x, mu, sigma)
    assert parts["loss_l1"].item() == pytest.approx(0.5)
    assert parts["loss"].item() == pytest.approx(2 * 0.5 + 0.1 * 48 * per_elem, rel=1e-5)
    assert parts["loss_perceptual"].item() == 0.0
    with pytest.raises(ValueError, match="kl_weight"):
        AutoencoderKLLoss(kl_weight=-1)


def test_patch_adversarial_losses_use_the_last_output():
    disc = PatchDiscriminator(spatial_dims=2, channels=8, in_channels=1, num_layers_d=1)
    out = disc(torch.rand(2, 1, 16, 16))
    assert isinstance(out, list) and len(out) > 1
    g = PatchGeneratorLoss(weight=0.5)(out)
    p = torch.nn.functional.leaky_relu(out[-1], 0.05)  # MONAI's least-squares criterion activation
    assert g.item() == pytest.approx(0.5 * ((p - 1) ** 2).mean().item(), rel=1e-5)  # target "real"
    d = PatchDiscriminatorLoss()(out, [torch.full_like(out[-1], 0.5)])  # fakes at 0.5, target 0
    assert d.item() == pytest.approx(0.5 * (((p - 1) ** 2).mean().item() + 0.25), rel=1e-5)


# ------------------------------------------------------------------------------------------------ perceptual
def test_perceptual_loss_off_without_weights_and_never_downloads(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert build_perceptual_loss(2, 1, weights_path=None) is None
    assert "perceptual loss: off" in caplog.text and "nothing is downloaded" in caplog.text
    with pytest.raises(FileNotFoundError, match="enc.pt"):
        build_perceptual_loss(2, 1, weights_path=tmp_path / "enc.pt")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="not supported offline"):
        build_perceptual_loss(2, 1, weights_path=tmp_path / "w.pt", network_type="alex")


def test_encoder_perceptual_loss_from_exported_encoder(tmp_path, caplog):
    from monai_dclcstp.networks.nets.multiscale_backbone import MultiScaleResNet
    from monai_dclcstp.utils import export_encoder

    torch.manual_seed(0)
    backbone = MultiScaleResNet("resnet10", spatial_dims=2, in_channels=1)
    export_encoder(
        backbone, tmp_path / "encoder.pt", backbone_name="resnet10", spatial_dims=2, in_channels=1,
        feature_channels=backbone.feature_channels, image_size=32, intensity={"mode": "auto"}, method={"name": "test"},
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        loss = build_perceptual_loss(2, 1, weights_path=tmp_path / "encoder.pt")
    assert isinstance(loss, EncoderPerceptualLoss) and "perceptual loss: on" in caplog.text
    loss.train()
    assert not loss.encoder.training and not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(2, 1, 32, 32)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    y = torch.rand(2, 1, 32, 32, requires_grad=True)
    value = loss(y, x)
    value.backward()
    assert value.item() > 0 and y.grad is not None and y.grad.abs().sum() > 0
    with pytest.raises(Exception, match="in_channels"):
        build_perceptual_loss(2, 3, weights_path=tmp_path / "encoder.pt")


# ------------------------------------------------------------------------------------- training on a fixed batch
def test_autoencoder_trainer_decreases_loss_on_a_fixed_batch():
    x, _ = real_batch(8, 16)
    torch.manual_seed(0)
    ae = tiny_autoencoder()
    disc = PatchDiscriminator(spatial_dims=2, channels=8, in_channels=1, num_layers_d=1)

    def recon_error():
        ae.eval()
        with torch.no_grad():
            return (ae.reconstruct(x) - x).abs().mean().item()

    before = recon_error()
    trainer = AutoencoderKLTrainer(
        device="cpu",
        max_epochs=2,
        epoch_length=6,
        train_data_loader=[{"image": x}] * 6,
        g_network=ae,
        g_optimizer=torch.optim.Adam(ae.parameters(), lr=3e-3),
        g_loss_function=PatchGeneratorLoss(0.01),
        recon_loss_function=AutoencoderKLLoss(),
        d_network=disc,
        d_optimizer=torch.optim.Adam(disc.parameters(), lr=1e-3),
        d_loss_function=PatchDiscriminatorLoss(),
        adversarial_warmup_epochs=1,
        decollate=False,
    )
    d_losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: d_losses.append(float(e.state.output["loss_d"])))
    trainer.run()
    assert trainer.state.iteration == 12
    assert all(v == 0 for v in d_losses[:6]) and all(v > 0 for v in d_losses[6:])  # adversarial after warm-up
    assert trainer.state.output["pred"].shape == x.shape and trainer.state.output["loss_l1"] > 0
    after = recon_error()
    assert after < 0.7 * before, (before, after)


def test_autoencoder_trainer_without_discriminator():
    x, _ = real_batch(4, 16)
    ae = tiny_autoencoder()
    trainer = AutoencoderKLTrainer(
        device="cpu", max_epochs=1, epoch_length=2, train_data_loader=[{"image": x}] * 2, g_network=ae,
        g_optimizer=torch.optim.Adam(ae.parameters()), g_loss_function=None, recon_loss_function=AutoencoderKLLoss(),
        d_network=None, d_optimizer=None, d_loss_function=None, decollate=False,
    )  # fmt: skip
    trainer.run()
    assert trainer.state.output["loss_d"] == 0 and trainer.state.output["loss_g_adv"] == 0


def test_latent_diffusion_decreases_loss_on_a_fixed_batch():
    x, labels = real_batch(8, 16)
    ae = tiny_autoencoder().eval().requires_grad_(False)
    unet = tiny_unet(num_classes=2)
    scheduler = build_scheduler("ddpm", schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195)
    sf = LatentScaleFactor(ae, x, num_batches=1)
    g = torch.Generator().manual_seed(0)
    z = encode_latents(ae, x, float(sf), sample_posterior=False)
    noise = torch.randn(z.shape, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    noisy = scheduler.add_noise(z, noise, t)

    def fixed_loss():
        unet.eval()
        with torch.no_grad():
            return torch.nn.functional.mse_loss(unet(noisy, t, class_labels=labels), noise).item()

    before = fixed_loss()
    torch.manual_seed(0)
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        epoch_length=30,
        train_data_loader=[{"image": x, "label": labels}] * 30,
        network=unet,
        optimizer=torch.optim.Adam(unet.parameters(), lr=2e-3),
        loss_function=torch.nn.MSELoss(),
        inferer=DiffusionInferer(scheduler),
        prepare_batch=LatentDiffusionPrepareBatch(ae, 1000, scale_factor=sf, condition_name="label"),
        decollate=False,
    )
    trainer.run()
    assert trainer.state.output["image"].shape == (8, 3, 4, 4)
    after = fixed_loss()
    assert after < 0.85 * before, (before, after)


# -------------------------------------------------------------------------------------- scale factor, counts
def test_latent_scale_factor_lazy_stored_and_restored(caplog):
    x, _ = real_batch(4, 16)
    ae = tiny_autoencoder().eval()
    sf = LatentScaleFactor(ae, x, num_batches=1)
    assert not sf.is_set
    with caplog.at_level(logging.INFO):
        value = float(sf)
    assert sf.is_set and value > 0 and "estimated" in caplog.text
    state = sf.state_dict()
    other = LatentScaleFactor(ae, x)
    other.load_state_dict(state)
    assert float(other) == value  # restored, not re-estimated
    low, high = (torch.tensor(v) for v in sf.latent_range)
    z = encode_latents(ae, x, value, sample_posterior=False)
    assert low.shape == (3,) and (low < high).all() and (z.amin((0, 2, 3)) > low - 1).all()
    assert other.latent_range == sf.latent_range  # the range travels with the checkpoint too
    legacy = LatentScaleFactor(ae, x)
    legacy.load_state_dict({"scale_factor": state["scale_factor"]})  # a checkpoint without the range
    assert float(legacy) == value and legacy.latent_range is not None  # estimated on demand
    assert float(LatentScaleFactor(value=0.3)) == 0.3
    with pytest.raises(ValueError, match="positive"):
        LatentScaleFactor(value=0.0)
    with pytest.raises(ValueError, match="needs either"):
        LatentScaleFactor()


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"counts": {"0": 3, "1": 2}}, [3, 2]),
        ({"counts": [1, 4]}, [1, 4]),
        ({"counts": {1: 5}}, [0, 5]),
        ({}, [5, 5]),
        ({"weights": "uniform"}, [5, 5]),
        ({"weights": "proportional", "train_counts": [388, 3494]}, [1, 9]),
        ({"weights": "inverse", "train_counts": [388, 3494]}, [9, 1]),
        ({"weights": "balance", "train_counts": [388, 3494]}, [10, 0]),
        ({"weights": "balance", "train_counts": [3, 1]}, [4, 6]),
        ({"weights": [1, 4]}, [2, 8]),
    ],
)
def test_resolve_class_counts(kwargs, expected):
    assert resolve_class_counts(10, 2, **kwargs) == expected


def test_resolve_class_counts_errors():
    with pytest.raises(ValueError, match="class-conditional"):
        resolve_class_counts(10, 0)
    with pytest.raises(ValueError, match="invalid"):
        resolve_class_counts(10, 2, counts={"2": 1})
    with pytest.raises(ValueError, match="invalid"):
        resolve_class_counts(10, 2, counts=[-1, 2])
    with pytest.raises(ValueError, match="real per-class counts"):
        resolve_class_counts(10, 2, weights="balance")
    with pytest.raises(ValueError, match="unknown class weighting"):
        resolve_class_counts(10, 2, weights="minority")


def test_infer_num_classes():
    labelled = [{"image": "a", "label": 0}, {"image": "b", "label": 1}]
    assert infer_num_classes(labelled) == 2
    assert infer_num_classes(labelled, classes=["a", "b", "c"]) == 3
    assert infer_num_classes(labelled, conditional=False) == 0
    assert infer_num_classes([{"image": "a"}, {"image": "b", "label": 1}]) == 0
    assert infer_num_classes([{"image": "a", "label": 0}]) == 0  # one class: nothing to condition on
    with pytest.raises(ValueError, match="1 of 2 have none"):
        infer_num_classes([{"image": "a"}, {"image": "b", "label": 1}], conditional=True)


# ----------------------------------------------------------------------------------------- grids, preview
def test_image_grid_2d_rows_and_3d_central_slice():
    a, b = torch.zeros(3, 1, 8, 10), torch.ones(5, 1, 8, 10)
    grid = image_grid([a, b], max_images=4, padding=2)
    assert grid.shape == (1, 2 * 10 + 2, 4 * 12 + 2)
    assert grid[0, 12:20, 2:12].eq(1).all() and grid[0, 2:10, 2:12].eq(0).all()
    vol = torch.zeros(2, 1, 6, 6, 5)
    vol[..., 2] = 2.0  # central slice of the last axis, clipped to the range
    grid3 = image_grid(vol, intensity_range=(0, 1), padding=0)
    assert grid3.shape == (1, 6, 12) and grid3.eq(1).all()
    with pytest.raises(ValueError, match="same image size"):
        image_grid([a, torch.zeros(2, 1, 4, 4)])


def test_sample_preview_fixed_noise_restores_modes_and_rng():
    ae = tiny_autoencoder().eval()
    unet = tiny_unet(num_classes=2).train()
    preview = DiffusionSamplePreview(
        unet, build_scheduler("dpm_solver++"), (3, 4, 4), autoencoder=ae, scale_factor=LatentScaleFactor(value=0.5),
        num_images=4, num_inference_steps=2, num_classes=2,
    )  # fmt: skip
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = preview()
    assert torch.equal(torch.get_rng_state(), state)  # the training's random stream is untouched
    assert first.shape == (4, 1, 16, 16) and unet.training and not ae.training
    assert torch.allclose(preview(), first)
    assert preview.labels.tolist() == [0, 1, 0, 1]
    # a stochastic sampler gets the same per-step noise at every preview, whatever the training's random state
    stochastic = DiffusionSamplePreview(
        unet, build_scheduler("sde_dpm_solver++"), (3, 4, 4), autoencoder=ae, scale_factor=0.5, num_images=4,
        num_inference_steps=3, num_classes=2,
    )  # fmt: skip
    torch.manual_seed(1)
    a = stochastic()
    torch.manual_seed(2)
    torch.testing.assert_close(stochastic(), a)


def test_conditional_unet_factory():
    assert type(build_diffusion_unet(0, spatial_dims=2, in_channels=3, out_channels=3, channels=(16, 32),
                                     attention_levels=(False, False), num_head_channels=(0, 16), num_res_blocks=1,
                                     norm_num_groups=8)) is DiffusionModelUNet  # fmt: skip
    net = build_diffusion_unet(2, null_class=True, spatial_dims=2, in_channels=3, out_channels=3, channels=(16, 32),
                               attention_levels=(False, False), norm_num_groups=8, num_res_blocks=1)  # fmt: skip
    assert isinstance(net, ClassConditionalDiffusionUNet) and net.num_class_embeds == 3
    with pytest.raises(ValueError, match="num_classes"):
        build_diffusion_unet(2, num_class_embeds=2)


def test_ema_warmup_average_and_updater():
    from ignite.engine import Engine

    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = build_ema(net, decay=0.9)
    assert build_ema(net, decay=None) is None and not any(p.requires_grad for p in ema.parameters())
    engine = Engine(lambda e, b: None)
    ModelEMAUpdater(ema, net).attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: net.weight.data.add_(1.0))  # after the update
    engine.run([0] * 3, max_epochs=1)
    # updates see weights 1, 2, 3: copy 1; d = min(0.9, 2/11): 1 + (2 - 1) * 9/11; d = min(0.9, 3/12): ... * 0.75
    first = 1 + 9 / 11
    assert ema.module.weight[0, 0].item() == pytest.approx(first + (3 - first) * 0.75)
    assert int(ema.n_averaged) == 3
    ModelEMAUpdater(None, net).attach(Engine(lambda e, b: None))  # EMA off: nothing attached, no error
    with pytest.raises(ValueError, match="decay"):
        build_ema(net, decay=1.5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_latent_clipped_model_clips_the_implied_clean_latent(prediction_type):
    scheduler = build_scheduler("ddpm", schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195)
    alphas = scheduler.alphas_cumprod
    torch.manual_seed(0)
    x0 = torch.randn(4, 2, 4, 4) * 3  # partly outside the range below
    eps = torch.randn(4, 2, 4, 4)
    t = torch.tensor([900])
    a = alphas[900]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    exact = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[prediction_type]

    def oracle(x, timesteps, context=None, **kwargs):  # the exact denoiser of this one sample
        return exact

    latent_range = [[-2.0, -1.0], [2.0, 1.0]]
    wrapped = LatentClippedModel(oracle_module(oracle), alphas, latent_range, prediction_type, margin=0.0)
    out = wrapped(x_t, t)
    if prediction_type == "epsilon":
        implied = (x_t - (1 - a).sqrt() * out) / a.sqrt()
    elif prediction_type == "v_prediction":
        implied = a.sqrt() * x_t - (1 - a).sqrt() * out
    else:
        implied = out
    low, high = torch.tensor([-2.0, -1.0]).view(1, 2, 1, 1), torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    assert torch.allclose(implied, torch.maximum(torch.minimum(x0, high), low), atol=1e-4)
    inside = (x0 >= low) & (x0 <= high)
    assert torch.equal(out[inside], exact[inside])  # untouched where the clean latent is in range
    lo, hi = clip_bounds(latent_range, margin=0.5)
    assert lo.tolist() == [-4.0, -2.0] and hi.tolist() == [4.0, 2.0]
    with pytest.raises(ValueError, match="latent_range"):
        LatentClippedModel(oracle_module(oracle), alphas, [[1.0], [0.0]])


def oracle_module(fn):
    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, timesteps, context=None, **kwargs):
            return fn(x, timesteps, context, **kwargs)

    return Oracle()


def test_latent_clipping_stops_runaway_fast_samples():
    """A denoiser whose clean-latent guess is 10x too large: clipped DPM-Solver++ samples stay in range."""
    from monai_dclcstp.generative import sample_images

    scheduler = build_scheduler("dpm_solver++", schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195)
    alphas = scheduler.alphas_cumprod

    def bad(x, timesteps, context=None, **kwargs):  # implies x0 = 10 * x_t / sqrt(a)
        a = alphas[timesteps.long()].view(-1, 1, 1, 1)
        return (x - 10 * x) / (1 - a).sqrt()

    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    free = sample_images(oracle_module(bad), scheduler, noise, num_inference_steps=10)
    clipped = sample_images(
        LatentClippedModel(oracle_module(bad), alphas, [[-3.0] * 3, [3.0] * 3], margin=0.0), scheduler, noise,
        num_inference_steps=10,
    )  # fmt: skip
    assert free.abs().max() > 10 and clipped.abs().max() <= 3.0 + 1e-4
