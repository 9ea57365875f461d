"""Synthetic data expansion: sample a trained (latent) diffusion model and write images plus a datalist.

Output layout (``output_dir`` is created if needed)::

    output_dir/
        datalist.json                  {"training": [{"image": "images/ldm_c1_000003.png", "synthetic": true,
                                                      "label": 1, "source": "ldm"}, ...],
                                        "classes": [...], "description": ..., "generation": {...}}
        images/ldm_c0_000000.png ...   2D: 8-bit PNG mapped from the training intensity range
        images/ldm_000000.nii.gz ...   3D: float32 NIfTI in the training intensity range

Image paths in the datalist are relative to the datalist's folder (contract 1 of ``DESIGN.md``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .conditional import class_sampling_plan
from .sampling import sample_images
from .writers import safe_output_path, save_json, save_nifti, save_png

__all__ = ["synthesize", "write_synthetic_datalist"]

_FORMATS = ("png", "nii.gz", "nii")
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def write_synthetic_datalist(
    output_dir: str | os.PathLike,
    images: Sequence[str],
    labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    source: str = "ldm",
    name: str = "datalist.json",
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Validate and atomically write a synthetic datalist into ``output_dir``.

    Args:
        output_dir: folder of the datalist; image paths are relative to it.
        images: image paths relative to ``output_dir``; each must exist inside it.
        labels: one int class label per image for class-conditional data, else ``None``.
        classes: class names, index = label; labels must be ``< len(classes)`` when given.
        source: the ``"source"`` field of every item.
        name: file name of the datalist inside ``output_dir``.
        overwrite: replace an existing datalist.
        extra: further top-level keys (e.g. ``"description"``, ``"generation"``).

    Returns:
        the path of the written datalist.

    Raises:
        FileNotFoundError: an image is missing. ValueError: unsafe path, bad labels. FileExistsError: datalist exists.
    """
    root = Path(output_dir)
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images.")
    items: list[dict[str, Any]] = []
    for i, rel in enumerate(images):
        path = safe_output_path(root, rel)
        if not path.is_file():
            raise FileNotFoundError(f"synthetic image {path} listed in the datalist does not exist.")
        item: dict[str, Any] = {"image": str(rel), "synthetic": True}
        if labels is not None:
            label = labels[i]
            if int(label) != label or label < 0 or (classes is not None and label >= len(classes)):
                raise ValueError(f"invalid label {label!r} for {rel} (classes: {list(classes or [])}).")
            item["label"] = int(label)
        item["source"] = source
        items.append(item)
    datalist: dict[str, Any] = dict(extra or {})
    datalist["training"] = items
    datalist["classes"] = [str(c) for c in classes] if classes is not None else []
    return save_json(datalist, safe_output_path(root, name), overwrite=overwrite)


#: diffusers solver options worth recording with the synthetic data (they change what the samples look like).
_RECORDED_OPTIONS = ("algorithm_type", "solver_order", "timestep_spacing", "use_lu_lambdas", "use_karras_sigmas")


def _scheduler_options(scheduler: Any) -> dict[str, Any]:
    """The options that tell e.g. the stochastic SDE-DPM-Solver++ from the ODE one (same diffusers class)."""
    inner = getattr(scheduler, "diffusers_scheduler", None)
    if inner is not None:
        return {k: inner.config[k] for k in _RECORDED_OPTIONS if k in inner.config}
    return {"eta": float(scheduler.eta)} if hasattr(scheduler, "eta") else {}


def _plan(
    num_samples: int | None,
    class_counts: Sequence[int] | Mapping[int, int] | None,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> list[list[int] | int]:
    if (num_samples is None) == (class_counts is None):
        raise ValueError("give exactly one of num_samples (unconditional) or class_counts (class-conditional).")
    if class_counts is not None:
        return list(class_sampling_plan(class_counts, batch_size, shuffle=shuffle, seed=seed))
    if num_samples < 0 or batch_size < 1:
        raise ValueError(f"need num_samples >= 0 and batch_size >= 1, got {num_samples}, {batch_size}.")
    return [min(batch_size, num_samples - i) for i in range(0, num_samples, batch_size)]


@torch.no_grad()
def synthesize(
    diffusion_model: nn.Module,
    scheduler: nn.Module,
    output_dir: str | os.PathLike,
    *,
    latent_shape: Sequence[int],
    autoencoder: nn.Module | None = None,
    num_samples: int | None = None,
    class_counts: Sequence[int] | Mapping[int, int] | None = None,
    classes: Sequence[str] | None = None,
    scale_factor: float = 1.0,
    num_inference_steps: int | None = 50,
    batch_size: int = 8,
    intensity_range: Sequence[float] = (0.0, 1.0),
    guidance_scale: float | None = None,
    null_class_label: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    file_format: str | None = None,
    prefix: str = "ldm",
    images_subdir: str = "images",
    datalist_name: str = "datalist.json",
    source: str = "ldm",
    shuffle: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Sample ``num_samples`` images (or ``class_counts[c]`` of each class ``c``), write them and a datalist.

    All target names are computed first; without ``overwrite`` the call fails before sampling if any of them (or the
    datalist) exists. The initial noise comes from a CPU generator seeded with ``seed`` (the same images on CPU and
    GPU, up to numerics); stochastic schedulers (DDPM) additionally use torch's global RNG, seed it for full
    reproducibility. Both networks are put in eval mode.

    Args:
        diffusion_model: trained ``DiffusionModelUNet`` (class-conditional when ``class_counts`` is given).
        scheduler: sampling scheduler, e.g. ``build_scheduler("dpm_solver++", ...)`` with the training schedule.
        output_dir: output folder (created).
        latent_shape: ``(C_latent, *latent_spatial)`` of one sample (see ``latent_shape()``); 2 spatial dims give
            PNG files, 3 give NIfTI.
        autoencoder: trained ``AutoencoderKL``; ``None`` for an image-space diffusion model.
        num_samples: number of unconditional samples.
        class_counts: per-class counts for class-conditional sampling (see ``class_counts()``).
        classes: class names for the datalist's ``"classes"`` (default for conditional sampling: ``"0"``, ``"1"``, ...).
        scale_factor: latent scale factor used in training.
        num_inference_steps: sampling steps (``None``: the scheduler's current timesteps).
        batch_size: samples per network call.
        intensity_range: training intensity range, mapped to ``0..255`` for PNG.
        guidance_scale: classifier-free guidance scale, with ``null_class_label``.
        null_class_label: the "no class" label of a guidance-trained network.
        seed: seed of the initial noise.
        device: device of the sampling; defaults to the diffusion model's.
        file_format: ``"png"``, ``"nii.gz"`` or ``"nii"``; default PNG for 2D and ``nii.gz`` for 3D.
        prefix: file name prefix (letters, digits, ``_``, ``-``).
        images_subdir: sub-folder of ``output_dir`` for the images.
        datalist_name: datalist file name in ``output_dir``.
        source: ``"source"`` field of the datalist items.
        shuffle: mix classes across batches (seeded); file names and counts are the same either way.
        overwrite: replace existing files instead of failing.
        verbose: show progress bars.

    Returns:
        the datalist written to ``output_dir / datalist_name`` (image paths relative to ``output_dir``).
    """
    spatial_dims = len(latent_shape) - 1
    if spatial_dims not in (2, 3):
        raise ValueError(f"latent_shape must be (C, H, W) or (C, H, W, D), got {tuple(latent_shape)}.")
    file_format = file_format or ("png" if spatial_dims == 2 else "nii.gz")
    if file_format not in _FORMATS or (file_format == "png") != (spatial_dims == 2):
        raise ValueError(f"file_format {file_format!r} does not fit {spatial_dims}D images (png: 2D; nii/nii.gz: 3D).")
    if not _PREFIX.match(prefix):
        raise ValueError(f"unsafe file prefix {prefix!r}: use letters, digits, '_' and '-'.")
    if class_counts is not None and getattr(diffusion_model, "num_class_embeds", None) is None:
        raise ValueError("class_counts given but diffusion_model has no class embedding (num_class_embeds is None).")
    plan = _plan(num_samples, class_counts, batch_size, shuffle, seed)
    conditional = class_counts is not None

    # names: numbered in plan order; known (and checked) before any sampling
    names: list[list[str]] = []
    index = 0
    for batch in plan:
        labels = batch if isinstance(batch, list) else [None] * batch
        batch_names = []
        for label in labels:
            tag = f"{prefix}_c{label}" if conditional else prefix
            batch_names.append(f"{images_subdir}/{tag}_{index:06d}.{file_format}")
            index += 1
        names.append(batch_names)
    root = Path(output_dir)
    targets = [safe_output_path(root, n) for batch_names in names for n in batch_names]
    targets.append(safe_output_path(root, datalist_name))
    if not overwrite:
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            raise FileExistsError(
                f"{len(existing)} output file(s) already exist, e.g. {existing[0]}; "
                "use an empty output_dir or overwrite=True."
            )

    device = torch.device(device) if device is not None else next(diffusion_model.parameters()).device
    diffusion_model.eval()
    if autoencoder is not None:
        autoencoder.eval()
    generator = torch.Generator().manual_seed(int(seed))
    images_written: list[str] = []
    labels_written: list[int] = []
    for batch, batch_names in zip(plan, names):
        n = len(batch) if isinstance(batch, list) else batch
        noise = torch.randn((n, *latent_shape), generator=generator).to(device)
        class_labels = torch.tensor(batch, dtype=torch.long, device=device) if conditional else None
        images = sample_images(
            diffusion_model,
            scheduler,
            noise,
            autoencoder=autoencoder,
            scale_factor=scale_factor,
            num_inference_steps=num_inference_steps,
            class_labels=class_labels,
            guidance_scale=guidance_scale,
            null_class_label=null_class_label,
            verbose=verbose,
        )
        for j, rel in enumerate(batch_names):
            path = safe_output_path(root, rel)
            if file_format == "png":
                save_png(images[j], path, intensity_range=intensity_range, overwrite=overwrite)
            else:
                save_nifti(images[j], path, overwrite=overwrite)
            images_written.append(rel)
            if conditional:
                labels_written.append(int(batch[j]))

    generation = {
        "scheduler": getattr(scheduler, "diffusers_name", type(scheduler).__name__),
        "scheduler_options": _scheduler_options(scheduler),
        "num_inference_steps": num_inference_steps,
        "seed": int(seed),
        "scale_factor": float(scale_factor),
        "guidance_scale": guidance_scale,
        "intensity_range": [float(v) for v in intensity_range],
    }
    if conditional and classes is None:
        keys = list(class_counts) if isinstance(class_counts, Mapping) else range(len(class_counts))
        classes = [str(c) for c in range(max(keys, default=-1) + 1)]
    extra = {"description": f"synthetic images ({source})", "generation": generation}
    datalist_path = write_synthetic_datalist(
        root,
        images_written,
        labels=labels_written if conditional else None,
        classes=classes,
        source=source,
        name=datalist_name,
        overwrite=overwrite,
        extra=extra,
    )
    return json.loads(datalist_path.read_text(encoding="utf-8"))
