"""Page geometry by classical image processing: ink and grid masks, rotation, grid pitch, grid box.

Everything works on an HxWx3 uint8 RGB array. The ink of the traces is told from the grid by its
darkness in the *brightest* channel (a red, green or blue grid line is bright in one channel; ink is
dark in all three), relative to the local paper level, so shadows and colour casts matter less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

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


def page_masks(rgb: np.ndarray, ink_threshold: float | None = None) -> Masks:
    """Ink and grid measures of `rgb`; `ink_threshold` (a fraction of the paper level of the brightest
    channel) defaults to one between the grid's level and black (Otsu on the non-paper pixels).

    Isolated dark specks (a dotted grid's dots, which JPEG's chroma subsampling turns dark grey, and
    sensor noise) are not ink: an ink pixel needs 5 inked pixels in its 5 x 5 neighbourhood (3 in
    3 x 3 on a page under 1400 px).
    Computed in uint8 with OpenCV (a 2213 x 1572 page in a few ms)."""
    r, g, b = cv2.split(rgb)
    vmax = cv2.max(cv2.max(r, g), b)
    vmin = cv2.min(cv2.min(r, g), b)
    # levels relative to the local paper, 255 = paper: the brightest channel tells ink (dark in every
    # channel); the least channel against the paper's own least channel tells grid (a colour cast
    # tints paper, not grid)
    rmax = cv2.divide(vmax, paper_level(vmax), scale=255)
    rmin = cv2.divide(vmin, paper_level(vmin), scale=255)
    if ink_threshold is None:
        ink_threshold = _ink_threshold(rmax)
    _, ink8 = cv2.threshold(rmax, int(round(ink_threshold * 255)) - 1, 1, cv2.THRESH_BINARY_INV)
    # (a small page draws its traces 1 px wide: a 3 x 3 window there)
    k, need = ((5, 5), 5) if max(rgb.shape[:2]) >= 1400 else ((3, 3), 3)
    count = cv2.boxFilter(ink8, cv2.CV_8U, k, normalize=False)
    ink8 = cv2.bitwise_and(ink8, (count >= need).view(np.uint8))
    ink = ink8.view(bool)
    grid8 = cv2.bitwise_not(rmin)  # 255 - level
    # not ink, nor ink's anti-aliased edges (text would otherwise look like grid)
    near = cv2.dilate(ink8, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5)))
    grid8[near.view(bool)] = 0
    return Masks(ink=ink, grid=grid8, ink_threshold=float(ink_threshold))


def _ink_threshold(rmax: np.ndarray) -> float:
    """Between black ink and a grey grid: Otsu's threshold on the brightest channel's level of the
    pixels darker than paper, kept in [0.5, 0.7] (a coloured grid is ~0.85+; a navy or dark
    green trace is ~0.5)."""
    sub = rmax[::4, ::4]
    v = sub[sub < 237]
    if v.size < 200:
        return 0.5
    t, _ = cv2.threshold(v.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(np.clip(t / 255.0, 0.5, 0.7))


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
    ys1 = ys1.astype(np.float64)
    xs1 = xs1.astype(np.float64)
    cx, cy = small.shape[1] / 2.0, small.shape[0] / 2.0

    def score(deg: float, yy: np.ndarray, xx: np.ndarray, ww: np.ndarray, binw: float) -> float:
        th = math.radians(deg)
        r = (yy - cy) * math.cos(th) - (xx - cx) * math.sin(th)
        idx = np.floor((r - r.min()) / binw).astype(np.int64)
        hist = np.bincount(idx, weights=ww)
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
    out = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
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
