"""The page-independent model input: a page's twelve leads redrawn in one fixed layout.

Whatever a page looks like (cart, layout, grid, scan or photo), the reader's leads are drawn into
one canonical image: the 3x4 panels in the standard order (I aVR V1 V4 / II aVL V2 V5 / III aVF V3
V6), each showing 2.5 s, and the 10 s rhythm lead II below, on a fixed time scale, with no grid
and no text. A model trained on these images reads any layout the reader reads: a 6x2 or 12x1
page prints each panel's 2.5 s window too (a lead printed longer supplies the standard window;
on a 12x1 page the other windows are more views of the same record, see `panel_windows`).

Two forms (`PreprocessConfig.form`):
- "signals": the reader's traced signals redrawn as clean lines, each panel scaled to its own
  robust amplitude (so a page's gain, and z-scored records such as PTB-XL's, draw alike);
- "traces": the reader's trace-ink mask (grid and text removed) cut out of the rectified page
  around each panel's baseline at a fixed mV scale, resampled to the panel's cell.
"""

from __future__ import annotations

import cv2
import numpy as np

from ecgvit.reader.reading import FS, LEADS, N_SAMPLES, LeadBox, PageReading

__all__ = [
    "CANONICAL_ROWS",
    "PANEL_S",
    "RHYTHM_LEAD",
    "cells",
    "panel_windows",
    "render_signals",
    "render_traces",
]

CANONICAL_ROWS: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
RHYTHM_LEAD = "II"
PANEL_S = 2.5
_PANEL_N = int(PANEL_S * FS)
# "signals": a panel's 1st..99th percentile range fills this share of its row's height
_FILL = 0.55
# "traces": the fixed vertical scale, mV above and below the baseline that a row shows
_ROW_MV = 1.6


def cells(height: int, width: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Row bands (4: three panel rows, the rhythm row) and column bands (4) in output pixels."""
    ys = np.linspace(0, height, 5).round().astype(int)
    xs = np.linspace(0, width, 5).round().astype(int)
    return [(int(ys[i]), int(ys[i + 1])) for i in range(4)], [(int(xs[i]), int(xs[i + 1])) for i in range(4)]


def panel_windows(printed: np.ndarray) -> list[int]:
    """The window offsets (0-3, in panels of 2.5 s) at which every canonical panel can be drawn.

    `printed`: (12, N_SAMPLES) bool, where each lead is printed. Offset k draws panel column c
    from the record's window (c + k) mod 4; a standard 3x4 or 6x2 page gives [0] only, a 12x1
    page (every lead for 10 s) [0, 1, 2, 3]. At least [0]."""
    out = []
    for k in range(4):
        ok = True
        for row in CANONICAL_ROWS:
            for c, lead in enumerate(row):
                w = (c + k) % 4
                seg = printed[LEADS.index(lead), w * _PANEL_N : (w + 1) * _PANEL_N]
                if seg.mean() < 0.9:
                    ok = False
        if ok:
            out.append(k)
    return out or [0]


def _panel_segment(signals: np.ndarray, lead: str, window: int) -> np.ndarray:
    """2.5 s of `lead` from the record's `window`; where that lead is not printed there, its first
    printed 2.5 s (a page whose panels do not follow the standard timing); NaN if none."""
    s = signals[LEADS.index(lead)]
    seg = s[window * _PANEL_N : (window + 1) * _PANEL_N]
    if np.isfinite(seg).mean() >= 0.5:
        return seg
    ok = np.flatnonzero(np.isfinite(s))
    if ok.size < _PANEL_N // 2:
        return seg
    i0 = int(min(ok[0], N_SAMPLES - _PANEL_N))
    return s[i0 : i0 + _PANEL_N]


def _draw(canvas: np.ndarray, seg: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> None:
    """Draw `seg` (NaN: not printed) into the cell, centred on its median, robustly scaled."""
    ok = np.isfinite(seg)
    if ok.sum() < 8:
        return
    v = seg[ok].astype(np.float64)
    lo, mid, hi = np.percentile(v, [1, 50, 99])
    scale = (_FILL * (y1 - y0)) / max(hi - lo, 1e-6)
    base = (y0 + y1) / 2.0
    n = len(seg)
    xs = x0 + (np.arange(n) + 0.5) * ((x1 - x0) / n)
    ys = np.clip(base - (seg - mid) * scale, y0, y1 - 1)
    pts = np.stack([xs, ys], axis=1)
    # draw each printed run as one polyline (NaN gaps stay blank); 4 fractional bits of position
    breaks = np.flatnonzero(np.diff(ok.astype(np.int8)) != 0) + 1
    for run in np.split(np.arange(n), breaks):
        if run.size >= 2 and ok[run[0]]:
            p = np.round(pts[run] * 16).astype(np.int32)
            cv2.polylines(canvas, [p], False, 0, 1, cv2.LINE_AA, shift=4)


def render_signals(signals: np.ndarray, height: int, width: int, window: int = 0) -> np.ndarray:
    """The canonical image (uint8 (height, width), white paper, dark lines) of 12 x N_SAMPLES
    signals (any unit: each panel is scaled to its own amplitude; NaN where not printed).
    `window`: one of `panel_windows(...)`, which 2.5 s each panel column shows."""
    sig = np.asarray(signals, np.float32)
    if sig.shape != (12, N_SAMPLES):
        raise ValueError(f"expected signals of shape (12, {N_SAMPLES}), got {sig.shape}")
    canvas = np.full((height, width), 255, np.uint8)
    rows, cols = cells(height, width)
    for r, names in enumerate(CANONICAL_ROWS):
        for c, lead in enumerate(names):
            seg = _panel_segment(sig, lead, (c + window) % 4)
            _draw(canvas, seg, cols[c][0], cols[c][1], rows[r][0], rows[r][1])
    _draw(canvas, sig[LEADS.index(RHYTHM_LEAD)], 0, width, rows[3][0], rows[3][1])
    return canvas


def render_traces(ink: np.ndarray, reading: PageReading, height: int, width: int) -> np.ndarray:
    """The canonical image (uint8 (height, width), white paper, dark ink) cut from the reader's
    rectified trace-ink mask `ink` (bool, the rectified page's size): each canonical panel is the
    part of its lead's printed panel that shows the standard 2.5 s (or its first 2.5 s), +-_ROW_MV
    around the baseline at the page's mV scale, resampled to the cell."""
    canvas = np.full((height, width), 255, np.uint8)
    if reading.layout is None or not reading.leads or not reading.px_per_mv:
        return canvas
    src = ink.view(np.uint8) * np.uint8(255) if ink.dtype == bool else ink
    rows, cols = cells(height, width)
    half = _ROW_MV * float(reading.px_per_mv)
    boxes: dict[str, LeadBox] = {}
    for lb in reading.leads:  # a rhythm strip is preferred for its lead only in the rhythm row
        if not lb.rhythm or lb.name not in boxes:
            boxes.setdefault(lb.name, lb)
    rhythm: LeadBox | None = next((b for b in reading.leads if b.rhythm and b.name == RHYTHM_LEAD), None)
    jobs = []
    for r, names in enumerate(CANONICAL_ROWS):
        for c, lead in enumerate(names):
            b = boxes.get(lead)
            if b is None:
                continue
            t0 = c * PANEL_S
            if not (b.t0_s - 1e-3 <= t0 and t0 + PANEL_S <= b.t0_s + b.duration_s + 1e-3):
                t0 = b.t0_s  # the lead's own window when it does not print the standard one
            jobs.append((b, t0, min(PANEL_S, b.duration_s), cols[c], rows[r]))
    rb = rhythm or next((b for b in reading.leads if b.name == RHYTHM_LEAD and b.duration_s > PANEL_S), None)
    if rb is not None:
        jobs.append((rb, rb.t0_s, rb.duration_s, (0, int(round(width * rb.duration_s / 10.0))), rows[3]))
    h, w = src.shape[:2]
    for b, t0, dur, (cx0, cx1), (cy0, cy1) in jobs:
        if b.px_per_s <= 0 or cx1 <= cx0:
            continue
        xa = b.x0 + (t0 - b.t0_s) * b.px_per_s
        xb = xa + dur * b.px_per_s
        ya, yb = b.baseline_y - half, b.baseline_y + half
        xi0, xi1, yi0, yi1 = round(xa), round(xb), round(ya), round(yb)
        if xi1 - xi0 < 2 or yi1 - yi0 < 2:
            continue
        # the panel's region (out-of-page parts blank), area-resampled onto the cell: a thin line
        # shrunk 2-8x keeps its darkness as grey instead of breaking up
        patch = np.zeros((yi1 - yi0, xi1 - xi0), np.uint8)
        sy0, sy1, sx0, sx1 = max(0, yi0), min(h, yi1), max(0, xi0), min(w, xi1)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        patch[sy0 - yi0 : sy1 - yi0, sx0 - xi0 : sx1 - xi0] = src[sy0:sy1, sx0:sx1]
        cell = cv2.resize(patch, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_AREA)
        region = canvas[cy0:cy1, cx0:cx1]
        np.minimum(region, 255 - cell, out=region)
    return canvas
