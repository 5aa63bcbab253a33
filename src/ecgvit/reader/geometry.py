"""Page geometry by classical image processing: ink and grid masks, rotation, grid pitch, grid box.

Everything works on an HxWx3 uint8 RGB array. The ink of the traces is told from the grid by its
darkness in the *brightest* channel (a red, green or blue grid line is bright in one channel; ink is
dark in all three), relative to the local paper level, so shadows and colour casts matter less.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft

# 1 mm grid pitch searched between these (px): ~64 dpi to ~1500 dpi
MIN_PITCH_PX = 2.4
MAX_PITCH_PX = 60.0
# The longest side of a printed ECG grid in mm (A4/Letter landscape: ~250-280 mm); used when the
# grid alone cannot tell its 1 mm pitch from its 5 mm pitch.
TYPICAL_GRID_WIDTH_MM = 270.0


@dataclass
class Masks:
    """Per-pixel measures of a page: `ink` (bool: trace/text ink), `grid` (uint8 0..255: darkness of
    the non-ink pixels, where grid lines are), the ink threshold (fraction of the paper level)."""

    ink: np.ndarray
    grid: np.ndarray
    ink_threshold: float
    # pixels darker than this are not ink either (0: none): a grid printed darker than a coloured trace
    ink_floor: float = 0.0


def paper_level(v: np.ndarray) -> np.ndarray:
    """Local paper brightness of a channel (uint8, same size): a grey-level dilation (ink and grid
    removed) of a 1/8 size copy, blurred and scaled back, at least 40."""
    h, w = v.shape
    f = 8
    hs, ws = max(1, h // f), max(1, w // f)
    # an exact 8x block average (OpenCV's fast integer-scale path) of the page cropped to a multiple of 8
    src = v[: hs * f, : ws * f] if h >= f and w >= f else v
    small = cv2.resize(src, (ws, hs), interpolation=cv2.INTER_AREA)
    bg = cv2.dilate(small, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9)))
    bg = cv2.GaussianBlur(bg, (0, 0), 3)
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.max(bg, 40)


WEAK_INK_MARGIN = 0.2  # hysteresis: how much lighter than the ink threshold a grown pixel may be
WEAK_INK_MAX = 0.8  # ... and never lighter than this (a pastel grid's lines are ~0.85+)
WEAK_INK_STEPS = 3  # px grown from the dark core
DARK_GRID_GAP = 0.15  # a second, darker ink threshold is used only this far below the first
COLOUR_INK_MIN = 0.12  # colour ink: brightest minus least channel (paper-relative) at least this
COLOUR_INK_MAX_LEVEL = 0.85  # ... and its brightest channel under this (a pastel grid's lines are lighter)
# rotation and rectification resample with cubic interpolation: linear spreads a 1 px trace over
# two lighter pixels wherever it falls between samples, and a thin trace turned by even 0.1 deg
# broke into dashes under the ink threshold (its rows then failed the trace-row test)
RESAMPLING = cv2.INTER_CUBIC
INK_THRESHOLD_MIN, INK_THRESHOLD_MAX = 0.5, 0.7  # Otsu's ink threshold kept within these
LIGHT_INK_LEVEL = 0.85  # light ink on a coloured grid: the ink threshold raised to this


def page_masks(
    rgb: np.ndarray,
    ink_threshold: float | None = None,
    paper: np.ndarray | None = None,
    grow: bool = False,
    lines_as_grid: bool = False,
    ink_floor: float = 0.0,
    colour_ink: bool = False,
    light_ink: bool = False,
    trace_darker: bool = False,
) -> Masks:
    """Ink and grid measures of `rgb`; `ink_threshold` (a fraction of the paper level of the brightest
    channel) defaults to one between the grid's level and black (Otsu on the non-paper pixels).

    Isolated dark specks (a dotted grid's dots, which JPEG's chroma subsampling turns dark grey, and
    sensor noise) are not ink: an ink pixel needs 5 inked pixels in its 5 x 5 neighbourhood (3 in
    3 x 3 on a page under 1400 px).
    Computed in uint8 with OpenCV (a 2213 x 1572 page in a few ms). `paper` (a mask of any size, see
    `paper_mask`): the threshold is found on the sheet only (a dark table would pull it down).
    Retries of a page that gave no layout: `grow` (thin traces), `lines_as_grid` (a grid as dark
    as the trace; `ink_floor` carries its split to a second call; `trace_darker`: the darker side of
    that split is the trace, whatever its lines show), `colour_ink` (only coloured ink),
    `light_ink` (a grey trace lighter than the threshold on a coloured grid)."""
    r, g, b = cv2.split(rgb)
    vmax = cv2.max(cv2.max(r, g), b)
    vmin = cv2.min(cv2.min(r, g), b)
    # levels relative to the local paper, 255 = paper: the brightest channel tells ink (dark in every
    # channel); the least channel against the paper's own least channel tells grid (a colour cast
    # tints paper, not grid)
    rmax = cv2.divide(vmax, paper_level(vmax), scale=255)
    rmin = cv2.divide(vmin, paper_level(vmin), scale=255)
    grid_level: float | None = None  # the ink left out of the grid measure, where not all ink
    tint = _grid_tint(rmax, rmin) if ink_threshold is None or light_ink else None
    if ink_threshold is None:
        if paper is not None:
            on = cv2.resize(paper, (rmax.shape[1] // 4 + 1, rmax.shape[0] // 4 + 1), interpolation=cv2.INTER_NEAREST)
            sub = rmax[::4, ::4]
            ink_threshold = _ink_threshold(sub[on[: sub.shape[0], : sub.shape[1]] > 0], step=1)
        else:
            ink_threshold = _ink_threshold(rmax)
        if _grid_is_coloured(tint) and ink_threshold < INK_THRESHOLD_MAX:
            # a coloured grid keeps its brightest channel near paper, so no grid is under the top of
            # the threshold's range: a thin grey trace (anti-aliased lighter than Otsu's split of
            # black text from it) is ink up to there. The grid measure still leaves out only the ink
            # at Otsu's split: the lighter rims next to the trace are grid-coloured pixels, and taking
            # them out too shifts the quick flatness fit (its tiles are few) by more than it allows
            grid_level = ink_threshold
            ink_threshold = INK_THRESHOLD_MAX
        if lines_as_grid:
            # a grid printed as dark as the trace (a black-and-white print or copy) falls under the
            # threshold; a black trace is darker still: Otsu again among the dark pixels splits them
            # (here only: a threshold passed in, as after rectification, was split already)
            sub2 = rmax[::2, ::2]
            dark = sub2[sub2 < int(round(ink_threshold * 255))]
            if dark.size >= 200:
                t2, _ = cv2.threshold(dark.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
                if t2 / 255.0 < ink_threshold - DARK_GRID_GAP:
                    # the grid is the part that lies on long straight lines: usually the lighter
                    # (a grey grid under a black trace), but a dark grey grid under a blue or red
                    # trace is the darker part, and the trace is the band between the two
                    _, darker = cv2.threshold(rmax, int(t2) - 1, 1, cv2.THRESH_BINARY_INV)
                    _, below = cv2.threshold(rmax, int(round(ink_threshold * 255)) - 1, 1, cv2.THRESH_BINARY_INV)
                    if not trace_darker and _line_share(darker) > _line_share(cv2.subtract(below, darker)):
                        ink_floor = float(t2 / 255.0)
                    else:
                        ink_threshold = float(t2 / 255.0)
    # colour ink may be lighter: a thin coloured line loses darkness to JPEG's chroma subsampling
    level = max(ink_threshold, COLOUR_INK_MAX_LEVEL) if colour_ink else ink_threshold
    untinted_only = False
    if light_ink:
        # a 1 px trace on a small page (a web figure, a thumbnail) is anti-aliased to mid grey,
        # lighter than any threshold a grey grid allows. A red or pink grid's lines keep their
        # brightest channel near paper, so everything darker than LIGHT_INK_LEVEL there is ink; a
        # green or blue grid's are darker, but tinted: there ink is also what has no colour
        if _grid_is_coloured(tint):
            level = max(ink_threshold, LIGHT_INK_LEVEL)
        elif _grid_is_tinted(tint):
            level, untinted_only = max(ink_threshold, LIGHT_INK_LEVEL), True
    _, ink8 = cv2.threshold(rmax, int(round(level * 255)) - 1, 1, cv2.THRESH_BINARY_INV)
    if ink_floor > 0:
        _, floor8 = cv2.threshold(rmax, int(round(ink_floor * 255)) - 1, 1, cv2.THRESH_BINARY_INV)
        ink8 = cv2.subtract(ink8, floor8)
    if colour_ink:
        # a blue, red or green trace over a grey or black grid as dark as it: ink is what has colour
        # (the brightest and least channels apart, each against the paper's own)
        _, tinted = cv2.threshold(cv2.subtract(rmax, rmin), int(round(COLOUR_INK_MIN * 255)) - 1, 1, cv2.THRESH_BINARY)
        ink8 = cv2.bitwise_and(ink8, tinted)
    if untinted_only:
        _, grey8 = cv2.threshold(
            cv2.subtract(rmax, rmin), int(round(COLOUR_INK_MIN * 255)) - 1, 1, cv2.THRESH_BINARY_INV
        )
        ink8 = cv2.bitwise_and(ink8, grey8)
    if grow:
        # a trace under ~1.5 px wide (a thin line, or a page decoded at half scale) is anti-aliased
        # grey and breaks into dashes at the threshold: ink grows along pixels up to WEAK_INK_MARGIN
        # lighter, a few px from the dark core (hysteresis: a grey grid touching a trace gains stubs
        # only). Not by default: on traces that read whole it thickens the line the tracer follows
        weak_t = min(WEAK_INK_MAX, ink_threshold + WEAK_INK_MARGIN)
        if light_ink:
            weak_t = max(weak_t, level)  # growing must not take back the lighter ink just let in
        _, weak8 = cv2.threshold(rmax, int(round(weak_t * 255)) - 1, 1, cv2.THRESH_BINARY_INV)
        k3 = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        for _ in range(WEAK_INK_STEPS):
            ink8 = cv2.bitwise_and(cv2.dilate(ink8, k3), weak8)
    if lines_as_grid:
        # a grid printed as dark as the trace (a black-and-white print or copy): its lines cross the
        # whole grid straight, which no trace does (a flat stretch a quarter of the page wide, a
        # spike a third of its height): they are grid, not ink
        ink8 = cv2.subtract(ink8, _long_lines(ink8))  # 0/1 masks: ink and not a line
    # (a small page draws its traces 1 px wide: a 3 x 3 window there)
    k, need = ((5, 5), 5) if max(rgb.shape[:2]) >= 1400 else ((3, 3), 3)
    ink8 = _keep_dense(ink8, k, need)
    ink = ink8.view(bool)
    grid8 = cv2.bitwise_not(rmin)  # 255 - level
    # not ink, nor ink's anti-aliased edges (text would otherwise look like grid)
    near = cv2.dilate(
        ink8 if grid_level is None else _denoised(rmax, grid_level, k, need),
        cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5)),
    )
    # (255 where no ink is near: one AND, where a boolean-mask store took 3x as long)
    grid8 = cv2.bitwise_and(grid8, cv2.threshold(near, 0, 255, cv2.THRESH_BINARY_INV)[1])
    return Masks(ink=ink, grid=grid8, ink_threshold=float(ink_threshold), ink_floor=float(ink_floor))


def _keep_dense(m8: np.ndarray, k: tuple[int, int], need: int) -> np.ndarray:
    """0/1 mask `m8` where at least `need` of a `k` window around each pixel are set (specks dropped)."""
    count = cv2.boxFilter(m8, cv2.CV_8U, k, normalize=False)
    return cv2.bitwise_and(m8, (count >= need).view(np.uint8))


def _denoised(rmax: np.ndarray, level: float, k: tuple[int, int], need: int) -> np.ndarray:
    """The 0/1 ink mask of `rmax` under `level` (a fraction of paper), specks dropped."""
    _, m8 = cv2.threshold(rmax, int(round(level * 255)) - 1, 1, cv2.THRESH_BINARY_INV)
    return _keep_dense(m8, k, need)


def _grid_tint(rmax: np.ndarray, rmin: np.ndarray) -> tuple[float, float] | None:
    """The page's grid colour: of the pixels its least channel marks as grid or ink (under 0.8 of
    paper, at half resolution), the median brightest channel and the median brightest-minus-least
    (0..255, paper-relative); None where under 200 pixels are marked."""
    sub_max, sub_min = rmax[::2, ::2], rmin[::2, ::2]
    sel = sub_min < 204
    if int(sel.sum()) < 200:
        return None
    marked = sub_max[sel]
    return float(np.median(marked)), float(np.median(marked.astype(np.int16) - sub_min[sel]))


def _grid_is_coloured(tint: tuple[float, float] | None) -> bool:
    """A grid coloured (red, pink...) enough for LIGHT_INK_LEVEL: its marked pixels' brightest
    channel is lighter than that level (a grey grid's is not: the raised threshold would take it)."""
    return tint is not None and tint[0] > LIGHT_INK_LEVEL * 255


def _grid_is_tinted(tint: tuple[float, float] | None) -> bool:
    """A grid with colour (its channels COLOUR_INK_MIN apart), however dark its lines."""
    return tint is not None and tint[1] > COLOUR_INK_MIN * 255


def _long_lines(m8: np.ndarray) -> np.ndarray:
    """The pixels of 0/1 mask `m8` on straight lines a quarter of its width or a third of its height long."""
    h, w = m8.shape
    horiz = cv2.morphologyEx(m8, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (max(9, w // 4), 1)))
    vert = cv2.morphologyEx(m8, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(9, h // 3))))
    return cv2.bitwise_or(horiz, vert)


def _line_share(m8: np.ndarray) -> float:
    """The share of `m8`'s pixels on long straight lines (`_long_lines`)."""
    n = cv2.countNonZero(m8)
    return cv2.countNonZero(_long_lines(m8)) / n if n else 0.0


def _ink_threshold(rmax: np.ndarray, step: int = 4) -> float:
    """Between black ink and a grey grid: Otsu's threshold on the brightest channel's level of the
    pixels darker than paper, kept in [0.5, 0.7] (a coloured grid is ~0.85+; a navy or dark
    green trace is ~0.5)."""
    sub = rmax[::step, ::step] if step > 1 else rmax
    v = sub[sub < 237]
    if v.size < 200:
        return INK_THRESHOLD_MIN
    t, _ = cv2.threshold(v.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(np.clip(t / 255.0, INK_THRESHOLD_MIN, INK_THRESHOLD_MAX))


def estimate_rotation(weight: np.ndarray, max_deg: float = 15.0) -> tuple[float, float]:
    """Page rotation in degrees (positive: the content is turned clockwise in image coordinates,
    i.e. a horizontal line rises to the left) and a confidence (peak sharpness ratio).

    The angle maximises the sharpness (sum of squares) of the row projection of the dark pixels
    (grid lines, dots and trace baselines are all horizontal on an upright page); coarse on a
    subsample, then refined on more pixels.
    """
    h, w = weight.shape
    f = 2
    small = cv2.resize(weight, (w // f, h // f), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(small > 30)
    if ys.size < 500:
        return 0.0, 0.0
    wt = small[ys, xs].astype(np.float64)
    rng = np.random.default_rng(0)
    if ys.size > 40000:
        pick = rng.choice(ys.size, 40000, replace=False)
        ys1, xs1, wt1 = ys[pick], xs[pick], wt[pick]
    else:
        ys1, xs1, wt1 = ys, xs, wt
    cx, cy = small.shape[1] / 2.0, small.shape[0] / 2.0
    # coordinates about the centre, once (not per angle)
    ys1 = ys1.astype(np.float64) - cy
    xs1 = xs1.astype(np.float64) - cx

    def score(deg: float, yy: np.ndarray, xx: np.ndarray, ww: np.ndarray, binw: float) -> float:
        th = math.radians(deg)
        r = yy * math.cos(th) - xx * math.sin(th)
        r -= r.min()
        r /= binw
        hist = np.bincount(np.floor(r, out=r).astype(np.int64), weights=ww)
        return float(np.dot(hist, hist))

    n0 = min(ys1.size, 8000)
    coarse = np.arange(-max_deg, max_deg + 1e-9, 1.0)
    sc = np.array([score(a, ys1[:n0], xs1[:n0], wt1[:n0], 3.0) for a in coarse])
    best = float(coarse[int(np.argmax(sc))])
    conf = float(sc.max() / max(np.median(sc), 1e-9))
    for step, binw in ((0.25, 2.0), (0.06, 1.0), (0.015, 1.0)):
        cand = best + step * np.arange(-3, 4)
        s2 = [score(a, ys1, xs1, wt1, binw) for a in cand]
        best = float(cand[int(np.argmax(s2))])
    return best, conf


def rotate(rgb: np.ndarray, deg: float, fill: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`rgb` turned by -deg about its centre (undoing a rotation of `deg`); returns (image, 3x3
    matrix mapping input px -> output px)."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), deg, 1.0)
    out = cv2.warpAffine(rgb, m, (w, h), flags=RESAMPLING, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return out, np.vstack([m, [0.0, 0.0, 1.0]])


@dataclass
class GridFit:
    """The grid's 1 mm pitch along one axis (px), how it was told, and its strength."""

    pitch: float | None
    kind: str  # "1 mm + 5 mm", "1 mm", "5 mm", "" (none)
    strength: float
    ambiguous: bool


def _spectrum(profile: np.ndarray, pad: int = 8) -> tuple[np.ndarray, np.ndarray]:
    p = profile.astype(np.float64)
    n = p.size
    k = max(3, int(round(MAX_PITCH_PX * 6)))
    if n > 2 * k + 1:
        trend = np.convolve(p, np.ones(k) / k, mode="same")
        p = p - trend
    p = (p - p.mean()) * np.hanning(n)
    nfft = 1 << int(math.ceil(math.log2(n * pad)))
    s = np.abs(np.fft.rfft(p, nfft))
    f = np.fft.rfftfreq(nfft)
    return f, s


def _peak_at(f: np.ndarray, s: np.ndarray, f0: float, rel: float = 0.03) -> tuple[float, float]:
    """Highest spectrum value within +-rel of f0 (frequency, value), parabolic-refined."""
    lo, hi = np.searchsorted(f, f0 * (1 - rel)), np.searchsorted(f, f0 * (1 + rel))
    if hi <= lo + 1:
        return f0, 0.0
    i = lo + int(np.argmax(s[lo:hi]))
    if 0 < i < s.size - 1:
        a, b, c = s[i - 1], s[i], s[i + 1]
        d = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
        return float(f[i] + d * (f[1] - f[0])), float(b)
    return float(f[i]), float(s[i])


def grid_pitch_1d(profile: np.ndarray, expected_mm_px: float | None) -> GridFit:
    """1 mm pitch of a grid from its projection profile (FFT peak; the 5 mm sub-harmonic tells a
    1 mm + 5 mm grid; a lone period is read as 1 mm or 5 mm by whichever fits `expected_mm_px`)."""
    if profile.size < 64 or float(profile.std()) <= 1e-9:
        return GridFit(None, "", 0.0, False)
    f, s = _spectrum(profile)
    band = (f >= 1.0 / (5 * MAX_PITCH_PX)) & (f <= 1.0 / MIN_PITCH_PX)
    if not band.any():
        return GridFit(None, "", 0.0, False)
    noise = float(np.median(s[band])) + 1e-12
    ib = np.nonzero(band)[0]
    i1 = ib[int(np.argmax(s[ib]))]
    f1, v1 = _peak_at(f, s, float(f[i1]), 0.01)
    strength = v1 / noise
    if strength < 6.0:
        return GridFit(None, "", strength, False)
    # the fundamental: the lowest f1/n (n <= 10) that is still a clear peak (a 1 mm + 5 mm grid's
    # 5 mm period; the strongest peak may be its 5th or 10th harmonic)
    fund, nf = f1, 1
    for n in range(2, 11):
        fn = f1 / n
        if fn < 1.0 / (5 * MAX_PITCH_PX):
            break
        _, vn = _peak_at(f, s, fn, 0.01)
        if vn / noise > 5.0 and vn > 0.08 * v1:
            fund, nf = fn, n
    del nf
    _, v5 = _peak_at(f, s, 5.0 * fund, 0.01) if 5.0 * fund < 0.5 else (0.0, 0.0)
    smax = v1
    t_px = 1.0 / fund
    if 1.0 / (5.0 * fund) >= MIN_PITCH_PX and v5 >= 0.3 * smax and _has_sub(f, s, fund, noise):
        pitch, kind, amb = t_px / 5.0, "1 mm + 5 mm", False
    else:
        p1, p5 = t_px, t_px / 5.0
        if expected_mm_px is not None and p5 >= MIN_PITCH_PX:
            if abs(math.log(p5 / expected_mm_px)) < abs(math.log(p1 / expected_mm_px)):
                pitch, kind = p5, "5 mm"
            else:
                pitch, kind = p1, "1 mm"
        else:
            pitch, kind = p1, "1 mm"
        amb = True
    if expected_mm_px is not None and abs(math.log(pitch / expected_mm_px)) > math.log(1.6):
        # far from the page size's scale (a blurred grid read on a harmonic of its 5 mm lines, or on
        # a period of the text or traces): the period nearest that scale that the profile shows
        cands = [pitch * n for n in (1, 2, 3, 4, 5)] + [pitch / n for n in (2, 3, 4, 5, 6, 7, 8, 10)]
        ok = []
        for c in cands:
            if not (MIN_PITCH_PX <= c <= MAX_PITCH_PX):
                continue
            v1c = _peak_at(f, s, 1.0 / c, 0.015)[1] / noise
            v5c = _peak_at(f, s, 1.0 / (5 * c), 0.015)[1] / noise
            if max(v1c, v5c) > 5.0:
                ok.append(c)
        if ok:
            best = min(ok, key=lambda c: abs(math.log(c / expected_mm_px)))
            if abs(math.log(best / expected_mm_px)) < abs(math.log(pitch / expected_mm_px)):
                pitch, amb = best, True
    # refine on the strongest harmonic of 1 mm that the profile resolves (long baseline)
    fr, vr = _peak_at(f, s, 1.0 / pitch, 0.01)
    if vr / noise > 6.0:
        pitch = 1.0 / fr
    return GridFit(float(pitch), kind, float(strength), amb)


def _has_sub(f: np.ndarray, s: np.ndarray, fund: float, noise: float) -> bool:
    """A 5 mm period with 1 mm lines shows harmonics 1..4 of its fundamental too (not only the 5th)."""
    return sum(_peak_at(f, s, k * fund, 0.01)[1] / noise > 4.0 for k in (1, 2, 3, 4)) >= 2


def grid_box(grid: np.ndarray, ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """(l, t, r, b) of the region the grid covers: rows and columns whose grid darkness is at least
    a third of the typical (median of the top half) level; None if no clear grid."""
    col = cv2.reduce(grid, 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel() / 255.0
    row = cv2.reduce(grid, 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel() / 255.0

    def extent(p: np.ndarray) -> tuple[int, int] | None:
        k = max(3, p.size // 400)
        ps = np.convolve(p, np.ones(k) / k, mode="same")
        srt = np.sort(ps)
        ref = float(np.median(srt[ps.size // 2 :]))
        floor = float(srt[ps.size // 20])
        if ref - floor <= 0.003:
            return None
        on = np.nonzero(ps > floor + (ref - floor) * 0.35)[0]
        if on.size == 0:
            return None
        # the longest stretch (gaps of 8 % bridged): a margin or a warp border is no grid
        cut = np.nonzero(np.diff(on) > max(3, p.size * 0.08))[0]
        st, en = np.r_[0, cut + 1], np.r_[cut, on.size - 1]
        i = int(np.argmax(on[en] - on[st]))
        return int(on[st[i]]), int(on[en[i]])

    ex, ey = extent(col), extent(row)
    if ex is None or ey is None:
        return None
    return ex[0], ey[0], ex[1], ey[1]


def _nearest_scale(p: float, ref: float) -> float:
    """p, p/5 or 5p: whichever is nearest `ref` (a 1 mm reading put on the 5 mm scale or back)."""
    if p <= 0 or ref <= 0:
        return p
    return min((p, p / 5.0, p * 5.0), key=lambda q: abs(math.log(q / ref)))


def grid_pitch(grid: np.ndarray, expected_mm_px: float | None, tiles: int = 3) -> tuple[GridFit, GridFit]:
    """1 mm pitch along x and y of the grid measure `grid` (the grid's region): the median over
    `tiles` x `tiles` tiles (perspective and curl make the pitch drift across a page, which blurs
    a whole-page projection), each tile's 1 mm / 5 mm reading put on the scale most tiles agree on."""
    h, w = grid.shape
    fits: list[list[GridFit]] = [[], []]
    ty, tx = max(1, min(tiles, h // 160)), max(1, min(tiles, w // 160))
    for i in range(ty):
        for j in range(tx):
            t = grid[i * h // ty : (i + 1) * h // ty, j * w // tx : (j + 1) * w // tx]
            fits[0].append(grid_pitch_1d(t.sum(axis=0), expected_mm_px))
            fits[1].append(grid_pitch_1d(t.sum(axis=1), expected_mm_px))
    out: list[GridFit] = []
    for axis in (0, 1):
        fs = [f for f in fits[axis] if f.pitch is not None]
        if len(fs) < max(1, len(fits[axis]) // 3):
            out.append(grid_pitch_1d(grid.sum(axis=axis), expected_mm_px))
            continue
        sure = [f for f in fs if not f.ambiguous]
        ref = float(np.median([f.pitch or 0.0 for f in (sure or fs)]))
        ps = [_nearest_scale(f.pitch or ref, ref) for f in fs]
        kinds = [f.kind for f in (sure or fs)]
        out.append(
            GridFit(
                float(np.median(ps)),
                max(set(kinds), key=kinds.count),
                float(np.median([f.strength for f in fs])),
                not sure,
            )
        )
    return out[0], out[1]


# ------------------------------------------------------------------------------------------------
# perspective rectification from the grid's lines


@dataclass
class Rectification:
    """A homography `H` (input px -> rectified px, 3x3), the rectified page's size (w, h), how many
    tiles showed the grid's line directions on each axis, and the angular fit error (deg, median)."""

    H: np.ndarray
    size: tuple[int, int]
    tiles: tuple[int, int]
    residual_deg: float
    perspective: float  # how far H is from a rotation: max displacement at the grid's corners / diagonal


# JPEG's 8 x 8 blocks: a period of 8 px (and its harmonics) along the image's axes
_BLOCK_PERIOD = 8.0


def _tile_peaks(
    g: np.ndarray, tile: int, block_period: float | None, stride: int | None = None
) -> list[tuple[float, float, int, float, float, float]]:
    """Per tile of the grid measure `g` (float32): the strongest grid frequency near the vertical
    axis (horizontal lines: axis 1) and near the horizontal axis (vertical lines: axis 0).
    Returns (cx, cy, axis, fx, fy, strength) per found peak, f in cycles/px."""
    h, w = g.shape
    g = g - cv2.blur(g, (tile // 4 + 1, tile // 4 + 1))  # shading and page edges out
    nf = 2 * tile
    win = np.outer(np.hanning(tile), np.hanning(tile)).astype(np.float32)
    fy = np.fft.fftfreq(nf)[:, None]
    fx = np.fft.rfftfreq(nf)[None, :]
    fr = np.hypot(fx, fy)
    # at least 4 periods in a tile (shading and the page's edges are no grid), at most Nyquist-ish
    band = (fr >= 4.0 / tile) & (fr <= 1.0 / 2.2)
    ang = np.degrees(np.arctan2(np.abs(fy), fx))  # 0: along x (vertical lines), 90: along y
    sectors = (band & (ang >= 55.0), band & (ang <= 35.0))  # axis 1 (horizontal lines), axis 0
    if block_period is not None:
        # the blocks' frequencies (k / 8 on either axis, nearly axis-aligned) are no grid
        for k in (1, 2, 3):
            f0 = k / block_period
            near_x = (np.abs(fx - f0) < 0.02 * f0 + 1.0 / nf) & (np.abs(fy) < 1.5 / nf)
            near_y = (np.abs(np.abs(fy) - f0) < 0.02 * f0 + 1.0 / nf) & (fx < 1.5 / nf)
            sectors = (sectors[0] & ~near_y, sectors[1] & ~near_x)
    out = []
    st = stride or tile
    ny, nx = max(1, (h - tile) // st + 1), max(1, (w - tile) // st + 1)
    oy, ox = max(0, (h - (ny - 1) * st - tile) // 2), max(0, (w - (nx - 1) * st - tile) // 2)
    # each sector's bins as flat indices (a gather and a partition per tile, no masked copies)
    sec_idx = (np.flatnonzero(sectors[0]), np.flatnonzero(sectors[1]))
    for i in range(ny):
        for j in range(nx):
            y0, x0 = oy + i * st, ox + j * st
            t = g[y0 : y0 + tile, x0 : x0 + tile]
            if float(t.std()) < 1.0:
                continue
            t = (t - float(t.mean())) * win
            # zero-padded to nf x nf (scipy's FFT: ~2x numpy's at these sizes, float32 alike)
            s = np.abs(scipy.fft.rfft2(t, s=(nf, nf)))
            sf = s.ravel()
            for axis, idx in ((1, sec_idx[0]), (0, sec_idx[1])):
                vals = sf[idx]
                a, b = divmod(int(idx[int(np.argmax(vals))]), s.shape[1])
                pk = float(s[a, b])
                noise = float(np.median(vals)) + 1e-9
                if pk / noise < 8.0:
                    continue

                # sub-bin refinement (parabola on each axis)
                def par(m1: float, m0: float, p1: float) -> float:
                    d = m1 - 2 * m0 + p1
                    return 0.5 * (m1 - p1) / d if d != 0 else 0.0

                da = par(float(s[a - 1, b]), pk, float(s[(a + 1) % nf, b]))
                # (column -1 of a real image's spectrum is column 1 mirrored)
                left = float(s[a, b - 1]) if b > 0 else float(s[(-a) % nf, 1])
                db = par(left, pk, float(s[a, b + 1])) if b < s.shape[1] - 1 else 0.0
                fyv = float(np.fft.fftfreq(nf)[a]) + da / nf
                fxv = b / nf + db / nf
                out.append((x0 + tile / 2.0, y0 + tile / 2.0, axis, fxv, fyv, pk / noise))
    return out


def _vanishing_point(pts: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The point (homogeneous, normalised coordinates) the lines through `pts` along `dirs` meet at
    (least squares, outliers of > 3x the median angular error dropped twice); per-line errors (rad)."""
    n = np.stack([-dirs[:, 1], dirs[:, 0]], 1)
    lines = np.concatenate([n, -(n * pts).sum(1, keepdims=True)], 1)
    keep = np.ones(len(pts), bool)
    v = np.array([dirs[:, 0].mean(), dirs[:, 1].mean(), 0.0])
    err = np.zeros(len(pts))
    for _ in range(3):
        _, _, vt = np.linalg.svd(lines[keep])
        v = vt[-1]
        to = v[None, :2] - v[2] * pts
        cr = np.abs(dirs[:, 0] * to[:, 1] - dirs[:, 1] * to[:, 0]) / (np.hypot(to[:, 0], to[:, 1]) + 1e-12)
        err = np.arcsin(np.clip(cr, 0, 1))
        lim = max(3.0 * float(np.median(err[keep])), math.radians(0.4))
        nk = err <= lim
        if nk.sum() < 4 or (nk == keep).all():
            break
        keep = nk
    return v, err


def estimate_rectification(
    grid: np.ndarray, max_side: int = 1400, coarse: bool = False, factor: int | None = None
) -> Rectification | None:
    """A homography that makes the grid's lines horizontal and vertical, parallel and square-pitched.

    The grid measure is cut into tiles; in each, the 2-D spectrum's strongest peak near either axis is
    the local normal and period of that family of lines (1 mm or 5 mm lines, whichever is clearer;
    JPEG's 8 px block period is skipped). The tiles' lines of each family meet at a vanishing point;
    the line through both is sent back to infinity, then the two directions are made the axes, and
    the period ratio the tiles show sets the axes' relative scale. The scale at the grid's centre is
    kept (no resolution is lost or invented). None when the grid shows too few tiles.

    `coarse`: the page at half that size in overlapping tiles (a blurred grid whose 1 mm lines are
    gone: more 5 mm periods in each tile tell its direction better).

    `factor`: instead of `max_side`, the grid shrunk by this whole factor (its last rows and columns
    cut to a multiple of it: OpenCV's exact block average, several times faster than a fractional
    area resize)."""
    h, w = grid.shape
    if factor is not None and factor > 1:
        f = float(factor)
        hs, ws = h // factor, w // factor
        g = cv2.resize(grid[: hs * factor, : ws * factor], (ws, hs), interpolation=cv2.INTER_AREA)
    else:
        f = max(1.0, max(h, w) / (max_side // 2 if coarse else max_side))
        g = grid if f == 1.0 else cv2.resize(grid, (int(round(w / f)), int(round(h / f))), interpolation=cv2.INTER_AREA)
    g = g.astype(np.float32)
    gh, gw = g.shape
    tile = 128 if max(gh, gw) < 900 else 192
    peaks = _tile_peaks(g, tile, _BLOCK_PERIOD if f == 1.0 else None, tile // 2 if coarse else None)
    if not peaks:
        return None
    P = np.array(peaks)
    c = np.array([gw / 2.0, gh / 2.0])
    s = max(gw, gh) / 2.0
    vps = []
    errs = []
    used = []
    for axis in (0, 1):
        sel = P[:, 2] == axis
        if sel.sum() < 6:
            return None
        fr = P[sel][:, 3:5]
        nrm = fr / np.hypot(fr[:, 0], fr[:, 1])[:, None]
        d = np.stack([nrm[:, 1], -nrm[:, 0]], 1)  # along the lines
        pts = (P[sel][:, :2] - c) / s
        v, err = _vanishing_point(pts, d)
        vps.append(v)
        errs.append(err)
        used.append(int((err <= max(3 * np.median(err), math.radians(0.4))).sum()))
    v_vert, v_hor = vps  # axis 0: vertical lines, axis 1: horizontal lines
    li = np.cross(v_hor, v_vert)
    if abs(li[2]) < 1e-9:
        return None
    li = li / li[2]
    if np.hypot(li[0], li[1]) > 0.9:  # the horizon within the page: no sensible fit
        return None
    Hp = np.array([[1.0, 0, 0], [0, 1.0, 0], [li[0], li[1], 1.0]])
    d1 = v_hor[:2] / np.hypot(*v_hor[:2])
    d2 = v_vert[:2] / np.hypot(*v_vert[:2])
    if d1[0] < 0:
        d1 = -d1
    if d2[1] < 0:
        d2 = -d2
    if abs(d1[0] * d2[1] - d1[1] * d2[0]) < 0.5:
        return None
    A = np.eye(3)
    A[:2, :2] = np.linalg.inv(np.stack([d1, d2], 1))
    G = A @ Hp
    # the axes' relative scale is left to the pitch measured on each axis of the rectified page
    J = G[:2, :2] - np.outer(G[:2, 2], G[2, :2])  # Jacobian at the centre (normalised coords)
    G = np.diag([1 / math.sqrt(abs(np.linalg.det(J))), 1 / math.sqrt(abs(np.linalg.det(J))), 1.0]) @ G
    N = np.array([[1 / s, 0, -c[0] / s], [0, 1 / s, -c[1] / s], [0, 0, 1.0]])
    Sback = np.array([[s * f, 0, 0], [0, s * f, 0], [0, 0, 1.0]])
    Nf = N @ np.diag([1 / f, 1 / f, 1.0])
    Hfull = Sback @ G @ Nf  # input px -> rectified px (centred on 0)
    # canvas: the tiles' region (where the grid is) plus a margin, within the image's mapped corners
    cen = P[:, :2] * f
    q = _apply(Hfull, cen)
    lo, hi = q.min(0), q.max(0)
    mar = tile * f
    lo, hi = lo - mar, hi + mar
    cq = _apply(Hfull, np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64))
    lo = np.maximum(lo, cq.min(0))
    hi = np.minimum(hi, cq.max(0))
    size = hi - lo
    if size[0] < 64 or size[1] < 64 or size[0] * size[1] > 2.5 * w * h:
        return None
    T = np.array([[1.0, 0, -lo[0]], [0, 1.0, -lo[1]], [0, 0, 1.0]])
    H = T @ Hfull
    H = H / H[2, 2]
    # how far from a similarity (rotation + translation): at the tiles' corners
    box = np.array([cen.min(0), [cen.max(0)[0], cen.min(0)[1]], cen.max(0), [cen.min(0)[0], cen.max(0)[1]]])
    qb = _apply(H, box)
    rot_est = cv2.estimateAffinePartial2D(box.astype(np.float32), qb.astype(np.float32))[0]
    persp = 0.0
    if rot_est is not None:
        qa = box @ rot_est[:, :2].T + rot_est[:, 2]
        persp = float(np.abs(qa - qb).max() / math.hypot(w, h))
    res = float(np.degrees(np.median(np.concatenate(errs))))
    return Rectification(
        H=H,
        size=(int(math.ceil(size[0])), int(math.ceil(size[1]))),
        tiles=(used[0], used[1]),
        residual_deg=res,
        perspective=persp,
    )


def _apply(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ H.T
    return q[:, :2] / q[:, 2:3]


def warp(rgb: np.ndarray, H: np.ndarray, size: tuple[int, int], fill: tuple[int, int, int]) -> np.ndarray:
    """`rgb` resampled by the homography H (input px -> output px) onto a `size` (w, h) canvas."""
    return cv2.warpPerspective(rgb, H, size, flags=RESAMPLING, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def rectification_fits(rect: Rectification) -> bool:
    """Enough tiles on both axes fit one homography well (whether or not it is more than a rotation)."""
    return min(rect.tiles) >= 10 and rect.residual_deg <= 1.2


def rectification_usable(rect: Rectification) -> bool:
    """Worth warping for: enough tiles on both axes fit one homography well, and it is more than a
    rotation (a rotation alone is left to `estimate_rotation`, as on a flat scan)."""
    return min(rect.tiles) >= 10 and rect.residual_deg <= 1.2 and rect.perspective >= 0.004


# The quick flatness fit: the grid measure shrunk by a whole factor to a longest side of 550-825 px
# (~10 ms on a 2213 x 1572 page, a fifth of the full fit), used where the page is at least twice as
# large.
QUICK_SIDE = 550


def quick_flat_fit(grid: np.ndarray) -> Rectification | None:
    """A fit of `estimate_rectification` on the grid measure shrunk to about `QUICK_SIDE` (None
    where the page is too small for it to be quicker than the full fit, or where it finds no grid)."""
    k = max(grid.shape) // QUICK_SIDE
    if k < 2:
        return None
    return estimate_rectification(grid, factor=k)


def looks_flat(rect: Rectification) -> bool:
    """A quick fit's verdict that the page is flat (a scan or an export: at most a rotation, which is
    left to `estimate_rotation`): enough tiles on both axes fit one homography closely, and its
    perspective is far below `rectification_usable`'s 0.004 (the quick fit's tiles span less of the
    page: it reads about 0.6 of the full fit's perspective, so < 0.001 here is < ~0.002 there; on
    generated pages of every distortion level no page it passed had a usable full fit)."""
    return min(rect.tiles) >= 10 and rect.residual_deg <= 0.5 and rect.perspective < 0.001


def rotation_of(H: np.ndarray, size: tuple[int, int]) -> float:
    """Degrees the page was turned (as `estimate_rotation` reports it) by the homography's inverse at
    the rectified page's centre."""
    inv = np.linalg.inv(H)
    cx, cy = size[0] / 2.0, size[1] / 2.0
    q = _apply(inv, np.array([[cx, cy], [cx + 100.0, cy]]))
    d = q[1] - q[0]
    return math.degrees(math.atan2(d[1], d[0]))


def paper_mask(rgb: np.ndarray) -> np.ndarray | None:
    """uint8 mask (1/8 size of `rgb`, 255 = paper) of the sheet against a darker background (a table,
    a screen's bezel): Otsu on the brightest channel, the largest bright region with its holes filled,
    eroded by its edge band. None when no background shows (a scan, an exported page)."""
    h, w = rgb.shape[:2]
    f = 8
    small = cv2.resize(rgb, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    v = cv2.GaussianBlur(small.max(axis=2), (0, 0), 2)
    t, bright = cv2.threshold(v, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # a background must be clearly darker than the paper and cover some of the image
    hi = float(np.median(v[bright > 0])) if (bright > 0).any() else 0.0
    lo = float(np.median(v[bright == 0])) if (bright == 0).any() else 255.0
    if hi - lo < 40 or (bright > 0).mean() > 0.97 or (bright > 0).mean() < 0.2:
        return None
    cs, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not cs:
        return None
    c = max(cs, key=cv2.contourArea)
    if cv2.contourArea(c) < 0.2 * v.size:
        return None
    out = np.zeros_like(v)
    cv2.drawContours(out, [c], -1, 255, thickness=-1)
    return cv2.erode(out, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5)))


def apply_paper(m: Masks, paper: np.ndarray) -> None:
    """Grid and ink measures cleared outside the paper mask (`paper` at any size: scaled up)."""
    h, w = m.grid.shape
    full = cv2.resize(paper, (w, h), interpolation=cv2.INTER_NEAREST) > 0
    m.grid[~full] = 0
    m.ink &= full


def _coherence(prof: np.ndarray, period: float, seg: int) -> np.ndarray:
    """Per row of `prof` (n x W): the amplitude of its periodicity at `period` px (the magnitude of
    its Fourier coefficient per segment of `seg` px, averaged: a slowly drifting pitch, as
    perspective and curl leave, keeps segments coherent), per px."""
    n, w = prof.shape
    ns = w // seg
    if ns < 1:
        return np.zeros(n)
    p = prof[:, : ns * seg].reshape(n, ns, seg)
    p = p - p.mean(axis=2, keepdims=True)
    x = np.arange(seg)
    e = np.exp(-2j * np.pi * x / period)
    return np.abs(p @ e).mean(axis=1) / seg


def grid_box_periodic(
    grid: np.ndarray, px: float, py: float, prior: tuple[int, int, int, int] | None = None
) -> tuple[int, int, int, int] | None:
    """(l, t, r, b) of the region where the grid measure is periodic at the 1 mm or 5 mm pitch:
    strips 5 mm tall tell the rows (vertical lines' or dots' periodicity along x), then strips 5 mm
    wide inside those rows tell the columns. Text, a header's rules, shading and a table are not
    periodic at the pitch; a faint or blurred grid still is. None where no clear region shows.

    The strips' sums come from one integral image of the uint8 measure (exact integers: a few ms
    on a 2213 x 1572 page, where cumulative sums of a float copy along each axis took ~60 ms)."""
    h, w = grid.shape
    g8 = np.ascontiguousarray(grid, dtype=np.uint8)
    # int32 holds every partial sum below 2^31; a larger page sums in float64 (exact below 2^53)
    ii = cv2.integral(g8, sdepth=cv2.CV_32S if 255.0 * h * w < 2**31 else cv2.CV_64F)

    def extent(
        strip_sums: Callable[[np.ndarray, int], np.ndarray], n_all: int, m: int, pa: float, pb: float
    ) -> tuple[int, int] | None:
        # strips 5 mm tall every 1 mm (stacked along an axis of n_all px, m px across); a side is the
        # centre of the outermost strip still periodic (half on the grid: about half as coherent)
        sh = max(3, int(round(5 * pb)))
        step = max(1, int(round(pb)))
        if n_all < 4 * sh:
            return None
        starts = np.arange(0, n_all - sh + 1, step)
        prof = strip_sums(starts, sh).astype(np.float32)
        seg = min(m, max(16, int(round(50 * pa))))
        c = np.maximum(_coherence(prof, pa, seg), _coherence(prof, 5 * pa, seg))
        ref = float(np.percentile(c, 90))
        if ref <= 4.0 * float(np.percentile(c, 5)) + 1e-6:  # no region clearly more periodic than the rest
            return None
        on = np.nonzero(c >= 0.5 * ref)[0]
        if on.size == 0:
            return None
        cut = np.nonzero(np.diff(on) > max(2, int(round(10 * pb / step))))[0]
        st, en = np.r_[0, cut + 1], np.r_[cut, on.size - 1]
        i = int(np.argmax(on[en] - on[st]))
        lo = int(starts[on[st[i]]] + sh // 2)
        hi = int(min(n_all - 1, starts[on[en[i]]] + sh // 2))
        return lo, hi

    def row_strips(starts: np.ndarray, sh: int) -> np.ndarray:
        # (strip, x): the sum of rows [s, s + sh) per column
        return np.diff(ii[starts + sh] - ii[starts], axis=1)

    ey = extent(row_strips, h, w, px, py)
    if ey is None:
        return None
    y0, y1 = ey[0], ey[1] + 1

    def col_strips(starts: np.ndarray, sh: int) -> np.ndarray:
        # (strip, y in [y0, y1)): the sum of columns [s, s + sh) per row of the rows' extent
        d = ii[y0 : y1 + 1, starts + sh] - ii[y0 : y1 + 1, starts]
        return np.ascontiguousarray(np.diff(d, axis=0).T)

    ex = extent(col_strips, w, y1 - y0, py, px)
    if ex is None:
        return None
    return ex[0], ey[0], ex[1], ey[1]


def outline_rectification(paper: np.ndarray, full_size: tuple[int, int]) -> Rectification | None:
    """A homography from the sheet's outline (`paper_mask` at 1/8 size) when its grid is too faint: the
    outline's quadrilateral (a polygon of 4 corners covering >= 97 % of the sheet's region; a sheet
    cut by the frame has more corners and is refused) sent to a rectangle whose sides are the means
    of the opposite sides' lengths (the axes' exact scale is left to the grid's pitch on each)."""
    cs, _ = cv2.findContours(paper, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not cs:
        return None
    c = max(cs, key=cv2.contourArea)
    area = float(cv2.contourArea(c))
    peri = float(cv2.arcLength(c, True))
    quad = None
    for eps in (0.01, 0.02, 0.03, 0.04):
        a = cv2.approxPolyDP(c, eps * peri, True)
        if len(a) == 4:
            quad = a.reshape(4, 2).astype(np.float64)
            break
    if quad is None or not cv2.isContourConvex(quad.astype(np.float32)):
        return None
    if abs(cv2.contourArea(quad.astype(np.float32)) / max(area, 1.0) - 1.0) > 0.03:
        return None
    sx, sy = full_size[0] / paper.shape[1], full_size[1] / paper.shape[0]
    quad = (quad + 0.5) * np.array([sx, sy]) - 0.5
    # order: top-left, top-right, bottom-right, bottom-left
    cen = quad.mean(0)
    ang = np.arctan2(quad[:, 1] - cen[1], quad[:, 0] - cen[0])
    q = quad[np.argsort(ang)]  # clockwise in image coordinates, starting near -180 deg (left)
    i0 = int(np.argmin(q.sum(1)))
    q = np.roll(q, -i0, axis=0)
    top, bot = np.hypot(*(q[1] - q[0])), np.hypot(*(q[2] - q[3]))
    lef, rig = np.hypot(*(q[3] - q[0])), np.hypot(*(q[2] - q[1]))
    W, Hh = 0.5 * (top + bot), 0.5 * (lef + rig)
    if W < 64 or Hh < 64:
        return None
    dst = np.array([[0, 0], [W, 0], [W, Hh], [0, Hh]], np.float64)
    H = cv2.getPerspectiveTransform(q.astype(np.float32), dst.astype(np.float32)).astype(np.float64)
    rot_est = cv2.estimateAffinePartial2D(q.astype(np.float32), dst.astype(np.float32))[0]
    persp = 0.0
    if rot_est is not None:
        qa = q @ rot_est[:, :2].T + rot_est[:, 2]
        persp = float(np.abs(qa - dst).max() / math.hypot(*full_size))
    return Rectification(
        H=H / H[2, 2], size=(int(math.ceil(W)), int(math.ceil(Hh))), tiles=(0, 0), residual_deg=0.0, perspective=persp
    )
