"""Label efficiency and ablations (issue 9): does each part of DCL-CsTP help downstream?

**PneumoniaMNIST** (``../shared/data/pneumoniamnist``): every pretraining variant runs the pretraining bundle on the
train split *without labels* with the same budget (epochs, image size, batch, optimiser, seed); each encoder (and a
random initialisation) is then fine-tuned by the classification bundle with 1 %, 10 % and 100 % of the labels, for
several fine-tuning seeds, and evaluated by its ``evaluate.json``. Variants:

- ``random``: no pretraining (the classification bundle's random initialisation);
- ``global``: global stream only (``lambda_local 0``; MoCo-like);
- ``local``: local (dense) stream only (``lambda_local 1``);
- ``c5``: both streams on C5 tokens only, i.e. no cross-scale projection (``network_def#encoder#scales ['c5']``,
  ``network_def#encoder#grid c5``);
- ``full``: DCL-CsTP as the bundle ships it (C3-C5 tokens on the C4 grid, ``lambda_local 0.5``);
- ``asym``: ``full`` with the asymmetric step (``symmetric False``: view 1 through the online encoder, view 2 through
  the momentum encoder, as MoCo v2 / DenseCL), same iterations at half the compute;
- ``full_ldm``: ``full`` + synthetic images of the LDM bundle: ``--ldm-models`` (by default the model that
  ``bench_ldm_sampling.py`` trains on the same train split, when it exists) is sampled by the LDM bundle's
  ``sample.json`` (cached), or ``--synthetic-datalist`` is used as given. A fraction ``--synthetic-ratio`` of the
  pretraining set is synthetic; a class-conditional model fills up the smaller class (``class_weights balance``:
  real + synthetic balanced). The epochs shrink by ``1 - ratio``, so it trains for the same number of iterations as
  the other variants.

Protocol (no test-set selection): the train split is split once (seed 0, stratified) into a **labelled pool** (90 %,
the 1/10/100 % subsets are drawn from it with the bundle's own ``train_fraction`` + ``seed``) and a **dev** set (10 %:
the bundle's ``validation`` split, used for best-checkpoint selection and for the decision threshold of
``evaluate.json``). The reported numbers are on the official **val split** (524 images), passed as the datalist's
``test`` split, which nothing is tuned on. The same subsets feed two frozen-feature measures that isolate the
representation: a similarity-weighted 20-NN vote and a class-balanced logistic-regression **linear probe** on the
average-pooled C5 features (L2 strength and threshold chosen on dev).

**PH2** (``../shared/data/ph2``): 140 pairs split once into train 80 / dev 20 / test 40 (seed 0, stratified by
diagnosis). The full method is pretrained by the pretraining bundle on the 100 train + dev images (RGB, no masks;
PneumoniaMNIST encoders are grey and would not fit ``in_channels 3``), then the segmentation bundle fine-tunes a
U-Net from that encoder or from a random one with 25 % and 100 % of the training masks; ``evaluate.json`` reports
Dice on the test images at their original size.

Bundles run the way users run them: ``monai.bundle.run`` with the bundle's config file and command-line overrides
(in this process by default, which saves the interpreter start-up of ~100 runs; ``--subprocess`` runs each as
``python -m monai.bundle run ...``). Every hyper-parameter the benchmark relies on is pinned in the overrides, so
changes of the bundle defaults do not change the benchmark; each run's exact command is in the results JSON.
Runs are cached in ``--work-dir`` (one ``result.json`` per run, reused when its overrides match), so an interrupted
benchmark resumes where it stopped.

Usage::

    python benchmarks/bench_label_efficiency.py                      # full benchmark, 2.6 CPU-hours (+ the LDM of bench_ldm_sampling)
    python benchmarks/bench_label_efficiency.py --jobs 2             # two runs at a time (2 cores: about half the wall time)
    python benchmarks/bench_label_efficiency.py --quick              # smoke version on the embedded samples
    python benchmarks/bench_label_efficiency.py --parts ph2          # one part
    python benchmarks/bench_label_efficiency.py --report-only        # re-render tables/plot from cached runs
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import common

NAME = "label_efficiency"
BUNDLES = common.REPO_ROOT / "bundles"
PRETRAIN_CFG = BUNDLES / "pretrain" / "configs" / "train.json"
CLS_TRAIN_CFG = BUNDLES / "classification" / "configs" / "train.json"
CLS_EVAL_CFG = BUNDLES / "classification" / "configs" / "evaluate.json"
SEG_TRAIN_CFG = BUNDLES / "segmentation" / "configs" / "train.json"
SEG_EVAL_CFG = [SEG_TRAIN_CFG, BUNDLES / "segmentation" / "configs" / "evaluate.json"]  # an overlay of train.json
SHARED_DATA = common.REPO_ROOT / ".." / "shared" / "data"
PH2_DIR = SHARED_DATA / "ph2"
LDM_SAMPLE_CFG = BUNDLES / "ldm" / "configs" / "sample.json"
DEFAULT_LDM_MODELS = common.RESULTS_DIR / "raw" / "ldm" / "full" / "models"  # trained by bench_ldm_sampling.py
SAMPLE_PNEUMONIA = common.REPO_ROOT / "data" / "samples" / "pneumoniamnist" / "datalist.json"
SAMPLE_PH2 = common.REPO_ROOT / "data" / "samples" / "ph2"
DEFAULT_WORK = common.RESULTS_DIR / "raw" / NAME


@dataclass(frozen=True)
class Variant:
    """One pretraining variant: a label and the pretraining-bundle overrides that make it (``None``: no pretraining)."""

    key: str
    label: str
    overrides: Mapping[str, Any] | None = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant("random", "random init (no pretraining)", None),
        Variant("global", "global stream only (λ=0)", {"lambda_local": 0.0}),
        Variant("local", "local stream only (λ=1)", {"lambda_local": 1.0}),
        Variant(
            "c5",
            "dual-stream, C5 only (no cross-scale projection)",
            {"network_def#encoder#scales": ["c5"], "network_def#encoder#grid": "c5"},
        ),
        Variant("full", "full DCL-CsTP", {}),
        Variant("asym", "full DCL-CsTP, asymmetric step (half the compute)", {"symmetric": False}),
        Variant("full_ldm", "full DCL-CsTP + LDM synthetic images", {}),  # + synthetic_datalist, set at run time
    )
}

# --------------------------------------------------------------------------------------------- pinned settings


def pretrain_pinned(s: argparse.Namespace, in_channels: int, image_size: int, epochs: int) -> dict[str, Any]:
    """Every pretraining-bundle key the benchmark relies on (bundle defaults may move; these do not)."""
    return {
        "device": s.device,
        "spatial_dims": 2,
        "in_channels": in_channels,
        "backbone": "resnet18",
        "image_size": image_size,
        "crop_scale": [0.2, 1.0],
        "intensity": {"mode": "auto"},
        "batch_size": s.pretrain_batch,
        "max_epochs": epochs,
        "lr": s.pretrain_lr,
        "weight_decay": 1e-4,
        "warmup_epochs": 1,
        "lambda_local": 0.5,
        "symmetric": True,
        "temperature": 0.2,
        "queue_size": 256,
        "embed_dim": 128,
        "out_dim": 128,
        "momentum_start": 0.99,
        "grad_clip_norm": 3.0,
        "amp": True,  # CUDA only
        "network_def#encoder#scales": ["c3", "c4", "c5"],
        "network_def#encoder#grid": "c4",
        "network_def#encoder#num_layers": 1,
        "network_def#encoder#num_heads": 4,
        "network_def#encoder#mlp_ratio": 2.0,
        "network_def#encoder#attention": "softmax",
        "network_def#encoder#head_hidden_dim": 512,
        "loss#pos_threshold": 0.7,
        "loss#local_negatives": "batch",
        "val_fraction": 0.0,
        "val_interval": 0,
        "knn_k": 20,
        "knn_features": ["backbone"],
        "synthetic_datalist": "",
        "synthetic_ratio": 0.5,
        "num_workers": 0,
        "cache_rate": 1.0,
        "seed": 0,
        "resume": False,
        "save_interval": epochs,
        "n_saved": 1,
        "progress_bar": False,
    }


def classification_pinned(s: argparse.Namespace) -> dict[str, Any]:
    """Every classification-bundle key the benchmark relies on."""
    return {
        "device": s.device,
        "spatial_dims": 2,
        "in_channels": 1,
        "backbone": "resnet18",
        "layout": "auto",
        "three_class": False,
        "image_size": s.image_size,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "backbone_lr_scale": 1.0,
        "freeze_encoder": False,
        "dropout": 0.0,
        "class_weighting": "loss",
        "key_metric": "val_auc",
        "augment": True,
        "flip_prob": 0.0,
        "default_intensity": {"mode": "auto"},
        "num_workers": 0,
        "cache_rate": 1.0,
        "amp": True,
        "resume": False,
        "progress_bar": False,
    }


def segmentation_pinned(s: argparse.Namespace) -> dict[str, Any]:
    """Every segmentation-bundle key the benchmark relies on."""
    return {
        "device": s.device,
        "spatial_dims": 2,
        "in_channels": 3,
        "num_classes": 2,
        "backbone": "resnet18",
        "image_size": s.ph2_image_size,
        "spatial_mode": "resize",
        "batch_size": 4,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "backbone_lr_scale": 1.0,
        "freeze_encoder": False,
        "dice_weight": 1.0,
        "ce_weight": 1.0,
        "augment": True,
        "default_intensity": {"mode": "auto"},
        "num_workers": 0,
        "cache_rate": 1.0,
        "amp": True,
        "resume": False,
        "progress_bar": False,
    }


# --------------------------------------------------------------------------------------------- running bundles


def _cli_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _rel(path: str | Path) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(common.REPO_ROOT))
    except ValueError:
        return str(p)


def _config_arg(config_file: Path | Sequence[Path], rel: bool = True) -> str:
    fmt = _rel if rel else str
    if isinstance(config_file, (list, tuple)):
        return json.dumps([fmt(c) for c in config_file])
    return fmt(config_file)


def bundle_command(config_file: Path | Sequence[Path], overrides: Mapping[str, Any]) -> str:
    """The ``python -m monai.bundle run`` command equivalent to a run (paths relative to the repository root)."""
    parts = ["python", "-m", "monai.bundle", "run", "--config_file", _config_arg(config_file)]
    for key, value in overrides.items():
        if isinstance(value, (str, Path)) and (os.sep in str(value)) and Path(value).is_absolute():
            value = _rel(value)
        parts += [f"--{key}", _cli_value(value)]
    return " ".join(shlex.quote(p) for p in parts)


# keys pinned after the committed results were cached: at these values they are left out of the fingerprint, so the
# cached runs (which ran with the same bundle default) stay valid
LATE_PINNED = {"symmetric": True}


def _fingerprint(overrides: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in overrides.items() if not (k in LATE_PINNED and v == LATE_PINNED[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_bundle(
    config_file: Path | Sequence[Path],
    overrides: Mapping[str, Any],
    log_file: Path,
    use_subprocess: bool = False,
    threads: int = 1,
) -> dict[str, float]:
    """Run a bundle config with overrides (like ``python -m monai.bundle run``); stdout/stderr go to ``log_file``.

    Returns ``{"wall_s", "cpu_s"}``. Raises ``RuntimeError`` naming the log file when the run fails.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if use_subprocess:
        argv = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_arg(config_file, rel=False)]
        for key, value in overrides.items():
            argv += [f"--{key}", _cli_value(value)]
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        with open(log_file, "w") as log:
            child = subprocess.Popen(argv, cwd=common.REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own CPU time, also with several runs at once
            child.returncode = rc = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        if rc != 0:
            raise RuntimeError(f"bundle run failed (exit {rc}): {config_file}; see {log_file}")
    else:
        from monai.bundle import run as monai_bundle_run

        c0 = time.process_time()
        with open(log_file, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            moved = _streams_to(log)
            try:
                files = [str(c) for c in config_file] if isinstance(config_file, (list, tuple)) else str(config_file)
                monai_bundle_run(config_file=files, **copy.deepcopy(dict(overrides)))
            except Exception as e:
                raise RuntimeError(f"bundle run failed: {config_file} ({type(e).__name__}: {e}); see {log_file}") from e
            finally:
                for handler, stream in moved:
                    handler.setStream(stream)
                root = logging.getLogger()
                for h in list(root.handlers):  # handlers of the bundle's logging.conf write to the closed log file
                    if getattr(h, "stream", None) is log:
                        root.removeHandler(h)
        cpu = time.process_time() - c0
        gc.collect()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu}


def _streams_to(stream) -> list[tuple[logging.StreamHandler, Any]]:
    """Point every console logging handler (e.g. MONAI's module loggers, created at import) at ``stream``."""
    console = {sys.__stdout__, sys.__stderr__}
    moved = []
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in lg.handlers:
            if type(h) is logging.StreamHandler and h.stream in console:
                moved.append((h, h.setStream(stream)))
    return moved


class RunCache:
    """One folder per run under ``root``; ``result.json`` is reused when the run's fingerprint matches."""

    def __init__(
        self, root: Path, fresh: bool = False, log: Callable[[str], None] = print, read_only: bool = False
    ) -> None:
        self.root = Path(root)
        self.fresh = fresh
        self.log = log
        self.read_only = read_only  # --report-only: a missing run is skipped, never run

    def sub(self, name: str) -> RunCache:
        return RunCache(self.root / name, self.fresh, self.log, self.read_only)

    def dir(self, name: str) -> Path:
        return self.root / name

    def get(self, name: str, fingerprint: str) -> dict | None:
        path = self.dir(name) / "result.json"
        if self.fresh or not path.is_file():
            return None
        result = json.loads(path.read_text())
        return result if result.get("fingerprint") == fingerprint else None

    def put(self, name: str, result: Mapping[str, Any]) -> dict:
        path = self.dir(name) / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
        tmp.replace(path)
        return dict(result)


def _clean_checkpoints(folder: Path, keep: Iterable[str] = ()) -> None:
    keep = set(keep)
    for p in folder.glob("*.pt"):
        if p.name not in keep:
            p.unlink()
    for sub in ("data_cache", "runs"):
        if (folder / sub).is_dir():
            shutil.rmtree(folder / sub, ignore_errors=True)


# --------------------------------------------------------------------------------------------- datalists


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return path


def _limit(items: list[dict], n: int | None, key: str | None = "label", seed: int = 0) -> list[dict]:
    """At most ``n`` items, stratified (smoke runs only)."""
    if not n or len(items) <= n:
        return items
    from monai_dclcstp.data.datalist import subsample

    return subsample(items, n / len(items), seed, key)[:n]


def pneumonia_datalists(s: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Labelled pool / dev / test datalist for fine-tuning and the unlabelled pretraining datalist."""
    from monai_dclcstp.data import load_datalist
    from monai_dclcstp.data.datalist import split_datalist

    if s.quick:
        src = load_datalist(SAMPLE_PNEUMONIA, task="classification")
        source = _rel(SAMPLE_PNEUMONIA)
    else:
        if not common.PNEUMONIAMNIST_NPZ.is_file():
            raise SystemExit(f"data not found: {common.PNEUMONIAMNIST_NPZ} (see ../shared/data/README.md)")
        src = load_datalist(None, common.PNEUMONIAMNIST_NPZ, task="classification", cache_dir=work / "data_cache")
        source = "../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz"
    train = [{"image": it["image"], "label": it["label"]} for it in src["training"]]
    test = [{"image": it["image"], "label": it["label"]} for it in src["validation"]]
    train, test = _limit(train, s.limit), _limit(test, s.limit)
    pool, dev = split_datalist(train, s.dev_fraction, seed=0, stratify_key="label")
    classes = list(src.get("classes") or ["normal", "pneumonia"])
    finetune = write_json(
        work / "datalist_finetune.json",
        {
            "description": f"{source}: train split = labelled pool (training) + dev (validation, {s.dev_fraction:g} "
            "of train, stratified, seed 0); official val split as test",
            "classes": classes,
            "training": pool,
            "validation": dev,
            "test": test,
        },
    )
    pretrain = write_json(
        work / "datalist_pretrain.json",
        {
            "description": f"{source}: every train-split image, labels removed (unlabelled pretraining)",
            "training": [{"image": it["image"]} for it in train],
        },
    )

    def counts(items):
        return {c: sum(1 for it in items if it["label"] == i) for i, c in enumerate(classes)}

    return {
        "source": source,
        "finetune_datalist": finetune,
        "pretrain_datalist": pretrain,
        "classes": classes,
        "counts": {"pool": counts(pool), "dev": counts(dev), "test": counts(test), "pretrain": len(train)},
    }


def ph2_datalists(s: argparse.Namespace, work: Path) -> dict[str, Any]:
    """train / dev / test segmentation datalist (stratified by diagnosis) and the unlabelled pretraining datalist."""
    from monai_dclcstp.data import load_datalist
    from monai_dclcstp.data.datalist import split_datalist

    root = SAMPLE_PH2 if s.quick else PH2_DIR
    if not root.is_dir():
        raise SystemExit(f"data not found: {root} (see ../shared/data/README.md)")
    src = load_datalist(None, root, task="segmentation", val_fraction=0.0, cache_dir=work / "data_cache")
    items = [
        {"image": it["image"], "label": it["label"], "diagnosis": it.get("diagnosis", -1)} for it in src["training"]
    ]
    items = sorted(items, key=lambda it: it["image"])
    n = len(items)
    rest, test = split_datalist(items, s.ph2_test / n if s.ph2_test >= 1 else s.ph2_test, 0, "diagnosis")
    train, dev = split_datalist(rest, s.ph2_dev / len(rest) if s.ph2_dev >= 1 else s.ph2_dev, 0, "diagnosis")
    seg = write_json(
        work / "datalist_segmentation.json",
        {
            "description": f"{_rel(root) if s.quick else '../shared/data/ph2'}: {len(train)} train / {len(dev)} dev "
            f"(validation) / {len(test)} test, stratified by diagnosis, seed 0",
            "training": train,
            "validation": dev,
            "test": test,
        },
    )
    pretrain = write_json(
        work / "datalist_pretrain.json",
        {
            "description": "PH2 train + dev images without masks (test images are not seen by pretraining)",
            "training": [{"image": it["image"]} for it in train + dev],
        },
    )
    return {
        "source": "data/samples/ph2" if s.quick else "../shared/data/ph2",
        "segmentation_datalist": seg,
        "pretrain_datalist": pretrain,
        "counts": {"train": len(train), "dev": len(dev), "test": len(test), "pretrain": len(train) + len(dev)},
    }


# --------------------------------------------------------------------------------------------- stages


def pretrain(
    s: argparse.Namespace,
    cache: RunCache,
    name: str,
    datalist: Path,
    overrides: Mapping[str, Any],
) -> dict | None:
    """Run the pretraining bundle (cached); the result holds the encoder path, times and the final losses."""
    out = cache.dir(name)
    ov = {**overrides, "datalist": str(datalist), "output_dir": str(out)}
    fp = _fingerprint(ov)
    hit = cache.get(name, fp)
    if hit is not None and Path(hit["encoder"]).is_file():
        cache.log(f"[cached] {name}")
        return hit
    if cache.read_only:
        return None
    if out.is_dir():
        shutil.rmtree(out)
    cache.log(f"[run] {name}: {bundle_command(PRETRAIN_CFG, ov)}")
    times = run_bundle(PRETRAIN_CFG, ov, out / "log.txt", s.subprocess, s.threads)
    summary = json.loads((out / "run_summary.json").read_text()) if (out / "run_summary.json").is_file() else {}
    losses = _last_losses(out / "log.txt")
    _clean_checkpoints(out, keep=("encoder.pt",))
    result = {
        "name": name,
        "fingerprint": fp,
        "command": bundle_command(PRETRAIN_CFG, ov),
        "overrides": ov,
        "encoder": str(out / "encoder.pt"),
        "iterations": summary.get("iterations"),
        "epochs": summary.get("epochs"),
        "last_losses": losses,
        **times,
    }
    cache.log(f"      {name}: {times['cpu_s']:.0f} CPU s, {times['wall_s']:.0f} s wall, losses {losses}")
    return cache.put(name, result)


def synthesize(s: argparse.Namespace, cache: RunCache, models: Path, num_real: int) -> dict | None:
    """Sample the LDM bundle's model in ``models`` with its ``sample.json`` (cached) for the ``full_ldm`` variant.

    Writes ``round(num_real * r / (1 - r))`` images (``r = --synthetic-ratio``) beside the model
    (``<models>/../synthetic_rebalanced``); a class-conditional model fills up the smaller classes first
    (``class_weights balance``), so that real + synthetic images are as balanced as possible.
    """
    models = Path(models).resolve()
    out = models.parent / "synthetic_rebalanced"
    n = round(num_real * s.synthetic_ratio / (1.0 - s.synthetic_ratio))
    ov = {"device": s.device, "output_dir": str(models), "synthetic_dir": str(out), "num_samples": n,
          "class_weights": "balance", "scheduler": "sde_dpm_solver++", "num_inference_steps": 20, "batch_size": 64,
          "seed": 1, "progress_bar": False, "overwrite": True}  # fmt: skip
    model_sha = json.loads((models / "diffusion.json").read_text()).get("sha256")
    fp = _fingerprint({**ov, "diffusion_sha256": model_sha})
    ldm_cache = RunCache(models.parent, s.fresh, cache.log, cache.read_only)
    hit = ldm_cache.get(out.name, fp)
    if hit is not None and Path(hit["datalist"]).is_file():
        cache.log(f"[cached] {out}")
        return hit
    if cache.read_only:
        return None
    cache.log(f"[run] {out.name}: {bundle_command(LDM_SAMPLE_CFG, ov)}")
    out.mkdir(parents=True, exist_ok=True)
    times = run_bundle(LDM_SAMPLE_CFG, ov, models.parent / f"{out.name}.log", s.subprocess, s.threads)
    items = json.loads((out / "datalist.json").read_text())["training"]
    counts = dict(Counter(str(it.get("label")) for it in items))
    result = {"name": out.name, "fingerprint": fp, "command": bundle_command(LDM_SAMPLE_CFG, ov),
              "datalist": str(out / "datalist.json"), "num_images": len(items), "class_counts": counts,
              "diffusion_sha256": model_sha, **times}  # fmt: skip
    cache.log(f"      {out.name}: {len(items)} images {counts}, {times['cpu_s']:.0f} CPU s")
    return ldm_cache.put(out.name, result)


def _last_losses(log_file: Path, n: int = 20) -> dict[str, float] | None:
    """Mean of the last ``n`` logged iterations' losses (the StatsHandler lines of the pretraining log)."""
    import re

    pat = re.compile(r"(loss(?:_global|_local)?): ([-+0-9.eE]+|nan)")
    rows = []
    try:
        for line in log_file.read_text(errors="replace").splitlines():
            found = dict(pat.findall(line))
            if "loss" in found:
                rows.append({k: float(v) for k, v in found.items()})
    except OSError:
        return None
    rows = rows[-n:]
    if not rows:
        return None
    return {k: round(statistics.fmean(r[k] for r in rows if k in r), 4) for k in rows[-1]}


def finetune_classification(
    s: argparse.Namespace,
    cache: RunCache,
    name: str,
    datalist: Path,
    encoder: str,
    fraction: float,
    seed: int,
    epochs: int,
    val_interval: int,
) -> dict | None:
    """Classification bundle ``train.json`` then ``evaluate.json`` (test split, threshold from dev); cached."""
    out = cache.dir(name)
    train_ov = {
        **classification_pinned(s),
        "datalist": str(datalist),
        "output_dir": str(out),
        "pretrained_encoder": encoder,
        "train_fraction": fraction,
        "seed": seed,
        "max_epochs": epochs,
        "val_interval": min(val_interval, epochs),
    }
    eval_ov = {
        "device": s.device,
        "datalist": str(datalist),
        "output_dir": str(out),
        "eval_split": "test",
        "threshold": "auto",
        "positive_class": 1,
        "batch_size": 64,
        "num_workers": 0,
    }
    fp = _fingerprint({"train": train_ov, "eval": eval_ov})
    hit = cache.get(name, fp)
    if hit is not None or cache.read_only:
        return hit
    if out.is_dir():
        shutil.rmtree(out)
    cache.log(f"[run] {name}: {bundle_command(CLS_TRAIN_CFG, train_ov)}")
    t_train = run_bundle(CLS_TRAIN_CFG, train_ov, out / "train_log.txt", s.subprocess, s.threads)
    t_eval = run_bundle(CLS_EVAL_CFG, eval_ov, out / "eval_log.txt", s.subprocess, s.threads)
    report = json.loads((out / "eval" / "report_test.json").read_text())
    model_info = json.loads((out / "model.json").read_text())
    _clean_checkpoints(out)
    metrics = {}
    for kind in ("default", "calibrated"):
        m = report.get(kind) or {}
        for key in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1"):
            metrics[f"{key}_{kind}"] = m.get(key)
    result = {
        "name": name,
        "fingerprint": fp,
        "commands": [bundle_command(CLS_TRAIN_CFG, train_ov), bundle_command(CLS_EVAL_CFG, eval_ov)],
        "fraction": fraction,
        "seed": seed,
        "train_class_counts": model_info.get("train_class_counts"),
        "threshold": report.get("threshold"),
        "threshold_source": report.get("threshold_source"),
        "num_test": report.get("num_samples"),
        "metrics": metrics,
        "train": t_train,
        "eval": t_eval,
        "cpu_s": t_train["cpu_s"] + t_eval["cpu_s"],
        "wall_s": t_train["wall_s"] + t_eval["wall_s"],
    }
    cache.log(
        f"      {name}: AUC {metrics['auc_calibrated']:.4f}, bal. acc {metrics['balanced_accuracy_calibrated']:.4f}, "
        f"acc {metrics['accuracy_calibrated']:.4f} (threshold {report.get('threshold')}), "
        f"{result['cpu_s']:.0f} CPU s"
    )
    return cache.put(name, result)


def finetune_segmentation(
    s: argparse.Namespace,
    cache: RunCache,
    name: str,
    datalist: Path,
    encoder: str,
    fraction: float,
    seed: int,
    epochs: int,
    val_interval: int,
) -> dict | None:
    """Segmentation bundle ``train.json`` then ``evaluate.json`` on the test split; cached."""
    out = cache.dir(name)
    train_ov = {
        **segmentation_pinned(s),
        "datalist": str(datalist),
        "output_dir": str(out),
        "pretrained_encoder": encoder,
        "train_fraction": fraction,
        "seed": seed,
        "max_epochs": epochs,
        "val_interval": min(val_interval, epochs),
    }
    eval_ov = {
        "device": s.device,
        "datalist": str(datalist),
        "output_dir": str(out),
        "eval_split": "test",
        "num_workers": 0,
        "progress_bar": False,
    }
    fp = _fingerprint({"train": train_ov, "eval": eval_ov})
    hit = cache.get(name, fp)
    if hit is not None or cache.read_only:
        return hit
    if out.is_dir():
        shutil.rmtree(out)
    cache.log(f"[run] {name}: {bundle_command(SEG_TRAIN_CFG, train_ov)}")
    t_train = run_bundle(SEG_TRAIN_CFG, train_ov, out / "train_log.txt", s.subprocess, s.threads)
    t_eval = run_bundle(SEG_EVAL_CFG, eval_ov, out / "eval_log.txt", s.subprocess, s.threads)
    report = json.loads((out / "eval" / "metrics.json").read_text())
    model_info = json.loads((out / "model.json").read_text()) if (out / "model.json").is_file() else {}
    _clean_checkpoints(out)
    summary = report.get("summary", {})
    metrics = {
        f"{k}_{stat}": (summary.get(k) or {}).get(stat)
        for k in ("dice", "iou", "hd95")
        for stat in ("mean", "median", "std")
    }
    result = {
        "name": name,
        "fingerprint": fp,
        "commands": [bundle_command(SEG_TRAIN_CFG, train_ov), bundle_command(SEG_EVAL_CFG, eval_ov)],
        "fraction": fraction,
        "seed": seed,
        "num_train": model_info.get("num_training", model_info.get("num_train")),
        "num_test": (summary.get("dice") or {}).get("n"),
        "metrics": metrics,
        "train": t_train,
        "eval": t_eval,
        "cpu_s": t_train["cpu_s"] + t_eval["cpu_s"],
        "wall_s": t_train["wall_s"] + t_eval["wall_s"],
    }
    cache.log(f"      {name}: Dice {metrics['dice_mean']:.4f}, {result['cpu_s']:.0f} CPU s")
    return cache.put(name, result)


# --------------------------------------------------------------------------------------------- frozen features


def extract_features(s: argparse.Namespace, datalist: Path, encoder: str, splits: Sequence[str]) -> dict[str, Any]:
    """Average-pooled C5 features of the classification bundle's network and validation transforms.

    The transforms and the network come from the classification bundle's own ``train.json`` (parsed with the
    benchmark's pinned overrides), so the features are those the fine-tuning starts from. Random initialisation
    uses ``set_determinism(0)`` like the bundle with ``seed 0``.
    """
    import torch
    from monai.bundle import ConfigParser
    from monai.data import DataLoader, Dataset
    from monai.utils import set_determinism

    parser = ConfigParser()
    parser.read_config(str(CLS_TRAIN_CFG))
    parser.update(
        {
            **classification_pinned(s),
            "bundle_root": str(BUNDLES / "classification"),
            "output_dir": str(Path(s.work_dir) / "feature_tmp"),
            "datalist": str(datalist),
            "pretrained_encoder": encoder,
            "seed": 0,
        }
    )
    set_determinism(0)
    transform = parser.get_parsed_content("validate#preprocessing")
    network = parser.get_parsed_content("network_def").eval()
    data = json.loads(datalist.read_text())
    feats: dict[str, Any] = {}
    with torch.no_grad():
        for split in splits:
            items = data[split]
            loader = DataLoader(Dataset([{"image": it["image"]} for it in items], transform), batch_size=256)
            chunks = [network.forward_features(batch["image"].as_tensor().float()) for batch in loader]
            feats[split] = torch.cat(chunks).double()
            feats[f"{split}_labels"] = torch.tensor([it["label"] for it in items])
            feats[f"{split}_images"] = [it["image"] for it in items]
    set_determinism(None)
    return feats


def knn_scores(query, bank, bank_labels, k: int = 20, temperature: float = 0.07):
    """Similarity-weighted kNN vote (as the pretraining bundle's kNN monitor) → class-1 vote share ``(Nq,)``."""
    import torch
    import torch.nn.functional as F

    q, b = F.normalize(query.double(), dim=1), F.normalize(bank.double(), dim=1)
    k = min(k, b.shape[0])
    top_sim, top_idx = (q @ b.T).topk(k, dim=1)
    w = (top_sim / temperature).exp()
    scores = torch.zeros(q.shape[0], 2, dtype=w.dtype)
    scores.scatter_add_(1, bank_labels[top_idx], w)
    return scores / scores.sum(dim=1, keepdim=True)


def fit_logistic(x, y, l2: float, class_weights, max_iter: int = 200):
    """L2-regularised, class-weighted logistic regression (full-batch L-BFGS) → ``(w, b)``."""
    import torch

    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    sw = class_weights[y]
    yf = y.to(x.dtype)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = x @ w + b
        loss = (sw * torch.nn.functional.binary_cross_entropy_with_logits(logits, yf, reduction="none")).sum()
        loss = loss / sw.sum() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe_metrics(feats: Mapping[str, Any], pool_index: Sequence[int], l2_grid: Sequence[float]) -> dict[str, Any]:
    """kNN and linear probe of one labelled subset (indices into the pool): metrics on the test split."""
    import torch

    from monai_dclcstp.handlers.classification_metrics import classification_metrics, select_threshold

    idx = torch.as_tensor(list(pool_index), dtype=torch.long)
    xb, yb = feats["training"][idx], feats["training_labels"][idx]
    out: dict[str, Any] = {"num_labelled": len(idx), "labelled_counts": [int((yb == c).sum()) for c in (0, 1)]}

    def as_probs(p1):
        return torch.stack([1 - p1, p1], dim=1)

    # kNN: bank = the labelled subset, argmax vote (and AUC of the vote share)
    knn_test = knn_scores(feats["test"], xb, yb)
    m = classification_metrics(knn_test, feats["test_labels"])
    out.update({f"knn_{k}": m[k] for k in ("accuracy", "balanced_accuracy", "auc")})

    # linear probe: standardise with all train-split features (unlabelled), class-balanced weights
    everything = torch.cat([feats["training"], feats["validation"]])
    mu, sd = everything.mean(0), everything.std(0).clamp_min(1e-6)

    def z(x):
        return (x - mu) / sd

    counts = torch.bincount(yb, minlength=2).double()
    cw = torch.where(counts > 0, counts.sum() / (2 * counts.clamp_min(1)), torch.zeros_like(counts))
    best = None
    for l2 in l2_grid:
        w, b = fit_logistic(z(xb), yb, l2, cw)
        p_dev = torch.sigmoid(z(feats["validation"]) @ w + b)
        auc_dev = classification_metrics(as_probs(p_dev), feats["validation_labels"])["auc"] or 0.0
        if best is None or auc_dev > best[0]:
            best = (auc_dev, l2, w, b, p_dev)
    auc_dev, l2, w, b, p_dev = best
    threshold = select_threshold(as_probs(p_dev), feats["validation_labels"])
    p_test = as_probs(torch.sigmoid(z(feats["test"]) @ w + b))
    cal = classification_metrics(p_test, feats["test_labels"], threshold=threshold)
    arg = classification_metrics(p_test, feats["test_labels"])
    out.update(
        {
            "linear_l2": l2,
            "linear_dev_auc": auc_dev,
            "linear_threshold": threshold,
            "linear_auc": cal["auc"],
            "linear_balanced_accuracy": cal["balanced_accuracy"],
            "linear_accuracy": cal["accuracy"],
            "linear_balanced_accuracy_argmax": arg["balanced_accuracy"],
            "linear_accuracy_argmax": arg["accuracy"],
        }
    )
    return out


def frozen_probes(
    s: argparse.Namespace, cache: RunCache, name: str, datalist: Path, encoder: str, encoder_sha: str | None
) -> dict | None:
    """kNN + linear probe of one encoder, for every fraction and seed (same subsets as the fine-tuning)."""
    from monai_dclcstp.data import load_datalist

    fp = _fingerprint(
        {"datalist": str(datalist), "encoder": encoder, "sha": encoder_sha, "fractions": s.fractions,
         "seeds": s.seeds, "l2": s.l2_grid, "image_size": s.image_size}
    )  # fmt: skip
    hit = cache.get(name, fp)
    if hit is not None or cache.read_only:
        return hit
    t0, c0 = time.perf_counter(), time.process_time()
    feats = extract_features(s, datalist, encoder, ("training", "validation", "test"))
    position = {img: i for i, img in enumerate(feats["training_images"])}
    runs = []
    for fraction in s.fractions:
        for seed in s.seeds:
            subset = load_datalist(str(datalist), task="classification", seed=seed, train_fraction=fraction)
            index = [position[it["image"]] for it in subset["training"]]
            runs.append({"fraction": fraction, "seed": seed, **probe_metrics(feats, index, s.l2_grid)})
    result = {
        "name": name,
        "fingerprint": fp,
        "encoder": encoder,
        "features": "average-pooled C5 of the classification bundle's EncoderClassifier (validate#preprocessing)",
        "runs": runs,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }
    full = [r for r in runs if r["fraction"] == 1.0][:1]
    if full:
        cache.log(
            f"      {name}: kNN acc {full[0]['knn_accuracy']:.4f} bacc {full[0]['knn_balanced_accuracy']:.4f} "
            f"AUC {full[0]['knn_auc']:.4f}; linear AUC {full[0]['linear_auc']:.4f}"
        )
    return cache.put(name, result)


# --------------------------------------------------------------------------------------------- aggregation


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def pm(values: Sequence[float | None], digits: int = 3) -> str:
    m, sd, n = mean_std(values)
    if m is None:
        return "–"
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _pct(f: float) -> str:
    return f"{f * 100:g} %"


#: fine-tuning metrics summarised per variant and fraction (``calibrated``: threshold from dev; ``default``: argmax)
SUMMARY_METRICS = (
    "auc_calibrated",
    "balanced_accuracy_calibrated",
    "accuracy_calibrated",
    "balanced_accuracy_default",
    "accuracy_default",
)


def summarize_pneumonia(res: Mapping[str, Any], fractions: Sequence[float]) -> list[dict]:
    """One row per variant: mean ± std over seeds of the fine-tuned and probe metrics, and paired Δ vs random."""
    rows = []
    base = res["finetune"].get("random", {})
    for key, per in res["finetune"].items():
        row: dict[str, Any] = {"variant": key, "label": VARIANTS[key].label}
        for f in fractions:
            runs = [r for r in per.values() if r["fraction"] == f]
            for metric in SUMMARY_METRICS:
                vals = [r["metrics"][metric] for r in runs]
                row[f"{metric}@{f}"] = mean_std(vals)
                row[f"{metric}@{f}:values"] = vals
                if key != "random" and base:
                    by_seed = {r["seed"]: r["metrics"][metric] for r in base.values() if r["fraction"] == f}
                    diffs = [r["metrics"][metric] - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]
                    row[f"delta_{metric}@{f}"] = mean_std(diffs)
        probes = res["probes"].get(key)
        if probes:
            for f in fractions:
                runs = [r for r in probes["runs"] if r["fraction"] == f]
                for metric in ("knn_accuracy", "knn_balanced_accuracy", "knn_auc", "linear_auc",
                               "linear_balanced_accuracy", "linear_accuracy"):  # fmt: skip
                    row[f"{metric}@{f}"] = mean_std([r[metric] for r in runs])
        rows.append(row)
    return rows


def _cell(stat: tuple | None, digits: int = 3, signed: bool = False) -> str:
    if not stat or stat[0] is None:
        return "–"
    m, sd, n = stat
    sign = "+" if signed and m >= 0 else ""
    return f"{sign}{m:.{digits}f} ± {sd:.{digits}f}"


def _counts(counts: Mapping[str, int]) -> str:
    return f"{sum(counts.values())} images: " + " / ".join(f"{n} {c}" for c, n in counts.items())


def markdown_report(payload: Mapping[str, Any]) -> str:
    """The results section: headline tables, protocol, per-variant pretraining cost, PH2, commands."""
    s = payload["settings"]
    fractions = s["fractions"]
    lines: list[str] = []
    quick = s.get("quick")
    if quick:
        lines.append("*Smoke run (`--quick`): embedded samples, tiny budget — these numbers are not results.*\n")
    pn = payload.get("pneumonia")
    if pn:
        rows = pn["summary"]
        n_seeds = len(s["seeds"])
        lines.append(
            "### PneumoniaMNIST: fine-tuned classification (classification bundle), test = official val split "
            f"({_counts(pn['data']['counts']['test'])})\n"
        )
        lines.append(
            f"Mean ± std over {n_seeds} fine-tuning seeds ({', '.join(map(str, s['seeds']))}; one pretraining run per "
            "variant, seed 0). Threshold chosen on the dev set (Youden's J), best checkpoint by dev AUC. "
            "Labelled subsets: " + ", ".join(
                f"{_pct(f)} = {pn['subset_sizes'].get(str(f), '?')} images" for f in fractions) + ".\n"
        )  # fmt: skip
        head = ["variant"] + [f"AUC {_pct(f)}" for f in fractions] + [f"bal. acc {_pct(f)}" for f in fractions]
        head += [f"acc {_pct(f)}" for f in fractions]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rows:
            cells = [r["label"]]
            for metric in ("auc_calibrated", "balanced_accuracy_calibrated", "accuracy_calibrated"):
                cells += [_cell(r.get(f"{metric}@{f}")) for f in fractions]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if any(r["variant"] != "random" for r in rows):
            lines.append(
                "Paired difference to random init (same seed = same labelled subset), mean ± std over seeds:\n"
            )
            head = ["variant"] + [f"Δ AUC {_pct(f)}" for f in fractions] + [f"Δ bal. acc {_pct(f)}" for f in fractions]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            for r in rows:
                if r["variant"] == "random":
                    continue
                cells = [r["label"]]
                for metric in ("auc_calibrated", "balanced_accuracy_calibrated"):
                    cells += [_cell(r.get(f"delta_{metric}@{f}"), signed=True) for f in fractions]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        lines.append("### PneumoniaMNIST: frozen features (average-pooled C5), same subsets and test split\n")
        lines.append(
            "kNN: similarity-weighted 20-NN vote (temperature 0.07, as the pretraining bundle's kNN monitor), bank = "
            "the labelled subset, argmax vote. Linear probe: class-balanced logistic regression on standardised "
            "features, L2 strength and threshold chosen on dev.\n"
        )
        last = fractions[-1]
        head = ["variant", f"kNN acc ({_pct(last)})", f"kNN bal. acc ({_pct(last)})", f"kNN AUC ({_pct(last)})"]
        head += [f"kNN bal. acc {_pct(f)}" for f in fractions[:-1]]
        head += [f"linear AUC {_pct(f)}" for f in fractions] + [f"linear bal. acc {_pct(f)}" for f in fractions]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rows:
            cells = [r["label"]]
            cells += [_cell(r.get(f"{m}@{last}")) for m in ("knn_accuracy", "knn_balanced_accuracy", "knn_auc")]
            cells += [_cell(r.get(f"knn_balanced_accuracy@{f}")) for f in fractions[:-1]]
            cells += [_cell(r.get(f"linear_auc@{f}")) for f in fractions]
            cells += [_cell(r.get(f"linear_balanced_accuracy@{f}")) for f in fractions]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Pretraining runs (pretraining bundle, unlabelled train split, same budget):\n")
        lines.append(
            "| variant | overrides beyond the pinned settings | iterations | CPU s | final losses (mean of last 20 it.) |"
        )
        lines.append("|---|---|---|---|---|")
        for key, pre in pn["pretrain"].items():
            ov = VARIANTS[key].overrides or {}
            extra = ", ".join(f"`{k} {_cli_value(v)}`" for k, v in ov.items()) or "–"
            if key == "full_ldm":
                extra = (f"`synthetic_datalist …`, `synthetic_ratio {pre['overrides'].get('synthetic_ratio')}`, "
                         f"`max_epochs {pre['overrides'].get('max_epochs')}`, "
                         f"`warmup_epochs {pre['overrides'].get('warmup_epochs')}`")  # fmt: skip
            losses = ", ".join(f"{k} {v:.3f}" for k, v in (pre.get("last_losses") or {}).items())
            lines.append(
                f"| {VARIANTS[key].label} | {extra} | {pre.get('iterations')} | {pre['cpu_s']:.0f} | {losses} |"
            )
        lines.append("")
        syn = pn.get("synthetic")
        if syn:
            lines.append(
                f"Synthetic images of the `full_ldm` variant: {syn['num_images']} images per class "
                f"{syn['class_counts']} from the LDM bundle's class-conditional model (trained on the same train split "
                f"with its labels, by `benchmarks/bench_ldm_sampling.py`), {syn['cpu_s']:.0f} CPU s: `{syn['command']}`\n"
            )
        if pn.get("not_measured"):
            for key, why in pn["not_measured"].items():
                lines.append(f"- **{VARIANTS[key].label}: not measured.** {why}")
            lines.append("")
    ph = payload.get("ph2")
    if ph:
        c = ph["data"]["counts"]
        lines.append(
            f"### PH2: lesion segmentation Dice (segmentation bundle), test = {c['test']} held-out images at their "
            "original size\n"
        )
        lines.append(
            f"Split {c['train']} train / {c['dev']} dev / {c['test']} test (stratified by diagnosis, seed 0). "
            f"Pretrained = the full method pretrained on the {c['pretrain']} train + dev images (no masks). "
            f"Mean ± std over {len(s['seeds'])} fine-tuning seeds; each seed's value is the mean Dice over the test "
            "images.\n"
        )
        head = ["encoder"] + [
            f"Dice {_pct(f)} masks ({ph['subset_sizes'].get(str(f), '?')})" for f in s["ph2_fractions"]
        ]
        head += [f"IoU {_pct(f)}" for f in s["ph2_fractions"]]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for key, label in (("random", "random init"), ("full", "DCL-CsTP pretrained on PH2")):
            per = ph["finetune"].get(key)
            if not per:
                continue
            cells = [label]
            for metric in ("dice_mean", "iou_mean"):
                for f in s["ph2_fractions"]:
                    cells.append(pm([r["metrics"][metric] for r in per.values() if r["fraction"] == f]))
            lines.append("| " + " | ".join(cells) + " |")
        if "full" in ph["finetune"] and "random" in ph["finetune"]:
            cells = ["Δ (paired by seed)"]
            for metric in ("dice_mean", "iou_mean"):
                for f in s["ph2_fractions"]:
                    base = {
                        r["seed"]: r["metrics"][metric] for r in ph["finetune"]["random"].values() if r["fraction"] == f
                    }
                    d = [r["metrics"][metric] - base[r["seed"]] for r in ph["finetune"]["full"].values()
                         if r["fraction"] == f and r["seed"] in base]  # fmt: skip
                    cells.append(_cell(mean_std(d), signed=True))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        pre = ph.get("pretrain")
        if pre:
            lines.append(
                f"PH2 pretraining: {pre.get('iterations')} iterations, {pre['cpu_s']:.0f} CPU s; "
                f"final losses {pre.get('last_losses')}.\n"
            )
    lines.append("### Settings and commands\n")
    lines.append(payload["protocol_text"])
    lines.append("")
    lines.append("Example commands (every run's exact command is in `benchmarks/results/label_efficiency.json`):\n")
    lines.append("```bash")
    for cmd in payload.get("example_commands", []):
        lines.append(cmd)
    lines.append("```")
    lines.append("")
    total = payload.get("total_cpu_s")
    if total:
        lines.append(f"Total: {total / 60:.0f} CPU minutes, {payload.get('total_wall_s', 0) / 60:.0f} wall minutes.\n")
    return "\n".join(lines)


def protocol_text(s: argparse.Namespace) -> str:
    ep = ", ".join(
        f"{_pct(f)}: {e} epochs (dev eval every {v})"
        for f, e, v in zip(s.fractions, s.finetune_epochs, s.finetune_val_interval)
    )
    ph = ", ".join(f"{_pct(f)}: {e} epochs" for f, e in zip(s.ph2_fractions, s.ph2_epochs))
    return (
        f"- Pretraining (PneumoniaMNIST): pretraining bundle, {s.image_size} px, batch {s.pretrain_batch}, "
        f"{s.pretrain_epochs} epochs, AdamW lr {s.pretrain_lr:g} (wd 1e-4, 1 warm-up epoch, cosine), temperature 0.2, "
        "queue 256, embed/out 128, 1 token-mixing block (4 heads, MLP ratio 2, softmax), momentum 0.99→1, clip 3, "
        "crop scale 0.2-1, seed 0.\n"
        f"- Fine-tuning (classification bundle): {s.image_size} px, batch 32, AdamW lr 1e-3 (wd 1e-4, cosine), "
        f"class-weighted loss, affine augmentation, best checkpoint by dev AUC; {ep}. `evaluate.json` on the test "
        "split with the threshold chosen on dev.\n"
        f"- PH2 pretraining: pretraining bundle, RGB, {s.ph2_image_size} px, batch {s.pretrain_batch}, "
        f"{s.ph2_pretrain_epochs} epochs, otherwise as above. Segmentation bundle: {s.ph2_image_size} px (resize), "
        f"batch 4, AdamW lr 1e-3, Dice + CE, best checkpoint by dev Dice; {ph}.\n"
        f"- Every run pins these keys on the command line (see `pretrain_pinned`, `classification_pinned`, "
        f"`segmentation_pinned` in the script); 1 torch thread; seeds {s.seeds}."
    )


def plot(payload: Mapping[str, Any], path: Path) -> Path | None:
    """Fine-tuned AUC, linear-probe AUC vs label fraction (log x) and PH2 Dice bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pn, ph = payload.get("pneumonia"), payload.get("ph2")
    panels = (2 if pn else 0) + (1 if ph else 0)
    if not panels:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8))
    axes = list(axes) if panels > 1 else [axes]
    fractions = payload["settings"]["fractions"]
    i = 0
    if pn:
        for ax, metric, title in (
            (axes[0], "auc_calibrated", "fine-tuned: test AUC"),
            (axes[1], "linear_auc", "linear probe (frozen): test AUC"),
        ):
            for r in pn["summary"]:
                pts = [(f, r.get(f"{metric}@{f}")) for f in fractions]
                pts = [(f * 100, st[0], st[1]) for f, st in pts if st and st[0] is not None]
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=r["label"])
            ax.set_xscale("log")
            ax.set_xlabel("% of training labels")
            ax.set_ylabel("AUC (mean ± std over seeds)")
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        i = 2
    if ph:
        ax = axes[i]
        fr = payload["settings"]["ph2_fractions"]
        for j, (key, label) in enumerate((("random", "random init"), ("full", "DCL-CsTP (PH2)"))):
            per = ph["finetune"].get(key) or {}
            stats = [mean_std([r["metrics"]["dice_mean"] for r in per.values() if r["fraction"] == f]) for f in fr]
            ax.bar([k + 0.4 * j - 0.2 for k in range(len(fr))], [st[0] or 0 for st in stats], width=0.4,
                   yerr=[st[1] or 0 for st in stats], capsize=3, label=label)  # fmt: skip
        ax.set_xticks(range(len(fr)), [f"{f * 100:g} % masks" for f in fr])
        ax.set_ylabel("test Dice (mean ± std over seeds)")
        ax.set_title("PH2 segmentation", fontsize=9)
        lo = min((r["metrics"]["dice_mean"] for per in ph["finetune"].values() for r in per.values()
                  if r["metrics"]["dice_mean"] is not None), default=0.0)  # fmt: skip
        ax.set_ylim(max(0.0, lo - 0.1), 1.0)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    return common.save_figure(fig, path)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["pneumonia", "ph2"], choices=["pneumonia", "ph2"])
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="default: all (full_ldm only with --synthetic-datalist)")  # fmt: skip
    p.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="fine-tuning seeds")
    p.add_argument("--image-size", type=int, default=32, help="PneumoniaMNIST pretraining and fine-tuning size")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--pretrain-batch", type=int, default=16)
    p.add_argument("--pretrain-lr", type=float, default=1e-4)
    p.add_argument("--finetune-epochs", nargs="+", type=int, default=[40, 12, 3], help="per fraction")
    p.add_argument("--finetune-val-interval", nargs="+", type=int, default=[5, 2, 1], help="per fraction")
    p.add_argument("--dev-fraction", type=float, default=0.1, help="share of the train split held out as dev")
    p.add_argument("--l2-grid", nargs="+", type=float, default=[1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    p.add_argument("--synthetic-datalist", type=Path, default=None, help="LDM bundle output for the full_ldm variant")
    p.add_argument("--ldm-models", type=Path, default=None,
                   help="LDM bundle models (autoencoder.pt, diffusion.pt) to sample for full_ldm (default: those of "
                   "bench_ldm_sampling.py, when they exist)")  # fmt: skip
    p.add_argument("--synthetic-ratio", type=float, default=0.5)
    p.add_argument("--ph2-image-size", type=int, default=64)
    p.add_argument("--ph2-pretrain-epochs", type=int, default=40)
    p.add_argument("--ph2-fractions", nargs="+", type=float, default=[0.25, 1.0])
    p.add_argument("--ph2-epochs", nargs="+", type=int, default=[60, 20], help="per PH2 fraction")
    p.add_argument("--ph2-val-interval", type=int, default=2)
    p.add_argument("--ph2-test", type=float, default=40, help="test images (count, or fraction if < 1)")
    p.add_argument("--ph2-dev", type=float, default=20, help="dev images (count, or fraction if < 1)")
    p.add_argument("--limit", type=int, default=None, help="cap every split at this many images (smoke tests)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="bundle outputs and the run cache")
    p.add_argument("--fresh", action="store_true", help="ignore cached runs")
    p.add_argument("--report-only", action="store_true", help="only re-render the results from cached runs")
    p.add_argument("--subprocess", action="store_true", help="run each bundle as `python -m monai.bundle run`")
    p.add_argument("--jobs", type=int, default=1,
                   help="independent runs at a time, each in its own process (implies --subprocess); 2 on 2 cores")  # fmt: skip
    p.add_argument("--plot", type=Path, default=None, help="figure path (default docs/benchmarks/label_efficiency.png)")
    args = p.parse_args(argv)
    if args.quick:
        args.fractions = [f for f in args.fractions if f in (0.1, 1.0)] or [1.0]
        args.seeds = args.seeds[:1] if args.seeds == [0, 1, 2] else args.seeds
        args.pretrain_epochs, args.ph2_pretrain_epochs = 1, 1
        args.finetune_epochs = [1] * len(args.fractions)
        args.finetune_val_interval = [1] * len(args.fractions)
        args.ph2_fractions = [0.5, 1.0] if args.ph2_fractions == [0.25, 1.0] else args.ph2_fractions
        args.ph2_epochs = [1] * len(args.ph2_fractions)
        args.ph2_image_size, args.ph2_test, args.ph2_dev, args.ph2_val_interval = 32, 6, 4, 1
        args.l2_grid = args.l2_grid[:2]
        if args.variants is None:
            args.variants = ["random", "global", "full"]
    if len(args.finetune_epochs) != len(args.fractions) or len(args.finetune_val_interval) != len(args.fractions):
        p.error("--finetune-epochs and --finetune-val-interval need one value per --fractions entry")
    if len(args.ph2_epochs) != len(args.ph2_fractions):
        p.error("--ph2-epochs needs one value per --ph2-fractions entry")
    if args.ldm_models is None and not args.quick and (DEFAULT_LDM_MODELS / "diffusion.pt").is_file():
        args.ldm_models = DEFAULT_LDM_MODELS
    if args.variants is None:
        args.variants = [v for v in VARIANTS if v != "full_ldm" or args.synthetic_datalist or args.ldm_models]
    if "random" not in args.variants:
        args.variants = ["random", *args.variants]
    if args.jobs > 1:
        args.subprocess = True  # several runs at once: one process each (bundle runs share global state in-process)
    args.work_dir = Path(args.work_dir) / ("quick" if args.quick else "full")
    return args


def run_tasks(tasks: Sequence[Callable[[], Any]], jobs: int = 1) -> list[Any]:
    """Run independent benchmark runs ``jobs`` at a time (``--jobs``; each bundle run is then its own process with
    ``--threads`` threads, so 2 jobs of 1 thread fill 2 cores); results in the order of ``tasks``."""
    if jobs <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda task: task(), tasks))


def same_iterations(base: Mapping[str, Any], synthetic_ratio: float) -> dict[str, Any]:
    """Epoch overrides that keep the pretraining budget (iterations, warm-up, momentum schedule) of ``base``.

    A synthetic fraction ``r`` makes an epoch ``1 / (1 - r)`` times longer, so the ``full_ldm`` variant runs
    ``(1 - r)`` of the epochs: it sees as many images (real + synthetic) as the other variants see real ones.
    """
    keep = 1.0 - float(synthetic_ratio)
    epochs = base["max_epochs"] * keep
    if abs(epochs - round(epochs)) > 1e-6 or round(epochs) < 1:
        raise ValueError(
            f"--pretrain-epochs {base['max_epochs']} x (1 - --synthetic-ratio {synthetic_ratio}) = {epochs:g} is not a "
            "whole number of epochs; pick values whose product is one, so every variant has the same budget."
        )
    return {"max_epochs": round(epochs), "warmup_epochs": base["warmup_epochs"] * keep, "save_interval": round(epochs)}


def run_pneumonia(s: argparse.Namespace, cache: RunCache, log: Callable[[str], None]) -> dict[str, Any]:
    from monai_dclcstp.data import load_datalist

    data = pneumonia_datalists(s, cache.root)
    finetune_dl = data["finetune_datalist"]
    res: dict[str, Any] = {"data": {k: (_rel(v) if isinstance(v, Path) else v) for k, v in data.items()},
                           "pretrain": {}, "finetune": {}, "probes": {}, "not_measured": {}}  # fmt: skip
    res["subset_sizes"] = {
        str(f): len(load_datalist(str(finetune_dl), task="classification", seed=0, train_fraction=f)["training"])
        for f in s.fractions
    }
    base = pretrain_pinned(s, in_channels=1, image_size=s.image_size, epochs=s.pretrain_epochs)
    encoders: dict[str, tuple[str, str | None]] = {"random": ("", None)}
    pretrain_overrides: dict[str, dict[str, Any]] = {}
    for key in s.variants:
        v = VARIANTS[key]
        if v.overrides is None:
            continue
        ov = {**base, **v.overrides}
        if key == "full_ldm":
            synthetic = s.synthetic_datalist
            if not synthetic and s.ldm_models:
                n_real = len(json.loads(Path(data["pretrain_datalist"]).read_text())["training"])
                sampled = synthesize(s, cache, Path(s.ldm_models), n_real)
                synthetic, res["synthetic"] = (sampled["datalist"], sampled) if sampled else (None, None)
            if not synthetic or not Path(synthetic).is_file():
                res["not_measured"][key] = (
                    "no LDM model (`--ldm-models`, trained by `benchmarks/bench_ldm_sampling.py`) or synthetic "
                    "datalist (`--synthetic-datalist`) was available."
                )
                continue
            ov.update({"synthetic_datalist": str(Path(synthetic).resolve()),
                       "synthetic_ratio": s.synthetic_ratio, **same_iterations(base, s.synthetic_ratio)})  # fmt: skip
        pretrain_overrides[key] = ov
    runs = run_tasks(
        [partial(pretrain, s, cache, f"pretrain-{key}", data["pretrain_datalist"], ov) for key, ov in
         pretrain_overrides.items()], s.jobs)  # fmt: skip
    for key, pre in zip(pretrain_overrides, runs):
        if pre is None:
            res["not_measured"][key] = "not run yet (no cached pretraining run)."
            continue
        res["pretrain"][key] = pre
        info = json.loads(Path(pre["encoder"]).with_suffix(".json").read_text())
        encoders[key] = (pre["encoder"], info.get("sha256"))
    for key, (encoder, sha) in encoders.items():
        probes = frozen_probes(s, cache, f"probe-{key}", finetune_dl, encoder, sha)
        if probes is not None:
            res["probes"][key] = probes
    res["finetune"] = {key: {} for key in encoders}
    tasks = {}
    for seed in s.seeds:  # seed-major: an interrupted run still has every variant for the first seeds
        for f, epochs, vi in zip(s.fractions, s.finetune_epochs, s.finetune_val_interval):
            for key, (encoder, _) in encoders.items():
                name = f"finetune-{key}-f{f:g}-s{seed}"
                tasks[key, name] = partial(finetune_classification, s, cache, name, finetune_dl, encoder, f, seed,
                                           epochs, vi)  # fmt: skip
    for (key, name), run in zip(tasks, run_tasks(list(tasks.values()), s.jobs)):
        if run is not None:
            res["finetune"][key][name] = run
    res["summary"] = summarize_pneumonia(res, s.fractions)
    return res


def run_ph2(s: argparse.Namespace, cache: RunCache, log: Callable[[str], None]) -> dict[str, Any]:
    from monai_dclcstp.data import load_datalist

    data = ph2_datalists(s, cache.root)
    seg_dl = data["segmentation_datalist"]
    res: dict[str, Any] = {"data": {k: (_rel(v) if isinstance(v, Path) else v) for k, v in data.items()},
                           "finetune": {}}  # fmt: skip
    res["subset_sizes"] = {
        str(f): len(load_datalist(str(seg_dl), task="segmentation", seed=0, train_fraction=f)["training"])
        for f in s.ph2_fractions
    }
    ov = pretrain_pinned(s, in_channels=3, image_size=s.ph2_image_size, epochs=s.ph2_pretrain_epochs)
    pre = pretrain(s, cache, "pretrain-full", data["pretrain_datalist"], ov)
    res["pretrain"] = pre
    res["finetune"] = {"random": {}, "full": {}}
    inits = [("random", "")] + ([("full", pre["encoder"])] if pre else [])
    tasks = {}
    for seed in s.seeds:
        for f, epochs in zip(s.ph2_fractions, s.ph2_epochs):
            for key, encoder in inits:
                name = f"segment-{key}-f{f:g}-s{seed}"
                tasks[key, name] = partial(finetune_segmentation, s, cache, name, seg_dl, encoder, f, seed, epochs,
                                           s.ph2_val_interval)  # fmt: skip
    for (key, name), run in zip(tasks, run_tasks(list(tasks.values()), s.jobs)):
        if run is not None:
            res["finetune"][key][name] = run
    return res


def _all_runs(obj: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(obj, Mapping):
        if "fingerprint" in obj and "cpu_s" in obj:
            yield obj
        else:
            for v in obj.values():
                yield from _all_runs(v)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    s = parse_args(argv)
    if s.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(s.threads))
    common.apply_threads(s)
    machine = common.machine_info(s.device)
    log = print
    cache = RunCache(s.work_dir, s.fresh and not s.report_only, lambda m: print(m, flush=True), s.report_only)
    cache.root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    payload: dict[str, Any] = {
        "name": NAME,
        "command": common.command_line(),
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()},
        "pinned": {
            "pretrain": pretrain_pinned(s, 1, s.image_size, s.pretrain_epochs),
            "classification": classification_pinned(s),
            "segmentation": segmentation_pinned(s),
        },
        "variants": {k: {"label": v.label, "overrides": v.overrides} for k, v in VARIANTS.items() if k in s.variants},
        "protocol_text": protocol_text(s),
    }
    if s.report_only:
        previous = common.load_results(NAME if not s.tag and not s.quick else f"{NAME}-{s.tag or 'quick'}", s.out)
        if previous:
            payload["machine"] = previous.get("machine", machine)
    if "pneumonia" in s.parts:
        log("== PneumoniaMNIST")
        payload["pneumonia"] = run_pneumonia(s, cache.sub("pneumonia"), log)
    if "ph2" in s.parts:
        log("== PH2")
        payload["ph2"] = run_ph2(s, cache.sub("ph2"), log)
    runs = list(_all_runs({k: payload.get(k) for k in ("pneumonia", "ph2")}))
    payload["total_cpu_s"] = sum(r.get("cpu_s", 0.0) for r in runs)
    payload["total_wall_s"] = sum(r.get("wall_s", 0.0) for r in runs)
    payload["this_invocation_wall_s"] = time.perf_counter() - t0
    examples = []
    pn = payload.get("pneumonia")
    if pn:
        for key in ("full", "c5"):
            if key in pn["pretrain"]:
                examples.append(pn["pretrain"][key]["command"])
        for key in ("full", "random"):
            runs_k = list(pn["finetune"].get(key, {}).values())
            if runs_k:
                examples += runs_k[0]["commands"]
    ph = payload.get("ph2")
    if ph and ph.get("pretrain"):
        examples.append(ph["pretrain"]["command"])
        runs_k = list(ph["finetune"].get("full", {}).values())
        if runs_k:
            examples += runs_k[0]["commands"]
    payload["example_commands"] = examples
    tag = s.tag if s.tag is not None else ("quick" if s.quick else "")
    plot_path = s.plot or (
        common.DOCS_IMG_DIR / "label_efficiency.png" if not s.quick and s.out == common.RESULTS_DIR
        else Path(s.out) / f"{NAME}{'-' + tag if tag else ''}.png"
    )  # fmt: skip
    drawn = plot(payload, plot_path)
    if drawn:
        payload["plot"] = _rel(drawn)
    markdown = markdown_report(payload)
    json_path, md_path = common.write_results(NAME, payload, markdown, s.out, tag)
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
