"""Pure metric functions: confusion counts, scores, calibration error, intervals, softmax.

Metrics come from scikit-learn. The bootstrap (1000 resamples of pages) recomputes accuracy,
balanced accuracy and F1 from a confusion matrix with numpy instead, because calling sklearn
thousands of times per evaluation costs seconds for nothing; tests check both agree.
No torch here: the ONNX prediction path uses `softmax` too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "compute_metrics",
    "confusion",
    "expected_calibration_error",
    "scores_from_confusion",
    "softmax",
    "wilson_interval",
]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, computed in float64, returned as float32.

    The one softmax of the package: prediction (both backends), the gate, evaluation and
    training's validation all turn logits into probabilities here."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def confusion(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + p, minlength=k * k).reshape(k, k)


def scores_from_confusion(cm: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """accuracy, balanced accuracy (classes present), macro-F1 (classes present), per-class F1."""
    tp = np.diag(cm).astype(float)
    support = cm.sum(1).astype(float)
    predicted = cm.sum(0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    acc = tp.sum() / max(1.0, cm.sum())
    return float(acc), float(recall[present].mean()), float(f1[present].mean()), f1


def expected_calibration_error(
    y: np.ndarray, probs: np.ndarray, bins: int = 15
) -> tuple[float, dict[str, list[float]]]:
    """ECE of the top-class confidence (equal-width bins) and the reliability-diagram points."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    ece, centers, accs, confs, counts = 0.0, [], [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
            centers.append((lo + hi) / 2)
            accs.append(float(correct[m].mean()))
            confs.append(float(conf[m].mean()))
            counts.append(int(m.sum()))
    return float(ece), {"bin_center": centers, "accuracy": accs, "confidence": confs, "count": counts}


def compute_metrics(
    y: np.ndarray, probs: np.ndarray, classes: list[str], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """All the numbers `evaluate` reports, as a JSON-ready dict."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(y, dtype=int)
    probs = np.asarray(probs, dtype=float)
    k = len(classes)
    pred = probs.argmax(1)
    labels = list(range(k))
    present = sorted(set(y.tolist()))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(y) else 0.0,
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(sup[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    auc: dict[str, float | None] = {}
    for i, c in enumerate(classes):
        pos = y == i
        auc[c] = float(roc_auc_score(pos, probs[:, i])) if 0 < pos.sum() < len(y) else None
    valid = [v for v in auc.values() if v is not None]
    out["roc_auc_ovr"] = {"per_class": auc, "macro": float(np.mean(valid)) if valid else None}
    ece, rel = expected_calibration_error(y, probs)
    out["ece"] = ece
    out["reliability"] = rel

    # Bootstrap over pages: 95 % percentile intervals.
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, 3 + k))
    for b in range(n_boot):
        s = rng.integers(0, len(y), len(y))
        acc, bal, mf1, cf1 = scores_from_confusion(confusion(y[s], pred[s], k))
        boots[b, :3] = acc, bal, mf1
        boots[b, 3:] = cf1
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0) if n_boot else (np.zeros(3 + k), np.zeros(3 + k))
    out["ci95"] = {
        "accuracy": [float(lo[0]), float(hi[0])],
        "balanced_accuracy": [float(lo[1]), float(hi[1])],
        "macro_f1": [float(lo[2]), float(hi[2])],
        "per_class_f1": {c: [float(lo[3 + i]), float(hi[3 + i])] for i, c in enumerate(classes)},
        "method": f"percentile bootstrap over pages, {n_boot} resamples, seed {seed}",
    }
    # Wilson intervals for per-class recall: exact-enough for small classes, no resampling noise.
    for i, c in enumerate(classes):
        n_c = int(sup[i])
        out["per_class"][c]["recall_ci95"] = list(wilson_interval(int(round(rec[i] * n_c)), n_c))
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (float(max(0.0, mid - half)), float(min(1.0, mid + half)))
