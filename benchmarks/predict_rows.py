"""Every prediction row for a fixed set of inputs, to check that a change keeps the answers.

    python benchmarks/predict_rows.py OUT.json PATH...            # dump (ONNX, and torch on every 20th)
    python benchmarks/predict_rows.py --compare A.json B.json     # rows that differ, max |dp|

Rows are keyed by backend and path: status, label, probabilities, reason, crop box, feature
distance and trace rows. Used for the one-way-architecture refactor (998 rows, none differed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIELDS = ("status", "label", "probability", "probabilities", "reason", "crop_box", "feature_distance", "trace_rows")


def dump(out: str, paths: list[str]) -> None:
    from ecgvit import Predictor
    from ecgvit.data.files import expand_inputs

    files, _ = expand_inputs(paths)
    rows = {}
    for backend, items in (("onnx", files), ("torch", files[::20])):
        with Predictor(backend=backend, processes=0 if backend == "onnx" else 1) as p:
            for r in p.predict(items):
                d = r.to_dict()
                rows[f"{backend}:{d['path']}"] = {k: d.get(k) for k in FIELDS}
    Path(out).write_text(json.dumps(rows, indent=0, sort_keys=True))
    print(f"{len(rows)} rows -> {out}")


def compare(a_file: str, b_file: str, tol: float = 1e-6) -> int:
    a, b = json.loads(Path(a_file).read_text()), json.loads(Path(b_file).read_text())
    if a.keys() != b.keys():
        print(f"different inputs: {len(a.keys() ^ b.keys())} rows in one file only")
        return 1
    differ, max_dp = 0, 0.0
    for k in a:
        x, y = a[k], b[k]
        same = all(x[f] == y[f] for f in FIELDS if f not in ("probability", "probabilities"))
        if x["probabilities"] is None or y["probabilities"] is None:
            same &= x["probabilities"] == y["probabilities"]
        else:
            dp = max(abs(x["probabilities"][c] - y["probabilities"][c]) for c in x["probabilities"])
            max_dp = max(max_dp, dp)
            same &= dp <= tol
        if not same:
            differ += 1
            if differ <= 5:
                print(f"{k}:\n  {x}\n  {y}")
    print(f"{len(a)} rows, {differ} differ, max |dp| {max_dp:.2g}")
    return 1 if differ else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    ap.add_argument("out", nargs="?")
    ap.add_argument("paths", nargs="*")
    a = ap.parse_args()
    if a.compare:
        return compare(*a.compare)
    if not a.out or not a.paths:
        ap.error("give OUT.json and the inputs (or --compare A B)")
    dump(a.out, a.paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
