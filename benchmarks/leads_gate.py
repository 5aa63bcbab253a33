"""The gate of a model on the reader's leads (issue 28): what it refuses and what it answers.

    PYTHONPATH=src python benchmarks/leads_gate.py --run RUN [--khan-pages RUN2/pages.csv] [--per-cell 10]

RUN must have a fitted gate (`ecgvit calibrate RUN`). Scored, with seeds the run never saw:
- every generated negative kind (`ecgvit.synth.negatives`): the share refused (out of scope); the
  6x2 and 12x1 "negatives" are 12-lead pages in layouts such a model reads, reported as answered;
- generated pages of every style family x layout at distortion none / light / heavy / photo:
  the share answered;
- `--khan-pages`: the val part of a run's pages.csv (real Khan pages the model never trained on):
  the number refused and why.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument(
        "--khan-pages", default=None, help="a pages.csv whose val part is scored (real pages never trained on)"
    )
    ap.add_argument("--per-kind", type=int, default=20)
    ap.add_argument("--per-cell", type=int, default=8, help="generated pages per (family, layout, distortion)")
    ap.add_argument("--levels", default="none,light,heavy,photo")
    ap.add_argument("--seed", type=int, default=2800)
    a = ap.parse_args()

    from ecgvit import Predictor
    from ecgvit.synth import generate
    from ecgvit.synth.negatives import NEGATIVE_KINDS, generate_negatives
    from ecgvit.synth.page import LAYOUTS
    from ecgvit.synth.styles import FAMILY_NAMES

    pred = Predictor(a.run)
    if pred.gate is None:
        raise SystemExit(f"{a.run}: no fitted gate (run `ecgvit calibrate {a.run}` first)")
    with tempfile.TemporaryDirectory(prefix="leads-gate-") as tmp:
        generate_negatives(Path(tmp, "neg"), per_kind=a.per_kind, seed=a.seed, progress=False)
        print("negatives: share refused (out of scope)")
        for kind in NEGATIVE_KINDS:
            files = sorted(str(p) for p in Path(tmp, "neg", kind).glob("*.*") if p.suffix != ".json")
            ps = pred.predict(files)
            refused = sum(p.status == "out_of_scope" for p in ps)
            why = Counter(p.reason.split(" (")[0] for p in ps if p.status == "out_of_scope").most_common(2)
            print(f"  {kind:<14}{refused / len(ps):7.1%}  of {len(ps)}  {why}", flush=True)
        print(f"\ngenerated pages: share answered, {a.per_cell} a cell (family x layout), 4 classes")
        per_class = max(1, a.per_cell // 4)
        rates: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for level in a.levels.split(","):
            for fam in FAMILY_NAMES:
                for lay in LAYOUTS:
                    out = Path(tmp, "pos", level, fam, lay.replace("+", "p"))
                    generate(
                        out, per_class=per_class, seed=a.seed + 1, style=fam, layout=lay, distort=level, progress=False
                    )
                    ps = pred.predict(sorted(str(p) for p in out.glob("*/*.jpg")))
                    ok = [p.answered for p in ps]
                    rates[level][fam] += ok
                    rates[level][lay] += ok
            row = "  ".join(f"{k} {sum(v) / len(v):.0%}" for k, v in rates[level].items())
            allv = [x for k, v in rates[level].items() if k in FAMILY_NAMES for x in v]
            print(f"  {level:<6} all {sum(allv) / len(allv):6.1%} of {len(allv)}:  {row}", flush=True)
    if a.khan_pages:
        with open(a.khan_pages, newline="") as f:
            files = [r["path"] for r in csv.DictReader(f) if r["part"] == "val"]
        ps = pred.predict(files)
        refused = [p for p in ps if p.status == "out_of_scope"]
        print(
            f"\nKhan pages never trained on: {len(refused)} of {len(ps)} refused",
            Counter(p.reason.split(" (")[0] for p in refused),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
