"""Explanations without PyTorch, and drawing any heatmap on the page.

`occlusion_map` (Zeiler & Fergus 2014) covers one cell of the model input at a time with blank
paper and records how much the explained class's probability falls: model-agnostic and
gradient-free, so it runs on ONNX Runtime in the base install (one batched forward pass per
few cells). `render_overlay` blends a heatmap over the crop box of the original page; the
PyTorch methods (`ecgvit.runtime.explain`: attention rollout, Grad-CAM) draw with it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ecgvit.runtime.inputs import Loaded

__all__ = ["explain_by_occlusion", "explanation", "occlusion_map", "render_overlay"]

# Cells across each side of the model input: 12 x 12 = 144 occluded copies of the page.
OCCLUSION_GRID = 12
PAPER = 255  # the uint8 value of blank paper in the model's input arrays


def occlusion_map(
    probs_of: Callable[[np.ndarray], np.ndarray], array: np.ndarray, target: int, grid: int = OCCLUSION_GRID
) -> np.ndarray:
    """(H, W) map in [0, 1] over `array` (uint8 model input): the drop of class `target`'s
    probability when each of grid x grid cells is blanked, 0 where blanking did not lower it."""
    h, w = array.shape[:2]
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    base = float(probs_of(array[None])[0, target])
    copies = []
    for i in range(grid):
        for j in range(grid):
            c = array.copy()
            c[ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = PAPER
            copies.append(c)
    drops = np.empty(len(copies), np.float32)
    for k in range(0, len(copies), 16):
        drops[k : k + 16] = base - probs_of(np.stack(copies[k : k + 16]))[:, target]
    cells = np.clip(drops.reshape(grid, grid), 0, None)
    top = float(cells.max())
    cells = cells / top if top > 0 else cells
    return cv2.resize(cells, (w, h), interpolation=cv2.INTER_LINEAR)


def explain_by_occlusion(
    probs_of: Callable[[np.ndarray], np.ndarray],
    ld: Loaded,
    classes: list[str],
    max_side: int = 1600,
    target: int | None = None,
    title: str | None = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """Predict + occlusion heatmap + overlay for one input loaded with its page image."""
    if ld.image is None:
        raise ValueError("explain needs the decoded page (load with keep_image=True)")
    probs = probs_of(ld.array[None])[0]
    k = int(np.argmax(probs)) if target is None else int(target)
    return explanation(ld, probs, k, occlusion_map(probs_of, ld.array, k), "occlusion", classes, title, max_side)


def explanation(
    ld: Loaded,
    probs: np.ndarray,
    target: int,
    heat: np.ndarray,
    method: str,
    classes: list[str],
    title: str | None,
    max_side: int,
) -> tuple[Image.Image, dict[str, Any]]:
    """The heatmap drawn on the page, and what it shows (any method's)."""
    assert ld.image is not None
    title = title or f"{classes[target]}  p={probs[target]:.2f}   ({method})"
    img = render_overlay(ld.image, heat, ld.box, ld.full_size, title, max_side=max_side)
    info = {
        "label": classes[int(np.argmax(probs))],
        "probability": float(probs.max()),
        "probabilities": {c: float(p) for c, p in zip(classes, probs, strict=True)},
        "explained_class": classes[target],
        "method": method,
        "crop_box": list(ld.box),
        "size": list(img.size),
    }
    return img, info


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_overlay(
    page: Image.Image,
    heat: np.ndarray,
    box: tuple[int, int, int, int],
    full_size: tuple[int, int],
    title: str,
    max_side: int = 1600,
    alpha: float = 0.6,
) -> Image.Image:
    """Blend `heat` (over the crop) into `box` (original page pixels) of `page`, shown at most
    `max_side` pixels on its longer side (0: the original size), with `title` in a banner."""
    fw, fh = full_size
    s = min(1.0, max_side / max(fw, fh)) if max_side else 1.0
    size = (max(1, round(fw * s)), max(1, round(fh * s)))
    canvas = page.convert("RGB")
    if canvas.size != size:
        canvas = canvas.resize(size, Image.Resampling.LANCZOS if canvas.width > size[0] else Image.Resampling.BICUBIC)
    base = np.asarray(canvas).astype(np.float32)
    l, t, r, b = (round(v * s) for v in box)
    l, t = max(0, l), max(0, t)
    r, b = min(size[0], max(r, l + 1)), min(size[1], max(b, t + 1))
    hm = cv2.resize(heat.astype(np.float32), (r - l, b - t), interpolation=cv2.INTER_CUBIC)
    hm = np.clip(hm, 0, 1)
    color = cv2.applyColorMap((hm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
    a = (alpha * hm**0.7)[..., None]
    region = base[t:b, l:r]
    base[t:b, l:r] = region * (1 - a) + color * a
    out = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(out)
    lw = max(2, size[0] // 500)
    d.rectangle([l, t, r - 1, b - 1], outline=(0, 160, 255), width=lw)
    fs = max(14, size[0] // 40)
    font = _font(fs)
    pad = fs // 3
    tb = d.textbbox((0, 0), title, font=font)
    d.rectangle([0, 0, tb[2] - tb[0] + 4 * pad, tb[3] - tb[1] + 3 * pad], fill=(20, 20, 20))
    d.text((2 * pad - tb[0], pad - tb[1] + pad // 2), title, fill=(255, 255, 255), font=font)
    return out
