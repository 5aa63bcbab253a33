"""The out-of-scope gate, measured honestly: false rejections of real pages it never saw,
AUROC against each kind of generated out-of-scope input, synthetic positives by distortion,
and ECE before/after temperature scaling.

    python benchmarks/ood_gate.py --cv runs/khan_cv/ecgvit-tiny [--per-kind 20] [--out runs/ood_gate]

For each fold model of a finished `ecgvit cv` / khan_cv run the gate is refitted the way
`ecgvit calibrate` does, on that fold's training pages only (+ synthetic pretraining-like
pages), with the temperature fitted on the out-of-fold predictions of the OTHER folds; then
it is scored on the fold's held-out real pages (in scope) and on generated inputs:
`ecgvit.synth.negatives` (out of scope, per kind) and synthetic pages with --distort
none/light/heavy (in scope, reported apart). Writes OUT/gate.json and OUT/table.md as it goes.

Gate score for AUROC: pages rejected by the structure checks rank above every other page;
the rest rank by feature distance / fitted threshold.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


def gate_scores(gate, structures, logits, feats):
    verdicts = gate.assess(structures, logits, feats)
    scores = []
    for v in verdicts:
        dist = v["feature_distance"]
        rel = (dist / gate.cfg.distance_max) if dist is not None else 0.0
        structural = v.status == "out_of_scope" and not v.reason.startswith("unlike")
        scores.append(1e6 + rel if structural else rel)
    return verdicts, np.array(scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cv", default="runs/khan_cv/ecgvit-tiny", help="a finished cross-validation folder (r0_fold*/, oof.csv)"
    )
    ap.add_argument("--per-kind", type=int, default=20, help="generated inputs per negative kind")
    ap.add_argument("--per-class", type=int, default=10, help="synthetic positives per class and distortion level")
    ap.add_argument("--folds", default="", help="comma-separated folds (default: all)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="runs/ood_gate")
    a = ap.parse_args()

    import torch
    from sklearn.metrics import roc_auc_score

    from ecgvit.engine.calibrate import calibrate, measure_pages
    from ecgvit.metrics import expected_calibration_error
    from ecgvit.metrics import softmax as softmax_t
    from ecgvit.runtime.gate import load_gate
    from ecgvit.runtime.predictor import Predictor
    from ecgvit.synth import generate
    from ecgvit.synth.negatives import NEGATIVE_KINDS, generate_negatives

    torch.set_num_threads(2)
    cv = Path(a.cv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    folds = sorted(cv.glob("r0_fold*"))
    if a.folds:
        want = {int(k) for k in a.folds.split(",")}
        folds = [f for f in folds if int(f.name.split("fold")[1]) in want]
    if not folds:
        sys.exit(f"{cv}: no r0_fold* run folders (run benchmarks/khan_cv.py or ecgvit cv first)")
    oof = list(csv.DictReader(open(cv / "oof.csv")))
    work = Path(tempfile.mkdtemp(prefix="ecgvit-oodbench-"))
    t0 = time.time()
    neg_dir = work / "neg"
    print(generate_negatives(neg_dir, per_kind=a.per_kind, seed=a.seed, progress=False), flush=True)
    neg = {k: sorted(str(p) for p in (neg_dir / k).glob("*.jpg")) for k in NEGATIVE_KINDS}
    pos = {}
    for level in ("none", "light", "heavy"):
        d = work / f"pos_{level}"
        generate(d, per_class=a.per_class, seed=a.seed + 1, distort=level, workers=1, progress=False)
        pos[level] = sorted(str(p) for p in d.glob("*/*.jpg"))
    print(f"generated inputs in {time.time() - t0:.0f}s", flush=True)

    real_scores, neg_scores, pos_scores = [], defaultdict(list), defaultdict(list)
    real_status, neg_status, pos_status = Counter(), defaultdict(Counter), defaultdict(Counter)
    pos_reasons = defaultdict(Counter)
    neg_reasons = defaultdict(Counter)
    real_rejected = []
    ece = []
    for fold_dir in folds:
        k = int(fold_dir.name.split("fold")[1])
        run = work / fold_dir.name
        shutil.copytree(fold_dir, run, ignore=shutil.ignore_patterns("model.onnx*", "gate.*", "resume.pt"))
        pages = list(csv.DictReader(open(run / "pages.csv")))
        held = [p for p in pages if p["part"] != "train"]
        with open(run / "pages.csv", "w", newline="") as f:  # the gate sees the training part only
            w = csv.DictWriter(f, fieldnames=list(pages[0]))
            w.writeheader()
            w.writerows([p for p in pages if p["part"] == "train"])
        other = [r for r in oof if int(r["fold"]) != k]
        oof_file = run / "oof_other_folds.csv"
        with open(oof_file, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(other[0]))
            w.writeheader()
            w.writerows(other)
        tf = time.time()
        calibrate(run, oof=oof_file, progress=False)
        gate = load_gate(run)
        pred = Predictor(run, backend="torch")
        st, lg, ft, _ = measure_pages(pred, [p["path"] for p in held])
        classes = pred.classes
        y = np.array([classes.index(p["label"]) for p in held])
        ece.append(
            {
                "fold": k,
                "temperature": gate.cfg.temperature,
                "ece_before": expected_calibration_error(y, softmax_t(lg, 1.0))[0],
                "ece_after": expected_calibration_error(y, softmax_t(lg, gate.cfg.temperature))[0],
                "n": len(y),
            }
        )
        v, sc = gate_scores(gate, st, lg, ft)
        real_scores.extend(sc)
        for p, vi in zip(held, v, strict=False):
            real_status[vi.status] += 1
            if vi.status == "out_of_scope":
                real_rejected.append({"fold": k, "path": p["path"], "reason": vi.reason})
        for kind, files in neg.items():
            st, lg, ft, err = measure_pages(pred, files)
            ok = [i for i, e in enumerate(err) if e is None]
            v, sc = gate_scores(gate, [st[i] for i in ok], lg[ok], None if ft is None else ft[ok])
            neg_scores[kind].extend(sc)
            for vi in v:
                neg_status[kind][vi.status] += 1
                neg_reasons[kind][
                    vi.reason.split(" (")[0].split(";")[0] if vi.status == "out_of_scope" else vi.status
                ] += 1
            neg_status[kind]["undecodable"] += len(files) - len(ok)
        for level, files in pos.items():
            st, lg, ft, _ = measure_pages(pred, files)
            v, sc = gate_scores(gate, st, lg, ft)
            pos_scores[level].extend(sc)
            for vi in v:
                pos_status[level][vi.status] += 1
                if vi.status == "out_of_scope":
                    pos_reasons[level][vi.reason.split(" (")[0].split(";")[0]] += 1
        print(
            f"fold {k}: gate fitted and scored in {time.time() - tf:.0f}s; real held-out {dict(real_status)}",
            flush=True,
        )

        n_real = sum(real_status.values())
        res = {
            "folds": [int(f.name.split("fold")[1]) for f in folds[: len(ece)]],
            "real_pages": n_real,
            "real_false_rejection_rate": real_status["out_of_scope"] / n_real,
            "real_low_confidence_rate": real_status["low_confidence"] / n_real,
            "real_rejected": real_rejected,
            "negatives": {
                kind: {
                    "n": sum(neg_status[kind].values()),
                    "rejected": neg_status[kind]["out_of_scope"]
                    / max(1, sum(neg_status[kind].values()) - neg_status[kind]["undecodable"]),
                    "auroc": float(
                        roc_auc_score(
                            [0] * len(real_scores) + [1] * len(neg_scores[kind]),
                            list(real_scores) + list(neg_scores[kind]),
                        )
                    ),
                    "reasons": dict(neg_reasons[kind]),
                }
                for kind in neg
            },
            "synthetic_positives": {
                level: {
                    "n": sum(c.values()),
                    **{s: c[s] / sum(c.values()) for s in ("ok", "low_confidence", "out_of_scope")},
                    "reasons": dict(pos_reasons[level]),
                }
                for level, c in pos_status.items()
            },
            "ece": ece,
            "seconds": round(time.time() - t0, 1),
        }
        (out / "gate.json").write_text(json.dumps(res, indent=1))
        lines = [
            f"Real held-out pages: {n_real} (folds {res['folds']}); false rejections {real_status['out_of_scope']} ({res['real_false_rejection_rate']:.1%}); low confidence {res['real_low_confidence_rate']:.1%}",
            "",
            "| negative kind | n | rejected | AUROC vs real | reasons |",
            "|---|---|---|---|---|",
        ]
        for kind, r in res["negatives"].items():
            lines.append(
                f"| {kind} | {r['n']} | {r['rejected']:.1%} | {r['auroc']:.3f} | {', '.join(f'{k}: {v}' for k, v in r['reasons'].items())} |"
            )
        lines += [
            "",
            "| synthetic positives | n | ok | low confidence | out of scope | reasons |",
            "|---|---|---|---|---|---|",
        ]
        for level, r in res["synthetic_positives"].items():
            lines.append(
                f"| distort {level} | {r['n']} | {r['ok']:.1%} | {r['low_confidence']:.1%} | {r['out_of_scope']:.1%} | {', '.join(f'{k}: {v}' for k, v in r['reasons'].items())} |"
            )
        lines += ["", "| fold | T | ECE before | ECE after | n |", "|---|---|---|---|---|"]
        for e in ece:
            lines.append(
                f"| {e['fold']} | {e['temperature']:.3f} | {e['ece_before']:.3f} | {e['ece_after']:.3f} | {e['n']} |"
            )
        (out / "table.md").write_text("\n".join(lines) + "\n")
    print((out / "table.md").read_text())
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
