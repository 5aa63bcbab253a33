"""What averaging two CV recipes' probabilities would score, from their out-of-fold predictions.

    python benchmarks/oof_ensemble.py runs/khan_cv/ecgvit-tiny runs/khan_cv/mobilenetv4_conv_small

Both folders must come from `ecgvit cv` / benchmarks/khan_cv.py on the same data and split seed
(same pages in the same folds; checked). No training: every page is still scored by models that
never saw it, so this measures an ensemble before anyone ships one.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def load_oof(cv_dir: str | Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    rows = list(csv.DictReader(open(Path(cv_dir) / "oof.csv")))
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    return classes, {r["path"]: r for r in rows if r["repeat"] == "0"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cv_dirs", nargs="+", help="two or more finished CV folders (each with oof.csv)")
    a = ap.parse_args()
    loaded = [load_oof(d) for d in a.cv_dirs]
    classes, first = loaded[0]
    keys = sorted(first)
    for d, (cls, rows) in zip(a.cv_dirs, loaded, strict=False):
        if cls != classes or set(rows) != set(keys) or any(rows[k]["fold"] != first[k]["fold"] for k in keys):
            raise SystemExit(f"{d}: not the same pages, classes and folds as {a.cv_dirs[0]}")
    y = np.array([classes.index(first[k]["label"]) for k in keys])
    fold = np.array([int(first[k]["fold"]) for k in keys])
    probs = [np.array([[float(rows[k][f"p_{c}"]) for c in classes] for k in keys]) for _, rows in loaded]
    print(f"{'recipe':<40}{'pooled macro-F1':>16}{'accuracy':>10}{'fold mean':>11}  per fold")
    for name, p in [
        *zip((Path(d).name for d in a.cv_dirs), probs, strict=False),
        ("mean of probabilities", np.mean(probs, axis=0)),
    ]:
        pred = p.argmax(1)
        per = [f1_score(y[fold == k], pred[fold == k], average="macro") for k in sorted(set(fold))]
        print(
            f"{name:<40}{f1_score(y, pred, average='macro'):>16.3f}{accuracy_score(y, pred):>10.3f}{np.mean(per):>11.3f}  "
            + " ".join(f"{v:.2f}" for v in per)
        )


if __name__ == "__main__":
    main()
