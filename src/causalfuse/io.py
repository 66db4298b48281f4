"""Reading and writing images, colour conversion, atomic file writes.

Images are read as NumPy arrays of shape (H, W) or (H, W, 3). 8-bit and 16-bit
files keep their integer type in :func:`load_image`; :func:`read_image` scales
them to float32 in [0, 1] (8-bit by 255, 16-bit by 65535), never truncating.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import CausalFuseError

__all__ = [
    "IMAGE_EXTENSIONS",
    "atomic_path",
    "check_writable",
    "check_writable_folder",
    "load_image",
    "read_image",
    "to_float01",
    "write_image",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "rgb2gray_matlab",
    "rgb2gray_levels",
    "MATLAB_GRAY_WEIGHTS",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as it is stored: uint8, uint16 or float32.

    Returns (H, W) for grey files and (H, W, 3) for colour ones (an alpha
    channel is dropped, palettes are expanded).

    Raises:
        CausalFuseError: the file is missing, not an image, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise CausalFuseError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                if mode == "1":
                    im = im.convert("L")
                elif mode in ("P", "PA"):
                    im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
                if im.mode == "LA":
                    im = im.getchannel("L")
                elif im.mode not in ("L", "RGB"):
                    im = im.convert("RGB")
                arr = np.asarray(im)
            elif mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im).astype(np.uint16)
            elif mode == "I":
                arr = np.asarray(im)
                arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.float32)
            elif mode == "F":
                arr = np.asarray(im).astype(np.float32)
            else:
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CausalFuseError(f"{path}: cannot be read as an image ({exc})") from None
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def to_float01(arr: np.ndarray) -> np.ndarray:
    """Scale an image array to float32 in [0, 1] by its integer type.

    uint8 is divided by 255 and uint16 by 65535; float arrays are taken to be
    in [0, 1] already and are checked (finite, in range).
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise CausalFuseError(f"the image contains {int(np.count_nonzero(~np.isfinite(out)))} NaN or infinite values")
        if out.size and (np.nanmin(out) < -1e-6 or np.nanmax(out) > 1 + 1e-6):
            raise CausalFuseError(
                f"float image values must lie in [0, 1], got [{np.nanmin(out):.4g}, {np.nanmax(out):.4g}]; "
                "pass uint8/uint16 arrays or scale them first"
            )
        return out
    raise CausalFuseError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 in [0, 1], (H, W) or (H, W, 3)."""
    return to_float01(load_image(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the final suffix so writers that pick a format
    from the name still work. On any error the temporary file is removed and
    ``path`` is left as it was: a reader never sees a half-written file. The
    file gets the permissions the user's umask gives new files (temporary
    files are private, and some writers create theirs anew).

    Raises:
        CausalFuseError: ``path`` is a folder, or its folder cannot be
            created or written to (naming the path and the reason).
    """
    path = Path(path)
    if path.is_dir():
        raise CausalFuseError(f"{path}: is a directory, but a file path is expected here")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=parent)
    except OSError as exc:
        raise CausalFuseError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, *, bits: Literal[8, 16] | None = 8) -> Path:
    """Check, before any work, that a file can be written to ``path``.

    For an image (``bits`` not None) the suffix must name a known format
    (16-bit: PNG or TIFF). The folder must exist or be creatable and accept a
    new file (tried for real, so read-only mounts and permissions are caught
    as the write would meet them). Nothing is left behind.

    Raises:
        CausalFuseError: one line naming the path and the problem.
    """
    path = Path(path)
    if bits is not None:
        fmt = _format_for(path)
        if bits == 16 and fmt not in ("PNG", "TIFF"):
            raise CausalFuseError(f"{path}: 16-bit output needs a .png or .tif file, not {path.suffix}")
    if path.is_dir():
        raise CausalFuseError(f"{path}: is a directory, but a file path is expected here")
    _probe(path.parent, path)
    return path


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Check, before any work, that ``folder`` exists or can be created and accepts new files.

    Raises:
        CausalFuseError: one line naming the folder and the problem.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CausalFuseError(f"{folder}: exists and is not a folder")
    _probe(folder, folder)
    return folder


def _probe(folder: Path, named: Path) -> None:
    """Create and remove a file in ``folder`` or, where it does not exist yet, in its nearest existing parent."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CausalFuseError(f"{named}: cannot write here ({existing} is a file, not a folder)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".causalfuse-probe.", dir=existing)
    except OSError as exc:
        raise CausalFuseError(f"{named}: cannot write here ({existing}: {exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def write_image(path: str | os.PathLike, image: np.ndarray, *, bits: Literal[8, 16] = 8) -> Path:
    """Write a float image in [0, 1] (or an integer image as it is) atomically.

    Float input is clipped to [0, 1], scaled to ``bits`` and rounded. The format
    comes from the file suffix (PNG for 16-bit output).
    """
    path = Path(path)
    arr = np.asarray(image)
    if np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if bits == 8 else 65535.0
        arr = np.rint(np.clip(np.nan_to_num(arr), 0.0, 1.0) * scale).astype(np.uint8 if bits == 8 else np.uint16)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.uint16:
        if arr.ndim == 3:
            raise CausalFuseError(f"{path}: 16-bit colour output is not supported; write 8-bit or grey")
        im = Image.fromarray(arr)  # mode I;16
    else:
        im = Image.fromarray(arr.astype(np.uint8))
    with atomic_path(path) as tmp:
        try:
            im.save(tmp, format=_format_for(path))
        except (KeyError, ValueError, OSError) as exc:
            raise CausalFuseError(f"{path}: cannot write this image ({exc})") from None
    return path


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP", ".pgm": "PPM", ".ppm": "PPM"}
    if ext not in formats:
        raise CausalFuseError(f"{path}: unknown image suffix {ext!r}; use one of {', '.join(sorted(formats))}")
    return formats[ext]


# ITU-R BT.601 full-range, as the field's fusion code (e.g. SeAFusion, U2Fusion) converts.
_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32
)
_YCBCR_TO_RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 RGB in [0, 1], (..., 3) -> YCbCr with Cb, Cr centred on 0.5."""
    ycc = np.asarray(rgb, dtype=np.float32) @ _RGB_TO_YCBCR.T
    ycc[..., 1:] += 0.5
    return ycc


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`; the result is clipped to [0, 1]."""
    ycc = np.asarray(ycc, dtype=np.float32).copy()
    ycc[..., 1:] -= 0.5
    return np.clip(ycc @ _YCBCR_TO_RGB.T, 0.0, 1.0)


#: MATLAB's ``rgb2gray`` weights (R, G, B).
MATLAB_GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def rgb2gray_matlab(rgb: np.ndarray) -> np.ndarray:
    """MATLAB's ``rgb2gray`` on uint8: its weights, rounded half away from zero.

    Grey input is returned unchanged. This is the grey conversion behind the
    field's published metric tables.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb
    if rgb.dtype != np.uint8:
        raise CausalFuseError(f"rgb2gray_matlab expects uint8 input, got {rgb.dtype}")
    return rgb2gray_levels(rgb[..., :3].astype(np.float64)).clip(0, 255).astype(np.uint8)


def rgb2gray_levels(rgb: np.ndarray) -> np.ndarray:
    """:func:`rgb2gray_matlab` of 8-bit levels held as float64 (H, W, 3), as float64 levels."""
    return np.floor(rgb @ MATLAB_GRAY_WEIGHTS + 0.5)
