"""Fitting a run's out-of-scope gate and temperature (`ecgvit calibrate`).

Every threshold is a fixed rule applied to the training pages' own values (Tukey's far-out
fence on a log scale; the row-count range seen, one row of slack); the temperature minimises
the NLL on held-out pages. What is fitted is saved beside the weights (RUN/gate.json) and
applied at prediction time by `ecgvit.runtime.gate.Gate`.
"""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.covariance import LedoitWolf
from tqdm.auto import tqdm

from ecgvit.data.crop import CropResult, find_trace_box
from ecgvit.data.io import BadImageError
from ecgvit.data.pageset import load_pageset
from ecgvit.metrics import expected_calibration_error, softmax
from ecgvit.run import Run
from ecgvit.runtime.gate import (
    Gate,
    GateConfig,
    PageStructure,
    ReadingStructure,
    page_structure,
    reading_structure,
    save_gate,
)
from ecgvit.runtime.inputs import Loaded
from ecgvit.runtime.predictor import Predictor
from ecgvit.synth import generate
from ecgvit.synth.signals import CLASSES as SYNTH_CLASSES

__all__ = ["calibrate", "fit_gate", "fit_temperature", "format_calibration", "measure_pages"]


def _log_fence(
    values: Sequence[float] | np.ndarray, side: str, domains: Sequence[int] | np.ndarray | None = None, k: float = 3.0
) -> float:
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
    logits = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)

    def nll(log_t: float) -> float:
        lp = log_softmax(logits / np.exp(log_t), axis=1)
        return float(-lp[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def fit_gate(
    structures: Sequence[PageStructure | ReadingStructure],
    feats: np.ndarray | None,
    labels: np.ndarray,
    cal_logits: np.ndarray | None,
    cal_labels: np.ndarray | None,
    fitted_on: dict[str, Any] | None = None,
    domains: Sequence[int] | np.ndarray | None = None,
) -> Gate:
    """Fit every threshold from training pages (structures, features, labels) and the
    temperature + confidence threshold from held-out pages (cal_logits, cal_labels)."""
    if len(structures) < 8:
        raise ValueError(f"fit_gate needs at least 8 training pages, got {len(structures)}")
    labels = np.asarray(labels, np.int64)
    dom = np.zeros(len(structures), int) if domains is None else np.asarray(domains, int)
    if all(isinstance(s, ReadingStructure) for s in structures):
        # a model on the reader's leads: the page's structure is judged by the reader's rules
        # (a layout, 12 leads, a scale), nothing to fit; the feature distance and the
        # confidence are fitted below as for any model
        cfg = GateConfig(rows_min=0, rows_typical=0, fitted_on=dict(fitted_on or {}))
        cfg.fitted_on["structure"] = "page reader: a layout, 12 leads and a scale (grid or pulse)"
        return _fit_scores(cfg, structures, feats, labels, cal_logits, cal_labels, dom)
    gi = [i for i, s in enumerate(structures) if isinstance(s, PageStructure) and s.grid_found]
    grid = [s for s in (structures[i] for i in gi) if isinstance(s, PageStructure)]
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
    return _fit_scores(cfg, structures, feats, labels, cal_logits, cal_labels, dom)


def _fit_scores(
    cfg: GateConfig,
    structures: Sequence[PageStructure | ReadingStructure],
    feats: np.ndarray | None,
    labels: np.ndarray,
    cal_logits: np.ndarray | None,
    cal_labels: np.ndarray | None,
    dom: np.ndarray,
) -> Gate:
    """The feature-distance fence (training pages) and temperature + confidence threshold
    (held-out pages) of `fit_gate`."""
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
        p = softmax(cal_logits, cfg.temperature)
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


def measure_pages(
    predictor: Predictor, items: Sequence[Any], batch_size: int = 32, progress: bool = False
) -> tuple[list[PageStructure | ReadingStructure | None], np.ndarray, np.ndarray | None, list[str | None]]:
    """(structures, logits, features, errors) for pages, read the way `predictor` reads them.

    A page that cannot be decoded gets structure None, NaN logits/features and its reason."""
    structures: list[PageStructure | ReadingStructure | None] = []
    errors: list[str | None] = []
    arrays: dict[int, np.ndarray] = {}
    for n, it in enumerate(tqdm(items, desc="gate", unit="page", disable=not progress)):
        try:
            ld = predictor.load(it, keep_image=True)
        except BadImageError as exc:
            structures.append(None)
            errors.append(exc.reason)
            continue
        assert ld.image is not None  # keep_image=True
        crop = find_trace_box(ld.image) if ld.crop_detected is None else None
        if ld.structure is not None:
            st: PageStructure | ReadingStructure = ld.structure
        elif ld.reading is not None:
            st = reading_structure(ld.reading)
        else:
            st = page_structure(ld.image, crop or _crop_of(ld))
        structures.append(st)
        errors.append(None)
        arrays[n] = ld.array
    ok = sorted(arrays)
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


def _crop_of(ld: Loaded) -> CropResult:
    """The crop box of a Loaded input, in the pixels of its decoded (possibly draft) image."""
    assert ld.image is not None, "load with keep_image=True"
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
    run = Path(run)
    r = Run(run).check()
    for stale in (r.gate_file, r.gate_tensors_file):  # fit with the raw model, not a previous gate
        stale.unlink(missing_ok=True)
    pred = Predictor(run, backend="torch")
    classes = pred.classes
    train_items: list[str] = []
    train_y: list[int] = []
    train_dom: list[int] = []
    val_items: list[str] = []
    val_y: list[int] = []
    pages_csv = Run(run).pages_file
    if pages_csv.exists():
        with open(pages_csv, newline="") as f:
            page_rows = list(csv.DictReader(f))
        for row in page_rows:
            (train_items if row["part"] == "train" else val_items).append(row["path"])
            (train_y if row["part"] == "train" else val_y).append(classes.index(row["label"]))
        source = str(pages_csv)
    elif data is not None:
        ps = load_pageset(data, progress=False)
        train_items = list(ps.paths)
        train_y = [classes.index(ps.classes[i]) for i in ps.labels]
        source = str(data)
    else:
        raise ValueError(f"{run}: no pages.csv; pass --data with the pages it was trained on")
    meta = pred.meta
    tcfg = meta.get("train", {})
    synth_n = (
        int(synthetic_per_class) if tcfg.get("pretrain_per_class", 0) and set(classes) <= set(SYNTH_CLASSES) else 0
    )
    with tempfile.TemporaryDirectory(prefix="ecgvit-gate-") as tmp:
        if synth_n:
            # The same generator and seed as the synthetic pretraining: pages the model trained on.
            # A model on the reader's leads learnt every style and layout, clean and lightly
            # distorted: each part is its own domain, so a page typical of any of them passes.
            seed = int(tcfg.get("pretrain_seed", 100))
            parts: list[tuple[str, dict[str, Any]]] = [(".", {})]
            if pred.preprocess.reads_leads:
                parts = [
                    ("clean", {"style": "random", "layout": "random"}),
                    ("light", {"style": "random", "layout": "random", "distort": "light"}),
                ]
            for d, (sub, kw) in enumerate(parts, start=1):
                generate(Path(tmp, sub), per_class=synth_n, seed=seed + d - 1, workers=1, progress=False, **kw)
                for c in classes:
                    for p in sorted(Path(tmp, sub, c).glob("*.jpg")):
                        train_items.append(str(p))
                        train_y.append(classes.index(c))
                        train_dom.append(d)
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
        with open(oof, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = [f"p_{c}" for c in classes if f"p_{c}" not in rows[0]]
        if missing:
            raise ValueError(f"{oof}: no column(s) {', '.join(missing)}; expected the oof.csv `ecgvit cv` writes")
        oof_probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
        cal_logits = np.log(np.clip(oof_probs, 1e-6, 1.0))  # log-probabilities are logits up to a constant
        cal_y = np.array([classes.index(r["label"]) for r in rows])
        cal_source = f"{len(rows)} out-of-fold predictions in {oof}"
    measured = [s for s in (st[i] for i in keep) if s is not None]  # a readable page always has its structure
    gate = fit_gate(
        measured,
        None if feats is None else feats[keep],
        np.array(train_y)[keep],
        cal_logits,
        cal_y,
        fitted_on={
            "training_pages": source,
            "synthetic_pages": sum(d > 0 for d in train_dom),
            "calibration": cal_source or "none (temperature 1)",
        },
        domains=np.array(train_dom)[keep],
    )
    save_gate(gate, run)
    out = gate.cfg.to_dict()
    if cal_logits is not None and cal_y is not None:
        out["ece_before"] = expected_calibration_error(cal_y, softmax(cal_logits, 1.0))[0]
        out["ece_after"] = expected_calibration_error(cal_y, softmax(cal_logits, gate.cfg.temperature))[0]
    train_status = gate.assess([st[i] for i in keep], logits[keep], None if feats is None else feats[keep])
    out["training_pages_rejected"] = int(sum(v.status == "out_of_scope" for v in train_status))
    out["training_rejection_reasons"] = dict(
        Counter(v.reason.split(" (")[0] for v in train_status if v.status == "out_of_scope")
    )
    out["unreadable_training_pages"] = len(errs) - len(keep)
    return out


def format_calibration(s: dict[str, Any]) -> str:
    lines = [
        f"temperature {s['temperature']:.3f}"
        + (
            f"  (ECE {s['ece_before']:.3f} -> {s['ece_after']:.3f} on the calibration pages)"
            if "ece_before" in s
            else ""
        ),
        f"low confidence below p = {s['confidence_threshold']:.3f}",
        f"page structure: {s['fitted_on']['structure']}"
        if "structure" in s.get("fitted_on", {})
        else f"grid regularity >= {s['periodicity_min']:.1f}, ink fraction >= {s['ink_min']:.4f}, rows of traces {s['rows_min']}-{s['rows_max']}",
        f"feature distance <= {s['distance_max']:.2f}"
        if s.get("distance_max") is not None
        else "no feature-distance check",
        f"training pages rejected by the fitted gate: {s['training_pages_rejected']}",
        f"fitted on: {s['fitted_on']}",
    ]
    return "\n".join(lines)
