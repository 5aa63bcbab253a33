"""Would per-class decision offsets raise macro-F1? Nested, from a CV's out-of-fold predictions.

    python benchmarks/oof_bias.py runs/cv_e90 [runs/cv_e90_s1 ...]

The model trains on class-balanced batches, so its probabilities assume equal class priors;
the pages it is scored on are not balanced (abnormal heartbeat 47 %, MI 6 %). Adding an offset
per class to the log-probabilities before the argmax moves the decision boundaries at no
inference cost. Two families, each fitted *without the fold it is scored on* (for fold k: on
the out-of-fold predictions of the other folds of the same CV run, by their pooled macro-F1),
so no page is scored by offsets that saw it:

  prior tau   b_c = tau * log(prior_c), prior from the other folds' labels; one number
              (tau 0: the model as it is; 1: the Bayes correction for accuracy)
  free        b (one offset per class, the first fixed at 0), coordinate ascent on a grid

Ties (macro-F1 is piecewise constant) go to the offsets nearest 0. Prints, per CV run, the
fold-mean and pooled macro-F1 of the model as it is and of each family, and the offsets fitted.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

TAUS = np.round(np.arange(-0.5, 1.51, 0.05), 2)
GRID = np.round(np.arange(-2.0, 2.01, 0.1), 2)


def load(cv_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rows = [r for r in csv.DictReader(open(cv_dir / "oof.csv")) if r["repeat"] == "0"]
    if not rows:
        raise SystemExit(f"{cv_dir}/oof.csv: no rows of repeat 0")
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    logp = np.log(np.clip(np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]), 1e-6, None))
    y = np.array([classes.index(r["label"]) for r in rows])
    fold = np.array([int(r["fold"]) for r in rows])
    return classes, logp, y, fold


def macro_f1(y: np.ndarray, logp: np.ndarray, b: np.ndarray, k: int) -> float:
    return float(f1_score(y, (logp + b).argmax(1), average="macro", labels=list(range(k)), zero_division=0))


def fit_tau(y: np.ndarray, logp: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    prior = np.bincount(y, minlength=k) / len(y)
    lp = np.log(np.clip(prior, 1e-6, None))
    # Best score, then the smallest |tau| among equals.
    best = max(TAUS, key=lambda t: (round(macro_f1(y, logp, t * lp, k), 12), -abs(t)))
    return float(best), best * lp


def fit_free(y: np.ndarray, logp: np.ndarray, k: int, sweeps: int = 3) -> np.ndarray:
    b = np.zeros(k)
    for _ in range(sweeps):
        changed = False
        for c in range(1, k):

            def score(v: float, c: int = c) -> tuple[float, float]:
                bb = b.copy()
                bb[c] = v
                return round(macro_f1(y, logp, bb, k), 12), -abs(v)

            v = max(GRID, key=score)
            changed |= v != b[c]
            b[c] = v
        if not changed:
            break
    return b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cv_dirs", nargs="+", type=Path, help="finished `ecgvit cv` folders (each with oof.csv)")
    a = ap.parse_args()
    print(f"{'CV run':<22}{'offsets':<10}{'fold mean':>10}{'pooled':>8}{'accuracy':>10}  per fold / fitted")
    for d in a.cv_dirs:
        classes, logp, y, fold = load(d)
        k = len(classes)
        folds = sorted(set(fold))
        preds = {"none": np.zeros(len(y), int), "prior tau": np.zeros(len(y), int), "free": np.zeros(len(y), int)}
        fitted: dict[str, list[str]] = {"none": [], "prior tau": [], "free": []}
        for f in folds:
            tr, te = fold != f, fold == f
            preds["none"][te] = logp[te].argmax(1)
            tau, b = fit_tau(y[tr], logp[tr], k)
            preds["prior tau"][te] = (logp[te] + b).argmax(1)
            fitted["prior tau"].append(f"{tau:+.2f}")
            bf = fit_free(y[tr], logp[tr], k)
            preds["free"][te] = (logp[te] + bf).argmax(1)
            fitted["free"].append("(" + " ".join(f"{v:+.1f}" for v in bf[1:]) + ")")
        for name, p in preds.items():
            per = [
                f1_score(y[fold == f], p[fold == f], average="macro", labels=list(range(k)), zero_division=0)
                for f in folds
            ]
            extra = " ".join(f"{v:.3f}" for v in per) + ("   " + " ".join(fitted[name]) if fitted[name] else "")
            print(
                f"{d.name:<22}{name:<10}{np.mean(per):>10.3f}{f1_score(y, p, average='macro'):>8.3f}{accuracy_score(y, p):>10.3f}  {extra}"
            )
    print(f"(free offsets are for {', '.join(classes[1:])}; the first class, {classes[0]}, stays at 0)")


if __name__ == "__main__":
    main()
