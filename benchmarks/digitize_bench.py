"""Page reader benchmark (issue 27): layout, lead boxes, signal SNR, real pages, speed.

    PYTHONPATH=src python benchmarks/digitize_bench.py synth --n 20            # generated pages
    PYTHONPATH=src python benchmarks/digitize_bench.py khan                    # the 418 distinct Khan pages
    PYTHONPATH=src python benchmarks/digitize_bench.py other                   # other_machines vs its labels
    PYTHONPATH=src python benchmarks/digitize_bench.py speed --n 40            # ms a page on one core
    PYTHONPATH=src python benchmarks/digitize_bench.py roundtrip --n 30        # Khan: read, redraw, read again
    PYTHONPATH=src python benchmarks/digitize_bench.py oracle --n 10           # tracer alone, true geometry

Generated pages use seeds 27_000 + ... (tests use seeds below 1000), so the reader never saw them
during development. SNR is the PhysioNet 2024 definition: per lead, against the reference masked
to the part the page prints, the best time shift within +-0.2 s and the best vertical offset,
10 log10(sum signal^2 / sum noise^2), missing samples as zero; mean over the printed leads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

from ecgvit.reader import LEADS, read_page  # noqa: E402

DATA = Path(os.environ.get("ECGVIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MAX_SHIFT_S = 0.2


def truth_reference(signals: np.ndarray, truth: dict[str, Any], fs: int = 500, n: int = 5000) -> np.ndarray:
    """12 x n reference: the signal where the page prints it, NaN elsewhere."""
    ref = np.full((12, n), np.nan)
    for p in truth["panels"]:
        i = LEADS.index(p["lead"])
        i0 = int(round(p["t0"] * fs))
        i1 = min(n, int(np.floor((p["t0"] + p["duration"]) * fs + 1e-6)) + 1)
        ref[i, i0:i1] = signals[i, i0:i1]
    return ref


def snr_db(ref: np.ndarray, est: np.ndarray, fs: int = 500) -> np.ndarray:
    """Per lead SNR (NaN for a lead with no reference): best shift within +-MAX_SHIFT_S, best offset."""
    out = np.full(ref.shape[0], np.nan)
    e = np.nan_to_num(est.astype(np.float64), nan=0.0)
    ms = int(MAX_SHIFT_S * fs)
    for i in range(ref.shape[0]):
        ok = np.isfinite(ref[i])
        if ok.sum() < 10:
            continue
        x = ref[i, ok]
        px = float(np.sum(x**2))
        idx = np.nonzero(ok)[0]
        best = -np.inf
        for sh in range(-ms, ms + 1):
            j = idx + sh
            good = (j >= 0) & (j < e.shape[1])
            y = np.zeros_like(x)
            y[good] = e[i, j[good]]
            d = x - y
            noise = float(np.sum(d**2) - d.size * d.mean() ** 2)
            if noise <= 0:
                best = 99.0
                break
            best = max(best, 10 * np.log10(px / noise))
        out[i] = best
    return out


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def truth_boxes(truth: dict[str, Any]) -> dict[tuple[str, int], tuple[float, float, float, float]]:
    """(lead, row) -> the panel's box on the distorted page (bounds of its mapped corners)."""
    from ecgvit.synth.distort import map_points

    out = {}
    for p in truth["panels"]:
        l, t, r, b = p["box"]
        q = map_points([[l, t], [r, t], [r, b], [l, b]], truth["homography"], truth.get("warp"))
        out[(p["lead"], p["row"])] = (q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max())
    return out


def synth(args: argparse.Namespace) -> None:
    from ecgvit.synth import CLASSES, make_page
    from ecgvit.synth.styles import FAMILY_NAMES, get_style, sample_style

    layouts = args.layouts.split(",")
    levels = args.levels.split(",")
    families = args.families.split(",") if args.families else list(FAMILY_NAMES)
    cells: list[tuple[str, str, str]] = []
    if args.random_styles:
        cells = [("random", "random", lev) for lev in levels]
    else:
        for lev in levels:
            for lay in layouts:
                cells.append(("khan", lay, lev))
        for fam in families:
            if fam == "khan":
                continue
            for lev in levels[:2]:
                cells.append((fam, "3x4+1", lev))
    rows = []
    pages: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for ci, (fam, lay, lev) in enumerate(cells):
        st = get_style("khan" if fam == "random" else fam)
        res: dict[str, list[float]] = defaultdict(list)
        for k in range(args.n):
            rng = np.random.default_rng(np.random.SeedSequence([27_000, ci, k]))
            page_layout = lay
            if fam == "random":
                st, page_layout = sample_style(rng)
            img, sig, params = make_page(
                CLASSES[k % len(CLASSES)], rng, style=st, as_array=True, layout=page_layout, distort=lev
            )
            truth = params["truth"]
            scale = 1.0
            if args.draft:
                img, scale = _draft_decoded(img, st.jpeg_quality)
            t0 = time.perf_counter()
            r = read_page(img)
            res["ms"].append((time.perf_counter() - t0) * 1000)
            # masks, paper outline, rectification (or rotation) and the warp: the reader's front
            res["geom_ms"].append(float(r.timings_ms.get("rotation", np.nan)))
            res["layout_ok"].append(float(r.layout == truth["layout"]))
            tb = {key: tuple(v * scale for v in b) for key, b in truth_boxes(truth).items()}
            mine = {(b.name, b.row): b.box for b in r.leads}
            res["iou"].append(float(np.mean([iou(tb[key], mine[key]) if key in mine else 0.0 for key in tb])))
            ref = truth_reference(sig[:, :5000], truth)
            res["snr"].append(float(np.nanmean(snr_db(ref, r.signals))))
            g = truth["px_per_mm"]["grid"] * scale
            if r.px_per_mm is not None:
                res["pitch_err"].append(abs(r.px_per_mm[0] / g - 1) * 100)
            if args.pages_out:
                pages.append(
                    {
                        "cell": ci,
                        "page": k,
                        "distort": lev,
                        "family": st.family,
                        "dpi": st.dpi,
                        "grid_kind": st.grid_kind,
                        "grid_colour": ",".join(map(str, st.major_color)),
                        "trace_colour": ",".join(map(str, st.trace_color)),
                        "speed": st.speed_mm_s,
                        "gain": st.gain_mm_mv,
                        "layout": truth["layout"],
                        "read_layout": r.layout,
                        "px_per_mm_err_%": round(abs(r.px_per_mm[0] / g - 1) * 100, 2) if r.px_per_mm else None,
                        "iou": round(res["iou"][-1], 3),
                        "snr_db": round(res["snr"][-1], 2),
                        "reasons": " | ".join(r.reasons),
                    }
                )
        row = {
            "family": fam,
            "layout": lay,
            "distort": lev,
            "n": args.n,
            "layout_ok_%": round(100 * np.mean(res["layout_ok"]), 1),
            "box_iou": round(float(np.mean(res["iou"])), 3),
            "snr_db_mean": round(float(np.mean(res["snr"])), 2),
            "snr_db_median": round(float(np.median(res["snr"])), 2),
            "pitch_err_%_median": round(float(np.median(res["pitch_err"])), 2) if res["pitch_err"] else None,
            "ms_median": round(float(np.median(res["ms"])), 1),
            "geom_ms_median": round(float(np.nanmedian(res["geom_ms"])), 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"# {len(cells)} cells x {args.n} pages in {time.perf_counter() - t_all:.0f} s", flush=True)
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if args.pages_out and pages:
        with open(args.pages_out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(pages[0]))
            w.writeheader()
            w.writerows(pages)


def _draft_decoded(img: np.ndarray, quality: int) -> tuple[np.ndarray, float]:
    """`img` as the classifier's reader sees it: saved as a JPEG and decoded with the DCT draft for
    the reader's working size (halved while both sides stay above it); and the scale."""
    import tempfile

    from PIL import Image

    from ecgvit.config import PreprocessConfig
    from ecgvit.data.io import open_page
    from ecgvit.data.preprocess import draft_size

    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        Image.fromarray(img).save(f.name, "JPEG", quality=quality)
        page = open_page(f.name, draft_size=draft_size(PreprocessConfig(form="signals")), as_array=True)
    rgb = page.rgb if hasattr(page, "rgb") else np.asarray(page.convert("RGB"))
    return np.ascontiguousarray(rgb), rgb.shape[1] / img.shape[1]


def trace_with_truth(img: np.ndarray, truth: dict[str, Any], ink: np.ndarray) -> np.ndarray:
    """12 x 5000 signals traced by the reader's tracer on `ink` with the page's true geometry (row
    bands, baselines, panel x0, px/s, px/mV): what the tracer loses, without the geometry's errors.
    Clean (undistorted) pages only."""
    from ecgvit.reader.trace import trace_row

    fs, out = 500, np.full((12, 5000), np.nan)
    dark = 255 - img.max(axis=2)
    pps, ppmv, ppm = truth["px_per_s"], truth["px_per_mv"], truth["px_per_mm"]["y"]
    for row in sorted({p["row"] for p in truth["panels"]}):
        ps = [p for p in truth["panels"] if p["row"] == row]
        t, b = int(ps[0]["box"][1]), int(ps[0]["box"][3])
        xa, xb = int(np.ceil(min(p["box"][0] for p in ps))), int(max(p["box"][2] for p in ps))
        brk = tuple(p["x0"] - xa + 1.0 for p in ps if p["col"] > 0)
        xs, ys = trace_row(
            ink[t : b + 1, xa : xb + 1],
            ps[0]["baseline_y"] - t,
            ppm,
            1.2 * (b - t),
            breaks=brk,
            weight=dark[t : b + 1, xa : xb + 1],
        )
        xs, ys = xs + xa, ys + t
        for p in ps:
            sel = (xs >= p["x0"] + (1.0 if p["col"] > 0 else 0.0)) & (xs < p["box"][2] - 1.0)
            if sel.sum() < 2:
                continue
            i0 = int(round(p["t0"] * fs))
            i1 = min(5000, int(np.floor((p["t0"] + p["duration"]) * fs + 1e-6)) + 1)
            tt = p["t0"] + (xs[sel] - p["x0"]) / pps
            out[LEADS.index(p["lead"]), i0:i1] = np.interp(
                np.arange(i0, i1) / fs, tt, (p["baseline_y"] - ys[sel]) / ppmv
            )
    return out


def oracle(args: argparse.Namespace) -> None:
    """Signal SNR of the reader vs its tracer given the true geometry, per clean cell (what the geometry costs)."""
    from ecgvit.reader.geometry import page_masks
    from ecgvit.synth import CLASSES, make_page
    from ecgvit.synth.styles import get_style

    for ci, (fam, lay) in enumerate(f.split(":") for f in args.cells.split(",")):
        rd, orc = [], []
        for k in range(args.n):
            rng = np.random.default_rng(np.random.SeedSequence([27_001, ci, k]))
            img, sig, params = make_page(
                CLASSES[k % len(CLASSES)], rng, style=get_style(fam), as_array=True, layout=lay
            )
            truth = params["truth"]
            ref = truth_reference(sig[:, :5000], truth)
            rd.append(float(np.nanmean(snr_db(ref, read_page(img).signals))))
            orc.append(float(np.nanmean(snr_db(ref, trace_with_truth(img, truth, page_masks(img).ink)))))
        print(
            json.dumps(
                {
                    "family": fam,
                    "layout": lay,
                    "n": args.n,
                    "snr_reader": round(float(np.mean(rd)), 2),
                    "snr_true_geometry": round(float(np.mean(orc)), 2),
                }
            ),
            flush=True,
        )


def _khan_distinct() -> list[Path]:
    root = DATA / "khan"
    seen: set[str] = set()
    out = []
    for line in (DATA / "khan.md5").read_text().splitlines():
        md5, rel = line.split(None, 1)
        if md5 in seen:
            continue
        seen.add(md5)
        out.append(root / rel.strip())
    return out


def khan(args: argparse.Namespace) -> None:
    files = _khan_distinct()[: args.limit or None]
    lay: dict[str, int] = defaultdict(int)
    px, py, pmv, cal = [], [], [], 0
    t0 = time.perf_counter()
    for f in files:
        r = read_page(str(f), trace=False)
        lay[str(r.layout)] += 1
        if r.px_per_mm:
            px.append(r.px_per_mm[0])
            py.append(r.px_per_mm[1])
        if r.calibration and r.px_per_mv:
            pmv.append(r.px_per_mv / 10.0)
            cal += 1
    n = len(files)
    print(f"khan distinct pages: {n} in {time.perf_counter() - t0:.0f} s")
    print("layouts:", dict(lay), f"3x4+1: {100 * lay['3x4+1'] / max(1, n):.1f} %")
    for name, v in (("grid pitch x", px), ("grid pitch y", py), ("trace scale (pulse px / 10 mm)", pmv)):
        if v:
            a = np.array(v)
            print(
                f"{name}: n={a.size} median {np.median(a):.4f} px/mm, p1..p99 {np.percentile(a, 1):.4f}..{np.percentile(a, 99):.4f}, "
                f"within 1 % of 7.874: {100 * np.mean(np.abs(a / 7.874 - 1) < 0.01):.1f} %, of 7.944: {100 * np.mean(np.abs(a / 7.944 - 1) < 0.01):.1f} %"
            )
    print(f"calibration pulse found on {cal} of {n}")


def roundtrip(args: argparse.Namespace) -> None:
    """Khan pages digitized, redrawn in the Khan template, digitized again: correlation per lead of the
    two readings where both have samples (a reading that loses or invents detail disagrees with
    itself)."""
    from ecgvit.synth.page import KHAN_STYLE, render

    files = _khan_distinct()[:: max(1, 418 // args.n)][: args.n]
    corr: dict[str, list[float]] = defaultdict(list)
    for f in files:
        r1 = read_page(str(f))
        if r1.layout != "3x4+1":
            continue
        sig = np.nan_to_num(r1.signals.astype(np.float64), nan=0.0)
        page = render(sig, KHAN_STYLE, {"id": "", "sex": "", "heart_rate": 0, "date": "", "time": ""})
        r2 = read_page(page)
        for i, lead in enumerate(LEADS):
            ok = np.isfinite(r1.signals[i]) & np.isfinite(r2.signals[i])
            if ok.sum() > 50 and np.std(r1.signals[i, ok]) > 0 and np.std(r2.signals[i, ok]) > 0:
                corr[lead].append(float(np.corrcoef(r1.signals[i, ok], r2.signals[i, ok])[0, 1]))
    print(
        f"round trip on {len(files)} Khan pages (read, redraw in the Khan template, read again): correlation per lead"
    )
    print("  " + "  ".join(f"{lead} {np.median(v):.3f}" for lead, v in corr.items()) + "  (medians)")
    allv = [x for v in corr.values() for x in v]
    print(f"  all leads: median {np.median(allv):.3f}, p10 {np.percentile(allv, 10):.3f}")


def other(args: argparse.Namespace) -> None:
    root = DATA / "other_machines"
    by_kind: dict[str, list[int]] = defaultdict(list)
    with open(root / "labels.csv") as f:
        for row in csv.DictReader(f):
            if row.get("duplicate_of"):
                continue
            try:
                r = read_page(str(root / row["file"]), trace=False)
                got = r.layout
                why = "; ".join(r.reasons[:2])
            except Exception as exc:  # a decode failure is a row, not the end of the benchmark
                got, why = None, f"{type(exc).__name__}: {exc}"
            ok = int(got == row["layout"])
            by_kind[row["kind"]].append(ok)
            print(
                f"{row['file']:<14} {row['kind']:<12} noted {row['layout']:<8} read {got!s:<8} {why[:90]}", flush=True
            )
    for k, v in by_kind.items():
        print(f"{k}: {sum(v)}/{len(v)} layout as noted")
    allv = [x for v in by_kind.values() for x in v]
    print(f"all: {sum(allv)}/{len(allv)}")


def speed(args: argparse.Namespace) -> None:
    from ecgvit.data.io import open_page, page_array

    files = _khan_distinct()[:: max(1, 418 // args.n)][: args.n]
    dec, geo, full = [], [], []
    for f in files:
        t0 = time.perf_counter()
        rgb = page_array(open_page(str(f)))
        t1 = time.perf_counter()
        read_page(rgb, trace=False)
        t2 = time.perf_counter()
        read_page(rgb)
        t3 = time.perf_counter()
        dec.append(t1 - t0)
        geo.append(t2 - t1)
        full.append(t3 - t2)
    m = lambda v: 1000 * float(np.median(v))  # noqa: E731
    print(
        f"{len(files)} Khan pages (2213x1572), one core: JPEG decode {m(dec):.1f} ms, geometry+layout+leads {m(geo):.1f} ms, "
        f"full digitization {m(full):.1f} ms (medians)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("synth")
    s.add_argument("--n", type=int, default=50, help="pages a cell")
    s.add_argument("--layouts", default="3x4+1,3x4,3x4+3,6x2,6x2+1,12x1")
    s.add_argument("--levels", default="none,light,heavy,photo")
    s.add_argument("--families", default="", help="style families for the 3x4+1 cells (default: all)")
    s.add_argument(
        "--random-styles", action="store_true", help="one cell a level, each page in a random style and layout"
    )
    s.add_argument("--draft", action="store_true", help="read each page JPEG-decoded at the classifier's draft scale")
    s.add_argument("--out", default="", help="the cells' table (CSV)")
    s.add_argument("--pages-out", default="", help="one row a page (CSV): style, true and read layout, SNR, reasons")
    k = sub.add_parser("khan")
    k.add_argument("--limit", type=int, default=0)
    sub.add_parser("other")
    rt = sub.add_parser("roundtrip")
    rt.add_argument("--n", type=int, default=30)
    o = sub.add_parser("oracle")
    o.add_argument("--n", type=int, default=10)
    o.add_argument("--cells", default="khan:3x4+1,khan:6x2,textbook:3x4+1", help="family:layout,...")
    sp = sub.add_parser("speed")
    sp.add_argument("--n", type=int, default=40)
    a = ap.parse_args(argv)
    {"synth": synth, "khan": khan, "other": other, "speed": speed, "roundtrip": roundtrip, "oracle": oracle}[a.what](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
