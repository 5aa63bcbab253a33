"""`digitize_files`: pages in, per page a WFDB record, a CSV, the reading as JSON and an overlay PNG.

    from ecgvit.reader import digitize_files
    summary = digitize_files(["scans/", "page.pdf"], "out/")

An index `digitize.csv` (path, status, layout, ...) is appended to page by page, so an interrupted
run keeps what it finished. Bad inputs (unreadable files) are rows with their reason.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ecgvit.data.files import expand_inputs
from ecgvit.reader.read import as_rgb_array, read_page
from ecgvit.reader.reading import FS, LEADS, N_SAMPLES, PageReading

log = logging.getLogger("ecgvit")

FORMATS = ("wfdb", "csv", "json")
OVERLAY_MAX_SIDE = 1800
INDEX_FIELDS = ("path", "status", "layout", "leads", "px_per_mm", "rotation_deg", "outputs", "reason")


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The formats, validated: ValueError naming the valid ones for an unknown one."""
    out = tuple(f.strip().lower() for f in formats if f.strip())
    bad = [f for f in out if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format {bad[0]!r}: expected any of {', '.join(FORMATS)}")
    return out


def _stem(path: str, used: set[str]) -> str:
    base = Path(path.split("#page=")[0]).stem
    m = re.search(r"#page=(\d+)$", path)
    if m:
        base += f"_p{m.group(1)}"
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base) or "page"
    stem, k = base, 1
    while stem in used:
        k += 1
        stem = f"{base}_{k}"
    used.add(stem)
    return stem


def write_wfdb(reading: PageReading, out_dir: str | os.PathLike[str], name: str) -> list[str]:
    """The 12 leads as a WFDB record `name` (.hea + .dat, 500 Hz, mV, format 16 at 5 uV a step);
    NaN (not printed) is written as WFDB's missing-sample value and reads back as NaN."""
    import wfdb

    sig = reading.signals.astype(np.float64).T.copy()  # N x 12
    wfdb.wrsamp(
        name,
        fs=FS,
        units=["mV"] * 12,
        sig_name=list(LEADS),
        p_signal=sig,
        fmt=["16"] * 12,
        adc_gain=[200.0] * 12,  # 5 uV a step: +-163 mV range
        baseline=[0] * 12,
        write_dir=str(out_dir),
        comments=[f"digitized by ecgvit from a page image; layout {reading.layout}"],
    )
    return [str(Path(out_dir) / f"{name}.hea"), str(Path(out_dir) / f"{name}.dat")]


def write_csv(reading: PageReading, path: str | os.PathLike[str]) -> str:
    """time_s and the 12 leads in mV (empty where not printed)."""
    t = np.arange(N_SAMPLES) / FS
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", *LEADS])
        for i in range(N_SAMPLES):
            row = [f"{t[i]:.3f}"] + ["" if not math.isfinite(v) else f"{v:.4f}" for v in reading.signals[:, i]]
            w.writerow(row)
    return str(path)


def draw_overlay(rgb: np.ndarray, reading: PageReading) -> np.ndarray:
    """The page with lead boxes and names, the grid pitch and the traced signals drawn over it."""
    a = np.ascontiguousarray(rgb.copy())
    if a.ndim == 3 and not a.flags.writeable:
        a = a.copy()
    inv = np.linalg.inv(np.asarray(reading.transform))
    scale = max(1.0, a.shape[1] / 1500.0)
    th = max(1, int(round(scale)))
    for b in reading.leads:
        l, t, r, bt = (int(round(v)) for v in b.box)
        cv2.rectangle(a, (l, t), (r, bt), (0, 90, 255), th)
        cv2.putText(
            a, b.name, (l + 4 * th, t + int(22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 90, 255), th
        )
        # the traced signal: mV back to rectified px, then to the input image
        if b.px_per_s <= 0 or reading.gain_mm_mv is None or reading.px_per_mm is None:
            continue
        li = LEADS.index(b.name)
        i0 = int(round(b.t0_s * FS))
        i1 = min(N_SAMPLES, int(round((b.t0_s + b.duration_s) * FS)))
        v = reading.signals[li, i0:i1]
        ok = np.isfinite(v)
        if ok.sum() < 2:
            continue
        ts = np.arange(i0, i1)[ok] / FS
        ppmv = reading.px_per_mv or reading.gain_mm_mv * reading.px_per_mm[1]
        xs = b.x0 + (ts - b.t0_s) * b.px_per_s
        ys = b.baseline_y - v[ok] * ppmv
        pts = np.stack([xs, ys, np.ones_like(xs)], 1) @ inv.T
        pts = pts[:, :2] / pts[:, 2:3]
        cv2.polylines(a, [np.round(pts * 8).astype(np.int32)], False, (0, 170, 0), th, cv2.LINE_AA, 3)
    ppm = "none" if reading.px_per_mm is None else f"{reading.px_per_mm[0]:.3f} x {reading.px_per_mm[1]:.3f} px/mm"
    text = f"layout {reading.layout}  grid {ppm} ({reading.grid.pitch_source})  rot {reading.rotation_deg:.2f} deg"
    cv2.putText(a, text, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (255, 255, 255), 4 * th)
    cv2.putText(a, text, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (200, 0, 0), th)
    return a


def digitize_files(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    formats: Iterable[str] = FORMATS,
    overlay: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Digitize every page of `paths` (files, folders, globs, PDFs) into `out_dir`.

    Per page STEM: STEM.hea/.dat (wfdb), STEM.csv, STEM.json (the reading), STEM_overlay.png.
    Returns a summary: n, ok (pages read with a layout), failed, bad (unreadable inputs),
    rows (one dict per input, as in digitize.csv), seconds.
    """
    from ecgvit.data.io import BadImageError, open_page

    fmts = check_formats(formats)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out_dir)!r}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files, missing = expand_inputs(paths)
    index = out / "digitize.csv"
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    used: set[str] = set()
    new = not index.exists() or index.stat().st_size == 0
    with open(index, "a", newline="") as fidx:
        w = csv.DictWriter(fidx, fieldnames=INDEX_FIELDS)
        if new:
            w.writeheader()

        def emit(row: dict[str, Any]) -> None:
            rows.append(row)
            w.writerow({k: row.get(k, "") for k in INDEX_FIELDS})
            fidx.flush()

        for b in missing:
            emit({"path": b.path, "status": "bad", "reason": b.reason})
        bar: Any = None
        if progress and files:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(files), desc="digitize", unit="page", file=sys.stderr)
        for f in files:
            try:
                img = open_page(f, min_side=64)
                rgb = as_rgb_array(img)
            except BadImageError as exc:
                emit({"path": f, "status": "bad", "reason": exc.reason})
                if bar is not None:
                    bar.update(1)
                continue
            reading = read_page(rgb)
            stem = _stem(f, used)
            outputs: list[str] = []
            try:
                # A page read to no signal gets its reading (the reasons) and overlay, no empty record.
                if "wfdb" in fmts and reading.ok:
                    outputs += write_wfdb(reading, out, stem)
                if "csv" in fmts and reading.ok:
                    outputs.append(write_csv(reading, out / f"{stem}.csv"))
                if "json" in fmts:
                    d = reading.to_dict()
                    d["path"] = f
                    (out / f"{stem}.json").write_text(json.dumps(d, indent=1))
                    outputs.append(str(out / f"{stem}.json"))
                if overlay:
                    ov = draw_overlay(rgb, reading)
                    f_ov = OVERLAY_MAX_SIDE / max(ov.shape[:2])
                    if f_ov < 1.0:  # a person checks it by eye: 1800 px is plenty, and 4x smaller
                        ov = cv2.resize(ov, None, fx=f_ov, fy=f_ov, interpolation=cv2.INTER_AREA)
                    op = out / f"{stem}_overlay.png"
                    cv2.imwrite(str(op), cv2.cvtColor(ov, cv2.COLOR_RGB2BGR))
                    outputs.append(str(op))
            except OSError as exc:
                emit({"path": f, "status": "error", "reason": f"could not write outputs ({exc})"})
                if bar is not None:
                    bar.update(1)
                continue
            printed = [n for i, n in enumerate(LEADS) if np.isfinite(reading.signals[i]).any()]
            emit(
                {
                    "path": f,
                    "status": "ok" if reading.ok else "unread",
                    "layout": reading.layout or "",
                    "leads": len(printed),
                    "px_per_mm": "" if reading.px_per_mm is None else f"{reading.px_per_mm[0]:.3f}",
                    "rotation_deg": f"{reading.rotation_deg:.2f}",
                    "outputs": " ".join(Path(o).name for o in outputs),
                    "reason": "; ".join(reading.reasons),
                }
            )
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_bad = sum(r["status"] == "bad" for r in rows)
    return {
        "n": len(rows),
        "ok": n_ok,
        "failed": len(rows) - n_ok - n_bad,
        "bad": n_bad,
        "rows": rows,
        "index": str(index),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def format_table(summary: dict[str, Any], width: int = 48) -> str:
    """A short per-page table and a summary line."""
    lines = [f"{'page':<{width}} {'status':<7} {'layout':<7} {'leads':>5}  reason"]
    for r in summary["rows"]:
        p = str(r["path"])
        p = p if len(p) <= width else "..." + p[-(width - 3) :]
        reason = str(r.get("reason", ""))
        reason = reason if len(reason) <= 80 else reason[:77] + "..."
        lines.append(
            f"{p:<{width}} {r['status']:<7} {r.get('layout', '') or '-':<7} {r.get('leads', '') or 0:>5}  {reason}"
        )
    lines.append(
        f"{summary['n']} input(s): {summary['ok']} digitized, {summary['failed']} not read, {summary['bad']} bad; "
        f"{summary['seconds']:.1f} s; index {summary['index']}"
    )
    return "\n".join(lines)
