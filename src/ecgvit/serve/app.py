"""FastAPI app: `create_app(predictor, ...)`.

Guards, in the order a request meets them:
  * body size: Content-Length above the limit is refused before anything is read, and a body
    that keeps coming past it (chunked uploads) is cut off: 413.
  * a bounded pool: at most `workers` requests decode/infer at once and `queue` more may wait;
    beyond that the answer is 503 (with Retry-After) instead of unbounded memory growth.
  * content: the bytes must decode as an image (magic numbers, never the file name): 415 if
    they are not one, 400 if corrupt or too small, 413 above `max_pixels` (decompression bombs).
  * a missing `file` field: 422. Every error body is {"detail": "<one sentence>"}.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline

from ecgvit.data.io import BadImageError

STATIC = Path(__file__).parent / "static"
MULTIPART_SLACK = 64 * 1024  # multipart boundaries and headers around the file itself
DOCS_ASSETS = "/_docs"  # where Swagger UI's files are served for /docs


class _Gate:
    """Admission counter: at most `capacity` requests inside (running or waiting)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.inside = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.inside >= self.capacity:
                return False
            self.inside += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1


class _BodyLimit:
    """ASGI middleware: 413 for request bodies over `max_bytes` (declared or actually sent)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any) -> None:
        body = json.dumps(
            {"detail": f"upload too large: the limit is {self.max_bytes - MULTIPART_SLACK} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                if int(cl) > self.max_bytes:
                    return await self._reject(send)
            except ValueError:
                pass
        state = {"seen": 0, "over": False, "started": False}

        async def limited_receive() -> dict:
            msg = await receive()
            if msg["type"] == "http.request":
                state["seen"] += len(msg.get("body", b""))
                if state["seen"] > self.max_bytes:
                    state["over"] = True
                    raise HTTPException(413, f"upload too large: the limit is {self.max_bytes - MULTIPART_SLACK} bytes")
            return msg

        async def guarded_send(msg: dict) -> None:
            if state["over"] and not state["started"]:
                # Whatever the app made of a cut-off body, the answer is 413.
                state["started"] = True
                return await self._reject(send)
            if state["over"]:
                return None
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        await self.app(scope, limited_receive, guarded_send)


def _status_for(reason: str) -> int:
    r = reason.lower()
    if r.startswith("not an image"):
        return 415
    if "too large" in r:
        return 413
    return 400


def create_app(
    predictor: Any,
    *,
    max_upload_bytes: int = 20_000_000,
    workers: int = 2,
    queue: int = 16,
    explain_max_side: int = 1000,
    title: str = "ecgvit",
) -> FastAPI:
    """The web app around `predictor` (an ecgvit.predict.Predictor).

    max_upload_bytes: largest accepted file. workers: requests decoded/inferred at once (threads).
    queue: requests allowed to wait for a worker; more get 503. The decompression-bomb limit is
    the predictor's `max_pixels`.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ecgvit-serve")
    gate = _Gate(max(1, workers) + max(0, queue))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    # fastapi-offline: /docs and /redoc from the package's own Swagger UI / ReDoc files;
    # FastAPI's default pages load them from a CDN, which a machine without internet cannot reach.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title=title,
        version=_version(),
        description="Classify 12-lead ECG report pages (" + ", ".join(predictor.classes) + "). Images only; "
        f"at most {max_upload_bytes} bytes per upload.",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.gate = gate
    app.add_middleware(_BodyLimit, max_bytes=max_upload_bytes + MULTIPART_SLACK)
    model_name = f"{predictor.model_name} ({predictor.backend})"

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

    async def _read(file: UploadFile) -> bytes:
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload too large: the limit is {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "empty file (0 bytes)")
        return data

    async def _run(fn: Any, file: UploadFile) -> Any:
        if not gate.try_enter():
            raise HTTPException(
                503, "server busy: too many requests in progress, try again shortly", headers={"Retry-After": "1"}
            )
        try:
            data = await _read(file)
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(pool, fn, data)
            except BadImageError as exc:
                raise HTTPException(_status_for(exc.reason), exc.reason) from None
        finally:
            gate.leave()

    def _predict(data: bytes) -> dict[str, Any]:
        ld = predictor.load(data)
        row = predictor.answer(ld, "<upload>").to_dict()
        probs = row["probabilities"]
        return {
            "status": row["status"],
            "reason": row["reason"],
            "label": row["label"],
            "probability": row["probability"],
            "probabilities": None if probs is None else {c: round(float(p), 6) for c, p in probs.items()},
            "crop_box": list(ld.box),
            "crop_detected": ld.crop_detected,
        }

    def _explain(data: bytes) -> tuple[bytes, dict[str, Any]]:
        img, info = predictor.explain(data, max_side=explain_max_side)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=False, compress_level=3)
        return buf.getvalue(), info

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and what is loaded."""
        return {
            "status": "ok",
            "model": model_name,
            "classes": predictor.classes,
            "in_flight": gate.inside,
            "capacity": gate.capacity,
            "max_upload_bytes": max_upload_bytes,
        }

    @app.post("/predict")
    async def predict(file: UploadFile = File(..., description="an ECG page image (JPEG, PNG, ...)")) -> dict[str, Any]:
        """Label one page: {label, probabilities, model, latency_ms}."""
        t0 = time.perf_counter()
        out = await _run(_predict, file)
        out["model"] = model_name
        out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return out

    @app.post(
        "/explain",
        response_class=Response,
        responses={
            200: {
                "content": {"image/png": {}},
                "description": "the page with the heatmap, label and probability drawn on it",
            }
        },
    )
    async def explain(file: UploadFile = File(..., description="an ECG page image (JPEG, PNG, ...)")) -> Response:
        """Heatmap of what drove the prediction, drawn on the page (PNG)."""
        t0 = time.perf_counter()
        if getattr(predictor, "run", None) is None and getattr(predictor, "_loaded", None) is None:
            raise HTTPException(
                501, "heatmaps need the PyTorch weights: start the server with the RUN folder, not only the .onnx file"
            )
        png, info = await _run(_explain, file)
        headers = {
            "X-Status": info.get("status", "ok"),
            "X-Label": info["label"] or "",
            "X-Probability": "" if info["probability"] is None else f"{info['probability']:.6f}",
            "X-Method": info["method"],
            "X-Latency-Ms": f"{(time.perf_counter() - t0) * 1000:.1f}",
        }
        return Response(png, media_type="image/png", headers=headers)

    return app


def _version() -> str:
    try:
        from ecgvit._version import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "0"


def serve(
    model: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    queue: int = 16,
    max_upload_bytes: int = 20_000_000,
    threads: int = 0,
    log_level: str = "info",
) -> None:
    """`ecgvit serve RUN`: load the model once, then run uvicorn (blocking)."""
    import os
    import sys

    import uvicorn

    from ecgvit.runtime.predictor import Predictor

    # Requests run side by side in `workers` threads: split the cores between them rather than
    # let every request's intra-op threads fight for all of them.
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    pred = Predictor(model, threads=threads)
    app = create_app(pred, max_upload_bytes=max_upload_bytes, workers=workers, queue=queue)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"ecgvit: warning: serving on {host}: reachable from other machines; there is no authentication",
            file=sys.stderr,
        )
    print(f"ecgvit: {pred.model_name} ({pred.backend}) on http://{host}:{port}/  (API docs: /docs)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5)
