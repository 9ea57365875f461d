from __future__ import annotations

from .bundle import default_num_workers, find_bundle_root, resolve_device
from .dist import GatherLayer, gather, gather_no_grad, is_distributed, is_main_process, rank, world_size
from .encoder_io import (
    ENCODER_FORMAT_VERSION,
    EncoderMismatchError,
    export_encoder,
    load_encoder_state,
    load_pretrained_encoder,
    read_encoder_info,
)
from .intensity import (
    INTENSITY_MODES,
    IntensityFromDescription,
    IntensityFromDescriptiond,
    intensity_description,
    intensity_transform,
)
from .io import atomic_json_dump, atomic_torch_save, atomic_write, safe_output_path, sha256_file
from .momentum import cosine_schedule, deactivate_requires_grad, update_momentum
from .synthetic_mixing import load_synthetic_items, mix_synthetic, synthetic_fraction

__all__ = [
    "INTENSITY_MODES",
    "IntensityFromDescription",
    "IntensityFromDescriptiond",
    "intensity_description",
    "intensity_transform",
    "load_synthetic_items",
    "mix_synthetic",
    "synthetic_fraction",
    "ENCODER_FORMAT_VERSION",
    "EncoderMismatchError",
    "GatherLayer",
    "atomic_json_dump",
    "default_num_workers",
    "find_bundle_root",
    "resolve_device",
    "atomic_torch_save",
    "atomic_write",
    "export_encoder",
    "load_encoder_state",
    "load_pretrained_encoder",
    "read_encoder_info",
    "safe_output_path",
    "sha256_file",
    "cosine_schedule",
    "deactivate_requires_grad",
    "gather",
    "gather_no_grad",
    "is_distributed",
    "is_main_process",
    "rank",
    "update_momentum",
    "world_size",
]
