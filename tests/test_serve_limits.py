"""Web service bounds over real sockets: a full queue answers 503 before the upload is read, slow
clients are cut off, multi-page uploads say which page was answered, /explain refuses a non-page
without importing torch. Real uvicorn servers on loopback, free ports, a handful of connections."""

from __future__ import annotations

import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from ecgvit.runtime.predictor import Predictor  # noqa: E402
from ecgvit.serve import create_app  # noqa: E402
from ecgvit.serve.app import server_config  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor(tiny_run, backend="torch", threads=1)


@pytest.fixture(scope="module")
def page_bytes(synth_pages) -> bytes:
    return synth_pages[0].read_bytes()


@contextmanager
def running(app, **kw) -> Iterator[tuple[str, int]]:
    """`app` under uvicorn (the config `ecgvit serve` uses) in a thread, on 127.0.0.1 and a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level="warning", **kw))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert t.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        t.join(10)


def _head(port: int, path: str = "/predict", length: int = 4_000_000) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=bnd\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


PART_HEAD = (
    b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
)


def _read_answer(s: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection or `timeout` passes."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _health(host: str, port: int) -> dict:
    return httpx.get(f"http://{host}:{port}/healthz", timeout=5).json()


def _refused_on_headers(host: str, port: int) -> None:
    """A 4 MB upload's headers only: the 503 must come back at once, with no body sent."""
    with socket.create_connection((host, port)) as late:
        t0 = time.monotonic()
        late.sendall(_head(port))  # the 4 MB body is never sent
        answer = _read_answer(late, 5)
        took = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200] or "no answer in 5 s"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"retry-after: 1" in head.lower() and b"connection: close" in head.lower()
    assert "busy" in json.loads(body)["detail"]
    assert took < 2, f"the 503 took {took:.1f} s"  # answered at once and the connection closed


def test_full_queue_refuses_before_the_body_is_read(tiny_run, page_bytes):
    """workers=1, queue=0. The one slot is taken by a request in inference, then by an upload
    still arriving: either way a further upload gets its 503 on its headers alone."""
    pred = Predictor(tiny_run, backend="torch", threads=1)
    entered, release = threading.Event(), threading.Event()
    real = pred.infer_logits

    def slow(arrays, **kw):
        entered.set()
        release.wait(20)
        return real(arrays, **kw)

    pred.infer_logits = slow
    app = create_app(pred, workers=1, queue=0, max_upload_bytes=5_000_000)
    with running(app) as (host, port):
        url = f"http://{host}:{port}/predict"
        first: dict = {}
        t = threading.Thread(
            target=lambda: first.update(r=httpx.post(url, files={"file": ("p.jpg", page_bytes)}, timeout=30))
        )
        t.start()
        assert entered.wait(20)
        _refused_on_headers(host, port)
        # A client that sends its whole body before reading (httpx, like most) still reads the 503.
        busy = httpx.post(url, files={"file": ("big.jpg", b"\0" * 4_000_000, "image/jpeg")}, timeout=30)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
        release.set()
        t.join(20)
        assert first["r"].status_code == 200

        holder = socket.create_connection((host, port))
        holder.sendall(_head(port) + PART_HEAD + b"\xff\xd8" + b"\0" * 1000)  # admitted, still uploading
        deadline = time.monotonic() + 5
        while _health(host, port)["in_flight"] != 1:
            assert time.monotonic() < deadline, "the upload was not admitted on its headers"
            time.sleep(0.05)
        _refused_on_headers(host, port)
        h = _health(host, port)
        assert h["refused_before_read"] == 3 and h["in_flight"] == 1
        holder.close()  # the admitted upload gives its slot back when its client goes away
        deadline = time.monotonic() + 5
        while _health(host, port)["in_flight"] != 0:
            assert time.monotonic() < deadline, "a dropped upload kept its slot"
            time.sleep(0.05)
        r = httpx.post(url, files={"file": ("p.jpg", page_bytes, "image/jpeg")}, timeout=30)
        assert r.status_code == 200, r.text


def _watch(socks: dict[str, socket.socket], dribble: set[str], limit: float) -> dict[str, tuple[float, bytes]]:
    """Dribble a header line every 0.25 s on the `dribble` sockets and read all of them until the
    server closes each (or `limit` s pass): {name: (seconds until closed, bytes received)}."""
    t0 = time.monotonic()
    data = {n: b"" for n in socks}
    closed: dict[str, tuple[float, bytes]] = {}
    next_drip = t0
    while len(closed) < len(socks) and time.monotonic() - t0 < limit:
        if time.monotonic() >= next_drip:
            next_drip += 0.25
            for n in dribble - set(closed):
                try:
                    socks[n].send(b"X-Slow: 1\r\n")
                except OSError:
                    closed[n] = (time.monotonic() - t0, data[n])
        live = {s: n for n, s in socks.items() if n not in closed}
        ready, _, _ = select.select(list(live), [], [], 0.05)
        for s in ready:
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                data[live[s]] += chunk
            else:
                closed[live[s]] = (time.monotonic() - t0, data[live[s]])
    return closed


@pytest.mark.slow
def test_slow_clients_are_cut_off(predictor, page_bytes):
    """Slowloris: headers dribbled forever, a connection that sends nothing, bodies never finished.
    Each is closed within its bound (1 s for a head, 1.5 s for a body) plus scheduling slack; a
    prompt client is still served meanwhile."""
    app = create_app(predictor, body_timeout=1.5)
    with running(app, header_timeout=1.0, keep_alive=1) as (host, port):
        socks = {n: socket.create_connection((host, port)) for n in ("drip1", "drip2", "silent", "body1", "body2")}
        try:
            for n in ("drip1", "drip2"):
                socks[n].sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
            for n in ("body1", "body2"):
                socks[n].sendall(_head(port, length=100_000) + PART_HEAD + b"\xff\xd8 partial")
            r = httpx.post(
                f"http://{host}:{port}/predict", files={"file": ("p.jpg", page_bytes, "image/jpeg")}, timeout=30
            )
            assert r.status_code == 200, r.text
            closed = _watch(socks, {"drip1", "drip2"}, limit=8)
        finally:
            for s in socks.values():
                s.close()
    assert set(closed) == set(socks), f"still open after 8 s: {set(socks) - set(closed)}"
    for n, (t, data) in closed.items():
        bound = 1.5 if n.startswith("body") else 1.0
        assert t < bound + 1.5, f"{n} closed after {t:.1f} s"
        if n.startswith("body"):
            assert data.startswith(b"HTTP/1.1 408") and b"too slow" in data, data[:200]
        elif n == "silent":
            assert data == b""  # nothing asked, nothing answered
    assert any(closed[n][1].startswith(b"HTTP/1.1 408") for n in ("drip1", "drip2")), closed


def _multipage(page: Image.Image, fmt: str, n: int = 2) -> bytes:
    buf = io.BytesIO()
    extra = {"resolution": 200.0} if fmt == "PDF" else {"compression": "jpeg"}
    page.save(buf, fmt, save_all=True, append_images=[page] * (n - 1), **extra)
    return buf.getvalue()


def test_multi_page_upload_says_which_page_was_answered(predictor, synth_pages):
    page = Image.open(synth_pages[0]).convert("RGB")
    with TestClient(create_app(predictor)) as c:
        single = c.post("/predict", files={"file": ("p.jpg", synth_pages[0].read_bytes(), "image/jpeg")}).json()
        assert single["pages"] == 1 and "note" not in single
        for fmt, n in (("TIFF", 3), ("PDF", 2)):
            r = c.post("/predict", files={"file": ("doc", _multipage(page, fmt, n), "application/octet-stream")})
            assert r.status_code == 200, r.text
            j = r.json()
            assert j["label"] and j["pages"] == n and f"answered page 1 of {n}" in j["note"], (fmt, j)
        r = c.post("/explain", files={"file": ("doc.tif", _multipage(page, "TIFF", 3), "image/tiff")})
        assert r.status_code == 200 and r.headers["x-pages"] == "3" and "page 1 of 3" in r.headers["x-note"]


@pytest.mark.slow
def test_rejected_explain_does_not_import_torch(onnx_run, page_bytes, tmp_path):
    """An ONNX-backed server (RUN/model.onnx beside the weights) answers a non-image 415 and a
    truncated page 400 on /explain without importing PyTorch (~700 MB)."""
    run, _ = onnx_run
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(page_bytes[:4000])
    code = f"""
import json, sys
from fastapi.testclient import TestClient
from ecgvit.runtime.predictor import Predictor
from ecgvit.serve import create_app
pred = Predictor({str(run)!r})
out = {{"backend": pred.backend, "torch_at_start": "torch" in sys.modules}}
with TestClient(create_app(pred)) as c:
    for name, data in (("hello.png", b"hello"), ("t.jpg", open({str(trunc)!r}, "rb").read())):
        r = c.post("/explain", files={{"file": (name, data, "image/jpeg")}})
        out[name] = [r.status_code, r.json()["detail"]]
out["torch"] = "torch" in sys.modules
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["backend"] == "onnx" and not out["torch_at_start"], out
    assert out["hello.png"][0] == 415 and "not an image" in out["hello.png"][1], out
    assert out["t.jpg"][0] == 400, out
    assert not out["torch"], "a rejected /explain imported torch"
