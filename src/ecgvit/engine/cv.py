"""Repeated grouped stratified k-fold cross-validation.

    ecgvit cv --data DIR --model NAME --folds 5 [--repeats R] --out DIR

One training per (repeat, fold), scored on its fold with a fixed number of epochs and the last
epoch kept; folds.csv, oof.csv and cv.json are written as it goes, and a finished fold is reused
when the run is restarted with the same settings.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ecgvit.config import PreprocessConfig, SplitConfig, TrainConfig, save_json, saved_train_settings, to_dict
from ecgvit.data.index import index_dataset
from ecgvit.data.manifest import read_manifest, write_manifest
from ecgvit.data.preprocess import load_arrays
from ecgvit.data.split import make_splits
from ecgvit.engine.evaluate import format_metrics
from ecgvit.engine.teachers import fold_teacher, resolve_teacher
from ecgvit.engine.train import train
from ecgvit.metrics import compute_metrics
from ecgvit.models.inference import predict_proba
from ecgvit.run import LOCK_FILE, Run, exclusive, load_run, read_json

log = logging.getLogger("ecgvit")


def _same_setting(a: Any, b: Any) -> bool:
    """Two recorded settings agree; paths (a teacher's run, initial weights) by the file they name."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        return all(os.path.exists(x) for x in a.split(",") + b.split(",")) and [
            os.path.realpath(x) for x in a.split(",")
        ] == [os.path.realpath(x) for x in b.split(",")]
    return False


def cross_validate(
    data: str | Path,
    out: str | Path,
    model: str | None = None,
    folds: int = 5,
    repeats: int = 1,
    train_overrides: dict[str, Any] | None = None,
    preprocess: PreprocessConfig | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
    split_seed: int | None = None,
) -> dict[str, Any]:
    """Repeated grouped stratified k-fold: one training per (repeat, fold), scored on its fold.

    Repeat r assigns folds with seed split_seed + r and trains with seed + r (the training
    seed is TrainConfig.seed, from train_overrides). split_seed defaults to that seed; giving
    the same split_seed with another seed retrains on the very same folds with other random
    draws, which is how two recipes (or one recipe twice) are compared fairly."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out / LOCK_FILE, f"CV folder {out}"):
        return _cross_validate(
            data, out, model, folds, repeats, train_overrides, preprocess, cache_root, progress, split_seed
        )


def _cross_validate(
    data: str | Path,
    out: Path,
    model: str | None,
    folds: int,
    repeats: int,
    train_overrides: dict[str, Any] | None,
    preprocess: PreprocessConfig | None,
    cache_root: str | Path | None,
    progress: bool,
    split_seed: int | None,
) -> dict[str, Any]:
    data = Path(data)
    manifest = out / "manifest.csv"
    if data.is_dir():
        index_dataset(data, out=manifest, progress=progress)
    else:
        write_manifest(read_manifest(data), manifest)
    settings: dict[str, Any] = {**({"model": model} if model else {}), **(train_overrides or {})}
    base = resolve_teacher(TrainConfig(**settings))
    fold_rows: list[dict[str, Any]] = []
    oof: list[tuple[int, int, str, int, np.ndarray]] = []
    classes: list[str] = []
    t_all = time.time()
    for r in range(repeats):
        split_file = out / f"splits_r{r}.csv"
        fresh = out / f"splits_r{r}.new.csv"
        make_splits(
            manifest, SplitConfig(folds=folds, seed=(base.seed if split_seed is None else split_seed) + r), out=fresh
        )
        started = any(Run(out / f"r{r}_fold{k}").pages_file.exists() for k in range(folds))
        if started and split_file.exists() and split_file.read_bytes() != fresh.read_bytes():
            fresh.unlink()
            fresh.with_suffix(".json").unlink(missing_ok=True)
            raise ValueError(
                f"{out} holds folds of another split ({split_file}; other --split-seed, --folds or data): give another --out"
            )
        os.replace(fresh, split_file)
        os.replace(fresh.with_suffix(".json"), split_file.with_suffix(".json"))
        for k in range(folds):
            run_dir = out / f"r{r}_fold{k}"
            # Fixed epochs, last epoch kept: nothing is chosen by looking at the fold being scored.
            cfg = replace(base, split=str(split_file), fold=k, seed=base.seed + r, keep="last", patience=0, gate=False)
            if base.teacher:
                cfg = replace(cfg, teacher=",".join(fold_teacher(t, run_dir.name) for t in base.teacher.split(",")))
            t0 = time.time()
            fold_run = Run(run_dir)
            saved = read_json(fold_run.config_file) if fold_run.config_file.exists() else {}
            done = bool(saved.get("finished"))
            if done:  # reused only if it was trained the way this call asks
                want = to_dict(cfg)
                # The split file's content was checked above, whatever its path; threads change no result.
                was = saved_train_settings(saved.get("train", {}))
                differ = sorted(
                    k
                    for k, v in was.items()
                    if k in want and k not in ("split", "threads") and not _same_setting(want[k], v)
                )
                if differ:
                    what = ", ".join(f"{k}={was[k]!r}, asked {want[k]!r}" for k in differ)
                    raise ValueError(f"{run_dir} was trained with other settings ({what}): give another --out")
            if not done:  # a finished fold is kept: an interrupted CV run resumes where it stopped
                train(
                    manifest,
                    run_dir,
                    cfg,
                    preprocess=preprocess,
                    resume=fold_run.resume_file.exists(),
                    progress=progress,
                    cache_root=cache_root,
                )
            secs = time.time() - t0
            lr = load_run(run_dir)
            classes = lr.classes
            with open(fold_run.pages_file, newline="") as f:
                pages = [row for row in csv.DictReader(f) if row["part"] == "val"]
            x = load_arrays(
                [p["path"] for p in pages],
                [p["md5"] for p in pages],
                cfg=lr.preprocess,
                cache_root=cache_root,
                workers=1,
            )
            probs = predict_proba(lr.model, x)
            y = np.array([classes.index(p["label"]) for p in pages])
            m = compute_metrics(y, probs, classes, n_boot=200)
            fold_rows.append(
                {
                    "repeat": r,
                    "fold": k,
                    "n": m["n"],
                    "accuracy": m["accuracy"],
                    "macro_f1": m["macro_f1"],
                    "balanced_accuracy": m["balanced_accuracy"],
                    "ece": m["ece"],
                    "best_epoch": lr.meta.get("best", {}).get("epoch"),
                    "train_seconds": round(secs, 1),
                    **{f"recall_{c}": m["per_class"][c]["recall"] for c in classes},
                }
            )
            for p, yi, pr in zip(pages, y, probs, strict=False):
                oof.append((r, k, p["path"], int(yi), pr))
            if progress:
                log.info(
                    f"repeat {r} fold {k}: accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  ({secs:.0f}s)"
                )
            with open(out / "folds.csv", "w", newline="") as f:  # rewritten each fold: progress survives a kill
                dw = csv.DictWriter(f, fieldnames=list(fold_rows[0]))
                dw.writeheader()
                dw.writerows(fold_rows)
    with open(out / "oof.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["repeat", "fold", "path", "label", *[f"p_{c}" for c in classes]])
        for rep, fold, path, yi, pr in oof:
            w.writerow([rep, fold, path, classes[yi], *[f"{v:.5f}" for v in pr]])
    summary: dict[str, Any] = {
        "folds": folds,
        "repeats": repeats,
        "split_seed": base.seed if split_seed is None else split_seed,
        "model": base.model,
        "train": {k: v for k, v in vars(base).items()},
        "seconds": round(time.time() - t_all, 1),
    }
    for key in ("accuracy", "macro_f1", "balanced_accuracy", "ece"):
        vals = np.array([row[key] for row in fold_rows])
        summary[key] = {"mean": float(vals.mean()), "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    # Pooled out-of-fold predictions of the first repeat: every page scored once, with intervals.
    first = [o for o in oof if o[0] == 0]
    summary["pooled_repeat0"] = compute_metrics(
        np.array([o[3] for o in first]), np.stack([o[4] for o in first]), classes
    )
    summary["per_fold"] = fold_rows
    save_json(out / "cv.json", summary)
    return summary


def format_cv(s: dict[str, Any]) -> str:
    lines = [
        f"{'repeat':>6}{'fold':>5}{'n':>5}{'accuracy':>10}{'macro-F1':>10}{'bal.acc':>9}{'epoch':>7}{'seconds':>9}"
    ]
    for r in s["per_fold"]:
        lines.append(
            f"{r['repeat']:>6}{r['fold']:>5}{r['n']:>5}{r['accuracy']:>10.3f}{r['macro_f1']:>10.3f}{r['balanced_accuracy']:>9.3f}{str(r['best_epoch']):>7}{r['train_seconds']:>9.0f}"
        )
    lines.append(
        f"mean ± sd over {len(s['per_fold'])} folds: accuracy {s['accuracy']['mean']:.3f} ± {s['accuracy']['sd']:.3f}   "
        f"macro-F1 {s['macro_f1']['mean']:.3f} ± {s['macro_f1']['sd']:.3f}   balanced acc {s['balanced_accuracy']['mean']:.3f} ± {s['balanced_accuracy']['sd']:.3f}"
    )
    lines.append("pooled out-of-fold (repeat 0):\n" + format_metrics(s["pooled_repeat0"]))
    return "\n".join(lines)
