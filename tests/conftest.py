"""Shared fixtures: small generated ECG-like report pages (no real data in tests).

A page is white paper with a header line of text (changes with `header`), a pink millimetre grid
in the trace area (the Khan fallback box) and a thick random black trace drawn from `seed`:
distinct seeds give clearly different traces (far apart in pHash), the same seed gives the same
trace, so a re-encoded or re-headed copy is a near duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

PAGE_SIZE = (600, 428)  # width, height: Khan aspect ratio, above the 256 px min side
TRACE_BOX = (0.031, 0.181, 0.982, 0.965)


def page_image(seed: int, size: tuple[int, int] = PAGE_SIZE, header: str | None = None) -> Image.Image:
    """An RGB page-like image whose trace depends only on `seed`."""
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), header if header is not None else f"ID {seed:06d}  2020-08-06 10:04", fill="black")
    left, top, right, bottom = (round(f * s) for f, s in zip(TRACE_BOX, (w, h, w, h), strict=False))
    for x in range(left, right + 1, 6):
        d.line([(x, top), (x, bottom)], fill=(250, 200, 210) if (x - left) % 30 else (240, 150, 170), width=1)
    for y in range(top, bottom + 1, 6):
        d.line([(left, y), (right, y)], fill=(250, 200, 210) if (y - top) % 30 else (240, 150, 170), width=1)
    rng = np.random.default_rng(seed)
    xs = np.linspace(left + 4, right - 4, 24)
    ys = rng.uniform(top + 6, bottom - 6, size=len(xs))
    d.line(list(zip(xs.tolist(), ys.tolist(), strict=False)), fill="black", width=5)
    # a few solid blocks at random places make the low frequencies differ strongly between seeds
    for _ in range(3):
        x0 = rng.uniform(left, right - 80)
        y0 = rng.uniform(top, bottom - 60)
        d.rectangle([x0, y0, x0 + 70, y0 + 50], fill="black")
    return img


def save_page(
    path: Path, seed: int, *, header: str | None = None, quality: int = 92, size: tuple[int, int] = PAGE_SIZE
) -> Path:
    """Write a page to `path` (format from the suffix; JPEG at `quality`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = page_image(seed, size=size, header=header)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, "JPEG", quality=quality)
    else:
        img.save(path)
    return path


@pytest.fixture
def make_page() -> Callable[..., Path]:
    """`make_page(path, seed, header=None, quality=92, size=PAGE_SIZE) -> path`."""
    return save_page


@pytest.fixture
def class_tree(tmp_path: Path) -> Callable[..., Path]:
    """`class_tree({folder: n_pages}, root=None, seed0=0) -> root`: one folder per class, distinct pages."""

    def build(spec: dict[str, int], root: Path | None = None, seed0: int = 0) -> Path:
        root = root or tmp_path / "data"
        seed = seed0
        for folder, n in spec.items():
            for i in range(n):
                save_page(root / folder / f"p{i:03d}.jpg", seed)
                seed += 1
        return root

    return build
