"""Model Zoo packaging of the four bundles: layout, metadata (offline schema), large_files.yml, network shapes, export.

What the Model Zoo CI (``ci/verify_bundle.py``) checks for a bundle, done offline: the directory (metadata, large
files list), ``version`` with its ``changelog`` entry, ``verify_metadata`` against the (vendored) schema,
``verify_net_in_out`` of the network described by ``network_data_format``, and a TorchScript ``ckpt_export``, here
also compared with the eager model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from monai_dclcstp.networks import PretrainedEncoderUNet

REPO = Path(__file__).resolve().parents[2]
BUNDLES_DIR = REPO / "bundles"
BUNDLES = ("pretrain", "ldm", "classification", "segmentation")
SCHEMA = REPO / "monai_dclcstp" / "resources" / "meta_schema_20240725.json"
LARGE_FILE_KEYS = {"path", "url", "hash_val", "hash_type"}
HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _metadata(bundle: str) -> dict:
    return json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))


def test_every_bundle_is_packaged():
    assert sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir()) == sorted(BUNDLES)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_layout_version_and_changelog(bundle):
    root = BUNDLES_DIR / bundle
    for name in ("configs/metadata.json", "configs/logging.conf", "LICENSE", "docs/README.md", "models/.gitkeep"):
        assert (root / name).is_file(), f"{bundle}: {name} is missing"
    assert len((root / "LICENSE").read_text(encoding="utf-8").strip()) > 100, f"{bundle}: LICENSE is empty"
    assert (root / "docs" / "README.md").read_text(encoding="utf-8").lstrip().startswith("#"), bundle
    assert not (root / "scripts").exists(), f"{bundle}: bundles hold no Python (configs only)"
    meta = _metadata(bundle)
    version = meta.get("version", "")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{bundle}: version {version!r} is not MAJOR.MINOR.PATCH"
    changelog = meta.get("changelog", {})
    assert version in changelog and changelog[version].strip(), f"{bundle}: no changelog entry for {version}"
    newest = max(changelog, key=lambda v: tuple(int(x) for x in v.split(".")))
    assert newest == version, f"{bundle}: version {version} is older than the changelog's {newest}"
    assert "monai_dclcstp" in meta.get("required_packages_version", {}), bundle


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_verifies_offline(bundle):
    from monai.bundle import verify_metadata

    meta = _metadata(bundle)
    assert meta["schema"].endswith("/" + SCHEMA.name)
    verify_metadata(meta_file=str(BUNDLES_DIR / bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_large_files_list(bundle):
    from monai.bundle import ConfigParser

    root = BUNDLES_DIR / bundle
    path = root / "large_files.yml"
    assert path.is_file(), f"{bundle}: large_files.yml is missing"
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["large_files"]
    assert (
        entries == ConfigParser.load_config_file(path)["large_files"]
    )  # what `monai.bundle download_large_files` reads
    assert isinstance(entries, list) and entries, bundle
    configs = " ".join(p.read_text(encoding="utf-8") for p in (root / "configs").glob("*.json"))
    paths = []
    for entry in entries:
        assert set(entry) == LARGE_FILE_KEYS, f"{bundle}: {entry} must have exactly {sorted(LARGE_FILE_KEYS)}"
        rel = Path(entry["path"])
        assert not rel.is_absolute() and rel.parts[0] == "models" and ".." not in rel.parts, entry
        assert (root / rel).resolve().is_relative_to((root / "models").resolve()), entry
        paths.append(rel.as_posix())
        # a file the bundle really writes or reads (by its name, or its sidecar's .pt name)
        stem = rel.stem
        assert f"{rel.name}" in configs or f"{stem}.pt" in configs or f"'{stem}'" in configs, (
            f"{bundle}: {rel} is not a file the configs mention"
        )
        if entry["url"]:
            assert re.match(r"https?://", entry["url"]), entry
            assert entry["hash_type"] in HASH_LENGTHS, (
                f"{bundle}: hash_type of {rel} must be one of {list(HASH_LENGTHS)}"
            )
            assert re.fullmatch(rf"[0-9a-f]{{{HASH_LENGTHS[entry['hash_type']]}}}", entry["hash_val"]), entry
        else:
            assert not entry["hash_val"] and not entry["hash_type"], f"{bundle}: a hash without a url for {rel}"
    assert len(paths) == len(set(paths)), f"{bundle}: duplicate paths"
    for p in paths:  # weights travel with their description (Contract 2 and the .json model descriptions)
        if p.endswith(".pt"):
            assert p[:-3] + ".json" in paths, f"{bundle}: {p} is listed without its .json description"


# ----------------------------------------------------------------------------------------------- network shapes


def test_segmentation_inference_network_matches_metadata(tmp_path):
    """``verify_net_in_out`` on the inference config's ``network_def`` (defaults: no trained model.json)."""
    from monai.bundle import verify_net_in_out

    configs = BUNDLES_DIR / "segmentation" / "configs"
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        device="cpu",
        bundle_root=str(configs.parent),
        output_dir=str(tmp_path),
    )


def test_segmentation_metadata_mismatch_is_caught(tmp_path):
    """The check can fail: a network with another number of classes than metadata's 2 output channels."""
    from monai.bundle import verify_net_in_out

    configs = BUNDLES_DIR / "segmentation" / "configs"
    with pytest.raises(ValueError, match="output channel number `3` doesn't match: `2`"):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(configs / "metadata.json"),
            config_file=str(configs / "inference.json"),
            device="cpu",
            bundle_root=str(configs.parent),
            output_dir=str(tmp_path),
            num_classes=3,
        )


def test_pretrain_global_embedding_matches_metadata(tmp_path):
    """The pretraining network's documented output (global embedding of the online encoder, 128 channels).

    ``DCLCsTPNet.forward`` takes two views and returns a dict, so the check runs on its online encoder's global
    branch, the ``pred`` that metadata describes.
    """
    from monai.bundle import verify_net_in_out

    configs = BUNDLES_DIR / "pretrain" / "configs"
    global_branch = "$type('GlobalEmbedding', (torch.nn.Sequential,), {'forward': lambda self, x: self[0](x)[0]})"
    verify_net_in_out(
        net_id="verify_net",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "train.json"),
        device="cpu",
        bundle_root=str(configs.parent),
        output_dir=str(tmp_path),
        verify_net=global_branch + "(@network_def.online)",
    )


def test_ldm_decoder_matches_metadata(tmp_path):
    """The LDM's documented input (3-channel 8x8 latents) decodes to its documented output (1x32x32 images)."""
    from monai.bundle import verify_net_in_out

    configs = BUNDLES_DIR / "ldm" / "configs"
    decoder = "$type('LatentDecoder', (torch.nn.Sequential,), {'forward': lambda self, z: self[0].decode(z)})"
    meta = _metadata("ldm")["network_data_format"]
    assert meta["inputs"]["image"]["spatial_shape"] == [8, 8] and meta["outputs"]["pred"]["spatial_shape"] == [32, 32]
    verify_net_in_out(
        net_id="verify_net",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "train_autoencoder.json"),
        device="cpu",
        bundle_root=str(configs.parent),
        output_dir=str(tmp_path),
        verify_net=decoder + "(@autoencoder_def)",
    )
    with torch.no_grad():  # and the spatial size, which verify_net_in_out does not compare
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(configs / "train_autoencoder.json"))
        parser["bundle_root"] = str(configs.parent)
        out = parser.get_parsed_content("autoencoder_def").eval().decode(torch.rand(1, 3, 8, 8))
    assert tuple(out.shape) == (1, 1, 32, 32)


# ----------------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def segmentation_model(tmp_path_factory) -> Path:
    """A segmentation ``models/`` folder: model.pt (random ResNet-10 U-Net, BN statistics not trivial) + model.json."""
    out = tmp_path_factory.mktemp("seg_models")
    torch.manual_seed(0)
    net = PretrainedEncoderUNet(3, 2, backbone="resnet10")
    net.train()
    with torch.no_grad():  # a few forward passes give the batch-norm layers non-default running statistics
        for _ in range(2):
            net(torch.rand(2, 3, 64, 64))
    torch.save(net.state_dict(), out / "model.pt")
    info = {"backbone": "resnet10", "spatial_dims": 2, "in_channels": 3, "num_classes": 2, "image_size": 64}
    (out / "model.json").write_text(json.dumps(info))
    return out


def _eager(out: Path) -> PretrainedEncoderUNet:
    net = PretrainedEncoderUNet(3, 2, backbone="resnet10").eval()
    net.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    return net


SCRIPTING_FAILS = pytest.mark.xfail(
    strict=True,
    raises=RuntimeError,
    reason="not TorchScript-compatible: MONAI's ResNetEncoder (shortcut type A, MedicalNet layout) keeps a "
    "functools.partial as ResNetBlock.downsample, which torch.jit.script rejects, and PretrainedEncoderUNet.forward "
    "calls super().forward; export with --use_trace True (traced at the inference size)",
)


@pytest.mark.parametrize("use_trace", [pytest.param(False, marks=SCRIPTING_FAILS), True], ids=["scripted", "traced"])
def test_segmentation_ckpt_export_matches_eager(segmentation_model, use_trace):
    """``ckpt_export`` of the inference network (as the Model Zoo CI does) gives the eager model's logits."""
    from monai.bundle import ckpt_export

    out = segmentation_model
    configs = BUNDLES_DIR / "segmentation" / "configs"
    ts = out / f"model_{'traced' if use_trace else 'scripted'}.ts"
    kwargs = {"use_trace": True, "input_shape": [1, 3, 64, 64]} if use_trace else {}
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(out / "model.pt"),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        bundle_root=str(configs.parent),
        output_dir=str(out),
        **kwargs,
    )
    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == _metadata("segmentation")["version"]
    assert json.loads(extra["inference.json"])["network_def"]["_target_"].endswith("PretrainedEncoderUNet")
    eager = _eager(out)
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)  # the size inference feeds the network (image_size, resize mode)
    with torch.no_grad():
        expected = eager(x)
        torch.testing.assert_close(exported(x), expected, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(expected[:, 0], expected[:, 1])  # not a degenerate output
