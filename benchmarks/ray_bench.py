"""`ecgvit predict --engine ray` against the local process pool, pages/s on this machine.

    python benchmarks/ray_bench.py [--pages 200] [--data DIR] [--rounds 3] [--shard-size 50]

Pages: generated 2213x1572 JPEGs (`ecgvit synth`), or with --data the first --pages pages of a
folder such as ../shared/data/khan (read only). Each round runs the same pages both ways, in
alternating order, each as one `ecgvit predict` job from start to written output:
- local: `predict_files(..., processes=0, out=x.csv)`, what `ecgvit predict PATH... --out x.csv`
  runs (one worker process per core, started by the job);
- ray: `predict_ray(..., out=DIR)` on a local Ray started once before the rounds (a cluster is
  started once and takes many jobs; its start-up is printed apart), one actor per CPU started
  by the job, Parquet + CSV shards of --shard-size pages.
The number to quote is the median of the per-round ratios ray / local (the issue's target:
>= 0.8 on one machine; a cluster gains by adding machines, not by beating a local pool on one).
Each round also runs a job of --small pages both ways: Ray's time for it is a job's fixed cost
(start the actors, load the model in each); the local path runs so few pages on threads, no pool.
The machine is shared: quote the median over rounds, with the load average printed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _pages(args: argparse.Namespace, tmp: Path) -> list[str]:
    from ecgvit.data.io import INPUT_SUFFIXES

    if args.data:
        files = sorted(str(p) for p in Path(args.data).rglob("*") if p.suffix.lower() in INPUT_SUFFIXES)
        return files[: args.pages]
    from ecgvit.synth import generate

    per_class = -(-args.pages // 4)
    generate(tmp / "pages", per_class=per_class, seed=0, progress=False, workers=os.cpu_count() or 1)
    return sorted(str(p) for p in (tmp / "pages").rglob("*.jpg"))[: args.pages]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--data", default=None, help="a folder of real pages (default: generated pages)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--small", type=int, default=16, help="pages of the job that measures the fixed cost")
    args = ap.parse_args()

    import ray

    from ecgvit.runtime.files import predict_files
    from ecgvit.runtime.ray_engine import predict_ray

    tmp = Path(tempfile.mkdtemp(prefix="ray_bench_"))
    try:
        files = _pages(args, tmp)
        cores = os.cpu_count() or 1
        print(f"{len(files)} pages ({'from ' + args.data if args.data else 'generated'}), {cores} cores")
        t = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        print(f"ray {ray.__version__}: local Ray started in {time.perf_counter() - t:.1f} s (not counted below)")

        def local(r: int, pages: list[str]) -> float:
            t0 = time.perf_counter()
            rows, _ = predict_files(
                None,
                pages,
                out=tmp / f"local{r}_{len(pages)}.csv",
                processes=0,
                threads=1,
                batch_size=args.batch_size,
                progress=False,
            )
            assert len(rows) == len(pages)
            return time.perf_counter() - t0

        def on_ray(r: int, pages: list[str]) -> float:
            t0 = time.perf_counter()
            out = tmp / f"ray{r}_{len(pages)}"
            s = predict_ray(
                None, pages, out=out, shard_size=args.shard_size, batch_size=args.batch_size, progress=False
            )
            assert s["images"] == len(pages) and s["shards_skipped"] == 0
            return time.perf_counter() - t0

        secs: dict[str, list[float]] = {"local": [], "ray": []}
        fixed: dict[str, list[float]] = {"local": [], "ray": []}
        ratios = []
        small = files[: args.small]
        for r in range(args.rounds):
            order = [("local", local), ("ray", on_ray)]
            if r % 2:
                order.reverse()
            got, got_small = {}, {}
            for name, fn in order:
                got[name] = fn(r, files)
                got_small[name] = fn(r, small)
                secs[name].append(got[name])
                fixed[name].append(got_small[name])
            pps = {k: len(files) / v for k, v in got.items()}
            ratios.append(pps["ray"] / pps["local"])
            print(
                f"round {r + 1} ({', '.join(n for n, _ in order)}): local {pps['local']:.2f} pages/s, "
                f"ray {pps['ray']:.2f} pages/s, ratio {ratios[-1]:.3f}; {len(small)} pages: "
                f"local {got_small['local']:.1f} s, ray {got_small['ray']:.1f} s"
            )
        results = {k: [len(files) / x for x in v] for k, v in secs.items()}
        summary = {
            "pages": len(files),
            "cores": cores,
            "ray": ray.__version__,
            "local_pages_per_s": [round(x, 2) for x in results["local"]],
            "ray_pages_per_s": [round(x, 2) for x in results["ray"]],
            "median_ratio": round(statistics.median(ratios), 3),
            "fixed_cost_s": {k: round(statistics.median(v), 2) for k, v in fixed.items()},
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "target": 0.8,
        }
        print(json.dumps(summary))
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
