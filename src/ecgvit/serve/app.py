"""FastAPI app: `create_app(predictor, ...)`; `serve(...)` runs it under uvicorn.

Guards, in the order a request meets them:
  * headers: a connection must deliver a complete request head (at most 16 KB) within
    `header_timeout` seconds of connecting or of its previous answer, else it is closed (408 if
    it had sent part of one); idle keep-alive connections close after `keep_alive` seconds;
    at most `max_connections` connections are served, more get 503 (see `serve`).
  * body size: Content-Length above the limit is refused before anything is read, and a body
    that keeps coming past it (chunked uploads) is cut off: 413.
  * admission, on the headers, before the body is read: at most `workers` requests decode/infer
    at once and `queue` more may upload or wait; beyond that the answer is 503 (with Retry-After)
    and the connection is closed without reading the upload. An admitted upload is spooled by the
    multipart parser (to a temp file past 1 MB) and read into memory only by the worker that
    runs it: uploads hold at most (workers + queue) x the body limit on disk, and workers x the
    body limit in memory.
  * body time: the whole body must arrive within `body_timeout` seconds of the headers: 408.
  * content: the bytes must decode as an image (magic numbers, never the file name): 415 if
    they are not one, 400 if corrupt or too small, 413 above `max_pixels` (decompression bombs).
    A multi-page PDF or TIFF is answered for its first page, and the answer says so
    ("pages": N and a "note"; headers X-Pages and X-Note on /explain).
  * a missing `file` field: 422. Every error body is {"detail": "<one sentence>"}.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from PIL import Image

from ecgvit.data.io import BadImageError
from ecgvit.reader import draw_overlay, read_page
from ecgvit.runtime.inputs import open_image_bytes

STATIC = Path(__file__).parent / "static"
MULTIPART_SLACK = 64 * 1024  # multipart boundaries and headers around the file itself
DOCS_ASSETS = "/_docs"  # where Swagger UI's files are served for /docs
REDOC_JS = "/_redoc/redoc.standalone.js"  # ReDoc's script, its CDN logo taken out
UPLOAD_ROUTES = ("/predict", "/explain", "/digitize")
MAX_HEADER_BYTES = 16 * 1024  # h11's limit on a request head (request line + headers)
log = logging.getLogger("ecgvit")


class _Gate:
    """Admission counter: at most `capacity` requests inside (uploading, running or waiting)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.inside = 0
        self.refused = 0  # answered 503 before their body was read
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.inside >= self.capacity:
                self.refused += 1
                return False
            self.inside += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1


async def _reply(send: Any, status: int, detail: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A complete JSON error answer that also closes the connection (its unread body is dropped)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


BUSY = "server busy: too many requests in progress, try again shortly"


class _UploadGuard:
    """ASGI middleware, before any route reads a body: the size limit (413), admission (503 on
    the headers alone, the body never read) and the time limit for the body to arrive (408)."""

    def __init__(self, app: Any, gate: _Gate, max_bytes: int, body_timeout: float):
        self.app = app
        self.gate = gate
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.too_large = f"upload too large: the limit is {max_bytes - MULTIPART_SLACK} bytes"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                if int(cl) > self.max_bytes:
                    return await _reply(send, 413, self.too_large)
            except ValueError:
                pass
        admitted = False
        if scope.get("method") == "POST" and scope.get("path") in UPLOAD_ROUTES:
            if not self.gate.try_enter():
                return await _reply(send, 503, BUSY, ((b"retry-after", b"1"),))
            admitted = True
        try:
            await self._guarded(scope, receive, send)
        finally:
            if admitted:
                self.gate.leave()

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        # over: the status that replaces whatever the app answers (413, 408) once the body broke a limit
        state: dict[str, Any] = {"seen": 0, "over": None, "started": False, "done": False}

        async def limited_receive() -> dict:
            if state["done"]:
                return await receive()  # the body is in: only a disconnect can come now
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                state["over"] = 408
                raise HTTPException(408, self._slow()) from None
            if msg["type"] == "http.request":
                state["seen"] += len(msg.get("body", b""))
                if state["seen"] > self.max_bytes:
                    state["over"] = 413
                    raise HTTPException(413, self.too_large)
                state["done"] = not msg.get("more_body", False)
            return msg

        async def guarded_send(msg: dict) -> None:
            if state["over"] and not state["started"]:
                # Whatever the app made of a cut-off body, the answer is the limit's.
                state["started"] = True
                detail = self.too_large if state["over"] == 413 else self._slow()
                return await _reply(send, state["over"], detail)
            if state["over"]:
                return None
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        await self.app(scope, limited_receive, guarded_send)

    def _slow(self) -> str:
        return f"request body too slow: it must arrive within {self.body_timeout:g} s"


def _status_for(reason: str) -> int:
    r = reason.lower()
    if r.startswith("not an image"):
        return 415
    if "too large" in r:
        return 413
    return 400


_PDF_LOCK_FALLBACK = threading.Lock()


def page_count(data: bytes) -> int:
    """Pages of an uploaded PDF or frames of a TIFF (1 for anything else, or when it cannot be told).

    The same files `ecgvit predict` expands into one row per page (`ecgvit.data.io.MULTIPAGE_SUFFIXES`)."""
    try:
        from ecgvit.data import io as dio

        if dio.is_pdf(data[:1024]):
            import pypdfium2 as pdfium

            # PDFium is not thread-safe: hold the lock ecgvit.data.io renders pages under.
            with getattr(dio, "_PDF_LOCK", _PDF_LOCK_FALLBACK):
                doc = pdfium.PdfDocument(data)
                try:
                    return max(1, len(doc))
                finally:
                    doc.close()
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # the page itself was answered; the count is only a hint
        return 1
    return 1


def _pages_note(n: int) -> str | None:
    if n <= 1:
        return None
    return (
        f"answered page 1 of {n}: the server reads one page per upload; send each page as its own "
        "image, or run `ecgvit predict FILE` for every page"
    )


_REDOC_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _redoc_js() -> bytes:
    """fastapi-offline's ReDoc script with its one network fetch removed: the "API docs by
    Redocly" footer loads a logo from Redocly's CDN; with an empty src the image is not fetched
    (its error handler hides it) and the footer keeps its text."""
    import fastapi_offline

    path = Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js"
    return path.read_bytes().replace(_REDOC_CDN_LOGO.encode(), b"")


def create_app(
    predictor: Any,
    *,
    max_upload_bytes: int = 20_000_000,
    workers: int = 2,
    queue: int = 16,
    explain_max_side: int = 1000,
    body_timeout: float = 60.0,
    title: str = "ecgvit",
) -> FastAPI:
    """The web app around `predictor` (an ecgvit.runtime.predictor.Predictor).

    max_upload_bytes: largest accepted file. workers: requests decoded/inferred at once (threads).
    queue: further requests admitted to upload and wait for a worker; more get 503 before their
    body is read. body_timeout: seconds for a request's body to arrive, from its headers (408).
    The decompression-bomb limit is the predictor's `max_pixels`.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ecgvit-serve")
    gate = _Gate(max(1, workers) + max(0, queue))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    # fastapi-offline: /docs from the package's own Swagger UI files; FastAPI's default pages load
    # them from a CDN, which a machine without internet cannot reach. /redoc is ours (below).
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        redoc_url=None,
        # No "valid spec" badge fetched from validator.swagger.io (Swagger UI does for non-localhost hosts).
        swagger_ui_parameters={"validatorUrl": None},
        title=title,
        version=_version(),
        description="Classify 12-lead ECG report pages (" + ", ".join(predictor.classes) + "). Images only; "
        f"at most {max_upload_bytes} bytes per upload.",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.gate = gate
    app.add_middleware(_UploadGuard, gate=gate, max_bytes=max_upload_bytes + MULTIPART_SLACK, body_timeout=body_timeout)
    model_name = f"{predictor.model_name} ({predictor.backend})"
    redoc_js: list[bytes] = []

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        if any("file" in [str(x) for x in e.get("loc", ())] for e in errs):
            msg = "missing file: send the image as multipart/form-data field 'file'"
        else:
            msg = (
                "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in errs)
                or "invalid request"
            )
        return JSONResponse({"detail": msg}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(_req: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the request was not processed"}, status_code=500
        )

    def _read(file: UploadFile) -> bytes:
        """The upload's bytes, read in the worker: a request waiting for one keeps its upload in
        the parser's spooled temp file, so only running requests hold uploads in memory."""
        try:
            file.file.seek(0)
            data = file.file.read(max_upload_bytes + 1)
        finally:
            file.file.close()  # the temp file goes now, not when the answer is sent
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload too large: the limit is {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "empty file (0 bytes)")
        return data

    async def _run(fn: Any, file: UploadFile) -> Any:
        # Admission (the 503) was decided on the headers, by _UploadGuard.
        if file.size == 0:
            raise HTTPException(400, "empty file (0 bytes)")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, lambda: fn(_read(file)))
        except BadImageError as exc:
            raise HTTPException(_status_for(exc.reason), exc.reason) from None
        finally:
            await file.close()

    def _predict(data: bytes) -> dict[str, Any]:
        ld = predictor.load(data)
        row = predictor.answer(ld, "<upload>").to_dict()
        probs = row["probabilities"]
        out = {
            "status": row["status"],
            "reason": row["reason"],
            "label": row["label"],
            "probability": row["probability"],
            "probabilities": None if probs is None else {c: round(float(p), 6) for c, p in probs.items()},
            "crop_box": list(ld.box),
            "crop_detected": ld.crop_detected,
            "pages": page_count(data),
        }
        note = _pages_note(out["pages"])
        if note:
            out["note"] = note
        return out

    def _explain(data: bytes) -> tuple[bytes, dict[str, Any], int]:
        # Predictor.explain reads the upload before it imports PyTorch (~700 MB) for the heatmap,
        # so an upload that is no page is refused without it.
        img, info = predictor.explain(data, max_side=explain_max_side)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=False, compress_level=3)
        return buf.getvalue(), info, page_count(data)

    def _digitize(data: bytes) -> dict[str, Any]:
        # The reader wants the page at its full resolution (no draft decode), RGB.
        page = open_image_bytes(data, max_pixels=predictor.max_pixels, min_side=predictor.min_side)
        rgb = np.asarray(page.convert("RGB") if isinstance(page, Image.Image) else page.image())
        reading = read_page(rgb)
        overlay = Image.fromarray(draw_overlay(rgb, reading))
        if max(overlay.size) > explain_max_side:
            overlay.thumbnail((explain_max_side, explain_max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        overlay.save(buf, format="PNG", optimize=False, compress_level=3)
        pages = page_count(data)
        out: dict[str, Any] = {
            "ok": reading.ok,
            "reading": reading.to_dict(signals=True),
            "overlay_png": base64.b64encode(buf.getvalue()).decode(),
            "pages": pages,
        }
        note = _pages_note(pages)
        if note:
            out["note"] = note
        return out

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_JS}",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(REDOC_JS, include_in_schema=False)
    async def redoc_script() -> Response:
        if not redoc_js:
            redoc_js.append(_redoc_js())
        return Response(redoc_js[0], media_type="text/javascript", headers={"cache-control": "max-age=86400"})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and what is loaded."""
        return {
            "status": "ok",
            "model": model_name,
            "classes": predictor.classes,
            "in_flight": gate.inside,
            "capacity": gate.capacity,
            "refused_before_read": gate.refused,
            "max_upload_bytes": max_upload_bytes,
        }

    @app.post("/predict")
    async def predict(file: UploadFile = File(..., description="an ECG page image (JPEG, PNG, ...)")) -> dict[str, Any]:
        """Label one page: {label, probabilities, model, latency_ms, pages}. A multi-page PDF or
        TIFF is answered for page 1, with "pages": N and a "note" saying so."""
        t0 = time.perf_counter()
        out = await _run(_predict, file)
        out["model"] = model_name
        out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return out

    @app.post("/digitize")
    async def digitize(
        file: UploadFile = File(..., description="an ECG page image (JPEG, PNG, ...)"),
    ) -> dict[str, Any]:
        """Read the page's grid, layout and leads, and trace its signals: {ok, reading (layout,
        leads with their boxes, px/mm, calibration, signals: 12 leads x 5000 samples in mV at
        500 Hz, null where a lead is not printed, reasons), overlay_png (base64 PNG of the
        reading drawn on the page), pages, latency_ms}."""
        t0 = time.perf_counter()
        out = await _run(_digitize, file)
        out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return out

    @app.post(
        "/explain",
        response_class=Response,
        responses={
            200: {
                "content": {"image/png": {}},
                "description": "the page with the heatmap, label and probability drawn on it "
                "(X-Pages / X-Note headers: a multi-page upload is explained for page 1)",
            }
        },
    )
    async def explain(file: UploadFile = File(..., description="an ECG page image (JPEG, PNG, ...)")) -> Response:
        """Heatmap of what drove the prediction, drawn on the page (PNG)."""
        t0 = time.perf_counter()
        # With only an .onnx model (or no PyTorch installed) the heatmap is an occlusion map.
        png, info, pages = await _run(_explain, file)
        headers = {
            "X-Status": info.get("status", "ok"),
            "X-Label": info["label"] or "",
            "X-Probability": "" if info["probability"] is None else f"{info['probability']:.6f}",
            "X-Method": info["method"],
            "X-Pages": str(pages),
            "X-Latency-Ms": f"{(time.perf_counter() - t0) * 1000:.1f}",
        }
        if "leads" in info:  # a model on the reader's leads: probability lost without each lead
            headers["X-Lead-Importance"] = json.dumps(info["leads"], separators=(",", ":"))
        note = _pages_note(pages)
        if note:
            headers["X-Note"] = note
        return Response(png, media_type="image/png", headers=headers)

    return app


def _version() -> str:
    try:
        from ecgvit._version import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "0"


LINGER_IDLE = 0.5  # after an answer that leaves the upload unread: close once the client pauses this long
LINGER_MAX = 2.0  # ... or after this long in all


class _LingeringTransport:
    """The connection's transport as uvicorn sees it, with nginx's "lingering close": when an
    answer (503, 413, 408) leaves part of the request body unsent or unread, closing at once
    would make the kernel reset the connection, and a client still sending (most send the whole
    body before reading) gets "connection reset" instead of the answer. Instead the write side is
    shut after the answer and what still arrives is discarded (never stored) until the client
    pauses LINGER_IDLE s or LINGER_MAX s pass; then the connection is closed."""

    def __init__(self, transport: asyncio.Transport, protocol: Any):
        self._t = transport
        self._protocol = protocol
        self.lingering = False
        self._idle: asyncio.TimerHandle | None = None
        self._cap: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)

    def is_closing(self) -> bool:
        return self.lingering or self._t.is_closing()

    def close(self) -> None:
        import h11

        if self.is_closing():
            return
        if self._protocol.conn.their_state is not h11.SEND_BODY:
            return self._t.close()
        self.lingering = True
        try:
            self._t.write_eof()  # after what is buffered: the answer
            self._t.resume_reading()
        except (OSError, RuntimeError):
            return self._t.close()
        loop = self._protocol.loop
        self._cap = loop.call_later(LINGER_MAX, self.force_close)
        self.discard(0)

    def discard(self, n: int) -> None:
        """Bytes that arrived while lingering: dropped; the idle deadline starts again."""
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._protocol.loop.call_later(LINGER_IDLE, self.force_close)

    def force_close(self) -> None:
        for h in (self._idle, self._cap):
            if h is not None:
                h.cancel()
        self._idle = self._cap = None
        self._t.close()


def _http_protocol(header_timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline for each request head and a lingering close.

    uvicorn times out only idle keep-alive connections, and any byte resets that timer, so a
    client that dribbles its headers (slowloris) or connects and sends nothing holds the
    connection forever. Here a connection must complete a request head within `header_timeout`
    seconds of connecting or of its previous answer; else it is closed, with a 408 when part of
    a head had arrived. An answer given before the body was read is closed as described in
    `_LingeringTransport`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _armed_cycle: Any = None
        _bytes = 0
        _linger: _LingeringTransport | None = None

        def _arm(self) -> None:
            self._disarm()
            self._armed_cycle, self._bytes = self.cycle, 0
            self._timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _check(self) -> None:
            if self._timer is not None and self.cycle is not self._armed_cycle:
                self._disarm()  # a new request's head is complete

        def _expired(self) -> None:
            self._timer = None
            if self.transport.is_closing() or self.cycle is not self._armed_cycle:
                return
            if self._bytes:
                body = json.dumps(
                    {"detail": f"request headers too slow: they must arrive within {header_timeout:g} s"}
                ).encode()
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
                )
            assert self._linger is not None
            self._linger.force_close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as H11Protocol's
            self._linger = _LingeringTransport(transport, self)
            super().connection_made(self._linger)  # type: ignore[arg-type]  # a Transport in all but name
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._linger is not None and self._linger.lingering:
                return self._linger.discard(len(data))
            self._bytes += len(data)
            super().data_received(data)
            self._check()

        def on_response_complete(self) -> None:
            self._arm()  # before the parent handles pipelined requests (which _check then sees)
            super().on_response_complete()
            self._check()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._linger is not None:
                self._linger.force_close()
            super().connection_lost(exc)

    return BoundedH11


def _log_to_stderr() -> None:
    """`ecgvit serve` runs in the foreground: its own lines ("ecgvit: ...") go to stderr, unless
    the embedding program has set up logging."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ecgvit: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def server_config(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    header_timeout: float = 10.0,
    keep_alive: int = 5,
    max_connections: int = 100,
    log_level: str = "info",
) -> Any:
    """The uvicorn.Config `serve` runs `app` with: the slow-client bounds (see `_http_protocol`),
    16 KB request heads, idle keep-alive connections closed after `keep_alive` s and at most
    `max_connections` connections (beyond: 503)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=_http_protocol(header_timeout),
        timeout_keep_alive=max(1, int(keep_alive)),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=max(1, max_connections),
    )


def serve(
    model: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    queue: int = 16,
    max_upload_bytes: int = 20_000_000,
    threads: int = 0,
    log_level: str = "info",
    header_timeout: float = 10.0,
    body_timeout: float = 60.0,
    keep_alive: int = 5,
    max_connections: int = 100,
) -> None:
    """`ecgvit serve RUN`: load the model once, then run uvicorn (blocking).

    header_timeout: seconds for a request head to arrive; body_timeout: seconds for its body,
    from the head; keep_alive: seconds an idle connection stays open; max_connections: beyond
    it, requests get 503."""
    import os

    import uvicorn

    from ecgvit.runtime.predictor import Predictor

    for name, v in (("header_timeout", header_timeout), ("body_timeout", body_timeout), ("keep_alive", keep_alive)):
        if not v > 0:
            raise ValueError(f"{name}={v}: expected a positive number of seconds")
    if max_connections < 1:
        raise ValueError(f"max_connections={max_connections}: expected 1 or more")
    # Requests run side by side in `workers` threads: split the cores between them rather than
    # let every request's intra-op threads fight for all of them.
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    pred = Predictor(model, threads=threads)
    app = create_app(pred, max_upload_bytes=max_upload_bytes, workers=workers, queue=queue, body_timeout=body_timeout)
    _log_to_stderr()
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("warning: serving on %s: reachable from other machines; there is no authentication", host)
    log.info("%s (%s) on http://%s:%s/  (API docs: /docs)", pred.model_name, pred.backend, host, port)
    config = server_config(
        app,
        host,
        port,
        header_timeout=header_timeout,
        keep_alive=keep_alive,
        max_connections=max_connections,
        log_level=log_level,
    )
    uvicorn.Server(config).run()
