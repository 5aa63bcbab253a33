"""Reading inputs: paths, folders, globs, PDFs, bytes, images and arrays into model-ready arrays.

`expand_inputs` turns what a user names into the files to read (and what cannot be read);
`load_input` decodes and preprocesses one input the way a model's recorded preprocessing says
(`LoadSpec`, picklable for worker processes) and, when the model has a gate, measures the page
structure the gate judges. A broken input never stops a run: `load_input_safe` turns any
failure into its reason.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ecgvit.config import PreprocessConfig
from ecgvit.data.crop import find_trace_box
from ecgvit.data.files import BadInput, expand_inputs
from ecgvit.data.io import (
    MIN_SIDE,
    BadImageError,
    DecodedPage,
    decode_checked,
    decode_pdf,
    is_pdf,
    open_page,
    page_array,
    to_rgb,
)
from ecgvit.data.preprocess import PageArray, preprocess_array, preprocess_image
from ecgvit.reader.reading import PageReading
from ecgvit.runtime.gate import PageStructure, ReadingStructure, page_structure, reading_structure

__all__ = [
    "BadInput",
    "LoadSpec",
    "Loaded",
    "expand_inputs",
    "failure_reason",
    "is_single_input",
    "load_input",
    "load_input_safe",
    "open_image_bytes",
]


def is_single_input(items: Any) -> bool:
    """True for one input (a path, bytes, a PIL image or one uint8 page array), not a list of them."""
    if isinstance(items, (str, Path, bytes, bytearray, Image.Image)):
        return True
    return (
        isinstance(items, np.ndarray)
        and items.ndim in (2, 3)
        and items.dtype == np.uint8
        and (items.ndim == 2 or items.shape[2] in (3, 4))
    )


def open_image_bytes(
    data: bytes,
    *,
    max_pixels: int = 100_000_000,
    min_side: int = MIN_SIDE,
    draft_size: tuple[int, int] | None = None,
    name: str = "<upload>",
    page: int | None = None,
    as_array: bool = False,
) -> Image.Image | DecodedPage:
    """Decode an in-memory image like `open_page` does a file: RGB, or BadImageError with a reason.

    The format comes from the bytes (magic numbers), never from a file name. PDF bytes render
    one page (`page`, 1-based, default 1) at 200 dpi; `page` also picks a multi-page TIFF frame.
    EXIF orientation is applied. as_array: as in `open_page`.
    """
    if not data:
        raise BadImageError(name, "empty file (0 bytes)")
    if is_pdf(data[:1024]):
        return decode_pdf(bytes(data), name, max_pixels=max_pixels, min_side=min_side, draft_size=draft_size, page=page)
    # data=: a JPEG upload takes the fast draft decode, as a JPEG file does.
    return decode_checked(
        lambda: Image.open(io.BytesIO(data)),
        name,
        max_pixels=max_pixels,
        min_side=min_side,
        draft_size=draft_size,
        page=page,
        data=bytes(data),
        as_array=as_array,
    )


@dataclass(frozen=True)
class LoadSpec:
    """How a Predictor reads an input: everything `load_input` needs (picklable, for workers)."""

    preprocess: PreprocessConfig
    draft: tuple[int, int] | None
    max_pixels: int
    min_side: int
    structure: bool  # measure the page structure for the out-of-scope gate


def load_input(item: Any, spec: LoadSpec, keep_image: bool = False, defer_structure: bool = False) -> Loaded:
    """Decode + preprocess one input (path, bytes, PIL image or uint8 page array).

    defer_structure: leave the gate's page measures to the first read of `Loaded.structure`,
    so that a caller can take them on another core while the model runs (`Predictor.answer`)."""
    cfg = spec.preprocess
    page: Image.Image | DecodedPage
    if isinstance(item, (str, Path)):
        page = open_page(item, max_pixels=spec.max_pixels, min_side=spec.min_side, draft_size=spec.draft, as_array=True)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        page = open_image_bytes(
            bytes(item), max_pixels=spec.max_pixels, min_side=spec.min_side, draft_size=spec.draft, as_array=True
        )
    elif isinstance(item, Image.Image):
        page = to_rgb(item)
        page.info.setdefault("full_size", page.size)
    elif isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (3, 4)):
            raise BadImageError("<array>", f"expected a uint8 page (H, W) or (H, W, 3), got {item.dtype} {item.shape}")
        page = to_rgb(Image.fromarray(item))
        page.info["full_size"] = page.size
    else:
        raise BadImageError(
            repr(type(item).__name__), "unsupported input type (give a path, bytes, PIL image or uint8 array)"
        )
    full = tuple(page.info.get("full_size", page.size))
    # One array view of the page for crop detection, cropping and the structure measures (each
    # PIL -> numpy conversion copies the page); a fast-decoded JPEG never becomes a PIL image.
    src: np.ndarray | Image.Image
    if isinstance(page, DecodedPage):
        src = page.rgb
        pa: PageArray = preprocess_array(page.rgb, cfg)
    elif page.mode == "RGB":
        src = page_array(page)
        pa = preprocess_array(src, cfg)
    else:
        src = page
        pa = preprocess_image(page, cfg)
    sx, sy = full[0] / page.size[0], full[1] / page.size[1]
    if pa.crop is None:
        box = (0, 0, full[0], full[1])
        detected = None
    else:
        l, t, r, b = pa.crop.box
        box = (round(l * sx), round(t * sy), round(r * sx), round(b * sy))
        detected = pa.crop.detected
    measure: Callable[[], PageStructure] | None = None
    if spec.structure and pa.reading is not None:
        ld = Loaded(pa.array, box, (int(full[0]), int(full[1])), detected, None, reading=pa.reading)
        ld.structure = reading_structure(pa.reading)
        if keep_image:
            ld.image = page.image() if isinstance(page, DecodedPage) else page
        return ld
    if spec.structure:
        crop = pa.crop

        def measure_page() -> PageStructure:
            return page_structure(src, crop if crop is not None else find_trace_box(src))

        measure = measure_page
    image = None
    if keep_image:
        image = page.image() if isinstance(page, DecodedPage) else page
    ld = Loaded(pa.array, box, (int(full[0]), int(full[1])), detected, image, reading=pa.reading)
    if measure is not None:
        if defer_structure:
            ld._measure = measure
        else:
            ld.structure = measure()
    return ld


def load_input_safe(item: Any, spec: LoadSpec, defer_structure: bool = False) -> Loaded | str:
    """`load_input`, with every failure turned into its reason (a broken file never stops a run)."""
    try:
        return load_input(item, spec, defer_structure=defer_structure)
    except Exception as exc:
        return failure_reason(exc)


def failure_reason(exc: Exception) -> str:
    """The reason a page could not be read, in the words of a result row."""
    if isinstance(exc, BadImageError):
        return exc.reason
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    return f"preprocessing failed ({type(exc).__name__}: {exc})"


@dataclass
class Loaded:
    """A preprocessed input and where its crop lies on the original page."""

    array: np.ndarray  # uint8 model input (H, W) or (H, W, 3)
    box: tuple[int, int, int, int]  # crop box in ORIGINAL page pixels (left, top, right, bottom)
    full_size: tuple[int, int]  # original page (width, height)
    crop_detected: bool | None
    image: Image.Image | None = None  # the decoded RGB page (possibly a draft scale), when kept
    # what the page reader found (models that read its leads): layout, lead boxes (decoded pixels)
    reading: PageReading | None = field(default=None, repr=False)
    _structure: PageStructure | ReadingStructure | None = field(default=None, repr=False)
    # The page measures not yet taken (`load_input(..., defer_structure=True)`): taken on first read.
    _measure: Callable[[], PageStructure] | None = field(default=None, repr=False, compare=False)

    @property
    def structure(self) -> PageStructure | ReadingStructure | None:
        """The gate's page measures (`PageStructure`, or `ReadingStructure` for a model on the
        reader's leads) when the model has a gate (else None)."""
        if self._measure is not None:
            self._structure, self._measure = self._measure(), None
        return self._structure

    @structure.setter
    def structure(self, value: PageStructure | ReadingStructure | None) -> None:
        self._structure, self._measure = value, None

    @property
    def structure_pending(self) -> bool:
        return self._measure is not None
