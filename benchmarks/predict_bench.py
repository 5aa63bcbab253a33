"""From 2213x1572 JPEG files on disk to labels: throughput and single-image latency.

    python benchmarks/predict_bench.py [--pages 64] [--model NAME | --run RUN] [--threads T] [--data DIR] [--rounds 5]

Pages: generated 2213x1572 JPEGs (`ecgvit synth`, quality ~90: ~1 MB, slower to decode than a
cart's JPEG), or with --data the first distinct real pages of a folder such as
../shared/data/khan (~0.7 MB each).

Compares PyTorch eager with ONNX Runtime for the default model (ecgvit-tiny; resnet18 while it
is not registered, said so in the output) and for the `vit-seed` architecture (the starting
notebook's ViT). Weights are random unless --run is given: speed does not depend on them.

Throughput: all pages through `Predictor.predict` as `ecgvit predict` runs them (--processes 0:
with ONNX and 8+ batches, one worker process per core decodes and infers whole batches; else
JPEG draft decode in a thread pool running ahead of batched inference), timed on a second call
(the first, printed as "first call", includes starting the worker processes). Latency: one page at a time, file to label (decode + crop +
resize + inference), p50 / p95 over --latency-n pages after a warm-up. Ratio: the fastest
set-up of each model, timed again in --rounds alternating rounds (order swapped each round);
the median of the per-round ratios is the number to quote. Ceiling: the same pages through
the stages before the model only (decode; + crop and resize; + the gate's page measures), in
one worker process per core: no model can make the whole run faster than the last of these.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_random_run(out: Path, model: str, seed: int = 0) -> Path:
    """A run folder for `model` at its registered input size with seeded random weights."""
    from ecgvit.config import KHAN_CLASSES, to_dict
    from ecgvit.engine.train import save_model
    from ecgvit.models import create_model, get_spec

    spec = get_spec(model)
    torch.manual_seed(seed)
    m = create_model(model, num_classes=len(KHAN_CLASSES)).eval()
    meta = {
        "classes": list(KHAN_CLASSES),
        "model": {
            "name": model,
            "img_size": list(spec.img_size),
            "in_chans": spec.in_chans,
            "kwargs": {},
            "params": sum(p.numel() for p in m.parameters()),
        },
        "preprocess": to_dict(spec.preprocess()),
        "note": "random weights (benchmark)",
    }
    out.mkdir(parents=True, exist_ok=True)
    save_model(out, m, meta)
    return out


def register_rowvit_preview() -> None:
    """`--model rowvit-preview`: the RowViT of ecgvit.models.ecg_vit with its constructor
    defaults (384x640x1), for a speed preview while ecgvit-tiny is not registered."""
    from ecgvit.models import ModelSpec, list_models, register_model

    if "rowvit-preview" in list_models():
        return
    from ecgvit.models.ecg_vit import RowViT

    def build(num_classes, img_size, in_chans, **kw):
        return RowViT(num_classes=num_classes, img_size=img_size, in_chans=in_chans, **kw)

    register_model(ModelSpec("rowvit-preview", build, (384, 640), 1, "RowViT constructor defaults (benchmark preview)"))


def default_model() -> tuple[str, str]:
    from ecgvit.config import DEFAULT_MODEL
    from ecgvit.models import list_models

    if DEFAULT_MODEL in list_models():
        return DEFAULT_MODEL, ""
    return "resnet18", f"(default {DEFAULT_MODEL!r} not registered yet: measured resnet18 instead)"


def bench_one(
    run: Path,
    files: list[str],
    backend: str,
    threads: int,
    batch_size: int,
    workers: int,
    latency_n: int,
    processes: int = 0,
) -> dict:
    from ecgvit.runtime.predictor import Predictor

    pred = Predictor(run, backend=backend, threads=threads, workers=workers, batch_size=batch_size, processes=processes)
    # Warm-up on the whole list: allocator, oneDNN / ORT kernels, decoder tables, and the
    # worker processes' start (kept for the timed call, as in a long `ecgvit predict` run).
    t0 = time.perf_counter()
    pred.predict(files)
    cold = len(files) / (time.perf_counter() - t0)
    t0, c0 = time.perf_counter(), time.process_time()
    rows = pred.predict(files)
    secs = time.perf_counter() - t0
    # CPU seconds of this process's threads; unknown when worker processes did the work.
    cpu = None if pred._pool is not None else time.process_time() - c0
    used_processes = pred._pool.n if pred._pool is not None else 1
    pred.close()
    # Every page answered (a fitted gate may call some low_confidence; none may be unreadable).
    assert all(r.answered for r in rows), [r for r in rows if not r.answered][:2]
    lat = []
    for f in files[:latency_n]:
        t = time.perf_counter()
        pred.predict(f)
        lat.append((time.perf_counter() - t) * 1000)
    # Where a single page's time goes: decode+preprocess vs inference.
    dec, inf = [], []
    for f in files[: max(4, latency_n // 4)]:
        t = time.perf_counter()
        ld = pred.load(f)
        t1 = time.perf_counter()
        pred.infer(ld.array[None])
        dec.append((t1 - t) * 1000)
        inf.append((time.perf_counter() - t1) * 1000)
    return {
        "model": pred.model_name,
        "backend": pred.backend,
        "images": len(files),
        "images_per_s": len(files) / secs,
        "cold_images_per_s": cold,
        "cpu_ms_per_image": None if cpu is None else cpu / len(files) * 1000,
        "processes": used_processes,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "decode_ms": float(np.median(dec)),
        "infer1_ms": float(np.median(inf)),
        "input": f"{pred.preprocess.height}x{pred.preprocess.width}x{pred.preprocess.channels}",
        # How to build this set-up again (interleaved_ratio times the fastest ones side by side).
        "setup": {
            "run": str(run),
            "backend": backend,
            "threads": threads,
            "batch_size": batch_size,
            "workers": workers,
            "processes": processes,
            "files": len(files),
        },
    }


# --- the ceiling: the pipeline without its model ---------------------------------------------

FLOOR_STAGES = ("decode", "decode + crop + resize", "decode + crop + resize + gate measures")


def _floor_init() -> None:
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)  # as in `ecgvit predict`'s workers: the processes are the parallelism
    threadpool_limits(1)


def _floor_batch(job: tuple[int, list[str], object]) -> int:
    """Run the first stages of prediction (no model) on a batch of files in a worker process."""
    from dataclasses import replace

    from ecgvit.data.io import open_page
    from ecgvit.runtime.inputs import load_input

    stage, files, spec = job
    for f in files:
        if stage == 0:
            open_page(f, max_pixels=spec.max_pixels, min_side=spec.min_side, draft_size=spec.draft, as_array=True)
        else:  # prediction's own loading, with the gate's page measures (stage 2) or without
            load_input(f, spec if stage == 2 else replace(spec, structure=False))
    return len(files)


def pipeline_floor(run: Path, files: list[str], batch_size: int, rounds: int = 3) -> dict[str, float]:
    """Pages/s of the stages every page needs before any model runs (JPEG draft decode; crop
    detection and resize; the out-of-scope gate's page measures), in one worker process per
    core as `ecgvit predict` runs them: the most any model could reach with this preprocessing.
    Best of `rounds` timed passes of each stage after a warm-up round."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from ecgvit.runtime.predictor import Predictor

    spec = Predictor(run, backend="torch")._spec()
    n = os.cpu_count() or 1
    # Batches as prediction's, but at least two per process: a short list still uses every core.
    bs = max(1, min(batch_size, len(files) // (2 * n)))
    chunks = [files[i : i + bs] for i in range(0, len(files), bs)]
    out = {name: 0.0 for name in FLOOR_STAGES}
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_floor_init) as ex:
        for i in range(rounds + 1):
            # Stages in turn within each round, the order rotated: a slow stretch of the shared
            # machine then lands on every stage alike instead of on whichever ran during it.
            for k in range(len(FLOOR_STAGES)):
                stage = (k + i) % len(FLOOR_STAGES)
                t = time.perf_counter()
                done = sum(ex.map(_floor_batch, [(stage, c, spec) for c in chunks]))
                if i:  # the first round warms the processes, decoders and lazy imports
                    out[FLOOR_STAGES[stage]] = max(out[FLOOR_STAGES[stage]], done / (time.perf_counter() - t))
    return out


def interleaved_ratio(main_r: dict, seed_r: dict, files: list[str], rounds: int) -> dict:
    """Throughput of two set-ups timed in alternating rounds, and the ratio within each round.

    A single pair of timings mixes the models' speeds with whatever the shared machine did in
    between (its speed drifts by 5-15 % from hour to hour here); timing them round by round,
    the order swapped every round, gives each ratio from one stretch of time, and the median
    over rounds says more than any one of them.
    """
    from ecgvit.runtime.predictor import Predictor

    def build(r: dict) -> tuple[Predictor, list[str]]:
        s = r["setup"]
        pred = Predictor(
            s["run"],
            backend=s["backend"],
            threads=s["threads"],
            workers=s["workers"],
            batch_size=s["batch_size"],
            processes=s["processes"],
        )
        sub = files[: s["files"]]
        pred.predict(sub)  # warm-up, worker processes started
        return pred, sub

    preds = {"main": build(main_r), "seed": build(seed_r)}
    speed: dict[str, list[float]] = {"main": [], "seed": []}
    try:
        for i in range(rounds):
            for key in ("main", "seed") if i % 2 == 0 else ("seed", "main"):
                pred, sub = preds[key]
                t = time.perf_counter()
                pred.predict(sub)
                speed[key].append(len(sub) / (time.perf_counter() - t))
    finally:
        for pred, _ in preds.values():
            pred.close()
    ratios = [m / s for m, s in zip(speed["main"], speed["seed"], strict=False)]
    return {
        "rounds": rounds,
        "main_images_per_s": speed["main"],
        "seed_images_per_s": speed["seed"],
        "ratios": ratios,
        "ratio_median": float(np.median(ratios)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=64)
    ap.add_argument(
        "--data", default=None, help="real JPEG pages to read instead of generated ones (distinct files, sorted)"
    )
    ap.add_argument("--model", default=None, help="registered model to measure (default: the default model)")
    ap.add_argument("--run", default=None, help="a trained run folder instead of random weights")
    ap.add_argument("--threads", type=int, default=0, help="inference threads (0: all cores)")
    ap.add_argument(
        "--processes",
        type=int,
        default=0,
        help="worker processes for the batch run (0: auto, as `ecgvit predict`; 1: threads only)",
    )
    ap.add_argument("--workers", type=int, default=0, help="decoding threads (0: min(4, cores))")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--latency-n", type=int, default=32)
    ap.add_argument("--seed-pages", type=int, default=16, help="pages for vit-seed (slow: ~2 img/s)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating rounds of the fastest set-up of each model for the ratio (0: one pass only)",
    )
    ap.add_argument("--skip-seed", action="store_true")
    ap.add_argument(
        "--skip-floor",
        action="store_true",
        help="do not time the stages before the model (decode, crop, gate measures) on their own",
    )
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"])
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)

    import os

    from ecgvit.export import export_onnx
    from ecgvit.synth import generate

    threads = a.threads or os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="ecgvit_bench_"))
    try:
        t = time.perf_counter()
        if a.data:
            from ecgvit.data.preprocess import file_md5

            seen: set[str] = set()
            files = []
            for f in sorted(Path(a.data).rglob("*.jpg")):
                m = file_md5(f)
                if m not in seen:  # duplicates would be served from the OS page cache twice
                    seen.add(m)
                    files.append(str(f))
            # Spread over the classes (sorted paths run class by class).
            files = files[:: max(1, len(files) // a.pages)][: a.pages]
            if not files:
                sys.exit(f"{a.data}: no .jpg pages found")
            what = f"real JPEG pages from {a.data}"
        else:
            generate(tmp / "pages", per_class=max(1, a.pages // 4), seed=11, progress=False)
            files = sorted(str(p) for p in (tmp / "pages").rglob("*.jpg"))[: a.pages]
            what = "synthetic 2213x1572 JPEG pages"
        print(
            f"{len(files)} {what} ({np.mean([Path(f).stat().st_size for f in files]) / 1e6:.2f} MB each) in {time.perf_counter() - t:.1f} s; "
            f"{threads} inference threads, batch {a.batch_size}, torch {torch.__version__}, {os.cpu_count()} cores",
            flush=True,
        )
        note = ""
        if a.run:
            runs = {"main": Path(a.run)}
        else:
            if a.model == "rowvit-preview":
                register_rowvit_preview()
            name, note = (a.model, "") if a.model else default_model()
            runs = {"main": make_random_run(tmp / "main", name)}
        if note:
            print(note)
        if not a.skip_seed:
            runs["seed"] = make_random_run(tmp / "seed", "vit-seed")
        results = []
        for key, run in runs.items():
            onnx_dir = run
            if key == "main" and a.run and (run / "model.onnx").exists():
                onnx_ok = True  # Predictor checks it matches the weights
            elif not a.skip_onnx:
                # Export into a copy so a given --run folder is never modified.
                exp = tmp / f"{key}_onnx"
                shutil.copytree(run, exp, ignore=shutil.ignore_patterns("*.onnx", "*.onnx.json", "resume.pt"))
                t = time.perf_counter()
                rep = export_onnx(exp, exporter=a.exporter)
                print(
                    f"exported {key}: {rep['exporter']}, {time.perf_counter() - t:.1f} s, parity {rep['max_abs_logit_diff']:.1e}",
                    flush=True,
                )
                onnx_dir = exp
                onnx_ok = True
            else:
                onnx_ok = False
            subset = files if key == "main" else files[: a.seed_pages]
            lat_n = a.latency_n if key == "main" else max(4, min(a.latency_n, a.seed_pages) // 2)
            modes = [("torch", a.batch_size, 1)] + ([("onnx", a.batch_size, a.processes)] if onnx_ok else [])
            if key == "seed" and onnx_ok and (os.cpu_count() or 1) > 1 and a.processes != 1:
                # The same chance for the seed: its pages split over one process per core (its
                # few pages would never reach the automatic threshold).
                n = os.cpu_count() or 1
                modes.append(("onnx", max(1, len(subset) // n), n))
            for backend, bs, procs in modes:
                r_dir = run if backend == "torch" else onnx_dir
                r = bench_one(r_dir, subset, backend, threads, bs, a.workers, lat_n, processes=procs)
                r["which"] = key
                results.append(r)
                how = f"{r['processes']} processes" if r["processes"] > 1 else "threads"
                print(
                    f"  {r['model']:<14}{r['backend']:<7}{how:<12}{r['images_per_s']:>8.1f} img/s (first call {r['cold_images_per_s']:.1f})   p50 {r['p50_ms']:>7.1f} ms   p95 {r['p95_ms']:>7.1f} ms",
                    flush=True,
                )

        print()
        print(
            f"{'model':<15}{'backend':<8}{'batch run':>12}{'input':>12}{'images/s':>10}{'CPU ms/img':>12}{'p50 ms':>9}{'p95 ms':>9}{'decode ms':>11}{'infer ms':>10}"
        )
        for r in results:
            cpu = "-" if r["cpu_ms_per_image"] is None else f"{r['cpu_ms_per_image']:.1f}"
            how = f"{r['processes']} procs" if r["processes"] > 1 else "threads"
            print(
                f"{r['model']:<15}{r['backend']:<8}{how:>12}{r['input']:>12}{r['images_per_s']:>10.1f}{cpu:>12}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['decode_ms']:>11.1f}{r['infer1_ms']:>10.1f}"
            )
        print(
            "(decode ms: one page, file to model input; infer ms: one page, batch of 1; CPU ms/img: process CPU time per page in the\n"
            " batch run, '-' when worker processes did it; first call: includes starting the worker processes)"
        )
        best = {
            k: max((r for r in results if r["which"] == k), key=lambda r: r["images_per_s"])
            for k in {r["which"] for r in results}
        }
        main_r = best["main"]
        print()
        for k in ("main",):
            tr = [r for r in results if r["which"] == k]
            if len(tr) == 2:
                print(
                    f"ONNX Runtime / PyTorch throughput ({tr[0]['model']}): {tr[1]['images_per_s'] / tr[0]['images_per_s']:.2f}x"
                )
        inter = None
        if "seed" in best:
            ratio = main_r["images_per_s"] / best["seed"]["images_per_s"]
            print(
                f"{main_r['model']} ({main_r['backend']}) / vit-seed ({best['seed']['backend']}) throughput: {ratio:.1f}x in the pass above  (target >= 50x)"
            )
            if a.rounds > 0:
                inter = interleaved_ratio(main_r, best["seed"], files, a.rounds)
                rs = inter["ratios"]
                print(
                    f"  interleaved, {a.rounds} rounds of each fastest set-up: {inter['ratio_median']:.1f}x median (rounds {min(rs):.1f}-{max(rs):.1f}x; "
                    f"{np.median(inter['main_images_per_s']):.1f} / {np.median(inter['seed_images_per_s']):.2f} img/s median)",
                    flush=True,
                )
        floor = None
        if not a.skip_floor:
            floor = pipeline_floor(Path(main_r["setup"]["run"]), files, a.batch_size)
            seed_ips = None
            if inter is not None:
                seed_ips = float(np.median(inter["seed_images_per_s"]))
            elif "seed" in best:
                seed_ips = best["seed"]["images_per_s"]
            print(
                f"the same pages without a model ({os.cpu_count()} worker processes, best of 3 rounds): the ceiling for any model"
                + (f"; x: against vit-seed's {seed_ips:.2f} img/s" if seed_ips else "")
            )
            for name, ips in floor.items():
                ms = (os.cpu_count() or 1) / ips * 1000
                print(
                    f"  {name:<42}{ips:>8.1f} img/s  ({ms:5.1f} ms a page on one core)"
                    + (f"{ips / seed_ips:>8.1f}x" if seed_ips else "")
                )
        fast_lat = min(r["p50_ms"] for r in results if r["which"] == "main")
        try:
            print(
                f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes share them)"
            )
        except OSError:
            pass
        print(
            f"{main_r['model']}: best throughput {main_r['images_per_s']:.1f} img/s (target >= 100), best p50 latency {fast_lat:.1f} ms (target <= 20)"
        )
        if note:
            print(note)
        if a.json:
            Path(a.json).write_text(
                json.dumps(
                    {
                        "results": results,
                        "interleaved": inter,
                        "floor_images_per_s": floor,
                        "note": note,
                        "threads": threads,
                        "pages": len(files),
                    },
                    indent=1,
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    sys.exit(main())
