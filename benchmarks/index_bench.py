"""Where `ecgvit data index` spends its time, per distinct page: md5, decode (draft), trace box, pHash.

    python benchmarks/index_bench.py [DATASET_DIR] [--sample 30]

DATASET_DIR defaults to ../shared/data/khan (run ../shared/data/khan.sh first). Only a sample of
pages is timed, so it takes a few seconds; multiply by the number of distinct pages for a full scan.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from ecgvit.data.index import HASH_DRAFT_SIZE, _find_trace_box, _phash_bits, trace_area
from ecgvit.data.io import IMAGE_SUFFIXES, open_page


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "khan"))
    ap.add_argument("--sample", type=int, default=30)
    a = ap.parse_args()
    files = sorted(p for p in Path(a.dataset).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images under {a.dataset}")
    step = max(1, len(files) // a.sample)
    sample = files[::step][: a.sample]
    phases = {"md5": 0.0, "decode": 0.0, "trace_box": 0.0, "phash": 0.0}
    _find_trace_box()  # import cost outside the timing
    for p in sample:
        t0 = time.perf_counter()
        hashlib.md5(p.read_bytes()).hexdigest()
        t1 = time.perf_counter()
        img = open_page(p, draft_size=HASH_DRAFT_SIZE)
        t2 = time.perf_counter()
        crop, _ = trace_area(img)
        t3 = time.perf_counter()
        _phash_bits(crop, 16)
        t4 = time.perf_counter()
        for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=False):
            phases[k] += dt
    n = len(sample)
    total = sum(phases.values()) / n * 1000
    print(f"{n} pages from {a.dataset} (decoded at {img.size[0]}x{img.size[1]} for hashing)")
    for k, v in phases.items():
        print(f"  {k:<10} {v / n * 1000:7.1f} ms/page")
    print(f"  {'total':<10} {total:7.1f} ms/page -> {1000 / total:.0f} distinct pages/s on one core")


if __name__ == "__main__":
    main()
