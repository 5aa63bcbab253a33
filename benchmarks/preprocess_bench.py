"""Pages/s from JPEG file to cached model-ready array: cold cache (decode + crop detection +
area resize + save) and warm cache (load .npy), and a full-size decode baseline in the same run.

    python benchmarks/preprocess_bench.py [--data ../shared/data/khan] [--limit 200] [--height 182 --width 256]

Without --data (or when it is missing) it generates synthetic pages first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from ecgvit.config import PreprocessConfig
from ecgvit.data.preprocess import file_md5, iter_image_files, load_arrays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/khan")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--height", type=int, default=182)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ecgvit_bench_"))
    data = Path(a.data)
    if not data.exists():
        from ecgvit.synth import generate

        print(f"{data} not found: generating synthetic pages", file=sys.stderr)
        data = tmp / "synth"
        generate(data, per_class=max(1, a.limit // 4), seed=0, progress=False)
    paths = iter_image_files(data)
    seen, uniq = set(), []
    for p in paths:  # distinct pages only: a duplicate would be a free cache hit
        m = file_md5(p)
        if m not in seen:
            seen.add(m)
            uniq.append((p, m))
    uniq = uniq[: a.limit]
    paths, md5s = [p for p, _ in uniq], [m for _, m in uniq]
    n = len(paths)
    cfg = PreprocessConfig(height=a.height, width=a.width)

    t = time.perf_counter()
    for p in paths[:50]:
        Image.open(p).convert("RGB")
    base = min(50, n) / (time.perf_counter() - t)

    rows = [("full-size JPEG decode only (baseline)", base)]
    for workers in [1, 2] if not a.workers else [a.workers]:
        cache = tmp / f"cache_w{workers}"
        t = time.perf_counter()
        load_arrays(paths, md5s, cfg=cfg, cache_root=cache, workers=workers)
        rows.append((f"cold cache, {workers} process(es)", n / (time.perf_counter() - t)))
    t = time.perf_counter()
    load_arrays(paths, md5s, cfg=cfg, cache_root=cache, workers=1)
    rows.append(("warm cache", n / (time.perf_counter() - t)))
    print(f"{n} distinct pages from {data}, target {a.height}x{a.width} gray, crop=auto")
    print(f"{'stage':<40}{'pages/s':>10}{'x baseline':>12}")
    for name, v in rows:
        print(f"{name:<40}{v:>10.1f}{v / base:>12.2f}")


if __name__ == "__main__":
    main()
