"""Opening page images safely: every failure becomes a BadImageError with a human reason."""

from __future__ import annotations

import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import Callable

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


class BadImageError(ValueError):
    """The file cannot be used as a page; `reason` says why in words a user understands."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def open_page(
    path: str | Path,
    *,
    max_pixels: int = 100_000_000,
    min_side: int = 256,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode `path` into an RGB PIL image, or raise BadImageError.

    draft_size: (width, height) the caller will downsample to; for JPEGs the decoder then
    reads a 1/2, 1/4 or 1/8 DCT scale that is still at least that big, which is 2-4x faster
    than a full decode. Size checks use the file's full size, not the draft.

    The returned image's `info` carries "full_size" (width, height of the file, before any
    draft) and "source_mode" (the file's PIL mode before conversion to RGB, e.g. "CMYK").
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise BadImageError(path, f"unreadable file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device named *.jpg would block or stream forever.
        raise BadImageError(path, "not a regular file")
    if st.st_size == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    return decode_checked(lambda: Image.open(path), path, max_pixels=max_pixels, min_side=min_side, draft_size=draft_size)


def decode_checked(
    opener: Callable[[], Image.Image],
    name: str | Path,
    *,
    max_pixels: int = 100_000_000,
    min_side: int = 256,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Open (with `opener`), size-check, decode and convert to RGB; every failure a BadImageError.

    Shared by files (`open_page`) and in-memory uploads (`ecgvit.predict.open_image_bytes`).
    """
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) between max_pixels/2 and max_pixels; we decide ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = opener()
    except UnidentifiedImageError:
        raise BadImageError(name, "not an image (unknown format)") from None
    except Image.DecompressionBombError:
        raise BadImageError(name, "image too large (decompression-bomb guard)") from None
    except OSError as exc:
        raise BadImageError(name, f"unreadable file ({exc})") from None
    except (SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
        raise BadImageError(name, f"corrupt image header ({exc})") from None
    w, h = im.size
    source_mode = im.mode
    if w * h > max_pixels:
        raise BadImageError(name, f"image too large: {w}x{h} = {w * h} pixels > {max_pixels} (decompression-bomb guard)")
    if min(w, h) < min_side:
        raise BadImageError(name, f"image too small: {w}x{h}, shorter side < {min_side} pixels")
    try:
        if draft_size is not None and im.format == "JPEG":
            im.draft("RGB", draft_size)
        im.load()
    except Image.DecompressionBombError:
        raise BadImageError(name, "image too large (decompression-bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
        raise BadImageError(name, f"corrupt or truncated image data ({exc})") from None
    rgb = to_rgb(im, name)
    rgb.info["full_size"] = (w, h)
    rgb.info["source_mode"] = source_mode
    return rgb


def to_rgb(im: Image.Image, path: str | Path = "<image>") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; alpha is composited on white (paper)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        hi = a.max() if a.size else 0
        a = a * (255.0 / hi) if hi > 255 else a
        return Image.fromarray(a.clip(0, 255).astype("uint8")).convert("RGB")
    if mode == "F":
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        return Image.fromarray(a.clip(0, 255).astype("uint8")).convert("RGB")
    if mode == "P":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    try:
        return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    except (OSError, ValueError) as exc:
        raise BadImageError(path, f"unsupported colour mode {mode!r} ({exc})") from None
