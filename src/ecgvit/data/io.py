"""Opening page images safely: every failure becomes a BadImageError with a human reason.

Inputs people have: PNG/JPEG/TIFF/WebP/BMP/GIF in any mode (16-bit, alpha, palette, CMYK),
phone photos with an EXIF orientation, multi-page TIFFs and PDFs. A page of a multi-page file is
named `path#page=N` (1-based); a PDF page is rendered at `PDF_DPI`.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # numpy is imported where it is used: `ecgvit --help` stays light
    import numpy as np

# Training data and the data indexer use images only; prediction also takes documents.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
DOCUMENT_SUFFIXES = {".pdf"}
INPUT_SUFFIXES = IMAGE_SUFFIXES | DOCUMENT_SUFFIXES
MULTIPAGE_SUFFIXES = {".pdf", ".tif", ".tiff"}
# A PDF page is rendered at this resolution (a letter page -> 1700x2200), less if that would
# exceed max_pixels.
PDF_DPI = 200
# Shorter-side floor for prediction inputs: a 300 px wide page (300x212) must still be answered.
MIN_SIDE = 200

_PAGE_RE = re.compile(r"^(.*)#page=(\d+)$", re.DOTALL)
# PDFium is not thread-safe, not even across documents: every call into it holds this lock.
_PDF_LOCK = threading.Lock()


class BadImageError(ValueError):
    """The file cannot be used as a page; `reason` says why in words a user understands."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def split_page(path: str | Path) -> tuple[Path, int | None]:
    """`"a.pdf#page=3"` -> (Path("a.pdf"), 3) when no file is literally named so; else (path, None)."""
    s = str(path)
    m = _PAGE_RE.match(s)
    if m and not os.path.lexists(s):
        return Path(m.group(1)), int(m.group(2))
    return Path(s), None


def is_pdf(head: bytes) -> bool:
    """PDF magic; the spec allows junk before `%PDF-` within the first 1024 bytes."""
    return b"%PDF-" in head[:1024]


def count_pages(path: str | Path) -> int | None:
    """Pages in a PDF or frames in a TIFF, cheaply; None when it cannot be told (never raises)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
        if is_pdf(head):
            import pypdfium2 as pdfium

            with _PDF_LOCK:
                doc = pdfium.PdfDocument(str(path))
                try:
                    return len(doc)
                finally:
                    doc.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return int(getattr(im, "n_frames", 1))
    except Exception:  # the file is opened again later, and that reports the reason
        return None


class _SizeKw(TypedDict):
    """The size and page arguments `open_page` passes on to `decode_pdf` / `decode_checked`."""

    max_pixels: int
    min_side: int
    draft_size: tuple[int, int] | None
    page: int | None


@overload
def open_page(
    path: str | Path,
    *,
    max_pixels: int = ...,
    min_side: int = ...,
    draft_size: tuple[int, int] | None = ...,
    page: int | None = ...,
    as_array: Literal[False] = ...,
) -> Image.Image: ...
@overload
def open_page(
    path: str | Path,
    *,
    max_pixels: int = ...,
    min_side: int = ...,
    draft_size: tuple[int, int] | None = ...,
    page: int | None = ...,
    as_array: bool,
) -> Image.Image | DecodedPage: ...
def open_page(
    path: str | Path,
    *,
    max_pixels: int = 100_000_000,
    min_side: int = MIN_SIDE,
    draft_size: tuple[int, int] | None = None,
    page: int | None = None,
    as_array: bool = False,
) -> Image.Image | DecodedPage:
    """Decode `path` into an RGB PIL image, or raise BadImageError.

    page: 1-based page of a PDF or frame of a multi-page TIFF; `path` may also end in
    `#page=N` (used when no file is literally named so). Default: the first page.
    PDFs (recognised by their `%PDF` magic) are rendered at PDF_DPI.

    draft_size: (width, height) the caller will downsample to; for JPEGs the decoder then
    reads a 1/2, 1/4 or 1/8 DCT scale that is still at least that big, which is 2-4x faster
    than a full decode; other formats are block-averaged by the largest power of two that
    keeps that size. Size checks use the file's full size, not the draft.

    The returned image's `info` carries "full_size" (width, height of the page, before any
    draft, after EXIF rotation) and "source_mode" (the file's PIL mode before conversion to
    RGB, e.g. "CMYK"; "PDF" for a rendered PDF page).

    as_array: a JPEG that takes the fast draft decode comes back as a `DecodedPage` (its
    pixels as an array, no PIL image made: ~0.5 ms a page for callers that work on arrays);
    everything else is still a PIL image.
    """
    name = path
    if page is None:
        path, page = split_page(path)
    else:
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
    data = None
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
            if draft_size is not None and head[:3] == b"\xff\xd8\xff" and st.st_size <= _FAST_JPEG_MAX_BYTES:
                # A JPEG decoded at a draft scale: read the bytes once, in the same open, so
                # the fast decoder below can use them (PIL only parses the header from them).
                f.seek(0)
                data = f.read()
    except OSError as exc:
        raise BadImageError(path, f"unreadable file ({exc.strerror or exc})") from None
    kw = _SizeKw(max_pixels=max_pixels, min_side=min_side, draft_size=draft_size, page=page)
    if is_pdf(head):
        return decode_pdf(str(path), name, **kw)
    try:
        if data is not None:
            return decode_checked(lambda: Image.open(io.BytesIO(data)), name, data=data, as_array=as_array, **kw)
        return decode_checked(lambda: Image.open(path), name, **kw)
    except BadImageError as exc:
        if path.suffix.lower() == ".pdf" and exc.reason.startswith("not an image"):
            raise BadImageError(name, "corrupt PDF (no %PDF header)") from None
        raise


def decode_pdf(
    source: str | bytes,
    name: str | Path,
    *,
    max_pixels: int = 100_000_000,
    min_side: int = MIN_SIDE,
    draft_size: tuple[int, int] | None = None,
    page: int | None = None,
    dpi: float = PDF_DPI,
) -> Image.Image:
    """Render one page (1-based, default 1) of a PDF file path or PDF bytes to RGB.

    The page is rendered at `dpi`, or at the highest resolution under `max_pixels` when `dpi`
    would exceed it (a huge page is never a memory bomb). With `draft_size` it is rendered only
    as large as needed to cover that size (at most 8x smaller), like a JPEG draft;
    info["full_size"] is the size at `dpi` (or the capped size) either way.
    """
    try:
        import pypdfium2 as pdfium
    except ImportError:  # pragma: no cover - a declared dependency
        raise BadImageError(name, "PDF input needs the pypdfium2 package (pip install pypdfium2)") from None
    page = 1 if page is None else page
    if page < 1:
        raise BadImageError(name, f"page {page} out of range (pages are numbered from 1)")
    with _PDF_LOCK:
        try:
            doc = pdfium.PdfDocument(source)
        except pdfium.PdfiumError as exc:
            raise BadImageError(name, _pdf_load_reason(exc)) from None
        except OSError as exc:
            raise BadImageError(name, f"unreadable file ({exc.strerror or exc})") from None
        try:
            n = len(doc)
            if n == 0:
                raise BadImageError(name, "PDF has no pages")
            if page > n:
                raise BadImageError(name, f"page {page} out of range (file has {n} page{'s' * (n != 1)})")
            pg = None
            try:
                pg = doc[page - 1]
                w_pt, h_pt = pg.get_size()  # points, /Rotate applied
                if not (w_pt > 0 and h_pt > 0 and math.isfinite(w_pt * h_pt)):
                    raise BadImageError(name, f"corrupt PDF (page {page} has size {w_pt}x{h_pt} pt)")
                scale = dpi / 72

                def size_at(s: float) -> tuple[int, int]:  # as pypdfium2 sizes the bitmap
                    return max(1, math.ceil(w_pt * s)), max(1, math.ceil(h_pt * s))

                if w_pt * scale * h_pt * scale > max_pixels:
                    scale = math.sqrt(max_pixels / (w_pt * h_pt))
                while size_at(scale)[0] * size_at(scale)[1] > max_pixels and scale > 1e-6:
                    scale *= 0.999
                full = size_at(scale)
                if min(full) < min_side:
                    raise BadImageError(
                        name,
                        f"image too small: PDF page {page} renders {full[0]}x{full[1]} at {dpi:g} dpi, shorter side < {min_side} pixels",
                    )
                render = scale
                if draft_size is not None:
                    need = max(draft_size[0] / w_pt, draft_size[1] / h_pt)
                    render = min(scale, max(need, scale / 8))
                bitmap = pg.render(scale=render, may_draw_forms=False)
                try:
                    im = bitmap.to_pil().convert("RGB")  # a copy: the bitmap's buffer is freed below
                finally:
                    bitmap.close()
            except pdfium.PdfiumError as exc:
                raise BadImageError(name, f"corrupt PDF (page {page} cannot be rendered: {exc})") from None
            finally:
                if pg is not None:
                    pg.close()
        finally:
            doc.close()
    if render == scale:
        full = im.size
    im.info["full_size"] = full
    im.info["source_mode"] = "PDF"
    return im


def decode_checked(
    opener: Callable[[], Image.Image],
    name: str | Path,
    *,
    max_pixels: int = 100_000_000,
    min_side: int = MIN_SIDE,
    draft_size: tuple[int, int] | None = None,
    page: int | None = None,
    data: bytes | None = None,
    as_array: bool = False,
) -> Image.Image | DecodedPage:
    """Open (with `opener`), size-check, decode, apply EXIF orientation and convert to RGB;
    every failure a BadImageError. `page` (1-based) picks a frame of a multi-page TIFF.

    data: the file's bytes, when the caller has them: a JPEG draft decode then runs in OpenCV
    (see `_fast_jpeg_draft`), which gives the same pixels as PIL's draft ~25 % faster; with
    `as_array` that decode comes back as a `DecodedPage` (see `open_page`).

    Shared by files (`open_page`) and in-memory uploads (`ecgvit.runtime.inputs.open_image_bytes`).
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
    if page is not None:
        try:
            n = int(getattr(im, "n_frames", 1))
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
            raise BadImageError(name, f"corrupt multi-page file ({exc})") from None
        if not 1 <= page <= n:
            raise BadImageError(name, f"page {page} out of range (file has {n} page{'s' * (n != 1)})")
        if page > 1:
            try:
                im.seek(page - 1)
            except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
                raise BadImageError(name, f"corrupt page {page} ({exc})") from None
    w, h = im.size
    source_mode = im.mode
    if w * h > max_pixels:
        raise BadImageError(
            name, f"image too large: {w}x{h} = {w * h} pixels > {max_pixels} (decompression-bomb guard)"
        )
    if min(w, h) < min_side:
        raise BadImageError(name, f"image too small: {w}x{h}, shorter side < {min_side} pixels")
    if data is not None and draft_size is not None and page is None:
        fast = _fast_jpeg_draft_array(im, data, draft_size)
        if fast is not None:
            decoded = DecodedPage(fast, {"full_size": (w, h), "source_mode": source_mode})
            return decoded if as_array else decoded.image()
    try:
        if draft_size is not None and im.format == "JPEG":
            im.draft("RGB", draft_size)
        im.load()
    except Image.DecompressionBombError:
        raise BadImageError(name, "image too large (decompression-bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
        raise BadImageError(name, f"corrupt or truncated image data ({exc})") from None
    fmt = im.format
    im, swapped = _apply_exif_orientation(im)
    if swapped:
        w, h = h, w
    rgb = to_rgb(im, name)
    if draft_size is not None and fmt != "JPEG":
        # Other formats have no DCT draft: average pixel blocks down the same way (a power of
        # two, keeping at least draft_size), so a PNG or TIFF page reaches the model at the
        # scale a JPEG draft decode gives (the model is sensitive to the decode path), and a
        # 10 000 px scan is not cropped and resized at full size.
        f = 1
        while rgb.size[0] // (2 * f) >= draft_size[0] and rgb.size[1] // (2 * f) >= draft_size[1]:
            f *= 2
        if f > 1:
            rgb = rgb.reduce(f)
    rgb.info["full_size"] = (w, h)
    rgb.info["source_mode"] = source_mode
    return rgb


# Where a fast-decoded page keeps its pixels as a uint8 (H, W, 3) array (see `page_array`).
RGB_ARRAY_KEY = "ecgvit_rgb_array"


def page_array(img: Image.Image) -> np.ndarray:
    """The RGB pixels of a decoded page as a uint8 array: the array the decoder made when it
    kept one (no copy), else `np.asarray(img)`."""
    import numpy as np

    arr = img.info.get(RGB_ARRAY_KEY)
    if isinstance(arr, np.ndarray) and arr.shape[:2] == (img.size[1], img.size[0]) and img.mode == "RGB":
        return arr
    return np.asarray(img)


# Files above this size take PIL's path (a streamed decode): no need to hold them in memory twice.
_FAST_JPEG_MAX_BYTES = 64 << 20


class DecodedPage:
    """A page the fast JPEG draft decode made, as a read-only uint8 (H, W, 3) RGB array, with
    the `info` an `open_page` image carries ("full_size", "source_mode").

    Cropping, grey conversion and the gate's measures all work on arrays; making a PIL image
    of the page only to hand its pixels back costs a copy into PIL's 4-bytes-a-pixel layout
    (~0.5 ms of a ~17 ms page), so `image()` makes one only when asked (to draw on, say).
    """

    __slots__ = ("rgb", "info")
    mode = "RGB"  # as a PIL page: callers may ask either kind

    def __init__(self, rgb: np.ndarray, info: dict[str, Any]):
        self.rgb = rgb
        self.info = info

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL gives it."""
        return (int(self.rgb.shape[1]), int(self.rgb.shape[0]))

    def image(self) -> Image.Image:
        """The page as a PIL RGB image (a copy), with `info` and the array kept (`page_array`)."""
        img = Image.fromarray(self.rgb)
        img.info.update(self.info)
        img.info[RGB_ARRAY_KEY] = self.rgb
        return img


def _fast_jpeg_draft(im: Image.Image, data: bytes, draft_size: tuple[int, int]) -> Image.Image | None:
    """`_fast_jpeg_draft_array` as a PIL RGB image (its array kept in `info`), or None."""
    rgb = _fast_jpeg_draft_array(im, data, draft_size)
    return None if rgb is None else DecodedPage(rgb, {}).image()


def _fast_jpeg_draft_array(im: Image.Image, data: bytes, draft_size: tuple[int, int]) -> np.ndarray | None:
    """The RGB draft decode of a plain colour JPEG by OpenCV (read-only uint8 array), or None
    to take PIL's path.

    Both libraries decode with libjpeg-turbo at a 1/2, 1/4 or 1/8 DCT scale, so the pixels are
    the same (tests/test_inputs.py checks it); OpenCV's is faster (6.9 vs 8.8 ms for a
    2213x1572 page at 1/4 here) and hands back an array without PIL's tile machinery. Only a
    YCbCr JPEG with no EXIF rotation comes here: grey, CMYK and rotated files take PIL's path.
    The scale is the one PIL's own draft picks, and a size mismatch falls back to PIL.
    """
    if im.format != "JPEG" or im.mode != "RGB":
        return None
    try:
        if im.getexif().get(0x0112, 1) not in (1, None):
            return None
    except Exception:
        return None
    full = im.size
    try:
        im.draft("RGB", draft_size)  # header only: sets the scale PIL would decode at
    except Exception:
        return None
    # PIL's draft size at scale s is ceil(full / s), as libjpeg scales; OpenCV has 1/2, 1/4, 1/8.
    scales = [s for s in (2, 4, 8) if im.size == (-(-full[0] // s), -(-full[1] // s))]
    if not scales:
        return None  # no reduction: PIL's full decode is as fast
    import cv2
    import numpy as np

    flag = getattr(cv2, f"IMREAD_REDUCED_COLOR_{scales[0]}") | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error:
        return None
    if bgr is None or bgr.ndim != 3 or (bgr.shape[1], bgr.shape[0]) != im.size:
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    # Read-only: the same array may back a PIL image's `info` and a DecodedPage.
    rgb.flags.writeable = False
    return rgb


def _pdf_load_reason(exc: Exception) -> str:
    import pypdfium2.raw as pdfium_c

    code = getattr(exc, "err_code", None)
    if code == pdfium_c.FPDF_ERR_PASSWORD:
        return "password-protected PDF"
    if code == pdfium_c.FPDF_ERR_SECURITY:
        return "PDF uses an unsupported security handler (encryption)"
    if code == pdfium_c.FPDF_ERR_FILE:
        return "unreadable file (PDF could not be read)"
    if code in (pdfium_c.FPDF_ERR_SUCCESS, pdfium_c.FPDF_ERR_FORMAT):
        # A PDF with an empty or missing page tree fails to load without setting an error of
        # its own (PDFium's last error is then "success" or a stale one), so one reason covers both.
        return "corrupt PDF or PDF with no pages (no readable page tree)"
    if code == pdfium_c.FPDF_ERR_PAGE:
        return "corrupt PDF (page not found or broken)"
    return "corrupt PDF (unknown PDFium error)"


def _apply_exif_orientation(im: Image.Image) -> tuple[Image.Image, bool]:
    """Rotate/flip a loaded image as its EXIF Orientation says; (image, width/height swapped).

    A broken EXIF block is ignored (the pixels are still good), never an error.
    """
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:
        return im, False
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return im, False
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:
        return im, False
    return (out if out is not None else im), orientation in (5, 6, 7, 8)


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
