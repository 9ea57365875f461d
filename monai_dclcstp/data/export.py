"""Write arrays as image files MONAI's ``LoadImaged`` reads: NPZ arrays and TIFFs become PNG (2D) or NIfTI (3D).

Bundles load every image through ``LoadImaged``, which takes file paths, so arrays held in ``.npz`` files (MedMNIST)
and formats this environment's MONAI cannot read (TIFF without ``itk``) are written once to a cache folder with
deterministic names. Files are written atomically (temporary name, then ``os.replace``), so concurrent ranks and
interrupted runs never leave a half-written image; existing files are reused.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import DatalistError

__all__ = ["default_cache_dir", "source_cache_dir", "save_array", "convert_to_png"]


def default_cache_dir() -> Path:
    """``$MONAI_DCLCSTP_CACHE`` if set, else ``$XDG_CACHE_HOME/monai_dclcstp`` (``~/.cache/monai_dclcstp``)."""
    env = os.environ.get("MONAI_DCLCSTP_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "monai_dclcstp"


def source_cache_dir(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache folder for files derived from ``source``: ``<cache_dir>/<stem>-<hash>``.

    The hash covers the absolute path, size and modification time of ``source``, so a changed source gets a new
    folder and two sources with the same name do not collide.
    """
    source = Path(os.path.abspath(Path(source).expanduser()))
    st = source.stat()
    digest = hashlib.sha1(f"{source}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = source.name.split(".")[0] or "data"
    return (
        Path(os.path.abspath(Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()))
        / f"{stem}-{digest}"
    )


def _atomic_write(path: Path, write=None, data: bytes | None = None) -> None:
    """Write ``data`` (or call ``write(tmp_path)``) to a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    try:
        if data is not None:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        else:
            os.close(fd)
            write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_array(array: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save one image array losslessly: ``.png`` for 2D, ``.nii.gz`` for 3D (identity affine).

    Args:
        array: ``(H, W)`` grey, ``(H, W, 3|4)`` RGB(A) for PNG (uint8 or uint16; other dtypes are rejected), or
            any 3D array for NIfTI (stored with its axis order unchanged).
        path: target file; the suffix picks the format.
        overwrite: rewrite an existing file (default: keep it, which makes repeated exports free).

    Returns:
        the path.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        return path
    name = path.name.lower()
    if name.endswith(".png"):
        from PIL import Image

        if array.dtype == np.uint16 and array.ndim == 2:
            image = Image.fromarray(array)  # 16-bit grey (mode I;16)
        elif array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
            image = Image.fromarray(array)
        else:
            raise DatalistError(f"{path}: cannot store an array of shape {array.shape} and dtype {array.dtype} as PNG")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        _atomic_write(path, data=buffer.getvalue())
    elif name.endswith(".nii.gz") or name.endswith(".nii"):
        import nibabel as nib

        image = nib.Nifti1Image(np.asarray(array), affine=np.eye(4))
        _atomic_write(path, lambda tmp: nib.save(image, tmp))
    else:
        raise DatalistError(f"{path}: save_array writes .png or .nii.gz files only")
    return path


def convert_to_png(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Convert a 2D image PIL can decode but MONAI cannot load here (e.g. TIFF) into a PNG in the cache.

    8-bit grey/RGB(A) stay 8-bit, 16-bit grey stays 16-bit; palette and other modes go to RGB / grey; float or 32-bit
    images are rejected with a clear error (PNG cannot hold them losslessly). Multi-page files keep page 0.

    Args:
        path: the source image.
        cache_dir: cache root (default :func:`default_cache_dir`).

    Returns:
        the PNG path, ``<cache>/<stem>-<hash>/<stem>.png``.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    target = source_cache_dir(path, cache_dir) / (path.name.split(".")[0] + ".png")
    if target.exists():
        return target
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L"):
                array = np.asarray(im).astype(np.uint16)
            elif mode in ("L", "RGB", "RGBA"):
                array = np.asarray(im)
            elif mode == "1":
                array = np.asarray(im.convert("L"))
            elif mode in ("P", "PA", "CMYK", "YCbCr", "LA"):
                array = np.asarray(im.convert("RGBA" if "A" in mode else "RGB"))
            else:
                raise DatalistError(
                    f"{path}: mode {mode} ({np.asarray(im).dtype}) cannot be stored losslessly as PNG; "
                    "convert it to NIfTI (.nii.gz) or install itk so MONAI reads it directly"
                )
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        if isinstance(e, DatalistError):
            raise
        raise DatalistError(f"{path}: cannot decode the image ({type(e).__name__}: {e})") from e
    return save_array(array, target)
