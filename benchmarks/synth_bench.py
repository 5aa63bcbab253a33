"""Synthetic page generation speed, one process, real work (simulate + render + distort + encode + write).

    python benchmarks/synth_bench.py [--pages N] [--styles khan,ge_mac,philips,textbook]
    python benchmarks/synth_bench.py --contact-sheet docs/synth_styles.png    (one page per style family)

Prints pages/s per distortion level (none, light, heavy, photo) for JPEG output (the `ecgvit synth`
default), pages/s of plain (undistorted) pages per style at 200 dpi (A4 for the machine families,
the Khan template's own size for khan) and for the random style sampler, and the split of one clean
page's time into its stages.
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
from ecgvit.synth.styles import STYLES  # noqa: E402


def contact_sheet(path: str, tile_w: int = 500) -> None:
    """One page per style family (each in another layout, the last two also as phone photos), 4 x 2 tiles."""
    from PIL import Image, ImageDraw

    from ecgvit.synth import make_page
    from ecgvit.synth.page import _font
    from ecgvit.synth.styles import make_style

    layouts = ["3x4+1", "3x4+3", "6x2", "3x4+1", "12x1", "6x2+1", "3x4", "3x4+1"]
    specs = [(name, {}, "none") for name in STYLES] + [("ge_mac", {"speed_mm_s": 50.0}, "photo")]
    tiles = []
    for (name, kw, dist), lay in zip(specs, layouts, strict=True):
        st = make_style(name, **kw)
        img, _, p = make_page("normal", np.random.default_rng(7), style=st, distort=dist, layout=lay)
        im = img.convert("RGB")
        h = int(round(im.height * tile_w / im.width))
        im = im.resize((tile_w, h), Image.Resampling.LANCZOS)
        cap = f"{name}  {lay}  {st.speed_mm_s:g} mm/s" + ("  photo" if dist != "none" else "")
        canvas = Image.new("RGB", (tile_w, h + 22), (255, 255, 255))
        canvas.paste(im, (0, 22))
        ImageDraw.Draw(canvas).text((4, 3), cap, fill=(0, 0, 0), font=_font("DejaVuSans.ttf", 15))
        tiles.append(canvas)
    th = max(t.height for t in tiles)
    sheet = Image.new("RGB", (4 * tile_w + 5 * 6, 2 * th + 3 * 6), (200, 200, 200))
    for k, t in enumerate(tiles):
        sheet.paste(t, (6 + (k % 4) * (tile_w + 6), 6 + (k // 4) * (th + 6)))
    sheet.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {sheet.width}x{sheet.height}, {os.path.getsize(path) / 1024:.0f} KB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=24, help="pages per level (spread over the 4 classes)")
    ap.add_argument("--styles", default="khan,ge_mac,philips,textbook", help="styles to time plain pages of")
    ap.add_argument("--contact-sheet", default=None, help="write a small picture of one page per style here and stop")
    a = ap.parse_args()
    if a.contact_sheet:
        contact_sheet(a.contact_sheet)
        return
    styles = [x for x in a.styles.split(",") if x]
    bad = [x for x in styles if x not in STYLES]
    if bad:
        raise SystemExit(f"unknown styles {bad}: expected some of {', '.join(STYLES)}")
    cv2.setNumThreads(1)
    template(KHAN_STYLE)  # built once per process; not counted
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for c in CLASSES:
            os.makedirs(os.path.join(td, c))
        for level in ("none", "light", "heavy", "photo"):
            cfg = SynthConfig(per_class=1, seed=0, distort=level)
            t0 = time.perf_counter()
            for i in range(a.pages):
                _write_page(td, CLASSES[i % 4], i, cfg)
            dt = time.perf_counter() - t0
            rows.append((level, a.pages, dt, a.pages / dt))
        srows = []
        for name in styles:
            cfg = SynthConfig(per_class=1, seed=0, style=STYLES[name])
            _write_page(td, CLASSES[0], 999, cfg)  # template drawn once per process; not counted
            t0 = time.perf_counter()
            for i in range(a.pages):
                _write_page(td, CLASSES[i % 4], i, cfg)
            dt = time.perf_counter() - t0
            st = STYLES[name]
            srows.append((f"{name} {st.width}x{st.height}", a.pages, dt, a.pages / dt))
        # random styles: a new template (and often a new dpi) every page, so templates are counted
        cfg = SynthConfig(per_class=1, seed=0, random_style=True, layout="random")
        t0 = time.perf_counter()
        for i in range(a.pages):
            _write_page(td, CLASSES[i % 4], i, cfg)
        dt = time.perf_counter() - t0
        srows.append(("random (sample_style)", a.pages, dt, a.pages / dt))
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
    print("plain pages (distort none) per style, 200 dpi")
    print(f"{'style':<24} {'pages':>6} {'seconds':>8} {'pages/s':>8}")
    for name, k, dt, ps in srows:
        print(f"{name:<24} {k:>6} {dt:>8.2f} {ps:>8.1f}")
    print("clean page stages (ms): " + ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in st.items()))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
