"""Bounded load on the web service over loopback: errors, latency, server peak memory.

    python benchmarks/serve_load.py [--requests 200] [--concurrency 16] [--run RUN | --model NAME]

Starts `ecgvit serve` in a subprocess on 127.0.0.1 and a free port, sends --requests POST
/predict uploads of a synthetic 2213x1572 JPEG page from --concurrency concurrent clients (httpx
async), and reports non-200 answers (must be 0: the queue is sized above the concurrency),
p50/p95 client-side latency, throughput and the server's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vm(pid: int, key: str) -> int:
    """A /proc/PID/status memory field in kB (VmHWM: peak resident set, VmRSS: now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def _load(url: str, page: bytes, n: int, conc: int) -> tuple[list[float], Counter, float]:
    import httpx

    lat: list[float] = []
    codes: Counter = Counter()
    sem = asyncio.Semaphore(conc)
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                try:
                    r = await client.post("/predict", files={"file": (f"p{i}.jpg", page, "image/jpeg")})
                    codes[r.status_code] += 1
                except httpx.HTTPError as exc:
                    codes[type(exc).__name__] += 1
                lat.append((time.perf_counter() - t) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return lat, codes, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--run", default=None, help="run folder or .onnx (default: random-weight default model)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--workers", type=int, default=2, help="server inference workers")
    ap.add_argument("--queue", type=int, default=32, help="server queue (above --concurrency: no 503 expected)")
    a = ap.parse_args(argv)

    from ecgvit.synth import generate
    from predict_bench import default_model, make_random_run

    tmp = Path(tempfile.mkdtemp(prefix="ecgvit_serve_load_"))
    proc = None
    try:
        generate(tmp / "pages", per_class=1, seed=5, progress=False)
        page = sorted((tmp / "pages").rglob("*.jpg"))[0].read_bytes()
        note = ""
        if a.run:
            run = a.run
        else:
            name, note = (a.model, "") if a.model else default_model()
            run = str(make_random_run(tmp / "run", name))
        port = _free_port()
        exe = Path(sys.executable).with_name("ecgvit")
        cmd = [
            str(exe) if exe.exists() else sys.executable,
            *([] if exe.exists() else ["-m", "ecgvit.cli"]),
            "serve",
            run,
            "--port",
            str(port),
            "--workers",
            str(a.workers),
            "--queue",
            str(a.queue),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                print(proc.stderr.read() if proc.stderr else "", file=sys.stderr)
                raise SystemExit("server exited")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("server did not start in 90 s")
            time.sleep(0.3)
        health = httpx.get(url + "/healthz").json()
        rss0 = _vm(proc.pid, "VmRSS")
        asyncio.run(_load(url, page, min(8, a.requests), min(4, a.concurrency)))  # warm-up
        lat, codes, wall = asyncio.run(_load(url, page, a.requests, a.concurrency))
        hwm = _vm(proc.pid, "VmHWM")
        errors = sum(v for k, v in codes.items() if k != 200)
        print(
            f"server: {health['model']}, {a.workers} workers, queue {a.queue}; {os.cpu_count()} cores"
            + (f"  {note}" if note else "")
        )
        print(
            f"{a.requests} requests, {a.concurrency} concurrent, page {len(page) / 1e3:.0f} kB: "
            f"errors {errors} {dict(codes)}; latency p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms, "
            f"max {max(lat):.0f} ms; {a.requests / wall:.1f} req/s"
        )
        print(f"server memory: {rss0 / 1024:.0f} MB resident after start, peak (VmHWM) {hwm / 1024:.0f} MB")
        return 0 if errors == 0 else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
