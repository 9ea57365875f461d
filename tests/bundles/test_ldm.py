"""The LDM bundle end to end on tiny real images: train autoencoder -> train diffusion -> sample -> pretrain.

The three configs run with MONAI's ``ConfigWorkflow`` (2 iterations each on 8 PneumoniaMNIST images at 16 px with
tiny networks); sampling also runs once with the exact command line in a subprocess. The synthetic datalist is then
fed to the pretraining bundle (``--synthetic_datalist``) for one tiny epoch. Outputs go to pytest's temporary
folders, never into ``bundles/ldm/models``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_test_utils import tiny_datalist  # noqa: E402
from monai.transforms import LoadImage

from monai_dclcstp.generative import LatentScaleFactor, read_model_info

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ldm"
CONFIGS = BUNDLE / "configs"
SAMPLE = REPO / "data" / "samples" / "pneumoniamnist"
SCHEMA = REPO / "monai_dclcstp" / "resources" / "meta_schema_20240725.json"
PRETRAIN = REPO / "bundles" / "pretrain" / "configs" / "train.json"

IMAGE_SIZE = 16
#: tiny networks: AutoencoderKL 8-16-16 (latent 3 x 4 x 4 at 16 px), U-Net 16-32 with attention at the second level
TINY_AE = {
    "image_size": IMAGE_SIZE,
    "batch_size": 4,
    "max_epochs": 1,
    "num_workers": 0,
    "val_interval": 1,
    "adversarial_warmup_epochs": 0,
    "autoencoder_kwargs#channels": [8, 16, 16],
    "autoencoder_kwargs#norm_num_groups": 8,
    "discriminator_kwargs#channels": 8,
}
TINY_DIFFUSION = {
    "batch_size": 4,
    "max_epochs": 1,
    "num_workers": 0,
    "val_interval": 1,
    "diffusion_kwargs#channels": [16, 32],
    "diffusion_kwargs#attention_levels": [False, True],
    "diffusion_kwargs#num_head_channels": [0, 16],
    "diffusion_kwargs#norm_num_groups": 8,
    "preview_steps": 2,
    "preview_images": 4,
    "classifier_free_guidance": True,
}
#: the pretraining bundle's tiny settings (as in tests/bundles/test_pretrain.py)
TINY_PRETRAIN = {
    "backbone": "resnet10",
    "image_size": 32,
    "batch_size": 4,
    "max_epochs": 1,
    "num_workers": 0,
    "val_interval": 1,
    "knn_k": 3,
    "queue_size": 16,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one torch thread is faster, and much faster on a busy machine (no OpenMP spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_workflow(config: str | Path, workflow_type: str | None = "train", **overrides):
    """Initialise, run and finalise one bundle config with ``ConfigWorkflow``; returns the workflow."""
    from monai.bundle import ConfigWorkflow

    config = Path(config)
    wf = ConfigWorkflow(
        config_file=str(config if config.is_absolute() else CONFIGS / config),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Autoencoder then class-conditional diffusion, each 2 iterations (8 images, batch 4, 1 epoch)."""
    root = tmp_path_factory.mktemp("ldm")
    datalist = tiny_datalist(root / "data")
    out = root / "models"
    ae = run_workflow("train_autoencoder.json", output_dir=str(out), datalist=str(datalist), **TINY_AE)
    ae_iterations = ae.parser.get_parsed_content("train#trainer").state.iteration
    dm = run_workflow("train_diffusion.json", output_dir=str(out), datalist=str(datalist), **TINY_DIFFUSION)
    trainer = dm.parser.get_parsed_content("train#trainer")
    return {
        "root": root,
        "out": out,
        "datalist": datalist,
        "ae_iterations": ae_iterations,
        "diffusion_iterations": trainer.state.iteration,
        "diffusion_output": trainer.state.output,
        "scale_factor": float(dm.parser.get_parsed_content("scale_factor")),
    }


def _tensorboard_tags(folder: Path) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = set(), set()
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        images |= set(acc.Tags()["images"])
    return scalars, images


def test_metadata_verifies_offline():
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert "monai_dclcstp" in meta["required_packages_version"] and "diffusers" in meta["required_packages_version"]
    for name in ("train_autoencoder.json", "train_diffusion.json", "sample.json", "logging.conf"):
        assert (CONFIGS / name).is_file()
    assert (BUNDLE / "LICENSE").is_file() and (BUNDLE / "docs" / "README.md").is_file()


def test_autoencoder_trains_exports_and_logs(trained):
    out = trained["out"]
    assert trained["ae_iterations"] == 2
    info = read_model_info(out / "autoencoder.pt")
    assert info["network"] == "AutoencoderKL" and info["kwargs"]["channels"] == [8, 16, 16]
    assert info["image_size"] == IMAGE_SIZE and info["intensity"]["output_range"] == [0.0, 1.0]
    assert info["losses"]["adversarial"] == {"weight": 0.01, "warmup_epochs": 0}
    ckpt = torch.load(out / "autoencoder" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert {"autoencoder", "discriminator", "optimizer", "d_optimizer", "trainer"} <= set(ckpt)
    exported = torch.load(out / "autoencoder.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in ckpt["autoencoder"].items())
    scalars, images = _tensorboard_tags(out / "runs" / "autoencoder")
    assert {"train/loss", "train/loss_l1", "train/loss_kl", "train/loss_d", "val_l1"} <= scalars
    assert {"train/input_vs_reconstruction", "val/input_vs_reconstruction"} <= images


def test_diffusion_trains_on_latents_with_stored_scale_factor(trained):
    out = trained["out"]
    assert trained["diffusion_iterations"] == 2
    output = trained["diffusion_output"]
    assert output["image"].shape == (4, 3, 4, 4)  # latents of 16 px images, not images
    assert output["pred"].shape == output["label"].shape == (4, 3, 4, 4)
    info = read_model_info(out / "diffusion.pt")
    assert info["network"] == "ClassConditionalDiffusionUNet" and info["kwargs"]["num_class_embeds"] == 3
    assert info["null_class_label"] == 2  # classifier-free guidance: the extra "no class" embedding
    assert (
        info["num_classes"] == 2 and info["classes"] == ["normal", "pneumonia"] and info["class_frequencies"] == [4, 4]
    )
    assert info["latent_shape"] == [3, 4, 4] and info["noise_schedule"]["num_train_timesteps"] == 1000
    low, high = info["latent_range"]  # per-channel range of the scaled latents, for clipping at sampling time
    assert len(low) == len(high) == 3 and all(lo < hi for lo, hi in zip(low, high))
    ckpt = torch.load(out / "diffusion" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    # the exported weights are the EMA of the training weights (2 updates: differs from the last step)
    assert info["weights"] == "ema (decay 0.999)" and int(ckpt["ema"]["n_averaged"]) == 2
    exported = torch.load(out / "diffusion.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(exported[k], ckpt["ema"]["module." + k]) for k in exported)
    assert not all(torch.equal(exported[k], ckpt["network"][k]) for k in exported)
    stored = float(ckpt["scale_factor"]["scale_factor"])
    assert stored == pytest.approx(trained["scale_factor"]) and info["scale_factor"] == pytest.approx(stored)
    assert 0 < stored < 100
    scalars, images = _tensorboard_tags(out / "runs" / "diffusion")
    assert {"train/loss", "val_mse"} <= scalars and "samples" in images


def test_diffusion_resume_restores_scale_factor_and_epoch(trained, tmp_path):
    import shutil

    out = tmp_path / "models"
    shutil.copytree(trained["out"], out)
    wf = run_workflow(
        "train_diffusion.json",
        output_dir=str(out),
        datalist=str(trained["datalist"]),
        **{**TINY_DIFFUSION, "max_epochs": 2, "resume": True},
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 4  # continued after the 2 stored iterations
    sf = wf.parser.get_parsed_content("scale_factor")
    assert isinstance(sf, LatentScaleFactor)
    assert float(sf) == trained["scale_factor"]  # restored exactly, not re-estimated from posterior samples
    assert int(wf.parser.get_parsed_content("ema").n_averaged) == 4  # the EMA was restored and updated on
    assert read_model_info(out / "diffusion.pt")["epochs_trained"] == 2


def _check_synthetic(out: Path, datalist: dict, counts: dict[int, int], image_size: int):
    on_disk = json.loads((out / "datalist.json").read_text())
    assert on_disk["training"] == datalist["training"]
    assert Counter(it["label"] for it in on_disk["training"]) == Counter(counts)
    assert on_disk["classes"] == ["normal", "pneumonia"]
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    for it in on_disk["training"]:
        assert it["synthetic"] is True and not Path(it["image"]).is_absolute()
        img = loader(str(out / it["image"]))
        assert tuple(img.shape) == (1, image_size, image_size)


def test_sample_class_counts_and_pretrain_consumes_the_datalist(trained, tmp_path):
    synthetic = tmp_path / "synthetic"
    wf = run_workflow(
        "sample.json",
        workflow_type=None,
        output_dir=str(trained["out"]),
        synthetic_dir=str(synthetic),
        class_counts={"0": 3, "1": 2},
        num_inference_steps=3,
        batch_size=4,
    )
    datalist = wf.parser.get_parsed_content("synthesis")
    _check_synthetic(synthetic, datalist, {0: 3, 1: 2}, IMAGE_SIZE)
    assert datalist["generation"]["scheduler"] == "DPMSolverMultistepScheduler"
    assert datalist["generation"]["scheduler_options"]["algorithm_type"] == "sde-dpmsolver++"  # the default
    assert datalist["generation"]["num_inference_steps"] == 3

    # the pretraining bundle takes the datalist as it is
    from monai.bundle import ConfigWorkflow

    pre_out = tmp_path / "pretrain"
    pre = ConfigWorkflow(
        config_file=str(PRETRAIN),
        workflow_type="train",
        output_dir=str(pre_out),
        datalist=str(trained["datalist"]),
        synthetic_datalist=str(synthetic / "datalist.json"),
        synthetic_ratio=0.3,
        **TINY_PRETRAIN,
    )
    pre.initialize()
    items = pre.parser.get_parsed_content("train#items")
    synth = [it for it in items if it["synthetic"]]
    assert len(synth) == 3 and len(items) == 11  # round(8 * 0.3 / 0.7) = 3 synthetic + 8 real
    assert all(str(synthetic) in it["image"] for it in synth)
    pre.run()
    pre.finalize()
    assert pre.parser.get_parsed_content("train#trainer").state.epoch == 1
    assert (pre_out / "encoder.pt").is_file()
    assert json.loads((pre_out / "encoder.json").read_text())["method"]["num_synthetic"] == 3


def test_sample_balance_rule_and_cli(trained, tmp_path):
    """The exact command line; 'balance' tops up the smaller class of the (here equal) real counts."""
    synthetic = tmp_path / "cli"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(CONFIGS / "sample.json"),
        "--meta_file", str(CONFIGS / "metadata.json"),
        "--logging_file", str(CONFIGS / "logging.conf"),
        "--output_dir", str(trained["out"]),
        "--synthetic_dir", str(synthetic),
        "--num_samples", "5",
        "--class_weights", "balance",
        "--scheduler", "ddim",
        "--scheduler_options", "{'eta': 1.0}",
        "--num_inference_steps", "2",
        "--guidance_scale", "2.0",
        "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    datalist = json.loads((synthetic / "datalist.json").read_text())
    _check_synthetic(synthetic, datalist, {0: 3, 1: 2}, IMAGE_SIZE)  # real 4/4: ties go to the lower class first
    assert datalist["generation"]["guidance_scale"] == 2.0
    assert datalist["generation"]["scheduler"] == "EtaDDIMScheduler"  # stochastic DDIM from --scheduler_options
    assert datalist["generation"]["scheduler_options"] == {"eta": 1.0}
    assert "wrote 5 images" in proc.stdout + proc.stderr
    assert "predicted latents clipped to the real range + 10%" in proc.stdout + proc.stderr
    # a second run into the same folder refuses to overwrite (before sampling)
    with pytest.raises(Exception) as err:
        run_workflow("sample.json", workflow_type=None, output_dir=str(trained["out"]), synthetic_dir=str(synthetic))
    assert "already exist" in "".join(str(e) for e in _chain(err.value))


def test_label_efficiency_benchmark_samples_a_balanced_synthetic_set(trained):
    """``bench_label_efficiency.synthesize`` (the ``full_ldm`` variant): the LDM bundle's sample.json, balanced, cached."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_label_efficiency as ble
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    args = ble.parse_args(["--quick", "--synthetic-ratio", "0.5"])
    cache = ble.RunCache(trained["root"] / "le")
    first = ble.synthesize(args, cache, trained["out"], num_real=6)
    assert first["num_images"] == 6 and first["class_counts"] == {"0": 3, "1": 3}  # real 4/4: balance → equal
    assert Path(first["datalist"]) == trained["out"].parent / "synthetic_rebalanced" / "datalist.json"
    assert "--class_weights balance" in first["command"]
    again = ble.synthesize(args, cache, trained["out"], num_real=6)  # cached: no second sampling
    assert again == first


def test_sample_from_old_monai_generative_checkpoints(trained, tmp_path):
    """Files in the old MONAI Generative key layout, without descriptions: architecture keys set in the config."""
    from test_ldm_components import to_old_layout

    old = tmp_path / "old"
    old.mkdir()
    ae_info = read_model_info(trained["out"] / "autoencoder.pt")
    dm_info = read_model_info(trained["out"] / "diffusion.pt")
    for name in ("autoencoder", "diffusion"):
        state = torch.load(trained["out"] / f"{name}.pt", map_location="cpu", weights_only=True)
        old_state = to_old_layout(state)
        assert set(old_state) != set(state)  # the renaming did something (attention + upsampling layers)
        torch.save(old_state, old / f"{name}.pt")
    synthetic = tmp_path / "synthetic"
    wf = run_workflow(
        "sample.json",
        workflow_type=None,
        autoencoder_path=str(old / "autoencoder.pt"),
        diffusion_path=str(old / "diffusion.pt"),
        synthetic_dir=str(synthetic),
        autoencoder_kwargs=ae_info["kwargs"],
        diffusion_network="ClassConditionalDiffusionUNet",
        diffusion_kwargs=dm_info["kwargs"],
        scale_factor_value=dm_info["scale_factor"],
        latent_shape_value=dm_info["latent_shape"],
        noise_schedule_value=dm_info["noise_schedule"],
        num_classes_value=2,
        classes_value=["normal", "pneumonia"],
        class_counts=[1, 1],
        num_inference_steps=2,
    )
    _check_synthetic(synthetic, wf.parser.get_parsed_content("synthesis"), {0: 1, 1: 1}, IMAGE_SIZE)
    assert wf.parser.get_parsed_content("clipping") is False  # no description: no latent range known
    # the translated weights are the trained ones
    net = wf.parser.get_parsed_content("network")
    trained_state = torch.load(trained["out"] / "diffusion.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(v, trained_state[k]) for k, v in net.state_dict().items())


def test_missing_description_is_a_clear_error(trained, tmp_path):
    state = torch.load(trained["out"] / "diffusion.pt", map_location="cpu", weights_only=True)
    torch.save(state, tmp_path / "diffusion.pt")
    with pytest.raises(Exception) as err:
        run_workflow(
            "sample.json",
            workflow_type=None,
            output_dir=str(trained["out"]),
            diffusion_path=str(tmp_path / "diffusion.pt"),
            synthetic_dir=str(tmp_path / "s"),
        )
    text = "".join(str(e) for e in _chain(err.value))
    assert "network, kwargs, scale_factor, latent_shape, noise_schedule unknown" in text and "diffusion.json" in text


def _chain(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


@pytest.mark.parametrize("spatial_dims", [3])
def test_3d_pipeline_writes_nifti(tmp_path, spatial_dims):
    """A 3D datalist (NIfTI volumes) through the three configs, unconditional (no labels), without the
    discriminator, 2 iterations each."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    items = []
    for i in range(4):
        vol = rng.random((10, 12, 9)).astype(np.float32) * 100
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(data / f"vol{i}.nii.gz"))
        items.append({"image": f"vol{i}.nii.gz"})
    (data / "datalist.json").write_text(json.dumps({"training": items[:3], "validation": items[3:]}))
    out = tmp_path / "models"
    common = {"output_dir": str(out), "datalist": str(data / "datalist.json")}
    ae = {
        **TINY_AE,
        "spatial_dims": 3,
        "image_size": 8,
        "batch_size": 2,
        "autoencoder_kwargs#channels": [8, 8],
        "autoencoder_kwargs#attention_levels": [False, False],
        "adversarial": "false",  # as typed on the command line
    }
    ae_wf = run_workflow("train_autoencoder.json", **common, **ae)
    assert ae_wf.parser.get_parsed_content("discriminator") is None
    assert "discriminator" not in torch.load(out / "autoencoder" / "checkpoint_final.pt", weights_only=True)
    dm = {**TINY_DIFFUSION, "batch_size": 2, "diffusion_kwargs#attention_levels": [False, False]}
    wf = run_workflow("train_diffusion.json", **common, **dm)
    assert wf.parser.get_parsed_content("num_classes") == 0
    info = read_model_info(out / "diffusion.pt")
    assert info["network"] == "DiffusionModelUNet" and info["latent_shape"] == [3, 4, 4, 4]
    synthetic = tmp_path / "synthetic"
    s = run_workflow(
        "sample.json",
        workflow_type=None,
        output_dir=str(out),
        synthetic_dir=str(synthetic),
        num_samples=2,
        num_inference_steps=2,
    )
    datalist = s.parser.get_parsed_content("synthesis")
    assert [it["image"] for it in datalist["training"]] == ["images/ldm_000000.nii.gz", "images/ldm_000001.nii.gz"]
    assert all("label" not in it for it in datalist["training"])
    img = LoadImage(image_only=True, ensure_channel_first=True)(str(synthetic / datalist["training"][0]["image"]))
    assert tuple(img.shape) == (1, 8, 8, 8)
