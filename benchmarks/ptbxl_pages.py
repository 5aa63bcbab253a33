"""Real ECG morphology on generated pages: PTB-XL's test split drawn by the page generator, scored.

    python benchmarks/ptbxl_pages.py [--data DIR] [--styles khan,ge_mac,...] [--layout 3x4+1] [--run RUN[,RUN...]]

The issue-28 measurement: the PTB-XL test split (83 normal, 34 MI, 77 other; never trained on)
rendered in each generator style, then predicted. Reports per style the share answered (not
out of scope), the AUROC of normal vs MI with p_MI + p_history_of_MI as the score (answered
pages, and all pages with out-of-scope ones scored by their raw model probabilities), and the
label counts. Several runs (comma-separated, the same preprocessing) score the same pages, each
page read once. The signals are z-scored per lead (no millivolts: see ptbxl_z.md), so they are
drawn at a fixed 0.3 mV per sd, a chosen gain, not the patient's; resampled 250 -> 500 Hz.

Contains PTB-XL data (Wagner et al., 2020, Sci. Data 7:154; PhysioNet), CC BY 4.0, band-pass
filtered, z-scored per lead and resampled to 250 Hz.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

MV_PER_SD = 0.3  # the drawing gain for z-scored leads (a typical limb-lead sd is 0.1-0.4 mV)


def unpack(data: str | None) -> Path:
    if data:
        return Path(data)
    script = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl_z.sh"
    dest = Path(tempfile.gettempdir()) / "ptbxl_z"
    out = subprocess.run(["bash", str(script), str(dest)], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def load_test(root: Path) -> list[tuple[str, str, np.ndarray]]:
    rows = []
    with open(root / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] != "test":
                continue
            z = np.load(root / "records" / f"{r['ecg_id']}.npy").astype(np.float32) / 1000.0  # (2500, 12)
            t250 = np.arange(2500) / 250.0
            t500 = np.arange(5000) / 500.0
            mv = np.stack([np.interp(t500, t250, z[:, k]) for k in range(12)]) * MV_PER_SD
            rows.append((r["ecg_id"], r["label_hint"], mv.astype(np.float32)))
    return rows


def auroc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    if len(pos) == 0 or len(neg) == 0:
        return None
    s = np.concatenate([pos, neg])
    ranks = s.argsort().argsort() + 1.0
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="unpacked ptbxl_z folder (default: unpack ../shared/data/ptbxl_z.sh)")
    ap.add_argument("--styles", default="khan,ge_mac,philips,schiller,nihon_kohden,bionet,textbook")
    ap.add_argument("--layout", default="3x4+1")
    ap.add_argument(
        "--run", default=None, help="run folder or .onnx, or several comma-separated (default: the bundled model)"
    )
    ap.add_argument("--limit", type=int, default=0, help="at most this many test records (0: all 194)")
    a = ap.parse_args()

    from ecgvit import Predictor
    from ecgvit.synth.page import random_meta, render
    from ecgvit.synth.styles import get_style

    records = load_test(unpack(a.data))
    if a.limit:
        records = records[: a.limit]
    preds_by_run = [Predictor(r, threads=1) for r in (a.run.split(",") if a.run else [None])]
    first = preds_by_run[0]
    for p in preds_by_run[1:]:
        if p.preprocess != first.preprocess:
            sys.exit(
                f"--run: {p.model_name} reads pages differently from the first run ({p.preprocess} vs {first.preprocess})"
            )
    names = a.run.split(",") if a.run else ["bundled"]
    print(
        f"{len(records)} PTB-XL test records; layout {a.layout}; "
        + "; ".join(f"{n}: {p.model_name} ({p.backend})" for n, p in zip(names, preds_by_run, strict=True))
    )
    print(f"{'style':<14}{'answered':>9}{'AUROC ans.':>11}{'AUROC all':>10}  labels (normal / MI / other records)")
    hint = np.array([h for _, h, _ in records])
    for style_name in a.styles.split(","):
        st = get_style(style_name)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ptbxl-pages-") as tmp:
            paths = []
            for k, (ecg_id, _, mv) in enumerate(records):
                rng = np.random.default_rng([28, k])
                page = render(mv, st, random_meta(rng, 70.0), layout=a.layout)
                p = Path(tmp) / f"{ecg_id}.jpg"
                Image.fromarray(page).save(p, quality=st.jpeg_quality)
                paths.append(str(p))
            # each page read once; every run answers it and gives its raw probabilities (out-of-scope
            # pages included, for the "all" AUROC)
            loaded = [first.load(p) for p in paths]
            arrays = np.stack([ld.array for ld in loaded])
            results = []
            for pred in preds_by_run:
                preds = [pred.answer(ld, name) for ld, name in zip(loaded, paths, strict=True)]
                results.append((preds, pred.infer(arrays), pred.classes))
        dt = time.perf_counter() - t0
        for name, (preds, raw, classes) in zip(names, results, strict=True):
            mi_score = raw[:, classes.index("myocardial_infarction")] + raw[:, classes.index("history_of_mi")]
            answered = np.array([p.answered for p in preds])
            a_all = auroc(mi_score[hint == "mi_any"], mi_score[hint == "normal"])
            m = answered
            a_ans = auroc(mi_score[m & (hint == "mi_any")], mi_score[m & (hint == "normal")])
            counts: dict[str, dict[str, int]] = {h: {} for h in ("normal", "mi_any", "other")}
            for p, h in zip(preds, hint, strict=True):
                key = p.label if p.answered else "out_of_scope"
                counts[h][key] = counts[h].get(key, 0) + 1
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            shown = " / ".join(", ".join(f"{k} {v}" for k, v in sorted(c.items())) for c in counts.values())
            tag = style_name if len(names) == 1 else f"{style_name} {name}"
            print(
                f"{tag:<14}{answered.mean():>9.1%}{fmt(a_ans):>11}{fmt(a_all):>10}  {shown}  ({dt:.0f} s)", flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
