"""How close are synthetic pages to the real Khan pages? Measures the same quantities on both.

    python benchmarks/synth_fidelity.py [--real /work/shared/data/khan] [--n 5]

Per page (full resolution, 2213x1572 expected):
  minor / major grid pitch (px): FFT peak of the column and row profiles of grid-coloured pixels
      (tint = max-min channel >= 12 on non-dark pixels) inside the trace area, searched in 5-12 px
      and 30-50 px; 200 dpi predicts 7.874 / 39.37 px;
  trace thickness (px): median vertical run length of dark pixels (luminance < 110) across traces
      (runs of 1-12 px; long runs are steep QRS slopes, not thickness);
  grid tint: mean tint of the trace area (what the crop detector keys on);
  ink: fraction of dark pixels in the trace area; border: rows/columns where the pink border rule is.
Nothing is written; real pages are only read.
"""

from __future__ import annotations

import argparse
import glob
import io
import os

import numpy as np
from PIL import Image

from ecgvit.synth import CLASSES, encode, make_page, page_rng

AREA = (110, 300, 2160, 1500)  # x0, y0, x1, y1 inside the grid, clear of the border


def pitch(profile: np.ndarray, lo: float, hi: float) -> float:
    p = profile - profile.mean()
    n = 1 << int(np.ceil(np.log2(len(p) * 16)))
    spec = np.abs(np.fft.rfft(p * np.hanning(len(p)), n))
    f = np.fft.rfftfreq(n)
    sel = (f > 1 / hi) & (f < 1 / lo)
    return float(1 / f[sel][np.argmax(spec[sel])])


def measure(rgb: np.ndarray) -> dict[str, float]:
    a = rgb.astype(np.int16)
    x0, y0, x1, y1 = AREA
    sub = a[y0:y1, x0:x1]
    lum = sub.mean(2)
    tint = sub.max(2) - sub.min(2)
    grid = (tint >= 12) & (lum > 60) & (lum < 250)
    colp, rowp = grid.sum(0).astype(float), grid.sum(1).astype(float)
    dark = lum < 110
    # traces are horizontally continuous; the grid's dark dots are isolated pixels
    dark = dark & (np.roll(dark, 1, 1) | np.roll(dark, -1, 1))
    runs = []
    for x in range(0, dark.shape[1], 3):
        col = dark[:, x]
        d = np.diff(np.r_[0, col.astype(np.int8), 0])
        st, en = np.where(d == 1)[0], np.where(d == -1)[0]
        runs.extend((en - st).tolist())
    runs = np.array(runs)
    runs = runs[(runs >= 1) & (runs <= 12)]
    full_lum = a.mean(2)
    full_tint = a.max(2) - a.min(2)
    pink = (full_tint > 40) & (full_lum > 150)
    cols = np.where(pink.sum(0) > 0.5 * pink.shape[0] * 0.6)[0]
    rows = np.where(pink.sum(1) > 0.5 * pink.shape[1] * 0.8)[0]
    return {
        "minor_x": pitch(colp, 5, 12),
        "minor_y": pitch(rowp, 5, 12),
        "major_x": pitch(colp, 30, 50),
        "major_y": pitch(rowp, 30, 50),
        "trace_px": float(np.median(runs)) if runs.size else float("nan"),
        "tint": float(np.where(full_lum[y0:y1, x0:x1] > 120, full_tint[y0:y1, x0:x1], 0).mean()),
        "ink": float(dark.mean()),
        "border_l": float(cols[cols < 300].mean()) if (cols < 300).any() else float("nan"),
        "border_t": float(rows[rows < 600].mean()) if (rows < 600).any() else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", default="/work/shared/data/khan")
    ap.add_argument("--n", type=int, default=5, help="pages per class and source")
    a = ap.parse_args()
    real, syn = [], []
    folders = sorted(d for d in glob.glob(os.path.join(a.real, "*")) if os.path.isdir(d))
    for d in folders:
        for f in sorted(glob.glob(os.path.join(d, "*.jpg")))[: a.n]:
            real.append(measure(np.asarray(Image.open(f).convert("RGB"))))
    for cls in CLASSES:
        for i in range(a.n):
            img, _, p = make_page(cls, page_rng(0, cls, i), as_array=True)
            dec = np.asarray(Image.open(io.BytesIO(encode(img, "jpg", p["jpeg_quality"]))).convert("RGB"))
            syn.append(measure(dec))
    keys = list(real[0]) if real else list(syn[0])
    print(
        f"median [min..max] over {len(real)} real pages ({a.real}) and {len(syn)} synthetic pages (seed 0, distort none)"
    )
    print(f"{'quantity':<10} {'real':>24} {'synthetic':>24}")
    for k in keys:

        def fmt(rows: list[dict[str, float]], k: str = k) -> str:
            if not rows:
                return "-"
            v = np.array([r[k] for r in rows])
            return f"{np.nanmedian(v):.3f} [{np.nanmin(v):.2f}..{np.nanmax(v):.2f}]"

        print(f"{k:<10} {fmt(real):>24} {fmt(syn):>24}")
    print("expected at 200 dpi: minor 7.874 px, major 39.37 px")


if __name__ == "__main__":
    main()
