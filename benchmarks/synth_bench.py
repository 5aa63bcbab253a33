"""Synthetic page generation speed, one process, real work (simulate + render + distort + encode + write).

    python benchmarks/synth_bench.py [--pages N]

Prints pages/s per distortion level for JPEG output (the `ecgvit synth` default) and the split of
one clean page's time into its stages.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ecgvit.synth import CLASSES, KHAN_STYLE, SynthConfig, _write_page, encode, page_rng  # noqa: E402
from ecgvit.synth.page import random_meta, render, template  # noqa: E402
from ecgvit.synth.signals import simulate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=24, help="pages per level (spread over the 4 classes)")
    a = ap.parse_args()
    cv2.setNumThreads(1)
    template(KHAN_STYLE)  # built once per process; not counted
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for c in CLASSES:
            os.makedirs(os.path.join(td, c))
        for level in ("none", "light", "heavy"):
            cfg = SynthConfig(per_class=1, seed=0, distort=level)
            t0 = time.perf_counter()
            for i in range(a.pages):
                _write_page(td, CLASSES[i % 4], i, cfg)
            dt = time.perf_counter() - t0
            rows.append((level, a.pages, dt, a.pages / dt))
    # stage split for a clean page
    n = 20
    st = {"simulate": 0.0, "render": 0.0, "encode": 0.0}
    for i in range(n):
        rng = page_rng(0, CLASSES[i % 4], i)
        t = time.perf_counter()
        e = simulate(CLASSES[i % 4], rng)
        t1 = time.perf_counter()
        img = render(e.signals, KHAN_STYLE, random_meta(rng, e.heart_rate))
        t2 = time.perf_counter()
        encode(img, "jpg", KHAN_STYLE.jpeg_quality)
        t3 = time.perf_counter()
        st["simulate"] += t1 - t
        st["render"] += t2 - t1
        st["encode"] += t3 - t2
    print("synthetic pages, 1 process, cv2 1 thread, JPEG, files written (page + .npz + .json)")
    print(f"{'distort':<8} {'pages':>6} {'seconds':>8} {'pages/s':>8}")
    for level, k, dt, ps in rows:
        print(f"{level:<8} {k:>6} {dt:>8.2f} {ps:>8.1f}")
    print("clean page stages (ms): " + ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in st.items()))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
