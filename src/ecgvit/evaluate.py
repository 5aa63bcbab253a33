"""Honest evaluation: distinct pages only, per-class numbers, bootstrap intervals, calibration.

    ecgvit evaluate RUN --data DIR|MANIFEST [--report DIR] [--json metrics.json]
    ecgvit cv --data DIR --model NAME --folds 5 [--repeats R] --out DIR

Metrics come from scikit-learn. The bootstrap (1000 resamples of pages) recomputes accuracy,
balanced accuracy and F1 from a confusion matrix with numpy instead, because calling sklearn
thousands of times per evaluation costs seconds for nothing; tests check both agree.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ecgvit.config import save_json, saved_train_settings, to_dict

# --- metrics --------------------------------------------------------------------------------


def _confusion(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + p, minlength=k * k).reshape(k, k)


def _scores_from_confusion(cm: np.ndarray) -> tuple[float, float, float, np.ndarray]:
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
        acc, bal, mf1, cf1 = _scores_from_confusion(_confusion(y[s], pred[s], k))
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
        out["per_class"][c]["recall_ci95"] = list(_wilson(int(round(rec[i] * n_c)), n_c))
    return out


def _wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (float(max(0.0, mid - half)), float(min(1.0, mid + half)))


def format_metrics(m: dict[str, Any]) -> str:
    ci = m["ci95"]
    lines = [
        f"pages {m['n']}   accuracy {m['accuracy']:.3f} [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}]   "
        f"macro-F1 {m['macro_f1']:.3f} [{ci['macro_f1'][0]:.3f}, {ci['macro_f1'][1]:.3f}]   "
        f"balanced acc {m['balanced_accuracy']:.3f}   ECE {m['ece']:.3f}"
        + (f"   ROC-AUC {m['roc_auc_ovr']['macro']:.3f}" if m["roc_auc_ovr"]["macro"] is not None else ""),
        f"{'class':<24}{'precision':>10}{'recall':>10}{'recall 95% CI':>17}{'F1':>8}{'support':>9}",
    ]
    for c in m["classes"]:  # model order (a JSON round trip may have sorted the dict)
        v = m["per_class"][c]
        lo, hi = v["recall_ci95"]
        lines.append(
            f"{c:<24}{v['precision']:>10.3f}{v['recall']:>10.3f}{f'[{lo:.2f}, {hi:.2f}]':>17}{v['f1']:>8.3f}{v['support']:>9d}"
        )
    k = len(m["classes"])
    lines.append(
        "confusion (rows true, columns predicted): "
        + " | ".join(" ".join(f"{x:3d}" for x in row) for row in m["confusion_matrix"][:k])
    )
    if m.get("calibration"):
        c = m["calibration"]
        lines.append(
            f"calibration: temperature {c['temperature']:.3f} (fitted on {c['fitted_on']}): ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}"
        )
    return "\n".join(lines)


# --- running a trained model ----------------------------------------------------------------


@dataclass
class LoadedRun:
    model: Any
    meta: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def preprocess(self):  # -> PreprocessConfig
        from ecgvit.config import PreprocessConfig, from_dict

        return from_dict(PreprocessConfig, self.meta["preprocess"])


def load_run(run: str | Path) -> LoadedRun:
    """A trained model from RUN/ (config.json + model.safetensors), in eval mode."""
    from ecgvit.models import create_model, get_spec, load_weights

    run = Path(run)
    cfg_file = run / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{run}: not a training run (no config.json)")
    meta = json.loads(cfg_file.read_text())
    m = meta["model"]
    model = create_model(
        m["name"],
        num_classes=len(meta["classes"]),
        img_size=tuple(m["img_size"]),
        in_chans=m["in_chans"],
        **m.get("kwargs", {}),
    )
    load_weights(model, run / "model.safetensors")
    if get_spec(m["name"]).channels_last:  # as it trained: the faster layout for its convolutions
        import torch

        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return LoadedRun(model, meta, run)


def evaluate(
    run: str | Path,
    data: str | Path,
    report: str | Path | None = None,
    json_out: str | Path | None = None,
    all_files: bool = False,
    cache_root: str | Path | None = None,
    n_boot: int = 1000,
    progress: bool = True,
) -> dict[str, Any]:
    """Score RUN on DATA (folder or manifest). Each distinct image counts once unless all_files."""
    from ecgvit.data.index import index_dataset
    from ecgvit.data.manifest import read_manifest
    from ecgvit.data.preprocess import file_md5, load_arrays
    from ecgvit.train import predict_proba

    lr = load_run(run)
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data folder or manifest")
    rows = index_dataset(data, progress=progress) if data.is_dir() else read_manifest(data)
    rows = [r for r in rows if r.ok]
    unknown = sorted({r.label for r in rows} - set(lr.classes))
    if unknown:
        raise ValueError(f"labels {unknown} in {data} are not classes of this model ({lr.classes})")
    n_files = len(rows)
    if not all_files:
        seen: set[str] = set()
        kept = []
        for r in rows:
            key = r.md5 or file_md5(r.path)
            if key not in seen:
                seen.add(key)
                kept.append(r)
        rows = kept
    dropped = n_files - len(rows)
    if not rows:
        raise ValueError(f"{data}: no usable pages to evaluate")
    x = load_arrays(
        [r.path for r in rows],
        [r.md5 or file_md5(r.path) for r in rows],
        cfg=lr.preprocess,
        cache_root=cache_root,
        progress=progress,
    )
    t0 = time.time()
    probs = predict_proba(lr.model, x)
    secs = time.time() - t0
    y = np.array([lr.classes.index(r.label) for r in rows])
    m = compute_metrics(y, probs, lr.classes, n_boot=n_boot)
    m["duplicates_dropped"] = dropped
    m["files"] = n_files
    m["run"] = str(run)
    m["data"] = str(data)
    m["inference_images_per_s"] = len(rows) / max(secs, 1e-9)
    from ecgvit.gate import load_gate, softmax_t

    gate = load_gate(run)
    if gate is not None:
        # Temperature scaling never changes the argmax, only how sure the answers say they are.
        t = gate.cfg.temperature
        m["calibration"] = {
            "temperature": t,
            "ece_before": m["ece"],
            "ece_after": expected_calibration_error(y, softmax_t(np.log(np.clip(probs, 1e-12, 1.0)), t))[0],
            "fitted_on": gate.cfg.fitted_on.get("calibration"),
        }
    if json_out:
        save_json(json_out, m)
    if report:
        write_report(
            report, m, [r.path for r in rows], y, probs, lr.classes, title=f"ecgvit evaluation of {run} on {data}"
        )
    return m


# --- HTML report ----------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def write_report(
    out_dir: str | Path,
    m: dict[str, Any],
    paths: list[str],
    y: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    title: str,
) -> Path:
    """index.html with confusion matrix, reliability diagram, ROC curves and the worst mistakes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from sklearn.metrics import roc_curve

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = len(classes)
    figs = {}

    fig, ax = plt.subplots(figsize=(5, 4.2))
    cm = np.array(m["confusion_matrix"])
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(
                j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
            )
    ax.set_xticks(range(k), classes, rotation=30, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (distinct pages)")
    figs["confusion"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    rel = m["reliability"]
    ax.plot([0, 1], [0, 1], "--", color="gray")
    ax.bar(rel["bin_center"], rel["accuracy"], width=1 / 15, alpha=0.7, edgecolor="k", label="accuracy")
    ax.plot(rel["confidence"], rel["accuracy"], "o", color="C3", label="mean confidence")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {m['ece']:.3f})")
    ax.legend(loc="upper left")
    figs["reliability"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for i, c in enumerate(classes):
        pos = y == i
        if 0 < pos.sum() < len(y):
            fpr, tpr, _ = roc_curve(pos, probs[:, i])
            ax.plot(fpr, tpr, label=f"{c} ({m['roc_auc_ovr']['per_class'][c]:.2f})")
    ax.plot([0, 1], [0, 1], "--", color="gray")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("one-vs-rest ROC")
    ax.legend(fontsize=7)
    figs["roc"] = _png(fig)
    plt.close(fig)

    # Worst mistakes: wrong answers given with the most confidence.
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:12]
    rows_html = []
    for i in wrong:
        try:
            im = Image.open(paths[i])
            im.draft("RGB", (400, 300))
            im = im.convert("RGB")
            im.thumbnail((360, 260))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
            thumb = f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">'
        except Exception:  # a thumbnail is a nicety; a broken one must not lose the report
            thumb = "(no preview)"
        rows_html.append(
            f"<tr><td>{thumb}</td><td>{html.escape(Path(paths[i]).name)}</td><td>{classes[y[i]]}</td>"
            f"<td>{classes[pred[i]]} ({probs[i, pred[i]]:.2f})</td></tr>"
        )
    ci = m["ci95"]
    per_class = "".join(
        f"<tr><td>{c}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f} [{v['recall_ci95'][0]:.2f}, {v['recall_ci95'][1]:.2f}]</td>"
        f"<td>{v['f1']:.3f} [{ci['per_class_f1'][c][0]:.2f}, {ci['per_class_f1'][c][1]:.2f}]</td><td>{v['support']}</td></tr>"
        for c, v in m["per_class"].items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}img{{max-width:360px}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{m["n"]} distinct pages ({m.get("duplicates_dropped", 0)} duplicate files not counted again).
Accuracy <b>{m["accuracy"]:.3f}</b> [{ci["accuracy"][0]:.3f}, {ci["accuracy"][1]:.3f}],
macro-F1 <b>{m["macro_f1"]:.3f}</b> [{ci["macro_f1"][0]:.3f}, {ci["macro_f1"][1]:.3f}],
balanced accuracy {m["balanced_accuracy"]:.3f}, ECE {m["ece"]:.3f}. Intervals: {ci["method"]}.</p>
<table><tr><th>class</th><th>precision</th><th>recall [Wilson 95%]</th><th>F1 [bootstrap 95%]</th><th>support</th></tr>{per_class}</table>
<p><img src="data:image/png;base64,{figs["confusion"]}"> <img src="data:image/png;base64,{figs["reliability"]}"> <img src="data:image/png;base64,{figs["roc"]}"></p>
<h2>Most confident mistakes</h2>
<table><tr><th>page</th><th>file</th><th>true</th><th>predicted (p)</th></tr>{"".join(rows_html) or "<tr><td colspan=4>none</td></tr>"}</table>
</body></html>"""
    (out_dir / "index.html").write_text(page)
    save_json(out_dir / "metrics.json", m)
    return out_dir / "index.html"


# --- cross-validation -----------------------------------------------------------------------


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
    preprocess=None,
    cache_root: str | Path | None = None,
    progress: bool = True,
    split_seed: int | None = None,
) -> dict[str, Any]:
    """Repeated grouped stratified k-fold: one training per (repeat, fold), scored on its fold.

    Repeat r assigns folds with seed split_seed + r and trains with seed + r (the training
    seed is TrainConfig.seed, from train_overrides). split_seed defaults to that seed; giving
    the same split_seed with another seed retrains on the very same folds with other random
    draws, which is how two recipes (or one recipe twice) are compared fairly."""
    from ecgvit.config import SplitConfig
    from ecgvit.data.index import index_dataset
    from ecgvit.data.manifest import read_manifest, write_manifest
    from ecgvit.data.split import make_splits
    from ecgvit.train import TrainConfig, fold_teacher, predict_proba, resolve_teacher, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data)
    manifest = out / "manifest.csv"
    if data.is_dir():
        index_dataset(data, out=manifest, progress=progress)
    else:
        write_manifest(read_manifest(data), manifest)
    base = resolve_teacher(TrainConfig(**({"model": model} if model else {}), **(train_overrides or {})))
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
        started = any((out / f"r{r}_fold{k}" / "pages.csv").exists() for k in range(folds))
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
            saved = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
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
                    resume=(run_dir / "resume.pt").exists(),
                    progress=progress,
                    cache_root=cache_root,
                )
            secs = time.time() - t0
            lr = load_run(run_dir)
            classes = lr.classes
            pages = [row for row in csv.DictReader(open(run_dir / "pages.csv")) if row["part"] == "val"]
            from ecgvit.data.preprocess import load_arrays

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
                print(
                    f"repeat {r} fold {k}: accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  ({secs:.0f}s)",
                    flush=True,
                )
            with open(out / "folds.csv", "w", newline="") as f:  # rewritten each fold: progress survives a kill
                w = csv.DictWriter(f, fieldnames=list(fold_rows[0]))
                w.writeheader()
                w.writerows(fold_rows)
    with open(out / "oof.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["repeat", "fold", "path", "label", *[f"p_{c}" for c in classes]])
        for r, k, p, yi, pr in oof:
            w.writerow([r, k, p, classes[yi], *[f"{v:.5f}" for v in pr]])
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
