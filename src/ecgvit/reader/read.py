"""`read_page`: from a 12-lead page image to its geometry, layout, leads and signals.

Stages (classical image processing; each one's failure is a reason, never an exception):
1. masks: ink (dark in every channel, relative to the local paper level) and grid (the rest of
   what is darker than paper);
2. rotation (+-15 deg): the angle that makes the row projection of the dark pixels sharpest;
3. grid pitch on both axes: FFT of the grid mask's projections inside the grid's region;
4. rows: peaks of the ink's row profile (trace baselines); calibration pulses at the rows' starts;
5. layout from the number of rows and the column separators, leads in the layout's standard order;
6. signals: a dynamic-programming path per row, cut into panels, in mV, resampled to 500 Hz.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image
from scipy.signal import find_peaks

from ecgvit.reader import geometry as geo
from ecgvit.reader.reading import FS, LAYOUT_LEADS, LEADS, N_SAMPLES, GridInfo, LeadBox, PageReading
from ecgvit.reader.trace import trace_row

log = logging.getLogger("ecgvit")

# traces, labels and text cover a few % of an ECG page; a photo or a noise image far more
MAX_INK_DENSITY = 0.15
# a page whose rows of ink cross fewer of their columns once than this holds no traces (see _read)
MIN_SINGLE_RUN_SHARE = 0.7
# two rows closer than this share of the median gap between rows are one (see _merge_split_rows)
ROW_SPLIT_GAP = 0.5
# a quiet ink row (no QRS-tall stroke) is a trace where its ends are this near the trace rows' and
# this share of its columns hold one stroke (see _trace_rows; generated text rows <= 0.6)
QUIET_ROW_END_MM = 5.0
QUIET_ROW_SINGLE_RUN = 0.9
STANDARD_GAINS = (2.5, 5.0, 10.0, 20.0)
RECORD_S = (N_SAMPLES - 1) / FS  # a 10 s row is drawn from the first sample to the last


def as_rgb_array(image: Any) -> np.ndarray:
    """An HxWx3 uint8 RGB array from a path, a PIL image, a decoded page or an array."""
    if isinstance(image, (str, Path)):
        from ecgvit.data.io import open_page

        image = open_page(image, min_side=64)
    if hasattr(image, "rgb") and isinstance(image.rgb, np.ndarray):  # ecgvit.data.io.DecodedPage
        image = image.rgb
    if isinstance(image, Image.Image):
        from ecgvit.data.io import page_array

        image = page_array(image.convert("RGB") if image.mode != "RGB" else image)
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"image of shape {a.shape}: expected HxWx3 RGB")
    if a.shape[2] == 4:
        a = a[..., :3]
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def read_page(image: Any, *, trace: bool = True, keep_ink: bool = False) -> PageReading:
    """Read a 12-lead ECG page (path, PIL image or HxWx3 uint8 RGB array).

    Never raises for page content: whatever is not found is a sentence in `reasons` (a page that is
    not an ECG gives layout None and NaN signals). A path that cannot be decoded raises
    ecgvit.data.io.BadImageError. `trace=False` stops after geometry, layout and leads. `keep_ink`:
    keep the rectified page's trace-ink mask (grid, text and separator lines removed) as `ink`.
    """
    rgb = as_rgb_array(image)
    r, quick = _attempt(rgb, trace, quick=True, keep_ink=keep_ink)
    if quick and r.layout is None:
        # the quick flatness test let the full rectification fit go and no layout came out: again
        # with the full fit (a page the quick one misjudged is read as before)
        t = time.perf_counter()
        r2, _ = _attempt(rgb, trace, quick=False, keep_ink=keep_ink)
        if r2.layout is not None:
            r2.timings_ms["retry"] = _ms(t)
            r = r2
    # five retries for a page that gave no layout (one that reads whole never takes them):
    # - thin or anti-aliased traces break into dashes at the ink threshold: faint ink grown from
    #   the dark;
    # - a grid printed as dark as the trace (a black-and-white print or copy) is taken for ink:
    #   a second threshold among the dark pixels, the part on long straight lines taken as grid;
    #   where the grid's cores fall on the trace's side of that threshold, its lines mislead the
    #   choice of side: the darker side taken as the trace regardless (its long lines still grid);
    # - a blue, red or green trace on a grey grid as dark as it: only ink with colour;
    # - a 1 px trace on a small page, anti-aliased to mid grey: on a coloured grid, light ink
    for kw, why in (
        ({}, "faint ink joined to the dark (thin or anti-aliased traces)"),
        (
            {"lines_as_grid": True},
            "the grid as dark as the trace told from it (a darker threshold, long straight lines as grid)",
        ),
        (
            {"lines_as_grid": True, "trace_darker": True},
            "the grid as dark as the trace told from it (the darker ink taken as the trace)",
        ),
        ({"colour_ink": True}, "a coloured trace told from a grey grid by its colour"),
        ({"light_ink": True}, "light grey ink on a coloured grid (a thin trace on a small page)"),
    ):
        if r.layout is not None:
            break
        t = time.perf_counter()
        r3, _ = _attempt(rgb, trace, quick=False, keep_ink=keep_ink, mask_kw={"grow": True, **kw})
        if r3.layout is not None:
            r3.reasons.append(f"read with {why}")
            r3.timings_ms["retry"] = _ms(t)
            r = r3
    return r


def _attempt(
    rgb: np.ndarray, trace: bool, quick: bool, keep_ink: bool = False, mask_kw: dict[str, Any] | None = None
) -> tuple[PageReading, bool]:
    """One reading of `rgb`; whether the quick flatness test stood in for the full rectification fit."""
    r = PageReading(size=(int(rgb.shape[1]), int(rgb.shape[0])))
    used = False
    try:
        used = _read(rgb, r, trace, quick, keep_ink, mask_kw or {})
    except Exception as exc:  # a page the stages cannot handle is a reason, never a traceback
        log.debug("read_page failed", exc_info=True)
        r.reasons.append(f"the page could not be read ({type(exc).__name__}: {exc})")
        r.layout = None
        used = quick
    return r, used


def _ms(t: float) -> float:
    return (time.perf_counter() - t) * 1000.0


def _read(
    rgb: np.ndarray,
    r: PageReading,
    do_trace: bool,
    quick: bool = False,
    keep_ink: bool = False,
    mask_kw: dict[str, Any] | None = None,
) -> bool:
    """Reads `rgb` into `r`; returns whether the quick flatness test stood in for the full
    rectification fit (`quick`: it may). `mask_kw`: `geo.page_masks` options of a retry."""
    mk = mask_kw or {}
    t0 = time.perf_counter()
    h, w = rgb.shape[:2]
    M = np.eye(3)
    rgb_h, rgb_w = h, w
    med = np.median(rgb[:: max(1, h // 64), :: max(1, w // 64)].reshape(-1, 3), axis=0)
    fill = (int(med[0]), int(med[1]), int(med[2]))
    # the sheet against a background (a photo): what lies off the paper is neither grid nor ink
    paper = geo.paper_mask(rgb)
    if paper is not None:
        m = geo.page_masks(rgb, paper=paper, **mk)
        geo.apply_paper(m, paper)
    else:
        m = geo.page_masks(rgb, **mk)
    # perspective (a photo, a keystoned scan): the grid's lines in tiles give a homography. A flat
    # scan shows itself on a quick fit at a quarter of the size: the full fit (and its coarse retry)
    # only runs where that one sees perspective, a poor fit or no grid.
    rect = geo.quick_flat_fit(m.grid) if quick else None
    gated = rect is not None and geo.looks_flat(rect)
    if not gated:
        rect = geo.estimate_rectification(m.grid)
        if rect is None or not geo.rectification_fits(rect):
            # a blurred grid (its 1 mm lines gone): again at half the size, tiles overlapping
            r2 = geo.estimate_rectification(m.grid, coarse=True)
            if r2 is not None and (rect is None or r2.residual_deg < rect.residual_deg):
                rect = r2
    how = "the grid's lines"
    rectified = False
    if (rect is None or not geo.rectification_usable(rect)) and paper is not None:
        # a grid too faint or blurred for its lines: the sheet's outline against the background
        ro = geo.outline_rectification(paper, (w, h))
        if ro is not None and ro.perspective >= 0.004:
            rect, how = ro, "the paper's outline"
    if rect is not None and (geo.rectification_usable(rect) or how != "the grid's lines"):
        rgb = geo.warp(rgb, rect.H, rect.size, fill)
        M = rect.H
        rectified = True
        h, w = rgb.shape[:2]
        m = geo.page_masks(rgb, m.ink_threshold, ink_floor=m.ink_floor, **mk)
        if paper is not None:
            S = np.diag([paper.shape[1] / rgb_w, paper.shape[0] / rgb_h, 1.0])
            paper = cv2.warpPerspective(paper, rect.H @ np.linalg.inv(S), (w, h), flags=cv2.INTER_NEAREST)
            geo.apply_paper(m, paper)
        r.rotation_deg = round(geo.rotation_of(rect.H, rect.size), 3)
        if how == "the grid's lines":
            r.reasons.append(
                f"perspective rectified from the grid's lines ({rect.tiles[0]} + {rect.tiles[1]} tiles, "
                f"{rect.residual_deg:.2f} deg fit error)"
            )
        else:
            r.reasons.append("perspective rectified from the paper's outline (the grid too faint for its lines)")
    else:
        weight = cv2.max(m.grid, m.ink.view(np.uint8) * np.uint8(255))
        ang, conf = geo.estimate_rotation(weight)
        if abs(ang) >= 0.05 and conf > 1.05:
            rgb, M = geo.rotate(rgb, ang, fill)
            m = geo.page_masks(rgb, m.ink_threshold, ink_floor=m.ink_floor, **mk)
            if paper is not None:
                S = np.diag([paper.shape[1] / rgb_w, paper.shape[0] / rgb_h, 1.0])
                paper = cv2.warpPerspective(paper, M @ np.linalg.inv(S), (w, h), flags=cv2.INTER_NEAREST)
                geo.apply_paper(m, paper)
            r.rotation_deg = round(ang, 3)
    r.transform = M.tolist()
    r.timings_ms["rotation"] = _ms(t0)

    # --- grid: region and pitch
    t1 = time.perf_counter()
    box = geo.grid_box(m.grid, m.ink)
    gl, gt, gr, gb = box if box is not None else (0, 0, w - 1, h - 1)
    sub = m.grid[gt : gb + 1, gl : gr + 1]
    expected = max(gr - gl, gb - gt) / geo.TYPICAL_GRID_WIDTH_MM
    fx, fy = geo.grid_pitch(sub, expected)
    if fx.pitch is not None and fy.pitch is not None:
        # the region where the grid is periodic at its pitch: a header, a footer, a shadow or a table
        # the darkness-based region let in are cut off (a side moves only by more than 2 strips)
        pbox = geo.grid_box_periodic(m.grid, fx.pitch, fy.pitch)
        if pbox is not None:
            # a side moves in by more than 3 mm (a header or footer let in) or, on a rectified photo,
            # out by more than 10 mm (a shadow cut the grid off); closer, the darkness-based side is
            # kept (its edge is exact)
            mx_, my_ = 3 * fx.pitch, 3 * fy.pitch
            ox_, oy_ = (10 * fx.pitch, 10 * fy.pitch) if rectified else (float(w), float(h))
            nl = pbox[0] if pbox[0] - gl > mx_ or gl - pbox[0] > ox_ else gl
            nt = pbox[1] if pbox[1] - gt > my_ or gt - pbox[1] > oy_ else gt
            nr = pbox[2] if gr - pbox[2] > mx_ or pbox[2] - gr > ox_ else gr
            nb = pbox[3] if gb - pbox[3] > my_ or pbox[3] - gb > oy_ else gb
            if (nl, nt, nr, nb) != (gl, gt, gr, gb) and nr - nl > 0.3 * w and nb - nt > 0.3 * h:
                gl, gt, gr, gb = nl, nt, nr, nb
                box = (gl, gt, gr, gb)
                sub = m.grid[gt : gb + 1, gl : gr + 1]
                fx, fy = geo.grid_pitch(sub, expected)
    grid = GridInfo(box=(int(gl), int(gt), int(gr), int(gb)), strength=(round(fx.strength, 1), round(fy.strength, 1)))
    px: float | None
    py: float | None
    px, py = fx.pitch, fy.pitch
    if px is not None and py is not None:
        # one axis unambiguous (a 5 mm sub-period seen) settles the other's 1 mm / 5 mm reading
        for _ in range(2):
            if fx.ambiguous and not fy.ambiguous:
                px = geo._nearest_scale(px, py)
            if fy.ambiguous and not fx.ambiguous:
                py = geo._nearest_scale(py, px)
        if abs(math.log(px / py)) > 0.15:
            # one axis misread (JPEG blocks, a faint grid): the one nearer the page size's scale is kept
            keep = min((px, py), key=lambda p: abs(math.log(p / expected)))
            r.reasons.append(
                f"grid pitch differs between axes ({px:.2f} vs {py:.2f} px/mm): {keep:.2f}, nearer the page size's scale, is used"
            )
            px = py = keep
    elif px is not None or py is not None:
        px = py = px if px is not None else py
    if px is not None and py is not None:
        grid.pitch_source = "grid"
        grid.kind = fx.kind if not fx.ambiguous else fy.kind
        gy, gx = np.nonzero(sub[::3, ::3] > np.percentile(sub[::3, ::3], 97))
        if gy.size:
            rgb_sub = rgb[gt : gb + 1 : 3, gl : gr + 1 : 3][gy, gx]
            c = np.median(rgb_sub, axis=0)
            grid.colour = (int(c[0]), int(c[1]), int(c[2]))
        if box is None:
            r.reasons.append("no grid region found: the whole page is searched")
    else:
        grid.box = None
        px = py = None
    r.grid = grid
    r.timings_ms["grid"] = _ms(t1)

    # --- rows and layout
    t2 = time.perf_counter()
    ink = m.ink
    if px is None or py is None:
        # no grid: the page size gives a rough scale (the record is ~250 mm wide on paper)
        ppm_x = ppm_y = w / 280.0
    else:
        ppm_x, ppm_y = float(px), float(py)
    region = ink[gt : gb + 1, gl : gr + 1]
    density = float(region[::2, ::2].mean()) if region.size else 0.0
    if density > MAX_INK_DENSITY:
        r.reasons.append(
            f"{100 * density:.0f} % of the page is dark ink: not a page of ECG traces (a photo or a filled image?)"
        )
        _finish_scale(r, px, py, ppm_x, ppm_y)
        return gated
    prof = region.sum(axis=1).astype(np.float64)
    sig = max(1.0, 0.6 * ppm_y)
    prof_s = cv2.GaussianBlur(prof.reshape(-1, 1), (1, 0), sigmaX=0, sigmaY=sig).ravel() if prof.size > 3 else prof
    if prof_s.max() <= 0:
        r.reasons.append("no ink found on the page: no traces to read")
        _finish_scale(r, px, py, ppm_x, ppm_y)
        return gated
    peaks, _ = find_peaks(
        prof_s, distance=max(2, int(7.0 * ppm_y)), height=0.2 * prof_s.max(), prominence=0.1 * prof_s.max()
    )
    baselines = [float(p + gt) for p in peaks]
    # a row's baseline: the densest line of its ink (refined to the exact px)
    baselines = [_refine_peak(prof, int(b - gt)) + gt for b in baselines]
    # a trace row runs across the page and has beats: strokes leaving its baseline (header rules
    # and text lines have neither)
    kept = _trace_rows(ink, baselines, gl, gr, ppm_x, ppm_y)
    if len(kept) < len(baselines):
        log.debug("dropped %d ink rows that are no traces", len(baselines) - len(kept))
    baselines = _merge_split_rows(kept, prof_s, gt)
    n_rows = len(baselines)
    r.rows = n_rows
    if n_rows == 0:
        r.reasons.append("no trace rows found")
        _finish_scale(r, px, py, ppm_x, ppm_y)
        return gated
    # a trace crosses each column once; text lines (letters: two or three strokes a column) and a
    # photo's unremoved grid do not. Measured: generated text pages <= 0.61, generated and real
    # ECG rows (exports, scans, photos) mostly >= 0.86
    single = float(np.median([_single_run_share(ink, b, gl, gr, ppm_y) for b in baselines]))
    if single < MIN_SINGLE_RUN_SHARE:
        r.reasons.append(
            f"the rows of ink are not single traces (a trace crosses {100 * single:.0f} % of its columns once, "
            f"under {100 * MIN_SINGLE_RUN_SHARE:.0f} %): text, or a grid the trace could not be told from"
        )
        _finish_scale(r, px, py, ppm_x, ppm_y)
        return gated
    # row extents and calibration pulses
    row_pitch = (baselines[-1] - baselines[0]) / max(1, n_rows - 1) if n_rows > 1 else (gb - gt) / 2
    # row bands: halfway to the neighbouring baselines; the first and last reach the grid's edge, but
    # no further than 0.6 of a row pitch (a grid filling the whole page has no edge near the rows)
    top0 = max(float(gt), baselines[0] - 0.6 * row_pitch) if n_rows > 1 else float(gt)
    bot1 = min(float(gb), baselines[-1] + 0.6 * row_pitch) if n_rows > 1 else float(gb)
    edges = [top0] + [(baselines[k] + baselines[k + 1]) / 2 for k in range(n_rows - 1)] + [bot1]
    bands = [(int(edges[k]), int(edges[k + 1])) for k in range(n_rows)]
    max_run = 1.2 * row_pitch if n_rows > 1 else (gb - gt) * 0.8
    # a pulse may rise past its row's band (20 mm at 20 mm/mV, rows 25 mm apart): searched up to
    # just below the previous row's baseline
    ceilings = [bands[0][0]] + [int(baselines[k - 1] + 1.5 * ppm_y) for k in range(1, n_rows)]
    pulses = [
        _find_pulse(ink, bands[k], baselines[k], gl, gr, ppm_x, ppm_y, max_run, ceilings[k]) for k in range(n_rows)
    ]
    extents = [_row_extent(ink, bands[k], gl, gr, ppm_x, max_run) for k in range(n_rows)]
    starts: list[float | None] = []
    for k in range(n_rows):
        ex = extents[k]
        if ex is None:
            starts.append(None)
            continue
        p = pulses[k]
        starts.append(_trace_start(ink, bands[k], p["x_end"], ex[1], ppm_x, max_run) if p else ex[0])
    found = [p for p in pulses if p]
    # gain and speed from the pulses
    if found:
        r.calibration = True
        h_px = float(np.median([p["height"] for p in found]))
        gain_mm = h_px / ppm_y
        gain = min(STANDARD_GAINS, key=lambda g: abs(math.log(gain_mm / g)))
        if abs(math.log(gain_mm / gain)) > 0.2:
            r.reasons.append(f"calibration pulse {gain_mm:.1f} mm tall is no standard gain: 10 mm/mV assumed")
            gain, px_per_mv = 10.0, 10.0 * ppm_y
        else:
            px_per_mv = h_px
        wmm = float(np.median([p["width"] for p in found])) / ppm_x
        speed = 50.0 if 9.0 <= wmm <= 11.0 else 25.0
        if not (4.0 <= wmm <= 6.0 or 9.0 <= wmm <= 11.0):
            r.reasons.append(f"calibration pulse {wmm:.1f} mm wide does not tell the paper speed: 25 mm/s assumed")
        if px is None:
            # no grid: the pulse (10 mm at its gain) sets the scale
            ppm_y = ppm_x = h_px / gain
            grid.pitch_source = "calibration pulse"
    else:
        gain, speed = 10.0, 25.0
        px_per_mv = gain * ppm_y
        r.reasons.append("no calibration pulse found: 10 mm/mV and 25 mm/s assumed")
    if px is None:
        if not found:
            r.reasons.append(f"no grid found: scale from the page size ({ppm_x:.2f} px/mm, rough)")
        else:
            r.reasons.append("no grid found: scale from the calibration pulse")
    r.px_per_mm = (round(ppm_x, 4), round(ppm_y, 4))
    r.speed_mm_s, r.gain_mm_mv, r.px_per_mv = speed, gain, round(px_per_mv, 3)

    # layout
    valid = [k for k in range(n_rows) if extents[k] is not None and starts[k] is not None]
    if not valid:
        r.reasons.append("rows found but no traces in them")
        return gated
    # the first and last inked columns are the line's edges: its centre is half a line width in
    off = (_line_width(ink, bands[valid[0]], gl, gr, max_run) - 1.0) / 2.0
    # a row's first and last inked columns are its line's cap, which shows half a pixel less than
    # the half width the vertical runs give (their mode counts both blurred edges): against the
    # generator's truth the rows started ~1 px late and ended ~0.5 px early with `off`, and on real
    # Khan pages the first and last panels came out 0.5-1 px shorter than those between separators
    inset = max(0.0, off - 0.5)
    x_start = float(np.median([s for s in starts if s is not None])) + inset
    x_end = float(np.median([e[1] for e in extents if e is not None])) - inset
    span = x_end - x_start
    pps = speed * ppm_x
    dur = span / pps
    if abs(dur - RECORD_S) <= 0.8 and abs(dur / RECORD_S - 1) > 0.003:
        # rows hold the whole 10 s record but the grid's scale disagrees (a grid printed larger than
        # the traces, as on the Khan cart): the rows' length is the time scale
        pps = span / RECORD_S
    elif dur < 1.0:
        r.reasons.append(f"rows only {dur:.1f} s long: not a 12-lead record")
        return gated
    # panel boundaries a row marks (a separator line or a tick across the baseline) at 1/4, 1/2, 3/4
    marks = [
        [
            _boundary_mark(ink, baselines[k], x_start + f * span, ppm_x, ppm_y, 2.5 if rectified else 0.6)
            for f in (0.25, 0.5, 0.75)
        ]
        for k in range(n_rows)
    ]
    echoes = _rhythm_echoes(ink, bands, baselines, x_start, span, ppm_x) if n_rows == 6 else 0
    name = _layout_name(n_rows, marks, r, echoes)
    if name is None:
        return gated
    main, rhythm = LAYOUT_LEADS[name]
    n_cols = len(main[0])
    r.layout, r.columns = name, n_cols
    r.timings_ms["layout"] = _ms(t2)

    # --- leads: each row's pixel <-> time knots (row start, panel boundaries, row end), each landmark
    # fitted across the rows by a line x = p + q y (a page photographed at an angle or keystoned
    # shifts and scales rows differently; on a flat page the lines are vertical)
    inv = np.linalg.inv(M)
    rec_s = span / pps
    knots = _row_knots(
        ink, baselines, starts, extents, inset, x_start, x_end, n_cols, len(main), ppm_x, ppm_y, span, row_pitch
    )
    ps = rec_s / n_cols
    boxes: list[LeadBox] = []
    rows_leads: list[list[tuple[str, int, float, float]]] = []  # per row: (lead, col, x0, dur_px)
    for k in range(n_rows):
        kx = knots[k]
        if k < len(main):
            rl = [(lead, c, kx[c], kx[c + 1] - kx[c]) for c, lead in enumerate(main[k])]
        else:
            rl = [(rhythm[k - len(main)], 0, kx[0], kx[-1] - kx[0])]
        rows_leads.append(rl)
        top, bot = edges[k], edges[k + 1]
        for lead, c, x0, dpx in rl:
            dur = ps if k < len(main) else rec_s
            boxes.append(
                LeadBox(
                    name=lead,
                    box=_map_box(inv, (x0, top, x0 + dpx, bot)),
                    baseline_y=round(baselines[k], 2),
                    t0_s=round(c * ps, 4),
                    duration_s=round(dur, 4),
                    row=k,
                    col=c,
                    rhythm=k >= len(main),
                    x0=round(x0, 2),
                    px_per_s=round(dpx / dur, 4),
                )
            )
    r.leads = boxes
    if not do_trace and not keep_ink:
        return gated

    # --- signals
    t3 = time.perf_counter()
    # long vertical lines (column separators, the grid border) are no trace: removed before tracing
    lv = max(5, int(0.6 * row_pitch)) if n_rows > 1 else max(5, int(0.5 * (gb - gt)))
    ink = ink.copy()
    sub_ink = ink[gt : gb + 1].view(np.uint8)
    vert = cv2.morphologyEx(sub_ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, lv)))
    vert = cv2.dilate(vert, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 1)))
    ink[gt : gb + 1] &= ~vert.view(bool)
    if keep_ink:
        r.ink = ink
    if not do_trace:
        return gated
    sig_out = np.full((12, N_SAMPLES), np.nan, np.float32)
    filled_by_rhythm = np.zeros(12, bool)
    trim = 1.0 + 2.0 * off
    t_knots = [ps * c for c in range(n_cols + 1)]
    for k in range(n_rows):
        # the path may follow its lead into the neighbours' bands, up to their baselines
        top = int(baselines[k - 1] + 0.1 * row_pitch) if k > 0 else gt
        bot = int(baselines[k + 1] - 0.1 * row_pitch) if k + 1 < n_rows else gb
        # the row's own extent: a pulse or label before its start is no trace
        xa = int(max(0, math.ceil(knots[k][0])))
        xb = int(min(w - 1, math.floor(knots[k][-1])))
        band = ink[top : bot + 1, xa : xb + 1]
        brk = tuple(x0 - xa + trim for _l, c, x0, _d in rows_leads[k] if c > 0)
        # the ink's darkness (anti-aliased edges count less) weights the sub-pixel centroids
        sub = rgb[top : bot + 1, xa : xb + 1]
        dark = cv2.bitwise_not(cv2.max(cv2.max(sub[..., 0], sub[..., 1]), sub[..., 2]))
        pxs, pys = trace_row(band, baselines[k] - top, ppm_y, max_run, breaks=brk, weight=dark)
        if pxs.size < 2:
            r.reasons.append(f"row {k + 1}: no trace found")
            continue
        pk = pulses[k]
        bl = pk["base"] if pk is not None else baselines[k]
        mv_cols = (bl - (pys + top)) / px_per_mv
        xs = pxs + xa
        for lead, _c, x0, dpx in rows_leads[k]:
            li = LEADS.index(lead)
            is_rhythm = k >= len(main)
            if filled_by_rhythm[li] and not is_rhythm:
                continue
            # where two panels meet, the last stroke of one and the first of the next share columns:
            # those are left out (the panel's edge values come from its nearest clean column)
            lo = x0 + (trim if x0 > knots[k][0] + 1 else 0.0)
            hi = x0 + dpx - (trim if x0 + dpx < knots[k][-1] - 1 else 0.0)
            sel = (xs >= lo) & (xs < hi)
            if not sel.any():
                continue
            tt = np.interp(xs[sel], knots[k], t_knots)
            vv = mv_cols[sel]
            ok = np.isfinite(vv)
            if ok.sum() < 2:
                r.reasons.append(f"{lead}: no trace in its panel")
                continue
            t_lo, t_hi = float(np.interp(x0, knots[k], t_knots)), float(np.interp(x0 + dpx, knots[k], t_knots))
            i0 = max(0, int(math.ceil(t_lo * FS - 1e-6)))
            i1 = min(N_SAMPLES, int(math.floor(t_hi * FS + 1e-6)) + 1)
            if i1 <= i0:
                continue
            ts = np.arange(i0, i1) / FS
            sig_out[li, i0:i1] = np.interp(ts, tt[ok], vv[ok]).astype(np.float32)
            if is_rhythm:
                filled_by_rhythm[li] = True
    r.signals = sig_out
    r.timings_ms["trace"] = _ms(t3)
    return gated


def _merge_split_rows(baselines: list[float], prof: np.ndarray, top: int) -> list[float]:
    """Rows closer than ROW_SPLIT_GAP of the median gap are one row read twice (panels of one row
    printed at baselines several mm apart, a wandering baseline): the denser of the two is kept.
    Every layout prints its rows at a near-constant pitch, so no true row sits that close."""
    rows = list(baselines)
    while len(rows) >= 3:
        gaps = np.diff(rows)
        i = int(np.argmin(gaps))
        if gaps[i] >= ROW_SPLIT_GAP * float(np.median(gaps)):
            break
        a, b = rows[i], rows[i + 1]
        drop = i if prof[int(a - top)] < prof[int(b - top)] else i + 1
        log.debug("rows at %.0f and %.0f px are one: %.0f dropped", a, b, rows[drop])
        del rows[drop]
    return rows


def _finish_scale(r: PageReading, px: float | None, py: float | None, ppm_x: float, ppm_y: float) -> None:
    if px is not None and py is not None:
        r.px_per_mm = (round(ppm_x, 4), round(ppm_y, 4))


def _refine_peak(prof: np.ndarray, i: int) -> float:
    lo, hi = max(0, i - 3), min(prof.size, i + 4)
    seg = prof[lo:hi]
    j = lo + int(np.argmax(seg))
    if 0 < j < prof.size - 1:
        a, b, c = prof[j - 1], prof[j], prof[j + 1]
        den = a - 2 * b + c
        return float(j + (0.5 * (a - c) / den if den != 0 else 0.0))
    return float(j)


def _map_box(inv: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    l, t, rr, b = box
    pts = np.array([[l, t, 1.0], [rr, t, 1.0], [rr, b, 1.0], [l, b, 1.0]]) @ inv.T
    pts = pts[:, :2] / pts[:, 2:3]
    return (
        round(float(pts[:, 0].min()), 1),
        round(float(pts[:, 1].min()), 1),
        round(float(pts[:, 0].max()), 1),
        round(float(pts[:, 1].max()), 1),
    )


def _presence(ink: np.ndarray, band: tuple[int, int], gl: int, gr: int, max_run: float) -> np.ndarray:
    """Per column of [gl, gr]: has trace-like ink in the band (separator-long runs excluded)."""
    t, b = band
    sub = ink[t : b + 1, gl : gr + 1]
    cnt = sub.sum(axis=0)
    return (cnt > 0) & (cnt <= max_run)


def _line_width(ink: np.ndarray, band: tuple[int, int], gl: int, gr: int, max_run: float) -> float:
    """The trace line's apparent thickness (px): the commonest vertical run length in the band."""
    t, b = band
    from ecgvit.reader.trace import column_runs

    _, sy, ey = column_runs(ink[t : b + 1, gl : gr + 1 : 3])
    ln = ey - sy + 1
    ln = ln[ln <= max_run]
    if ln.size == 0:
        return 1.0
    return float(np.argmax(np.bincount(ln)))


def _single_run_share(ink: np.ndarray, y: float, gl: int, gr: int, ppm_y: float) -> float:
    """Of the columns with ink within 6 mm of baseline y, the share holding a single run of ink."""
    h = ink.shape[0]
    win = ink[max(0, int(y - 6 * ppm_y)) : min(h, int(y + 6 * ppm_y) + 1), gl : gr + 1].view(np.uint8)
    if win.shape[0] < 2:
        return 1.0
    runs = (np.diff(win, axis=0) == 1).sum(axis=0) + win[0]
    inked = runs > 0
    return float((runs[inked] == 1).mean()) if inked.any() else 1.0


class RowEvidence(NamedTuple):
    """What `_row_evidence` sees of an ink row: its longest stretch (x0, x1, region px; gaps of 3 mm
    bridged) and the columns whose stroke leaves it by over 2.2 mm (a QRS) and over 1.2 mm."""

    x0: int
    x1: int
    tall_strokes: int
    short_strokes: int


def _row_evidence(ink: np.ndarray, y: float, gl: int, gr: int, ppm_x: float, ppm_y: float) -> RowEvidence | None:
    """The ink within 8 mm of y (strokes counted within 3 mm of it), None where it spans under 30 % of
    the region."""
    from ecgvit.reader.trace import column_runs

    h = ink.shape[0]
    y0, y1 = max(0, int(y - 12 * ppm_y)), min(h, int(y + 12 * ppm_y) + 1)
    win = ink[y0:y1, gl : gr + 1]
    yc = y - y0
    near = win[max(0, int(yc - 8 * ppm_y)) : int(yc + 8 * ppm_y) + 1].any(axis=0)
    xs = np.nonzero(near)[0]
    if xs.size < 10:
        return None
    cut = np.nonzero(np.diff(xs) > 3 * ppm_x)[0]
    st, en = np.r_[0, cut + 1], np.r_[cut, xs.size - 1]
    i = int(np.argmax(xs[en] - xs[st]))
    if float(xs[en[i]] - xs[st[i]]) < 0.3 * win.shape[1]:
        return None
    _, a, b = column_runs(win)
    touches = (a <= yc + 3.0 * ppm_y) & (b >= yc - 3.0 * ppm_y)
    tall = int((touches & ((b - a) > 2.2 * ppm_y)).sum())
    short = int((touches & ((b - a) > 1.2 * ppm_y)).sum())
    return RowEvidence(int(xs[st[i]]), int(xs[en[i]]), tall, short)


def _trace_rows(ink: np.ndarray, baselines: list[float], gl: int, gr: int, ppm_x: float, ppm_y: float) -> list[float]:
    """The ink rows that are traces: those with >= 3 columns whose stroke leaves the baseline by over
    2.2 mm (a QRS; small text is shorter), and quiet rows of the same page. A lead with small beats
    (5 mm/mV, or a 12x1 page's halved gain) has no stroke as tall as a QRS elsewhere; it is still a
    trace where it runs as the taken rows do (both ends within QUIET_ROW_END_MM of theirs: a ruled
    line spans the grid, text stops short) as single strokes a column (text is not) and leaves its
    baseline somewhere (the pulse, a beat: a rule never does)."""
    rows = []
    for b in baselines:
        e = _row_evidence(ink, b, gl, gr, ppm_x, ppm_y)
        if e is not None:
            rows.append((b, e))
    beating = [e for _, e in rows if e.tall_strokes >= 3]
    if len(beating) < 2:
        return [b for b, e in rows if e.tall_strokes >= 3]
    x0 = float(np.median([e.x0 for e in beating]))
    x1 = float(np.median([e.x1 for e in beating]))
    tol = QUIET_ROW_END_MM * ppm_x
    out = []
    for b, e in rows:
        if e.tall_strokes >= 3:
            out.append(b)
        elif (
            e.short_strokes >= 2
            and abs(e.x0 - x0) <= tol
            and abs(e.x1 - x1) <= tol
            and _single_run_share(ink, b, gl, gr, ppm_y) >= QUIET_ROW_SINGLE_RUN
        ):
            log.debug("quiet row at %.0f px taken as a trace (%d short strokes)", b, e.short_strokes)
            out.append(b)
    return out


def _row_extent(
    ink: np.ndarray, band: tuple[int, int], gl: int, gr: int, ppm_x: float, max_run: float
) -> tuple[float, float] | None:
    """(first, last) x of the row's longest stretch of ink (gaps up to 3 mm bridged)."""
    pres = _presence(ink, band, gl, gr, max_run)
    xs = np.nonzero(pres)[0]
    if xs.size < 10:
        return None
    gaps = np.nonzero(np.diff(xs) > 3.0 * ppm_x)[0]
    starts = np.r_[0, gaps + 1]
    ends = np.r_[gaps, xs.size - 1]
    lens = xs[ends] - xs[starts]
    i = int(np.argmax(lens))
    # the pulse sits before the trace, maybe after a small gap: include stretches within 6 mm
    si = i
    while si > 0 and xs[starts[si]] - xs[ends[si - 1]] <= 6.0 * ppm_x:
        si -= 1
    s, e = int(starts[si]), int(ends[i])
    return float(xs[s] + gl), float(xs[e] + gl)


def _find_pulse(
    ink: np.ndarray,
    band: tuple[int, int],
    baseline: float,
    gl: int,
    gr: int,
    ppm_x: float,
    ppm_y: float,
    max_run: float,
    ceiling: int | None = None,
) -> dict[str, float] | None:
    """A calibration pulse at the row's start: two vertical edges >= 2.5 mm tall, 1-12 mm apart,
    joined by ink along the top, its top no higher than `ceiling` (default: the band's top).
    Returns its base y, height, width (px) and right end x."""
    ext = _row_extent(ink, band, gl, gr, ppm_x, max_run)
    if ext is None:
        return None
    x0 = int(ext[0])
    t, b = band
    y_top = max(min(t, ceiling) if ceiling is not None else t, int(baseline - 25 * ppm_y))
    y_bot = min(b, int(baseline + 2 * ppm_y))
    x1 = min(ink.shape[1], x0 + int(16 * ppm_x))
    win = ink[y_top : y_bot + 1, x0:x1]
    if win.size == 0:
        return None
    cnt = win.sum(axis=0)
    tall = cnt >= 2.5 * ppm_y
    cols = np.nonzero(tall)[0]
    if cols.size < 2:
        return None
    groups = np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1)
    if len(groups) < 2:
        return None
    g1, g2 = groups[0], groups[1]
    c1, c2 = float(g1.mean()), float(g2.mean())
    width = c2 - c1
    if not (1.0 * ppm_x <= width <= 12.0 * ppm_x):
        return None
    # the rise: its column's longest run; base = its lowest ink, top = its highest
    run1 = _longest_run(win[:, int(g1[np.argmax(cnt[g1])])])
    run2 = _longest_run(win[:, int(g2[np.argmax(cnt[g2])])])
    if run1 is None or run2 is None:
        return None
    top_y, base_y = float(run1[0]), float(run1[1])
    if abs(float(run2[0]) - top_y) > 1.0 * ppm_y or abs(float(run2[1]) - base_y) > 1.0 * ppm_y:
        return None
    # a horizontal top between the edges
    a, bb = int(g1.max()) + 1, int(g2.min())
    if bb > a:
        yt = int(round(top_y))
        top_band = win[max(0, yt - 2) : yt + 3, a:bb].any(axis=0)
        if top_band.mean() < 0.7:
            return None
    height = base_y - top_y
    if height < 2.5 * ppm_y:
        return None
    # line width: the ink is drawn with some thickness; edges of the rectangle are its centre lines
    lw = max(1.0, float(np.median(cnt[cnt > 0][: max(1, int(ppm_x))])) if (cnt > 0).any() else 1.0)
    lw = min(lw, 0.6 * ppm_y)
    return {
        "base": base_y + y_top - lw / 2.0 + 0.5,
        "height": height - lw + 1.0,
        "width": width,
        "x_end": float(x0 + g2.max()),
    }


def _longest_run(col: np.ndarray) -> tuple[int, int] | None:
    """(first, last) index of the longest run of True in a 1-D bool array."""
    d = np.diff(np.r_[0, col.astype(np.int8), 0])
    st, en = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0] - 1
    if st.size == 0:
        return None
    i = int(np.argmax(en - st))
    return int(st[i]), int(en[i])


def _trace_start(
    ink: np.ndarray, band: tuple[int, int], pulse_end: float, row_end: float, ppm_x: float, max_run: float
) -> float:
    """First x of the trace after the pulse: after a gap within 6 mm of the pulse's fall, if any;
    otherwise right after the fall."""
    t, b = band
    a = int(pulse_end) + 1
    e = int(min(row_end, pulse_end + 6 * ppm_x))
    if e <= a:
        return float(a)
    sub = ink[t : b + 1, a : e + 1]
    cnt = sub.sum(axis=0)
    pres = (cnt > 0) & (cnt <= max_run)
    empty = np.nonzero(~pres)[0]
    if empty.size == 0:
        return float(a)
    # last empty column of the first gap, then the next inked column
    after = np.nonzero(pres[empty[0] :])[0]
    if after.size == 0:
        return float(a)
    return float(a + empty[0] + after[0])


def _row_knots(
    ink: np.ndarray,
    baselines: list[float],
    starts: list[float | None],
    extents: list[tuple[float, float] | None],
    off: float,
    x_start: float,
    x_end: float,
    n_cols: int,
    n_main: int,
    ppm_x: float,
    ppm_y: float,
    span: float,
    row_pitch: float,
) -> list[list[float]]:
    """Per row: x of its start, its n_cols - 1 panel boundaries and its end. Each landmark is measured
    where the row shows it (row ends; a separator or tick at a boundary of a panel row) and fitted
    across rows by x = p + q y; a landmark seen on fewer than 2 rows is interpolated between the
    row's fitted start and end."""
    n = len(baselines)
    pts: list[list[tuple[float, float]]] = [[] for _ in range(n_cols + 1)]
    for k in range(n):
        ex, st = extents[k], starts[k]
        if ex is None or st is None:
            continue
        xs_k, xe_k = st + off, ex[1] - off
        if abs((xe_k - xs_k) / span - 1.0) > 0.05:
            continue
        pts[0].append((baselines[k], xs_k))
        pts[n_cols].append((baselines[k], xe_k))
        if k < n_main:
            for c in range(1, n_cols):
                xm = _mark_x(ink, baselines[k], xs_k + c * (xe_k - xs_k) / n_cols, ppm_x, ppm_y)
                if xm is not None:
                    pts[c].append((baselines[k], xm))
    ys = np.array(baselines)

    def fit(p: list[tuple[float, float]], default: float) -> np.ndarray | None:
        if not p:
            return None
        a = np.array(p)
        if len(p) < 2 or float(np.ptp(a[:, 0])) < 0.5 * row_pitch:
            return np.full(n, float(np.median(a[:, 1])) if p else default)
        # repeated median (Siegel): per point the median slope to the others, then their median (one
        # row's stray start does not tilt the line)
        dy = a[None, :, 0] - a[:, None, 0]
        dx = a[None, :, 1] - a[:, None, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            sl = np.where(np.abs(dy) > 1e-6, dx / dy, np.nan)
        q = float(np.nanmedian(np.nanmedian(sl, axis=1)))
        q = float(np.clip(q, -0.06, 0.06))  # a page tilted beyond ~3.5 deg after deskewing: not trusted
        c0 = float(np.median(a[:, 1] - q * a[:, 0]))
        return q * ys + c0

    first = fit(pts[0], x_start)
    last = fit(pts[n_cols], x_end)
    lo = first if first is not None else np.full(n, x_start)
    hi = last if last is not None else np.full(n, x_end)
    cols = [lo]
    for c in range(1, n_cols):
        f = fit(pts[c], 0.0) if len(pts[c]) >= 2 else None
        cols.append(f if f is not None else lo + (hi - lo) * c / n_cols)
    cols.append(hi)
    out = np.stack(cols, 1)  # n x (n_cols + 1)
    out = np.maximum.accumulate(out, axis=1)  # knots increase along a row
    return [list(map(float, row)) for row in out]


def _mark_x(ink: np.ndarray, baseline: float, guess: float, ppm_x: float, ppm_y: float) -> float | None:
    """x of a vertical mark (separator or tick) across the baseline within 1.5 mm of `guess`."""
    h, w = ink.shape
    x0, x1 = max(0, int(guess - 1.5 * ppm_x)), min(w, int(guess + 1.5 * ppm_x) + 1)
    y0, y1 = max(0, int(baseline - 3 * ppm_y)), min(h, int(baseline + 3 * ppm_y) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    cnt = ink[y0:y1, x0:x1].sum(axis=0)
    tall = np.nonzero(cnt >= 0.6 * (y1 - y0))[0]
    if tall.size == 0 or tall.size > 2 * ppm_x:
        return None
    groups = np.split(tall, np.nonzero(np.diff(tall) > 1)[0] + 1)
    g = min(groups, key=lambda gg: abs(float(gg.mean()) + x0 - guess))
    return float(g.mean() + x0)


def _boundary_mark(
    ink: np.ndarray, baseline: float, xb: float, ppm_x: float, ppm_y: float, tol_mm: float = 0.6
) -> bool:
    """A vertical line (separator or tick) across the baseline within `tol_mm` of x = xb (2.5 mm on
    a rectified photo: what its residual and curl leave): some column there inked over 60 % of the
    6 mm around the baseline."""
    h, w = ink.shape
    x0, x1 = max(0, int(xb - tol_mm * ppm_x)), min(w, int(xb + tol_mm * ppm_x) + 1)
    y0, y1 = max(0, int(baseline - 3 * ppm_y)), min(h, int(baseline + 3 * ppm_y) + 1)
    if x1 <= x0 or y1 <= y0:
        return False
    return bool((ink[y0:y1, x0:x1].sum(axis=0) >= 0.6 * (y1 - y0)).any())


# 3x4+3: each rhythm strip (V1, II, V5) repeats, in one quarter of its 10 s, the panel above that
# prints the same lead at the same time; (rhythm row, panel row, quarter)
_ECHO_PANELS = ((3, 0, 2), (4, 1, 0), (5, 1, 3))
ECHO_MAX_DIFF = 0.35  # rms of the two traces' difference over their spread: the same ink drawn twice


def _column_centroids(ink: np.ndarray, band: tuple[int, int], baseline: float, x0: int, x1: int) -> np.ndarray:
    """Per column of [x0, x1): the mean height of the ink in the row band above `baseline` (NaN: none)."""
    sub = ink[band[0] : band[1], x0:x1].astype(np.float32)
    n = sub.sum(axis=0)
    ys = np.arange(band[0], band[1], dtype=np.float32)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, baseline - (sub * ys).sum(axis=0) / n, np.nan)


def _echo_diff(a: np.ndarray, b: np.ndarray) -> float:
    """rms of a - b (each less its median) over their larger spread; inf with too few columns."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.mean() < 0.5:
        return float("inf")
    a, b = a[ok] - np.median(a[ok]), b[ok] - np.median(b[ok])
    d = a - b
    return float(np.sqrt(np.mean((d - np.median(d)) ** 2))) / max(float(a.std()), float(b.std()), 1.0)


def _rhythm_echoes(
    ink: np.ndarray,
    bands: list[tuple[int, int]],
    baselines: list[float],
    x_start: float,
    span: float,
    ppm_x: float,
) -> int:
    """How many of 6 rows' 3x4+3 echoes hold (`_ECHO_PANELS`): a 6x2 page has none (every row
    prints other leads), a 3x4+3 page 3 — the test that needs no separator marks. The strip may
    sit up to 1.5 mm off the panel (a scan's shear, what rectification leaves)."""
    q = span / 4.0
    sh = max(2, int(round(1.5 * ppm_x)))
    found = 0
    for k, j, c in _ECHO_PANELS:
        x0, x1 = int(x_start + c * q + 0.1 * q), int(x_start + (c + 1) * q - 0.1 * q)
        if x1 - x0 < 20:
            continue
        a = _column_centroids(ink, bands[j], baselines[j], x0, x1)
        b = _column_centroids(ink, bands[k], baselines[k], max(0, x0 - sh), x1 + sh)
        if b.size < a.size + 2 * sh:
            continue
        best = min(_echo_diff(a, b[o : o + a.size]) for o in range(0, 2 * sh + 1))
        if best < ECHO_MAX_DIFF:
            found += 1
    return found


def _layout_name(n_rows: int, marks: list[list[bool]], r: PageReading, echoes: int = 0) -> str | None:
    """Layout from the row count; 6 rows are 3x4+3 when the top rows mark quarter boundaries and the
    bottom ones none, or when two rhythm strips repeat the panels above them (`_rhythm_echoes`),
    else 6x2."""
    if n_rows == 3:
        return "3x4"
    if n_rows == 4:
        return "3x4+1"
    if n_rows == 5:
        return "3x4+2"
    if n_rows == 6:
        # both quarter marks (a QRS that happens to cross the baseline there is one, rarely both)
        quarter_top = sum(m[0] and m[2] for m in marks[:3])
        quarter_low = sum(m[0] and m[2] for m in marks[3:])
        if (quarter_top >= 2 and quarter_low <= 1) or echoes >= 2:
            return "3x4+3"
        return "6x2"
    if n_rows == 7:
        return "6x2+1"
    if n_rows == 12:
        return "12x1"
    r.reasons.append(f"{n_rows} trace rows found: no known layout (3x4, 3x4+1, 3x4+3, 6x2, 6x2+1, 12x1)")
    return None
