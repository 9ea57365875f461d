"""Crafted malicious checkpoints are refused by every loader of the package, and no code path unpickles freely.

The payload is an object whose ``__reduce__`` makes unpickling call ``open(marker, "w")``: the marker file appears if,
and only if, the file is unpickled without ``weights_only=True`` (shown once on purpose, so the tests can fail).
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from torch import nn

from monai_dclcstp.generative import load_generative_weights
from monai_dclcstp.handlers import AtomicCheckpointSaver, LatestCheckpointLoader
from monai_dclcstp.handlers.checkpoint_resume import UnsafeCheckpointError
from monai_dclcstp.utils import load_pretrained_encoder
from monai_dclcstp.utils.io import sha256_file

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "monai_dclcstp"


class Payload:
    """Unpickling this runs ``open(marker, "w")`` (standing in for any code an attacker would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Linear(3, 2).state_dict()


def malicious_zip(path: Path, marker: Path, state: dict | None = None) -> Path:
    """A ``torch.save`` zip archive that looks like a checkpoint but carries the payload."""
    torch.save(
        {"network": state or _state(), "trainer": {"iteration": 9, "epoch_length": 3}, "x": Payload(marker)}, path
    )
    return path


def bare_pickle(path: Path, marker: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    """A plain ``pickle.dump`` file with the payload (what ``torch.load`` without ``weights_only`` would run)."""
    with open(path, "wb") as f:
        pickle.dump({"network": _state(), "x": Payload(marker)}, f, protocol=protocol)
    return path


def text_pickle(path: Path, marker: Path) -> Path:
    """A protocol-0 pickle: no ``\\x80`` header, so only parsing its opcodes tells it is a pickle."""
    return bare_pickle(path, marker, protocol=0)


def legacy_torch_save(path: Path, marker: Path) -> Path:
    """The pre-1.6 ``torch.save`` format (a sequence of pickles, not a zip archive) with the payload."""
    torch.save({"network": _state(), "x": Payload(marker)}, path, _use_new_zipfile_serialization=False)
    return path


MAKERS = {
    "zip": malicious_zip,
    "bare_pickle": bare_pickle,
    "text_pickle": text_pickle,
    "legacy_torch_save": legacy_torch_save,
}


def _newest(path: Path) -> Path:
    later = time.time() + 60
    os.utime(path, (later, later))
    return path


def test_the_payload_is_live(tmp_path):
    """Control: loaded the unsafe way, each crafted file does run its code (so the refusals below mean something)."""
    for kind, make in MAKERS.items():
        marker = tmp_path / f"pwned-{kind}"
        path = make(tmp_path / f"{kind}.pt", marker)
        if kind.endswith("_pickle"):
            with open(path, "rb") as f:
                pickle.load(f)  # noqa: S301 - the point of the control
        else:
            torch.load(path, weights_only=False)  # noqa: S614 - the point of the control
        assert marker.exists(), kind


def _trained_folder(folder: Path) -> None:
    """Two genuine checkpoints (epochs 1 and 2) written by the bundles' saver."""
    net = nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = Engine(lambda e, b: (opt.zero_grad(), net(torch.ones(1, 3)).sum().backward(), opt.step()))
    AtomicCheckpointSaver(str(folder), {"net": net, "opt": opt}, engine_key="trainer", save_interval=1).attach(engine)
    engine.run([0, 1, 2], max_epochs=2)


@pytest.mark.parametrize("kind, name", [("zip", "checkpoint_final.pt"), ("bare_pickle", "checkpoint_epoch=9.pt"),
                                        ("text_pickle", "checkpoint_final.pt"),
                                        ("legacy_torch_save", "checkpoint_epoch=3.pt")])  # fmt: skip
def test_latest_checkpoint_loader_refuses_a_malicious_newest_checkpoint(tmp_path, kind, name):
    _trained_folder(tmp_path)
    marker = tmp_path.parent / f"pwned-{kind}"
    bad = _newest(MAKERS[kind](tmp_path / name, marker))
    net = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loader = LatestCheckpointLoader(tmp_path, {"net": net, "opt": torch.optim.SGD(net.parameters(), lr=0.1)})
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    with pytest.raises(UnsafeCheckpointError) as err:
        engine.run([0, 1, 2], max_epochs=4)
    message = str(err.value)
    assert str(bad) in message and "refusing to load checkpoint" in message and "weights_only=True" in message
    assert not marker.exists()  # the payload never ran
    assert loader.loaded_path is None and engine.state.iteration == 0  # stopped, not silently resumed from epoch 2
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert isinstance(err.value, pickle.UnpicklingError)  # callers catching unpickling errors still see it


def test_monai_checkpoint_loader_of_the_inference_configs_refuses_it(tmp_path):
    """``CheckpointLoader`` (evaluate/inference configs of the downstream bundles) loads with ``weights_only=True``."""
    from monai.handlers import CheckpointLoader

    marker = tmp_path / "pwned"
    path = malicious_zip(tmp_path / "model.pt", marker)
    engine = Engine(lambda e, b: None)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        CheckpointLoader(str(path), {"net": nn.Linear(3, 2)})(engine)
    assert not marker.exists()


def _encoder_with_sidecar(pt: Path) -> None:
    """The sidecar an attacker would ship: right architecture and the file's real sha256."""
    info = {"format_version": 1, "backbone": "resnet10", "spatial_dims": 2, "in_channels": 1, "sha256": sha256_file(pt)}
    pt.with_suffix(".json").write_text(json.dumps(info))


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_load_pretrained_encoder_refuses_a_malicious_encoder(tmp_path, kind):
    marker = tmp_path / "pwned"
    pt = MAKERS[kind](tmp_path / "encoder.pt", marker)
    _encoder_with_sidecar(pt)
    with pytest.raises(ValueError, match=rf"refusing to load {re.escape(str(pt))}: not a plain tensor state dict"):
        load_pretrained_encoder(nn.Linear(3, 2), pt, backbone="resnet10", spatial_dims=2, in_channels=1)
    assert not marker.exists()


def test_load_pretrained_encoder_refuses_non_tensor_values(tmp_path):
    """Allowed by ``weights_only`` (plain containers) but not a state dict of tensors: refused with the file named."""
    pt = tmp_path / "encoder.pt"
    torch.save({"weight": [1, 2, 3]}, pt)
    _encoder_with_sidecar(pt)
    with pytest.raises(ValueError, match=rf"{re.escape(str(pt))} is not a state dict of tensors"):
        load_pretrained_encoder(nn.Linear(3, 2), pt, backbone="resnet10", spatial_dims=2, in_channels=1)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_load_generative_weights_refuses_a_malicious_file(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = MAKERS[kind](tmp_path / "autoencoder.pt", marker)
    with pytest.raises(ValueError, match=rf"refusing to load {re.escape(str(path))}: not a plain tensor checkpoint"):
        load_generative_weights(nn.Linear(3, 2), path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- static source checks


def _python_sources() -> list[Path]:
    roots = [PACKAGE, REPO / "benchmarks", REPO / "tools", REPO / "tests"]
    return sorted(
        p
        for root in roots
        if root.is_dir()
        for p in root.rglob("*.py")
        if not any(part.startswith(".") for part in p.parts)
    )


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


#: calls that unpickle (or may run code from) a file without a safe mode
UNSAFE_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.load", "marshal.loads", "shelve.open",
                "dill.load", "dill.loads", "joblib.load", "cloudpickle.load", "cloudpickle.loads", "yaml.unsafe_load",
                "pd.read_pickle", "pandas.read_pickle"}  # fmt: skip


def _unsafe_loads(path: Path) -> list[str]:
    """Unsafe load calls in one source file (files under ``tests/`` may unpickle the files they craft themselves, on
    lines marked ``noqa: S301`` / ``noqa: S614``)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    exempt = REPO / "tests" in path.parents
    problems = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{path}:{node.lineno}"
        if exempt and re.search(r"noqa: S(301|614)", lines[node.lineno - 1]):
            continue
        if name.endswith("torch.load") or name == "torch.serialization.load":
            if _keyword(node, "weights_only") is not True:
                problems.append(f"{where}: torch.load without weights_only=True")
        elif name in UNSAFE_CALLS:
            problems.append(f"{where}: {name}")
        elif name.endswith(("np.load", "numpy.load")) and _keyword(node, "allow_pickle") not in (None, False):
            problems.append(f"{where}: np.load with allow_pickle")
        elif name == "yaml.load" and "Safe" not in ast.unparse(node):
            problems.append(f"{where}: yaml.load without a safe loader")
    return problems


def test_every_torch_load_uses_weights_only_and_nothing_unpickles():
    sources = _python_sources()
    assert len([p for p in sources if PACKAGE in p.parents]) > 50  # the package was actually scanned
    problems = [problem for path in sources for problem in _unsafe_loads(path)]
    assert problems == [], "\n".join(problems)


def test_the_scan_finds_unsafe_calls(tmp_path):
    """The checker itself: it flags each unsafe form (and accepts the safe ones)."""
    bad = tmp_path / "probe.py"
    code = (
        "import pickle, torch, numpy as np, yaml\n"
        "a = torch.load('x.pt')\n"
        "b = torch.load('x.pt', map_location='cpu', weights_only=False)\n"
        "c = pickle.load(open('x', 'rb'))\n"
        "d = np.load('x.npy', allow_pickle=True)\n"
        "e = yaml.load(open('x'), Loader=yaml.Loader)\n"
        "ok1 = torch.load('x.pt', weights_only=True)\n"
        "ok2 = np.load('x.npz')\n"
        "ok3 = yaml.load(open('x'), Loader=yaml.SafeLoader)\n"
    )
    bad.write_text(code + "f = pickle.loads(b'')  # noqa: S301\n")
    found = _unsafe_loads(bad)  # outside tests/: the noqa mark does not exempt it
    assert [int(f.split(":")[1]) for f in found] == [2, 3, 4, 5, 6, 10], found


def test_bundle_configs_load_only_through_safe_loaders():
    """Bundle configs never call ``torch.load``/``pickle`` directly: they use the package loaders tested above."""
    configs = sorted((REPO / "bundles").glob("*/configs/*.json"))
    assert configs
    for config in configs:
        text = config.read_text(encoding="utf-8")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{config}: {call}"
        assert not re.search(r"\bpickle\.|\bdill\.|allow_pickle\s*=\s*True|weights_only\s*=\s*False", text), config
