"""Tracing one printed row of ECG: a dynamic-programming path through the ink runs of each column.

Each column of the row's band has a few vertical runs of ink (the trace, a neighbour's trace that
strayed into the band, a label). The path takes one run per column, minimising the vertical gap
between consecutive runs (a trace is continuous), plus a weak pull towards the row's own baseline,
so where two leads touch the path stays on the one it followed. The value at a column is the run's
middle, or its far end where the run is a peak or a trough (so R waves keep their height).
"""

from __future__ import annotations

import cv2
import numpy as np


def column_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertical ink runs of a bool HxW mask: (column, first y, last y) arrays, column-major order."""
    m = mask.T.astype(np.int8)  # W x H
    d = np.diff(np.pad(m, ((0, 0), (1, 1))), axis=1)
    sc, sy = np.nonzero(d == 1)
    _, ey = np.nonzero(d == -1)
    return sc, sy, ey - 1


def centreline(mask: np.ndarray) -> np.ndarray:
    """The ink's centreline (bool, same shape): pixels on a ridge of the distance transform across the
    line, vertically for flat parts and horizontally for steep strokes. A stroke drawn lw px wide
    spreads over lw columns; thinned, each column holds only the part of the stroke whose centre
    passes through it, so a QRS keeps its timing."""
    m8 = mask.view(np.uint8) if mask.dtype == bool else (mask > 0).astype(np.uint8)
    dt = cv2.distanceTransform(m8, cv2.DIST_L2, 3)
    kv = np.ones((3, 1), np.uint8)
    kh = np.ones((1, 3), np.uint8)
    # a ridge: not below either neighbour, above the lower one (a plateau's edges are not ridges)
    v = (dt >= cv2.dilate(dt, kv)) & (dt > cv2.erode(dt, kv))
    hz = (dt >= cv2.dilate(dt, kh)) & (dt > cv2.erode(dt, kh))
    return (v | hz) & (dt > 0)


def trace_row(
    mask: np.ndarray,
    baseline: float,
    px_per_mm: float,
    max_run: float,
    prior_weight: float = 0.15,
    max_gap_mm: float = 4.0,
    breaks: tuple[float, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Points (x, y) (float, band coordinates, x increasing) of the trace's centreline through `mask`
    (the row's band, HxW bool), following continuity from the row's `baseline` (band y). A flat
    column and a steep stroke give the run's middle (the centreline at the column's centre), a peak or
    trough its tip (so an R wave keeps its height).

    max_run: runs longer than this (px) are not trace (separators, filled labels). Cost of a step:
    vertical gap between the runs in mm, plus `prior_weight` x distance of the run from the baseline
    in mm / 10. Columns without ink keep the previous states; after `max_gap_mm` of them the path
    restarts from the runs nearest the baseline, as it does at each x of `breaks` (panel boundaries,
    where one lead ends and the next begins: continuity does not hold across them).
    """
    h, w = mask.shape
    sc, sy, ey = column_runs(mask)
    keep = (ey - sy + 1) <= max_run
    sc, sy, ey = sc[keep], sy[keep], ey[keep]
    if sc.size == 0:
        return np.zeros(0), np.zeros(0)
    bounds = np.searchsorted(sc, np.arange(w + 1))
    inv_mm = 1.0 / px_per_mm
    max_gap = max_gap_mm * px_per_mm
    prior = prior_weight * inv_mm / 10.0
    # per non-empty column: lists of (a, b), cost, backpointer
    cols: list[int] = []
    runs_a: list[list[int]] = []
    runs_b: list[list[int]] = []
    backs: list[list[int]] = []
    prev_cost: list[float] = []
    prev_a: list[int] = []
    prev_b: list[int] = []
    last_x = -(10**9)
    sy_l, ey_l = sy.tolist(), ey.tolist()
    bl = float(baseline)
    brk = sorted(breaks)
    bi = 0
    nonempty = np.nonzero(np.diff(bounds))[0].tolist()
    bounds_l = bounds.tolist()
    for x in nonempty:
        i0, i1 = bounds_l[x], bounds_l[x + 1]
        a_l = sy_l[i0:i1]
        b_l = ey_l[i0:i1]
        crossed = False
        while bi < len(brk) and brk[bi] <= x:
            crossed = crossed or brk[bi] > last_x
            bi += 1
        restart = x - last_x > max_gap or not prev_cost or crossed
        if not restart and i1 - i0 == 1 and len(prev_cost) == 1:
            # one run here and one before: nothing to choose (the common case)
            cols.append(x)
            runs_a.append(a_l)
            runs_b.append(b_l)
            backs.append([0])
            prev_cost, prev_a, prev_b = [0.0], a_l, b_l
            last_x = x
            continue
        cost: list[float] = []
        back: list[int] = []
        for a, b in zip(a_l, b_l, strict=True):
            c_mid = 0.5 * (a + b)
            pr = prior * abs(c_mid - bl)
            if restart:
                cost.append(pr)
                back.append(-1)
                continue
            best, bj = 1e18, -1
            for j, pc in enumerate(prev_cost):
                pa, pb = prev_a[j], prev_b[j]
                gap = a - pb - 1 if a > pb + 1 else (pa - b - 1 if pa > b + 1 else 0)
                v = pc + gap * inv_mm
                if v < best:
                    best, bj = v, j
            cost.append(best + pr)
            back.append(bj)
        if not restart:
            mn = min(cost)
            cost = [c - mn for c in cost]
        cols.append(x)
        runs_a.append(a_l)
        runs_b.append(b_l)
        backs.append(back)
        prev_cost, prev_a, prev_b = cost, a_l, b_l
        last_x = x
    # backtrack from the cheapest final state; a restart begins a new segment
    n = len(cols)
    choice = [0] * n
    k = n - 1
    j = int(np.argmin(prev_cost))
    while k >= 0:
        choice[k] = j
        bj = backs[k][j]
        k -= 1
        if bj < 0 and k >= 0:
            # segment start: the previous segment ends with its cheapest state, chosen by distance to here
            la, lb = runs_a[k], runs_b[k]
            c_here = 0.5 * (runs_a[k + 1][choice[k + 1]] + runs_b[k + 1][choice[k + 1]])
            j = int(
                np.argmin(
                    [abs(0.5 * (a + b) - c_here) + prior * abs(0.5 * (a + b) - bl) for a, b in zip(la, lb, strict=True)]
                )
            )
        else:
            j = bj
    mids = np.array([0.5 * (runs_a[i][choice[i]] + runs_b[i][choice[i]]) for i in range(n)])
    tops = np.array([runs_a[i][choice[i]] for i in range(n)], dtype=np.float64)
    bots = np.array([runs_b[i][choice[i]] for i in range(n)], dtype=np.float64)
    xs = np.array(cols, dtype=np.float64)
    lens = bots - tops + 1
    lw = float(np.median(lens)) if n else 1.0  # the line's thickness: most columns are flat
    half = max(0.0, (lw - 1.0) / 2.0)
    if n < 3:
        return xs, mids
    prev_m = np.r_[mids[0], mids[:-1]]
    next_m = np.r_[mids[1:], mids[-1]]
    steep = lens > lw + 1.5
    peak = steep & (prev_m > mids) & (next_m > mids)  # neighbours lower on paper
    trough = steep & (prev_m < mids) & (next_m < mids)
    py_a = mids.copy()
    py_a[peak] = tops[peak] + half
    py_a[trough] = bots[trough] - half
    px_a = xs
    o = np.argsort(px_a, kind="stable")
    return px_a[o], py_a[o]
