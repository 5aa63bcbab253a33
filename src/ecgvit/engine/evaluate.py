"""Honest evaluation: distinct pages only, per-class numbers, bootstrap intervals, calibration.

    ecgvit evaluate RUN --data DIR|MANIFEST [--report DIR] [--json metrics.json]

The numbers come from `ecgvit.metrics`; this module runs a trained model on labelled pages
and writes them as text, JSON and an HTML report.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecgvit.config import save_json
from ecgvit.metrics import compute_metrics, expected_calibration_error, softmax
from ecgvit.models.inference import predict_proba
from ecgvit.run import load_run
from ecgvit.runtime.gate import load_gate


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
    gate = load_gate(run)
    if gate is not None:
        # Temperature scaling never changes the argmax, only how sure the answers say they are.
        t = gate.cfg.temperature
        m["calibration"] = {
            "temperature": t,
            "ece_before": m["ece"],
            "ece_after": expected_calibration_error(y, softmax(np.log(np.clip(probs, 1e-12, 1.0)), t))[0],
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
    for i in wrong.tolist():
        try:
            src = Image.open(paths[i])
            src.draft("RGB", (400, 300))
            im = src.convert("RGB")
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
