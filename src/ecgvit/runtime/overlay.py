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

from ecgvit.reader.canonical import CANONICAL_ROWS, RHYTHM_LEAD, cells
from ecgvit.runtime.inputs import Loaded

__all__ = [
    "explain_by_occlusion",
    "explain_leads",
    "explanation",
    "lead_importance",
    "occlusion_map",
    "render_overlay",
]

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
    base, s = _page_canvas(page, full_size, max_side)
    size = (base.shape[1], base.shape[0])
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
    _banner(d, title, size[0])
    return out


RHYTHM_KEY = f"{RHYTHM_LEAD} rhythm"


def lead_importance(probs_of: Callable[[np.ndarray], np.ndarray], array: np.ndarray, target: int) -> dict[str, float]:
    """For a model on the reader's canonical leads: how much class `target`'s probability falls when
    each lead's panel (and the rhythm strip, key "II rhythm") is blanked, in probability points
    (0 where blanking did not lower it). One batched pass of 13 copies."""
    h, w = array.shape[:2]
    rows, cols = cells(h, w)
    names, copies = [], []
    for r, leads in enumerate(CANONICAL_ROWS):
        for c, lead in enumerate(leads):
            x = array.copy()
            x[rows[r][0] : rows[r][1], cols[c][0] : cols[c][1]] = PAPER
            names.append(lead)
            copies.append(x)
    x = array.copy()
    x[rows[3][0] : rows[3][1]] = PAPER
    names.append(RHYTHM_KEY)
    copies.append(x)
    base = float(probs_of(array[None])[0, target])
    p = probs_of(np.stack(copies))[:, target]
    return {n: round(max(0.0, base - float(v)), 4) for n, v in zip(names, p, strict=True)}


def explain_leads(
    probs_of: Callable[[np.ndarray], np.ndarray],
    ld: Loaded,
    classes: list[str],
    max_side: int = 1600,
    target: int | None = None,
    title: str | None = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """Which leads drove the answer, drawn on the original page over the reader's lead boxes (a
    model on the reader's leads): each box tinted by its lead's `lead_importance`, its name and
    value printed; info["leads"] has the values (the per-lead bars of the JSON)."""
    if ld.image is None or ld.reading is None:
        raise ValueError("explain_leads needs the decoded page and the reader's leads (a leads model, keep_image=True)")
    probs = probs_of(ld.array[None])[0]
    k = int(np.argmax(probs)) if target is None else int(target)
    imp = lead_importance(probs_of, ld.array, k)
    base, _ = _page_canvas(ld.image, ld.full_size, max_side)
    size = (base.shape[1], base.shape[0])
    rw, rh = ld.reading.size
    sx, sy = size[0] / max(1, rw), size[1] / max(1, rh)
    top = max(imp.values()) or 1.0
    boxes = []
    for b in ld.reading.leads:
        v = imp.get(RHYTHM_KEY if b.rhythm and b.name == RHYTHM_LEAD else b.name, 0.0)
        l, t, r, bt = (round(b.box[0] * sx), round(b.box[1] * sy), round(b.box[2] * sx), round(b.box[3] * sy))
        l, t, r, bt = max(0, l), max(0, t), min(size[0], r), min(size[1], bt)
        if r <= l or bt <= t:
            continue
        a = 0.5 * (v / top)
        base[t:bt, l:r] = base[t:bt, l:r] * (1 - a) + np.array([230.0, 40.0, 40.0]) * a
        boxes.append((l, t, r, bt, b.name, v))
    out = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(out)
    fs = max(12, size[0] // 70)
    font = _font(fs)
    lw = max(1, size[0] // 800)
    for l, t, r, bt, name, v in boxes:
        d.rectangle([l, t, r - 1, bt - 1], outline=(0, 120, 220), width=lw)
        d.text((l + 3, t + 2), f"{name} {v:.3f}", fill=(0, 60, 160), font=font)
    title = title or f"{classes[k]}  p={probs[k]:.2f}   (lead occlusion: probability lost without each lead)"
    _banner(d, title, size[0])
    info = {
        "label": classes[int(np.argmax(probs))],
        "probability": float(probs.max()),
        "probabilities": {c: float(p) for c, p in zip(classes, probs, strict=True)},
        "explained_class": classes[k],
        "method": "lead occlusion",
        "leads": imp,
        "layout": ld.reading.layout,
        "crop_box": list(ld.box),
        "size": list(out.size),
    }
    return out, info


def _page_canvas(page: Image.Image, full_size: tuple[int, int], max_side: int) -> tuple[np.ndarray, float]:
    """The page as float32 RGB at its original size scaled to at most `max_side` on its longer
    side (0: unscaled), and that scale."""
    fw, fh = full_size
    s = min(1.0, max_side / max(fw, fh)) if max_side else 1.0
    size = (max(1, round(fw * s)), max(1, round(fh * s)))
    canvas = page.convert("RGB")
    if canvas.size != size:
        canvas = canvas.resize(size, Image.Resampling.LANCZOS if canvas.width > size[0] else Image.Resampling.BICUBIC)
    return np.asarray(canvas).astype(np.float32), s


def _banner(d: ImageDraw.ImageDraw, title: str, width: int) -> None:
    fs = max(14, width // 40)
    font = _font(fs)
    pad = fs // 3
    tb = d.textbbox((0, 0), title, font=font)
    d.rectangle([0, 0, tb[2] - tb[0] + 4 * pad, tb[3] - tb[1] + 3 * pad], fill=(20, 20, 20))
    d.text((2 * pad - tb[0], pad - tb[1] + pad // 2), title, fill=(255, 255, 255), font=font)
