"""Bounded load on the web service over loopback: errors, latency, server peak memory.

    python benchmarks/serve_load.py [--requests 200] [--concurrency 16] [--run RUN | --model NAME]
    python benchmarks/serve_load.py --big [--big-clients 40] [--big-mb 19]

Starts `ecgvit serve` in a subprocess on 127.0.0.1 and a free port, sends --requests POST
/predict uploads of a synthetic 2213x1572 JPEG page from --concurrency concurrent clients (httpx
async), and reports non-200 answers (must be 0: the queue is sized above the concurrency),
p50/p95 client-side latency, throughput and the server's peak resident memory (VmHWM).

--big: backpressure instead. --big-clients connections at once each POST a --big-mb upload (the
page JPEG padded after its end marker: a valid page) to a server with the default --workers 2
--queue 16, over raw sockets that stop sending when an answer arrives. Reports the answers, how
many were refused before their body was read (the server's own count, and the client bytes sent
by then), the server's resident memory (peak sampled during the load, and VmHWM) and the peak
bytes of the server's temp files (its fds into a private TMPDIR, sampled every 10 ms), against
the bound capacity x (max upload + multipart slack). Exit 1 if the bound is broken or a refused
upload was read.
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
import threading
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


def _temp_bytes(pid: int, tmpdir: str) -> int:
    """Bytes in the files under `tmpdir` that process `pid` holds open (unlinked ones included)."""
    total = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(fd).startswith(tmpdir):
                total += os.stat(fd).st_size
        except OSError:
            pass
    return total


class _Sampler(threading.Thread):
    """Peak server RSS (kB) and temp-file bytes, sampled every `every` s until stopped."""

    def __init__(self, pid: int, tmpdir: str, every: float = 0.01):
        super().__init__(daemon=True)
        self.pid, self.tmpdir, self.every = pid, tmpdir, every
        self.peak_rss = 0
        self.peak_temp = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, _vm(self.pid, "VmRSS"))
            except OSError:
                return
            self.peak_temp = max(self.peak_temp, _temp_bytes(self.pid, self.tmpdir))
            time.sleep(self.every)


class _Upload(asyncio.Protocol):
    """One raw HTTP/1.1 upload: the body is written in chunks until the server answers or closes."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.answered = asyncio.Event()  # a status line came back
        self.closed = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n" in self.buf:
            self.answered.set()

    def connection_lost(self, exc) -> None:
        self.closed.set()
        self.answered.set()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def complete(self) -> bool:
        head, sep, body = bytes(self.buf).partition(b"\r\n\r\n")
        if not sep:
            return False
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                return len(body) >= int(v)
        return False

    def status(self) -> int | str:
        line = bytes(self.buf).split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 and line[1].isdigit() else "no answer"


async def _big_one(port: int, head: bytes, body: bytes, chunk: int = 256 * 1024) -> tuple[int | str, int, float]:
    """(status, body bytes sent before the answer, seconds)."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    _, up = await loop.create_connection(_Upload, "127.0.0.1", port)
    assert up.transport is not None
    up.transport.write(head)
    sent = 0
    view = memoryview(body)
    while sent < len(body) and not up.answered.is_set():
        await up.writable.wait()
        if up.answered.is_set() or up.transport.is_closing():
            break
        up.transport.write(view[sent : sent + chunk])
        sent = min(len(body), sent + chunk)
        await asyncio.sleep(0)  # let answers in between chunks
    deadline = time.perf_counter() + 120
    while not up.complete() and not up.closed.is_set() and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    up.transport.close()
    return up.status(), sent, time.perf_counter() - t0


async def _big(port: int, page: bytes, clients: int, mb: float) -> list[tuple[int | str, int, float]]:
    size = int(mb * 1e6)
    part = (
        b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    body = part + page + b"\0" * max(0, size - len(page)) + b"\r\n--bnd--\r\n"
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary=bnd\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return list(await asyncio.gather(*(_big_one(port, head, body) for _ in range(clients))))


def big_report(port: int, pid: int, tmpdir: str, url: str, page: bytes, a: argparse.Namespace) -> int:
    import httpx

    health = httpx.get(url + "/healthz").json()
    rss0 = _vm(pid, "VmRSS")
    sampler = _Sampler(pid, tmpdir)
    sampler.start()
    t0 = time.perf_counter()
    res = asyncio.run(_big(port, page, a.big_clients, a.big_mb))
    wall = time.perf_counter() - t0
    time.sleep(0.1)
    sampler.stop.set()
    sampler.join(5)
    after = httpx.get(url + "/healthz").json()
    hwm = _vm(pid, "VmHWM")
    codes = Counter(r[0] for r in res)
    body_len = int(a.big_mb * 1e6)
    refused = [r for r in res if r[0] == 503]
    early = [r for r in refused if r[1] < body_len]
    capacity, max_up = health["capacity"], health["max_upload_bytes"]
    bound = capacity * (max_up + 64 * 1024)
    server_refused = after.get("refused_before_read", 0) - health.get("refused_before_read", 0)
    sent_refused = sorted(r[1] for r in refused)
    print(f"server: {health['model']}, capacity {capacity} (workers + queue), max upload {max_up / 1e6:.0f} MB")
    print(
        f"{a.big_clients} concurrent {a.big_mb:g} MB uploads in {wall:.1f} s: answers {dict(codes)}; "
        f"refused before the body was read (server count): {server_refused}; "
        f"503s that arrived before the client had sent its body: {len(early)} of {len(refused)}"
        + (
            f" (body bytes sent by then: median {sent_refused[len(sent_refused) // 2] / 1e6:.1f} MB, "
            f"max {sent_refused[-1] / 1e6:.1f} MB of {body_len / 1e6:.0f})"
            if sent_refused
            else ""
        )
    )
    print(
        f"server memory: {rss0 / 1024:.0f} MB resident before, peak {sampler.peak_rss / 1024:.0f} MB during the load "
        f"(+{(sampler.peak_rss - rss0) / 1024:.0f} MB), VmHWM {hwm / 1024:.0f} MB"
    )
    ok = sampler.peak_temp <= bound
    print(
        f"server temp files: peak {sampler.peak_temp / 1e6:.0f} MB; bound {capacity} x "
        f"({max_up / 1e6:.0f} MB + 64 KiB) = {bound / 1e6:.0f} MB: {'within' if ok else 'EXCEEDED'}"
    )
    return 0 if ok and len(early) == len(refused) and server_refused == len(refused) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--run", default=None, help="run folder or .onnx (default: random-weight default model)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--workers", type=int, default=2, help="server inference workers")
    ap.add_argument(
        "--queue",
        type=int,
        default=None,
        help="server queue (default 32, above --concurrency: no 503 expected; --big: 16)",
    )
    ap.add_argument("--big", action="store_true", help="backpressure: concurrent large uploads (see above)")
    ap.add_argument("--big-clients", type=int, default=40)
    ap.add_argument("--big-mb", type=float, default=19.0, help="upload size in MB (under the 20 MB limit)")
    a = ap.parse_args(argv)
    if a.queue is None:
        a.queue = 16 if a.big else 32  # --big: the server's default, the point being a full queue

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
        tmpdir = tmp / "server_tmp"  # the server's TMPDIR: where its spooled uploads go
        tmpdir.mkdir()
        env = {**os.environ, "TMPDIR": str(tmpdir)}
        with open(tmp / "server.log", "w") as log:  # a file, not a pipe nobody reads (a full pipe stalls the server)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
        url = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                print((tmp / "server.log").read_text(), file=sys.stderr)
                raise SystemExit("server exited")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("server did not start in 90 s")
            time.sleep(0.3)
        if a.big:
            return big_report(port, proc.pid, str(tmpdir), url, page, a)
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
