"""The documentation site builds offline with ``mkdocs build --strict``, and its helper scripts work."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DOCS = REPO_ROOT / "tools" / "docs"

needs_mkdocs = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings_handlers")),
    reason="mkdocs-material / mkdocstrings[python] not installed (pip install -e '.[docs]')",
)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_tools_{name}", TOOLS_DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(TOOLS_DOCS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TOOLS_DOCS))
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml", "--site-dir", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return out


@needs_mkdocs
def test_strict_build_renders_every_section(site):
    for page in ("index.html", "method.html", "data-formats.html", "encoder.html", "distributed.html"):
        assert (site / page).is_file(), page
    # API pages are generated from the docstrings: one per subpackage, with real objects in them
    api = (site / "api" / "losses.html").read_text(encoding="utf-8")
    assert "monai_dclcstp.losses.dual_stream_loss.DualStreamLoss" in api
    assert "lambda_local" in api
    for package in ("networks", "losses", "transforms", "engines", "handlers", "data", "generative", "utils"):
        assert (site / "api" / f"{package}.html").is_file(), package
    # the data README is mirrored into the data formats page
    assert "validate_datalist" in (site / "data-formats.html").read_text(encoding="utf-8")
    # every figure the pages reference was copied into the site
    for html in site.rglob("*.html"):
        for src in re.findall(r'<img[^>]+src="([^"]+)"', html.read_text(encoding="utf-8")):
            if not src.startswith(("http:", "https:", "data:")):
                assert (html.parent / src).resolve().is_file(), f"{html.name}: missing image {src}"


@needs_mkdocs
def test_site_loads_nothing_from_the_network(site):
    external = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', re.I)
    offenders = [p.relative_to(site) for p in site.rglob("*.html") if external.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"pages that load external resources: {offenders[:5]}"


@needs_mkdocs
def test_mirrored_links_are_rewritten():
    hooks = _load("mkdocs_hooks")
    assets: set[str] = set()
    mirror = hooks._Mirror("bundles/pretrain/docs/README.md", "bundles/pretrain.md", assets)
    text = (
        "See [the config](../configs/train.json), [data](../../../monai_dclcstp/data/README.md), "
        "[home](../../../README.md), [web](https://monai.io), [gone](../configs/missing.json), "
        "![arch](../../../docs/img/architecture.png).\n"
        "```\n[not a link](../configs/train.json)\n```\n"
    )
    out = mirror.convert(text)
    assert "[the config](../repo/bundles/pretrain/configs/train.json)" in out
    assert "[data](../data-formats.md)" in out
    assert "[home](../index.md)" in out
    assert "[web](https://monai.io)" in out
    assert "![arch](../img/architecture.png)" in out
    assert "[gone](../configs/missing.json)" in out  # left alone: --strict reports it
    assert "[not a link](../configs/train.json)" in out  # code blocks untouched
    assert assets == {"bundles/pretrain/configs/train.json"}


def test_architecture_figure_matches_the_pretrain_bundle():
    """docs/img/architecture.png shows the bundle's current network; regenerate it when the defaults change."""
    import json

    recorded = json.loads((REPO_ROOT / "docs" / "img" / "architecture.json").read_text())
    current = json.loads(json.dumps(_load("architecture").collect(REPO_ROOT / "bundles/pretrain/configs/train.json")))
    assert current == recorded, "the pretrain bundle changed: run python tools/docs/architecture.py"


def test_tsne_separates_clusters():
    tsne = _load("tsne")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 20)), rng.normal(6, 1, (40, 20))])
    labels = np.repeat([0, 1], 40)
    y = tsne.tsne(x, perplexity=10, n_iter=300, exaggeration_iter=100)
    assert y.shape == (80, 2) and np.isfinite(y).all()
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() == 1.0
    np.testing.assert_allclose(y, tsne.tsne(x, perplexity=10, n_iter=300, exaggeration_iter=100))  # deterministic
    with pytest.raises(ValueError, match="N >= 4"):
        tsne.tsne(np.zeros((3, 2)))
