"""Channel policy: which channel-count mismatches the loader fixes, and the function that fixes them.

The pre-flight check (:func:`~monai_dclcstp.data.validate_datalist`) and the loading transforms share this policy:

=================================  ==============  =============================================================
found in the file                  ``in_channels``  what happens
=================================  ==============  =============================================================
``C == in_channels``               any             nothing
1 (grey)                           k > 1           grey repeated k times (a grey X-ray into an RGB backbone)
2 (grey + alpha, PIL ``LA``)       1               alpha dropped
4 (RGBA)                           3               alpha dropped
3 or 4, R = G = B (grey as RGB)    1               mean of R, G, B (= the grey values)
3 or 4, real colour                1               error in the check (colour would be lost); ``allow_colour_to_grey``
                                                   accepts it, and the loader then takes the mean of R, G, B
anything else                      any             error
=================================  ==============  =============================================================

Bundles apply it after ``EnsureChannelFirstd``::

    {"_target_": "Lambdad", "keys": "image",
     "func": "$lambda x: monai_dclcstp.data.adapt_channels(x, @in_channels)"}
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["channel_policy", "adapt_channels"]


def channel_policy(
    found: int,
    in_channels: int,
    grey_colour: bool | None = None,
    mode: str | None = None,
    allow_colour_to_grey: bool = False,
) -> tuple[bool, str]:
    """Decide whether an image with ``found`` channels can feed a network with ``in_channels`` inputs.

    Args:
        found: channels in the file.
        in_channels: channels the network takes.
        grey_colour: for 3/4-channel images, whether R = G = B (``None``: unknown, treated as colour).
        mode: PIL mode, to name what was found; only ``LA``/``RGBA`` files have a 2nd/4th channel that is alpha
            (a 2- or 4-channel NIfTI or stacked-file image is never taken for grey/RGB + alpha).
        allow_colour_to_grey: accept real colour images for ``in_channels=1``.

    Returns:
        ``(ok, text)``: ``text`` is the conversion the loader does (``""`` when none) or, when not ok, the problem.
    """
    what = f"{found} channel(s)" + (f" (mode {mode})" if mode else "")
    if found == in_channels:
        return True, ""
    if found == 1:
        return True, f"grey repeated to {in_channels} channels"
    if found == 2 and in_channels == 1 and mode in ("LA", "La", "PA"):
        return True, "alpha dropped"
    if found == 4 and in_channels == 3 and mode in ("RGBA", "RGBa", "RGBX"):
        return True, "alpha dropped"
    if found in (3, 4) and in_channels == 1 and mode != "CMYK":
        if grey_colour:
            return True, "grey stored as colour averaged to 1 channel"
        if allow_colour_to_grey:
            return True, "colour averaged to 1 channel"
        return False, (
            f"colour image ({what}) but in_channels=1; set in_channels={min(found, 3)} "
            "or pass allow_colour_to_grey=True to average R, G, B"
        )
    return False, f"found {what} but in_channels={in_channels}; no automatic conversion"


def adapt_channels(img: torch.Tensor | np.ndarray, in_channels: int) -> torch.Tensor | np.ndarray:
    """Apply the channel policy to a channel-first image ``(C, H, W[, D])`` → ``(in_channels, H, W[, D])``.

    Works on tensors (``MetaTensor`` metadata kept) and numpy arrays.

    Raises:
        ValueError: a combination the policy does not convert (e.g. 5 channels into 3).
    """
    found = int(img.shape[0])
    if found == in_channels:
        return img
    is_tensor = isinstance(img, torch.Tensor)
    if found == 1:
        if is_tensor:
            return img.repeat(in_channels, *([1] * (img.ndim - 1)))
        return np.repeat(img, in_channels, axis=0)
    if (found == 2 and in_channels == 1) or (found == 4 and in_channels == 3):
        return img[:in_channels]
    if found in (3, 4) and in_channels == 1:
        rgb = img[:3]
        if is_tensor:
            return rgb.float().mean(dim=0, keepdim=True) if not rgb.is_floating_point() else rgb.mean(0, keepdim=True)
        return (
            rgb.astype(np.float32).mean(axis=0, keepdims=True) if rgb.dtype.kind != "f" else rgb.mean(0, keepdims=True)
        )
    raise ValueError(f"cannot adapt an image with {found} channels to in_channels={in_channels}")
