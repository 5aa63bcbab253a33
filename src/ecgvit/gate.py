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
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ecgvit.data.crop import CropResult, column_means, tint_map

__all__ = [
    "STATUSES",
    "PageStructure",
    "page_structure",
    "GateConfig",
    "Gate",
    "fit_temperature",
    "fit_gate",
    "load_gate",
    "save_gate",
]

STATUSES = ("ok", "low_confidence", "out_of_scope")
GATE_JSON = "gate.json"
GATE_TENSORS = "gate.safetensors"
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


def _log_fence(values: Sequence[float], side: str, domains: Sequence[int] | None = None, k: float = 3.0) -> float:
    """Tukey's far-out fence on log(values): Q1 - k IQR ("low") or Q3 + k IQR ("high").

    With `domains` (e.g. 0 = real pages, 1 = synthetic pretraining pages) each domain gets its
    own fence and the loosest is kept: a page typical of any kind the model learnt from passes.
    """
    v = np.log(np.maximum(np.asarray(values, np.float64), 1e-9))
    dom = np.zeros(len(v), int) if domains is None else np.asarray(domains)
    fences = []
    for d in np.unique(dom):
        q1, q3 = np.percentile(v[dom == d], [25, 75])
        iqr = q3 - q1
        fences.append(q1 - k * iqr if side == "low" else q3 + k * iqr)
    return float(np.exp(min(fences) if side == "low" else max(fences)))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on held-out pages."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)

    def nll(log_t: float) -> float:
        lp = log_softmax(logits / np.exp(log_t), axis=1)
        return float(-lp[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    from scipy.special import softmax

    return softmax(np.asarray(logits, np.float64) / temperature, axis=1).astype(np.float32)


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

    def structure_reason(self, s: PageStructure) -> str | None:
        """Why the page is out of scope by its structure alone, or None."""
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

    def assess(self, s: PageStructure | None, logits: np.ndarray, feats: np.ndarray | None) -> list[dict[str, Any]]:
        """Status, reason, calibrated probabilities and scores for a batch (structures may be None)."""
        c = self.cfg
        probs = softmax_t(logits, c.temperature)
        dist = self.distance(feats) if feats is not None else np.full(len(logits), np.nan)
        out = []
        structures = s if isinstance(s, list) else [s] * len(logits)
        for i in range(len(logits)):
            st = structures[i]
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
                {
                    "status": status,
                    "reason": reason or "",
                    "probs": probs[i],
                    "confidence": conf,
                    "feature_distance": None if not np.isfinite(dist[i]) else float(dist[i]),
                    "structure": None if st is None else st.to_dict(),
                }
            )
        return out


def fit_gate(
    structures: Sequence[PageStructure],
    feats: np.ndarray | None,
    labels: np.ndarray,
    cal_logits: np.ndarray | None,
    cal_labels: np.ndarray | None,
    fitted_on: dict[str, Any] | None = None,
    domains: Sequence[int] | None = None,
) -> Gate:
    """Fit every threshold from training pages (structures, features, labels) and the
    temperature + confidence threshold from held-out pages (cal_logits, cal_labels)."""
    from sklearn.covariance import LedoitWolf

    if len(structures) < 8:
        raise ValueError(f"fit_gate needs at least 8 training pages, got {len(structures)}")
    labels = np.asarray(labels, np.int64)
    dom = np.zeros(len(structures), int) if domains is None else np.asarray(domains, int)
    gi = [i for i, s in enumerate(structures) if s.grid_found]
    grid = [structures[i] for i in gi]
    gdom = dom[gi]
    if len(grid) < 0.5 * len(structures):
        raise ValueError(
            f"the crop stage found a grid on only {len(grid)} of {len(structures)} training pages: these pages do not look like ECG report pages"
        )
    rows = np.array([s.trace_rows for s in grid])
    lo, hi = np.percentile(rows, [0.5, 99.5])
    cfg = GateConfig(
        periodicity_min=_log_fence([s.grid_periodicity for s in grid], "low", gdom),
        ink_min=_log_fence([s.ink_fraction for s in grid], "low", gdom),
        rows_min=max(2, int(np.floor(lo)) - 1),
        rows_max=int(np.ceil(hi)) + 1,
        rows_typical=int(np.bincount(rows).argmax()),
        # Training pages always show a grid, so their whole-page ink is not measured (0): the
        # blank-page level is the grid-area ink of the sparsest training page, a tenth of it.
        blank_ink_max=float(min(s.ink_fraction for s in grid)) * 0.1,
        fitted_on=dict(fitted_on or {}),
    )
    means = precision = None
    if feats is not None:
        f = np.asarray(feats, np.float64)
        present = np.unique(labels)
        means = np.stack([f[labels == k].mean(axis=0) for k in present])
        centred = f - means[np.searchsorted(present, labels)]
        precision = LedoitWolf().fit(centred).precision_
        g = Gate(cfg, means, precision)
        cfg.distance_max = _log_fence(g.distance(f), "high", dom)
    if cal_logits is not None and cal_labels is not None and len(cal_labels) >= 4:
        cal_labels = np.asarray(cal_labels, np.int64)
        cfg.temperature = fit_temperature(cal_logits, cal_labels)
        p = softmax_t(cal_logits, cfg.temperature)
        right = p.argmax(1) == cal_labels
        conf = p.max(1)
        # Flag the least sure 5% of the answers that were right on held-out pages: whatever
        # falls below that is rarer than 1 in 20 right answers.
        cfg.confidence_threshold = float(np.percentile(conf[right], 5)) if right.any() else 0.0
        cfg.fitted_on["calibration_pages"] = int(len(cal_labels))
        cfg.fitted_on["flagged_right"] = float((conf[right] < cfg.confidence_threshold).mean()) if right.any() else 0.0
        cfg.fitted_on["flagged_wrong"] = (
            float((conf[~right] < cfg.confidence_threshold).mean()) if (~right).any() else None
        )
    cfg.fitted_on["n_training_pages"] = int(len(structures))
    return Gate(cfg, means, precision)


def save_gate(gate: Gate, run: str | Path) -> None:
    from safetensors.numpy import save_file

    from ecgvit.config import save_json

    run = Path(run)
    if gate.means is not None:
        tmp = run / (GATE_TENSORS + ".tmp")
        save_file({"means": gate.means.astype(np.float32), "precision": gate.precision.astype(np.float32)}, str(tmp))
        tmp.replace(run / GATE_TENSORS)
    save_json(run / GATE_JSON, gate.cfg.to_dict())


def load_gate(run: str | Path | None) -> Gate | None:
    """The gate stored with a run (or an exported model's folder), or None when none was fitted."""
    if run is None:
        return None
    run = Path(run)
    js = run / GATE_JSON
    if not js.exists():
        return None
    cfg = GateConfig.from_dict(json.loads(js.read_text()))
    means = precision = None
    if (run / GATE_TENSORS).exists():
        from safetensors.numpy import load_file

        t = load_file(str(run / GATE_TENSORS))
        means, precision = t["means"], t["precision"]
    return Gate(cfg, means, precision)


# --- fitting a run's gate (`ecgvit calibrate`) ---------------------------------------------


def measure_pages(
    predictor: Any, items: Sequence[Any], batch_size: int = 32, progress: bool = False
) -> tuple[list[PageStructure | None], np.ndarray, np.ndarray, list[str | None]]:
    """(structures, logits, features, errors) for pages, read the way `predictor` reads them.

    A page that cannot be decoded gets structure None, NaN logits/features and its reason."""
    from tqdm.auto import tqdm

    from ecgvit.data.crop import find_trace_box
    from ecgvit.data.io import BadImageError

    structures: list[PageStructure | None] = []
    errors: list[str | None] = []
    arrays: list[np.ndarray | None] = []
    for it in tqdm(items, desc="gate", unit="page", disable=not progress):
        try:
            ld = predictor.load(it, keep_image=True)
        except BadImageError as exc:
            structures.append(None)
            errors.append(exc.reason)
            arrays.append(None)
            continue
        crop = find_trace_box(ld.image) if ld.crop_detected is None else None
        st = ld.structure or page_structure(ld.image, crop or _crop_of(ld))
        structures.append(st)
        errors.append(None)
        arrays.append(ld.array)
    ok = [i for i, a in enumerate(arrays) if a is not None]
    k = len(predictor.classes)
    logits = np.full((len(items), k), np.nan, np.float32)
    feats: np.ndarray | None = None
    for s in range(0, len(ok), batch_size):
        idx = ok[s : s + batch_size]
        lg, f = predictor.infer_logits(np.stack([arrays[i] for i in idx]), features=True)
        logits[idx] = lg
        if f is not None:
            if feats is None:
                feats = np.full((len(items), f.shape[1]), np.nan, np.float32)
            feats[idx] = f
    return structures, logits, feats, errors


def _crop_of(ld: Any) -> CropResult:
    """The crop box of a Loaded input, in the pixels of its decoded (possibly draft) image."""
    sx = ld.image.size[0] / ld.full_size[0]
    sy = ld.image.size[1] / ld.full_size[1]
    l, t, r, b = ld.box
    return CropResult((round(l * sx), round(t * sy), round(r * sx), round(b * sy)), bool(ld.crop_detected), "")


def calibrate(
    run: str | Path,
    data: str | Path | None = None,
    oof: str | Path | None = None,
    synthetic_per_class: int = 25,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit RUN's gate and temperature and save them beside its weights (RUN/gate.json).

    Training pages: RUN/pages.csv's train part (else every page of `data`), plus synthetic
    pages like those it was pretrained on. Held-out pages for the temperature: RUN/pages.csv's
    val part, else `oof` (a CSV with label and p_<class> columns from a cross-validation of the
    same recipe: `ecgvit cv` writes one), else none (temperature 1, no low-confidence threshold).
    """
    import csv
    import tempfile

    from ecgvit.predict import Predictor

    run = Path(run)
    for f in (GATE_JSON, GATE_TENSORS):  # fit with the raw model, not a previous gate
        (run / f).unlink(missing_ok=True)
    pred = Predictor(run, backend="torch")
    classes = pred.classes
    train_items: list[str] = []
    train_y: list[int] = []
    train_dom: list[int] = []
    val_items: list[str] = []
    val_y: list[int] = []
    pages_csv = run / "pages.csv"
    if pages_csv.exists():
        for row in csv.DictReader(open(pages_csv)):
            (train_items if row["part"] == "train" else val_items).append(row["path"])
            (train_y if row["part"] == "train" else val_y).append(classes.index(row["label"]))
        source = str(pages_csv)
    elif data is not None:
        from ecgvit.train import load_pageset

        ps = load_pageset(data, progress=False)
        train_items = list(ps.paths)
        train_y = [classes.index(ps.classes[i]) for i in ps.labels]
        source = str(data)
    else:
        raise ValueError(f"{run}: no pages.csv; pass --data with the pages it was trained on")
    meta = pred.meta
    tcfg = meta.get("train", {})
    synth_n = (
        int(synthetic_per_class) if tcfg.get("pretrain_per_class", 0) and set(classes) <= set(_synth_classes()) else 0
    )
    with tempfile.TemporaryDirectory(prefix="ecgvit-gate-") as tmp:
        if synth_n:
            from ecgvit.synth import generate

            # The same generator and seed as the synthetic pretraining: pages the model trained on.
            generate(tmp, per_class=synth_n, seed=int(tcfg.get("pretrain_seed", 100)), workers=1, progress=False)
            for c in classes:
                for p in sorted(Path(tmp, c).glob("*.jpg")):
                    train_items.append(str(p))
                    train_y.append(classes.index(c))
                    train_dom.append(1)
        train_dom = [0] * (len(train_items) - len(train_dom)) + train_dom
        st, logits, feats, errs = measure_pages(pred, train_items, progress=progress)
    keep = [i for i, e in enumerate(errs) if e is None]
    cal_logits = cal_y = None
    cal_source = None
    if val_items:
        vst, vlog, _, verr = measure_pages(pred, val_items, progress=progress)
        vk = [i for i, e in enumerate(verr) if e is None]
        cal_logits, cal_y, cal_source = vlog[vk], np.array(val_y)[vk], f"{len(vk)} validation pages of {pages_csv}"
    elif oof is not None:
        rows = list(csv.DictReader(open(oof)))
        missing = [f"p_{c}" for c in classes if f"p_{c}" not in rows[0]]
        if missing:
            raise ValueError(f"{oof}: no column(s) {', '.join(missing)}; expected the oof.csv `ecgvit cv` writes")
        p = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
        cal_logits = np.log(np.clip(p, 1e-6, 1.0))  # log-probabilities are logits up to a constant
        cal_y = np.array([classes.index(r["label"]) for r in rows])
        cal_source = f"{len(rows)} out-of-fold predictions in {oof}"
    gate = fit_gate(
        [st[i] for i in keep],
        None if feats is None else feats[keep],
        np.array(train_y)[keep],
        cal_logits,
        cal_y,
        fitted_on={
            "training_pages": source,
            "synthetic_pages": synth_n * len(classes),
            "calibration": cal_source or "none (temperature 1)",
        },
        domains=np.array(train_dom)[keep],
    )
    save_gate(gate, run)
    out = gate.cfg.to_dict()
    if cal_logits is not None:
        from ecgvit.evaluate import expected_calibration_error

        out["ece_before"] = expected_calibration_error(cal_y, softmax_t(cal_logits, 1.0))[0]
        out["ece_after"] = expected_calibration_error(cal_y, softmax_t(cal_logits, gate.cfg.temperature))[0]
    train_status = gate.assess([st[i] for i in keep], logits[keep], None if feats is None else feats[keep])
    out["training_pages_rejected"] = int(sum(v["status"] == "out_of_scope" for v in train_status))
    from collections import Counter

    out["training_rejection_reasons"] = dict(
        Counter(v["reason"].split(" (")[0] for v in train_status if v["status"] == "out_of_scope")
    )
    out["unreadable_training_pages"] = len(errs) - len(keep)
    return out


def _synth_classes() -> tuple[str, ...]:
    from ecgvit.synth.signals import CLASSES

    return tuple(CLASSES)


def format_calibration(s: dict[str, Any]) -> str:
    lines = [
        f"temperature {s['temperature']:.3f}"
        + (
            f"  (ECE {s['ece_before']:.3f} -> {s['ece_after']:.3f} on the calibration pages)"
            if "ece_before" in s
            else ""
        ),
        f"low confidence below p = {s['confidence_threshold']:.3f}",
        f"grid regularity >= {s['periodicity_min']:.1f}, ink fraction >= {s['ink_min']:.4f}, rows of traces {s['rows_min']}-{s['rows_max']}",
        f"feature distance <= {s['distance_max']:.2f}"
        if s.get("distance_max") is not None
        else "no feature-distance check",
        f"training pages rejected by the fitted gate: {s['training_pages_rejected']}",
        f"fitted on: {s['fitted_on']}",
    ]
    return "\n".join(lines)
