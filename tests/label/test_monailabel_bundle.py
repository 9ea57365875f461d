"""MONAI Label serves the segmentation bundle: ``BundleInferTask`` loads ``inference.json`` and runs one inference.

MONAI Label pins ``numpy<2``, so it lives in its own environment: ``.ci/label_tests.sh`` builds it and runs this file.
Skipped when ``monailabel`` is not importable.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def _import_torchvision() -> None:
    """Import torchvision, working around a CUDA-built torchvision next to a CPU-only torch.

    PyPI's Linux torchvision wheels link against the CUDA build of torch; with the CPU torch of this project's
    environments (the CPU torchvision wheel is only on download.pytorch.org) its compiled ops do not load and
    ``import torchvision`` fails with "operator torchvision::nms does not exist" (``_meta_registrations`` registers fake
    kernels for ``nms``/``qnms`` without checking that the ops exist). MONAI Label imports torchvision at module level
    but its segmentation inference uses none of those ops, so the two schemas are declared (without kernels) and the
    import retried. With a matching torch/torchvision pair nothing is changed.
    """
    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:
        if "torchvision::nms does not exist" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401


if importlib.util.find_spec("monailabel") is None:
    pytest.skip("monailabel is not installed (run .ci/label_tests.sh)", allow_module_level=True)
if importlib.util.find_spec("torchvision") is not None:
    _import_torchvision()

from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: E402
from PIL import Image  # noqa: E402

from monai_dclcstp.networks import PretrainedEncoderUNet  # noqa: E402

pytestmark = pytest.mark.label

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "segmentation"
SAMPLE = REPO / "data" / "samples" / "ph2" / "images" / "IMD020.jpg"


def _bundle_with_model(tmp_path: Path, foreground: bool) -> Path:
    """Copy the bundle's configs and put a ``models/model.pt`` (as training writes it) beside them.

    The weights are random except the segmentation head's bias, which makes every pixel background or foreground, so
    the expected mask is known.
    """
    root = tmp_path / "segmentation"  # MONAI Label infers the task type from the folder name
    shutil.copytree(BUNDLE / "configs", root / "configs")
    (root / "models").mkdir()
    torch.manual_seed(0)
    net = PretrainedEncoderUNet(in_channels=3, out_channels=2, backbone="resnet18", spatial_dims=2)
    conv = net.segmentation_head[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.0, 5.0]) if foreground else torch.tensor([5.0, 0.0]))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def test_bundle_infer_task_info(tmp_path):
    task = BundleInferTask(str(_bundle_with_model(tmp_path, True)), {})
    assert task.is_valid()
    info = task.info()
    assert info["type"] == "segmentation"
    assert info["labels"] == {"lesion": 1}
    assert info["dimension"] == 2


@pytest.mark.parametrize("foreground", [True, False])
def test_bundle_infer_task_runs_on_sample(tmp_path, foreground):
    task = BundleInferTask(str(_bundle_with_model(tmp_path, foreground)), {})
    result_file, result_json = task({"image": str(SAMPLE), "device": "cpu", "result_extension": ".png"})
    assert isinstance(result_file, str) and Path(result_file).is_file(), result_file
    mask = np.asarray(Image.open(result_file))
    width, height = Image.open(SAMPLE).size
    assert mask.shape[:2] == (height, width)  # the input's geometry (128 x 96, not the network's 128 x 128)
    assert np.unique(mask).tolist() == ([1] if foreground else [0])
    assert result_json["label_names"] == {"lesion": 1}
