"""Know when not to answer: the out-of-scope gate and calibrated confidence.

Every answer carries a status:

    ok              a supported 12-lead page, and the model is as sure as it usually is
    low_confidence  a supported page, but the calibrated top probability is unusually low
    out_of_scope    not something this model can read; `reason` says why; no class label

Three kinds of evidence, cheapest first, each explainable in one sentence:

1. Page structure (from the crop stage, a few ms on the draft-decoded page): is there a
   coloured grid, is it a regular millimetre grid (a periodic 5 mm rhythm across the trace area),
   how many rows of traces does it carry, and is there trace ink at all.
2. Feature space: the Mahalanobis distance of the model's pooled features to the nearest class
   mean (shared covariance, Ledoit-Wolf shrinkage; Lee et al. 2018), fitted on training pages.
3. Temperature-scaled probabilities (Guo et al. 2017), the temperature fitted on held-out pages.

No threshold is set by hand: each is a fixed rule applied to the training pages' own values
(Tukey's far-out fence, Q1 - 3 IQR or Q3 + 3 IQR, on a log scale; the row-count range seen on
training pages, one row of slack) and stored with the model (RUN/gate.json + gate.safetensors),
so `ecgvit calibrate` refits it and any answer can be traced to how its thresholds were made.

This module is the side every prediction uses (measure a page, assess a batch, load a fitted
gate); fitting the thresholds is `ecgvit.engine.calibrate`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ecgvit.config import save_json
from ecgvit.data.crop import CropResult, column_means, tint_map
from ecgvit.metrics import softmax
from ecgvit.run import GATE_TENSORS, Run, RunError, publish, read_json

__all__ = [
    "STATUSES",
    "Gate",
    "GateConfig",
    "PageStructure",
    "ReadingStructure",
    "Verdict",
    "load_gate",
    "page_structure",
    "reading_structure",
    "save_gate",
    "ungated",
]

STATUSES = ("ok", "low_confidence", "out_of_scope")
# Structure is measured on a copy about this wide (the draft decode of a page is ~550 px).
_STRUCT_WIDTH = 560
# The 5 mm grid period, in periods across the trace area: 53 on Khan pages (265 mm); searched
# wide enough for other paper widths and a phone photo that crops a little in or out.
_GRID_PERIODS = (20, 110)
# Named layouts by rows of traces (the name a user knows them by).
_LAYOUT_NAMES = {3: "3x4 without rhythm strip", 4: "3x4+1", 5: "3x4+2", 6: "6x2", 12: "12x1"}


# --- 1. page structure ------------------------------------------------------------------------


@dataclass(frozen=True)
class PageStructure:
    """What the page looks like, measured without the model."""

    grid_found: bool  # the crop stage found one large grid-coloured region
    grid_periodicity: float  # spectral peak / median power of the grid's column profile (regular grid >> 1)
    trace_rows: int  # rows of trace ink across the grid (a 3x4+1 page has 4)
    ink_fraction: float  # share of dark (trace) pixels inside the grid
    page_ink_fraction: float  # share of dark pixels on the whole page
    page_tint: float  # 90th percentile of the grid-colour tint on the whole page

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar: no deep copy needed (dataclasses.asdict was ~2 us a field).
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ReadingStructure:
    """What the page reader found on a page, for models that read its leads (every layout and
    grid the reader reads is in scope; what it cannot read is not)."""

    layout: str | None  # the layout the reader found (None: none)
    rows: int  # rows of trace the reader found
    leads: int  # distinct leads with a panel (12 on a 12-lead page)
    pitch_source: str  # "grid", "calibration pulse" or "page size" (no scale found)
    reader_reason: str  # the reader's last reason when it found no layout ("" otherwise)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def reading_structure(reading: Any) -> ReadingStructure:
    """`ReadingStructure` of an `ecgvit.reader.PageReading`."""
    reason = "" if reading.layout is not None or not reading.reasons else str(reading.reasons[-1])
    return ReadingStructure(
        layout=reading.layout,
        rows=int(reading.rows),
        leads=len({b.name for b in reading.leads}),
        pitch_source=str(reading.grid.pitch_source),
        reader_reason=reason,
    )


def _max_channel(rgb: np.ndarray) -> np.ndarray:
    # Trace and text ink is dark in every channel; a red, green or blue grid line is bright in
    # one, so the max channel separates ink from grid of any colour.
    return cv2.max(cv2.max(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _ink_mask(hi: np.ndarray) -> np.ndarray:
    """Dark pixels: below 45% of the paper level (the max channel's 90th percentile)."""
    if hi.size == 0:
        return np.zeros(hi.shape, bool)
    # A uint8 percentile from its histogram (~20x np.percentile); cv2.calcHist counts ~10x faster
    # than np.bincount and needs no contiguous copy of a cropped view.
    hist = cv2.calcHist([hi], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    paper = int(np.searchsorted(np.cumsum(hist), 0.9 * hi.size))
    # hi < 0.45 * paper for integer hi is hi < ceil(0.45 * paper): compared as uint8, not float64.
    return hi < np.uint8(min(255, math.ceil(0.45 * max(paper, 1))))


def page_structure(img: Image.Image | np.ndarray, crop: CropResult) -> PageStructure:
    """Measure grid, rows of traces and ink on a decoded page (any size; RGB) and its crop.

    A few ms on a draft-decoded page when `crop` carries the tint map detection made."""
    a = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
    h, w = a.shape[:2]
    l, t, r, b = crop.box
    tint = crop.tint if crop.tint is not None and crop.tint.shape == (h, w) else None
    if w > _STRUCT_WIDTH * 1.5:  # a page that was not draft-decoded (PNG, TIFF, PDF): shrink first
        s = _STRUCT_WIDTH / w
        a = cv2.resize(a, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        l, t, r, b = (int(v * s) for v in (l, t, r, b))
        h, w = a.shape[:2]
        tint = None
    a = np.ascontiguousarray(a)
    if tint is None:
        tint = tint_map(a)
    l, t = max(0, min(l, w - 1)), max(0, min(t, h - 1))
    r, b = max(l + 1, min(r, w)), max(t + 1, min(b, h))
    page_ink = page_tint = 0.0
    if not crop.detected:  # only the "blank page" reason needs whole-page measures
        hi = _max_channel(a)
        page_ink = float(_ink_mask(hi).mean())
        page_tint = float(np.percentile(tint, 90))
        hi = hi[t:b, l:r]
    else:
        hi = _max_channel(a[t:b, l:r])
    ink = _ink_mask(hi).view(np.uint8)  # 0/1, no copy
    sh, sw = ink.shape
    # Rows of traces: a trace spends most of its time on its baseline, so each printed row is a
    # sharp peak of the per-row ink profile.
    from scipy.signal import find_peaks

    # Counted in 4 vertical slabs and the median kept: a scan or photo turned by a degree or two
    # would smear the baselines of a whole-width profile into one another.
    counts = []
    slabs = _slabs(sw, 4)
    prof = np.stack([_row_means(ink[:, x0:x1]) for x0, x1 in slabs], axis=1)  # (sh, 4): one blur for all
    prof = cv2.GaussianBlur(prof, (1, 0), sigmaX=0.1, sigmaY=max(1.0, sh / 150))
    for j in range(prof.shape[1]):
        pj = prof[:, j]
        if pj.max() > 1e-3:
            peaks, _ = find_peaks(pj, distance=max(2, sh // 25), prominence=0.3 * float(pj.max()))
            counts.append(len(peaks))
        else:
            counts.append(0)
    rows = int(np.median(counts))
    # Grid regularity: a millimetre grid repeats with the same period across and down the
    # page (it is square). Score = the weaker of the two profiles' spectral peaks over their
    # band median (power summed over 4 bands, for the same reason as above), and 0 when the
    # two periods disagree (a gradient, a texture, a photo).
    per = 0.0
    if sw >= 64 and sh >= 64:
        st = tint[t:b, l:r]
        px, sx_ = _profile_period([column_means(st[y0:y1]) for y0, y1 in _slabs(sh, 4)], sw)
        py, sy_ = _profile_period(
            [st[:, x0:x1].mean(axis=1) for x0, x1 in _slabs(sw, 4)],
            sh,
            period_range=(sw / _GRID_PERIODS[1], sw / _GRID_PERIODS[0]),
        )
        if px and py and min(abs(np.log(px / py) - np.log(m)) for m in (0.5, 1.0, 2.0)) < 0.08:
            per = float(min(sx_, sy_))
    return PageStructure(
        grid_found=bool(crop.detected),
        grid_periodicity=per,
        trace_rows=rows,
        ink_fraction=float(np.float32(cv2.countNonZero(ink) / ink.size)),  # = float(ink.astype(np.float32).mean())
        page_ink_fraction=page_ink,
        page_tint=page_tint,
    )


def _reading_reason(s: ReadingStructure) -> str | None:
    """Why the page reader's findings put a page out of scope, or None (rules, nothing fitted: a
    model on the reader's leads reads any page the reader reads)."""
    if s.layout is None and s.rows == 1 and "not single traces" not in s.reader_reason:
        return "single lead, not a 12-lead report (one row of trace found)"
    if s.layout is None:
        why = s.reader_reason.rstrip(".")
        return f"no 12-lead layout found ({why})" if why else "no 12-lead layout found"
    if s.leads < 12:
        return f"only {s.leads} of 12 leads found ({s.layout})"
    if s.pitch_source == "page size":
        return "no ECG grid or calibration pulse found: the page's scale is unknown"
    return None


def _apart(value: float, limit: float, digits: int) -> tuple[str, str]:
    """`value` and `limit` printed with `digits` decimals, or more where that would print them
    alike (a reason must not read "0.79 < 0.79")."""
    for d in range(digits, digits + 6):
        a, b = f"{value:.{d}f}", f"{limit:.{d}f}"
        if a != b:
            return a, b
    return a, b


def _row_means(mask01: np.ndarray) -> np.ndarray:
    """Per-row mean of a 0/1 uint8 mask as float32, bit for bit what `mask.astype(np.float32)
    .mean(axis=1)` gives (numpy divides the exact float32 count in float64, then rounds to
    float32), from integer counts: ~7x faster than converting the mask to float first."""
    counts = cv2.reduce(mask01, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    return (counts / mask01.shape[1]).astype(np.float32)


@lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    w = np.hanning(n)[:, None]
    w.flags.writeable = False
    return w


def _slabs(n: int, k: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=False) if b > a]


def _profile_period(
    profiles: list[np.ndarray], n: int, period_range: tuple[float, float] | None = None
) -> tuple[float, float]:
    """(period in pixels, peak / band-median power) of the strongest repeat shared by 1-D
    profiles of length n (their power spectra are summed)."""
    cols = np.stack([np.asarray(p, np.float32) for p in profiles], axis=1)  # (n, k): one blur, one FFT
    cols = cols - cv2.GaussianBlur(cols, (1, 0), sigmaX=0.1, sigmaY=n / 40)
    spec = (np.abs(np.fft.rfft(cols * _hann(n), axis=0)) ** 2).sum(axis=1)
    f = np.arange(len(spec))
    lo: float
    hi: float
    if period_range is None:
        lo, hi = _GRID_PERIODS
    else:
        lo, hi = n / period_range[1], n / period_range[0]
    band = (f >= max(2, lo)) & (f <= min(hi, len(spec) - 1))
    if band.sum() < 5:
        return 0.0, 0.0
    k = int(np.argmax(np.where(band, spec, -1)))
    # Against the spectrum just around the peak (not the whole band): a grid is a sharp line,
    # while a smooth picture's power falls steadily with frequency and its "peak" is a slope.
    near = np.r_[spec[max(1, k - 8) : max(1, k - 1)], spec[k + 2 : k + 9]]
    return n / k, float(spec[k] / (np.median(near) + 1e-12)) if near.size else 0.0


# --- 2 + 3. fitted thresholds ---------------------------------------------------------------


@dataclass
class GateConfig:
    """Everything the gate decides with; fitted by `fit_gate`, saved as RUN/gate.json."""

    temperature: float = 1.0
    confidence_threshold: float = 0.0  # calibrated top probability below this -> low_confidence
    periodicity_min: float = 0.0
    ink_min: float = 0.0
    rows_min: int = 1
    rows_max: int = 99
    rows_typical: int = 4  # the training pages' most common count (names the layout in reasons)
    distance_max: float = float("inf")  # Mahalanobis distance to the nearest class mean
    blank_ink_max: float = 0.0  # page_ink_fraction at or below this, with no grid: "blank page"
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not np.isfinite(d["distance_max"]):
            d["distance_max"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateConfig:
        d = dict(d)
        if d.get("distance_max") is None:
            d["distance_max"] = float("inf")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class Gate:
    """A fitted gate: GateConfig + the feature-space statistics."""

    def __init__(self, cfg: GateConfig, means: np.ndarray | None = None, precision: np.ndarray | None = None):
        self.cfg = cfg
        self.means = None if means is None else np.asarray(means, np.float64)
        self.precision = None if precision is None else np.asarray(precision, np.float64)

    def distance(self, feats: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each feature vector to its nearest class mean (N,)."""
        if self.means is None or self.precision is None or feats is None:
            return np.full(len(feats) if feats is not None else 0, np.nan)
        f = np.asarray(feats, np.float64)
        d = f[:, None, :] - self.means[None]  # (N, K, D)
        # (d P) . d as a matrix product: a plain einsum over n, k, d, e runs one scalar loop
        # (~4 ms for a batch of 32 here, a few % of a page's cost); this is ~0.1 ms.
        m = np.einsum("nke,nke->nk", d @ self.precision, d)
        return np.sqrt(np.maximum(m.min(axis=1), 0.0))

    def structure_reason(self, s: PageStructure | ReadingStructure) -> str | None:
        """Why the page is out of scope by its structure alone, or None."""
        if isinstance(s, ReadingStructure):
            return _reading_reason(s)
        c = self.cfg
        if not s.grid_found:
            if s.page_ink_fraction <= c.blank_ink_max and s.page_tint < 3.0:
                return "blank page"
            return "no ECG grid found"
        if s.trace_rows == 1:
            return "single lead, not a 12-lead report"
        out_of_range = not c.rows_min <= s.trace_rows <= c.rows_max
        # A row count of a known layout (6x2, 12x1) names the page even when its many traces
        # blur the grid's rhythm; any other odd count must first show a regular grid.
        if out_of_range and s.trace_rows in _LAYOUT_NAMES:
            return self._layout_reason(s.trace_rows)
        if s.grid_periodicity < c.periodicity_min:
            got, limit = _apart(s.grid_periodicity, c.periodicity_min, 0)
            return f"no regular ECG grid found (grid regularity {got} < {limit})"
        if s.trace_rows == 0 or s.ink_fraction < c.ink_min:
            return "grid without traces (blank grid)"
        if out_of_range:
            return self._layout_reason(s.trace_rows)
        return None

    def _layout_reason(self, rows: int) -> str:
        c = self.cfg
        name = _LAYOUT_NAMES.get(rows)
        known = _LAYOUT_NAMES.get(c.rows_typical, f"{c.rows_typical} rows of traces")
        shown = f"{name} ({rows} rows of traces)" if name else f"{rows} rows of traces"
        return f"layout not supported: {shown}; this model reads {known} pages"

    def assess(
        self,
        structures: Sequence[PageStructure | ReadingStructure | None],
        logits: np.ndarray,
        feats: np.ndarray | None,
    ) -> list[Verdict]:
        """Status, reason, calibrated probabilities and scores for a batch (a structure may be None:
        not measured)."""
        c = self.cfg
        probs = softmax(logits, c.temperature)
        dist = self.distance(feats) if feats is not None else np.full(len(logits), np.nan)
        if len(structures) != len(logits):
            raise ValueError(f"{len(structures)} page structures for {len(logits)} pages")
        out = []
        for i, st in enumerate(structures):
            conf = float(probs[i].max())
            reason = self.structure_reason(st) if st is not None else None
            status = "out_of_scope" if reason else "ok"
            if status == "ok" and np.isfinite(dist[i]) and dist[i] > c.distance_max:
                got, limit = _apart(dist[i], c.distance_max, 1)
                status, reason = (
                    "out_of_scope",
                    f"unlike the pages this model was trained on (feature distance {got} > {limit})",
                )
            if status == "ok" and conf < c.confidence_threshold:
                got, limit = _apart(conf, c.confidence_threshold, 2)
                status, reason = "low_confidence", f"model unsure: top probability {got} < {limit}"
            out.append(
                Verdict(
                    status=status,
                    reason=reason or "",
                    probs=probs[i],
                    confidence=conf,
                    feature_distance=None if not np.isfinite(dist[i]) else float(dist[i]),
                    structure=st,
                )
            )
        return out


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one page."""

    status: str  # one of STATUSES
    reason: str  # why it is not "ok" ("" when it is)
    probs: np.ndarray  # calibrated probabilities (classes,)
    confidence: float  # the top calibrated probability
    feature_distance: float | None  # Mahalanobis distance to the nearest class mean (None: not measured)
    structure: PageStructure | ReadingStructure | None


def ungated(logits: np.ndarray) -> list[Verdict]:
    """What a model without a fitted gate answers: every page "ok", plain softmax."""
    return [Verdict("ok", "", p, float(p.max()), None, None) for p in softmax(logits)]


def save_gate(gate: Gate, run: str | Path) -> None:
    """RUN/gate.json (+ gate.safetensors with the feature statistics)."""
    from safetensors.numpy import save_file

    r = Run(run)
    if gate.means is not None and gate.precision is not None:
        tmp = r.gate_tensors_file.with_name(f"{GATE_TENSORS}.{os.getpid()}.tmp")
        save_file({"means": gate.means.astype(np.float32), "precision": gate.precision.astype(np.float32)}, str(tmp))
        publish(tmp, r.gate_tensors_file)
    save_json(r.gate_file, gate.cfg.to_dict())


def load_gate(run: str | Path | None) -> Gate | None:
    """The gate stored with a run (or an exported model's folder), or None when none was fitted.
    A malformed gate file is a RunError naming it."""
    if run is None:
        return None
    r = Run(run)
    if not r.gate_file.exists():
        return None
    try:
        cfg = GateConfig.from_dict(read_json(r.gate_file))
    except TypeError as exc:
        raise RunError(f"{r.gate_file}: not an ecgvit gate file ({exc})") from None
    means = precision = None
    if r.gate_tensors_file.exists():
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            t = load_file(str(r.gate_tensors_file))
            means, precision = t["means"], t["precision"]
        except (SafetensorError, OSError, KeyError) as exc:
            raise RunError(f"{r.gate_tensors_file}: not a readable gate tensors file ({exc})") from None
    return Gate(cfg, means, precision)
