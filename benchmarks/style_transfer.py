"""Style transfer (issue 28): a CV's held-out Khan pages redrawn in other carts' styles and layouts.

    PYTHONPATH=src python benchmarks/style_transfer.py --cv runs/cv_leads_e60 [--restyles 2] [--folds 0,1,2,3,4]

For every fold of an `ecgvit cv` folder, each page the fold's model never saw is read by the page
reader (full resolution), its signals redrawn by the generator (a) in the Khan style and layout
and (b) `--restyles` times in a random style of the generator (`sample_style`: family, paper,
dpi, gain, grid and trace colours, layout; 25 mm/s: a Khan page prints most leads 2.5 s, and a
50 mm/s page would show windows it never printed, flat; `--all-speeds` draws them anyway), and all
of them predicted by that fold's run, as the original page was. Leads the Khan page does not print (each lead but II shows 2.5 s) are
drawn flat where another layout prints longer: a model on the canonical leads reads each lead's
standard 2.5 s window, which is the real one. Reports macro-F1 [95 % bootstrap CI] pooled over
folds for the original pages, the Khan-style redraw and the restyled pages (all, and per family
and per layout), and the share answered (not out of scope).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", required=True, help="an `ecgvit cv` output folder")
    ap.add_argument("--folds", default=None, help="comma-separated folds (default: every finished fold)")
    ap.add_argument("--restyles", type=int, default=2, help="random restyles of each page")
    ap.add_argument("--limit", type=int, default=0, help="at most this many pages a fold (0: all)")
    ap.add_argument("--out", default=None, help="write the per-page rows here (CSV)")
    ap.add_argument(
        "--all-speeds",
        action="store_true",
        help="restyle at 50 mm/s too (a Khan page has no signal for most of what such a page prints)",
    )
    a = ap.parse_args()
    speeds = None if a.all_speeds else (25.0,)

    from ecgvit import Predictor
    from ecgvit.metrics import compute_metrics
    from ecgvit.reader import read_page
    from ecgvit.synth.page import random_meta, render
    from ecgvit.synth.styles import KHAN_STYLE, sample_style

    cv = Path(a.cv)
    folds = (
        [int(k) for k in a.folds.split(",")]
        if a.folds
        else sorted(int(p.name.split("fold")[1]) for p in cv.glob("r0_fold*") if (p / "model.safetensors").exists())
    )
    rows: list[dict[str, object]] = []
    classes: list[str] = []
    t_start = time.perf_counter()
    for k in folds:
        run = cv / f"r0_fold{k}"
        pred = Predictor(str(run), backend="torch", threads=1)
        classes = pred.classes
        with open(run / "pages.csv", newline="") as f:
            pages = [r for r in csv.DictReader(f) if r["part"] == "val"]
        if a.limit:
            pages = pages[: a.limit]
        with tempfile.TemporaryDirectory(prefix="restyle-") as tmp:
            items: list[tuple[str, str, str, str, str]] = []  # (path, label, kind, family, layout)
            for i, p in enumerate(pages):
                items.append((p["path"], p["label"], "original", "khan", "3x4+1"))
                r = read_page(p["path"])
                if r.layout is None:
                    continue
                sig = np.nan_to_num(r.signals, nan=0.0)
                rng = np.random.default_rng([28, k, i])
                meta = random_meta(rng, 70.0)
                for j, (st, layout) in enumerate(
                    [(KHAN_STYLE, "3x4+1")] + [sample_style(rng, speeds=speeds) for _ in range(a.restyles)]
                ):
                    page = render(sig, st, meta, layout=layout)
                    out = Path(tmp) / f"{k}_{i}_{j}.jpg"
                    Image.fromarray(page).save(out, quality=st.jpeg_quality, dpi=(st.dpi, st.dpi))
                    items.append((str(out), p["label"], "khan_redraw" if j == 0 else "restyled", st.family, layout))
            preds = pred.predict([it[0] for it in items])
        for it, pr in zip(items, preds, strict=True):
            probs = pr.probabilities or {}
            rows.append(
                {
                    "fold": k,
                    "source": it[0] if it[2] == "original" else "",
                    "label": it[1],
                    "kind": it[2],
                    "family": it[3],
                    "layout": it[4],
                    "status": pr.status,
                    "predicted": pr.label or "",
                    **{f"p_{c}": probs.get(c, "") for c in classes},
                }
            )
        print(
            f"fold {k}: {len(pages)} pages, {len(items)} predictions ({time.perf_counter() - t_start:.0f} s)",
            flush=True,
        )
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    def score(sel: list[dict[str, object]]) -> str:
        ans = [r for r in sel if r["status"] in ("ok", "low_confidence")]
        if len(ans) < 4:
            return f"n {len(sel)}, answered {len(ans)}"
        y = np.array([classes.index(str(r["label"])) for r in ans])
        pr = np.array([[float(r[f"p_{c}"]) for c in classes] for r in ans])
        m = compute_metrics(y, pr, classes, n_boot=500)
        lo, hi = m["ci95"]["macro_f1"]
        mi = m["per_class"]["myocardial_infarction"]["recall"]
        return (
            f"n {len(sel):4d}  answered {len(ans) / len(sel):6.1%}  macro-F1 {m['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}]  "
            f"accuracy {m['accuracy']:.3f}  MI recall {mi:.2f}"
        )

    print(f"\nfolds {folds}, pooled over folds (answered pages scored)")
    for kind in ("original", "khan_redraw", "restyled"):
        print(f"{kind:<22}{score([r for r in rows if r['kind'] == kind])}")
    groups: dict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "restyled":
            groups[("family", str(r["family"]))].append(r)
            groups[("layout", str(r["layout"]))].append(r)
    for (what, name), sel in sorted(groups.items()):
        print(f"  {what} {name:<16}{score(sel)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
