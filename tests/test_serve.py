"""Web service: every route, every bad input answered with a clear 4xx JSON, the bounded pool."""

from __future__ import annotations

import io
import re
import threading

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from ecgvit.config import KHAN_CLASSES  # noqa: E402
from ecgvit.runtime.predictor import Predictor  # noqa: E402
from ecgvit.serve import create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor(tiny_run, backend="torch", threads=1)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, max_upload_bytes=2_000_000)) as c:
        yield c


@pytest.fixture(scope="module")
def page_bytes(synth_pages) -> bytes:
    return synth_pages[0].read_bytes()


def _post(c, route, data: bytes, name="page.jpg", ctype="image/jpeg"):
    return c.post(route, files={"file": (name, data, ctype)})


def test_index_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'type="file"' in html and 'id="heatmap"' in html and 'id="label"' in html
    assert "http://" not in html and "https://" not in html  # no CDN, nothing external


def test_healthz_and_docs(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["classes"] == list(KHAN_CLASSES) and "resnet18" in h["model"]
    for url, script in (("/docs", "/_docs/swagger-ui-bundle.js"), ("/redoc", "/_redoc/redoc.standalone.js")):
        docs = client.get(url)
        assert docs.status_code == 200 and script in docs.text, url
        # Swagger UI and ReDoc come from this server, not a CDN: the pages work without internet.
        assets = re.findall(r'(?:src|href)="(/_(?:docs|redoc)/[^"]+)"', docs.text)
        assert script in assets and not re.search(r"https?://", docs.text), url
        for asset in assets:
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 500, asset
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/explain", "/healthz"} <= set(spec["paths"])


def test_docs_fetch_nothing_from_the_internet(client):
    """ReDoc's footer logo came from cdn.redoc.ly; Swagger UI's validator badge from validator.swagger.io."""
    js = client.get("/_redoc/redoc.standalone.js").text
    assert "cdn.redoc.ly" not in js and not re.search(r"""src:\s*["']https?://""", js)
    assert "API docs by Redocly" in js  # the same script otherwise
    assert '"validatorUrl": null' in client.get("/docs").text


def test_predict_json(client, page_bytes, predictor, synth_pages):
    r = _post(
        client, "/predict", page_bytes, name="whatever.bin", ctype="application/octet-stream"
    )  # name/type ignored
    assert r.status_code == 200, r.text
    j = r.json()
    assert set(j) >= {"label", "probabilities", "model", "latency_ms"}
    assert j["label"] in KHAN_CLASSES and sum(j["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    ref = predictor.predict(synth_pages[0])[0]
    assert j["label"] == ref.label and j["probabilities"] == pytest.approx(ref.probabilities, abs=1e-5)
    assert j["latency_ms"] > 0


def test_explain_png(client, page_bytes):
    r = _post(client, "/explain", page_bytes)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.headers["x-label"] in KHAN_CLASSES
    assert max(Image.open(io.BytesIO(r.content)).size) == 1000


def _assert_error(r, status, words):
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail, detail


def test_bad_inputs_get_clear_errors(client, page_bytes):
    _assert_error(client.post("/predict"), 422, "missing file")
    _assert_error(client.post("/predict", data={"other": "x"}), 422, "missing file")
    _assert_error(_post(client, "/predict", b"%PDF-1.4 not an image at all", name="page.jpg"), 400, "corrupt PDF")
    _assert_error(_post(client, "/explain", b"hello", name="page.png"), 415, "not an image")
    _assert_error(_post(client, "/predict", page_bytes[:4000]), 400, "truncated")
    _assert_error(_post(client, "/predict", b""), 400, "empty")
    small = io.BytesIO()
    Image.new("RGB", (50, 40)).save(small, "PNG")
    _assert_error(_post(client, "/predict", small.getvalue(), name="s.png"), 400, "too small")
    _assert_error(_post(client, "/predict", b"x" * 2_100_000), 413, "too large")


def test_chunked_upload_over_the_limit(client):
    def body():
        boundary = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        yield boundary
        for _ in range(40):
            yield b"\xff" * 100_000  # 4 MB, no Content-Length
        yield b"\r\n--b--\r\n"

    r = client.post("/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    _assert_error(r, 413, "too large")


def test_decompression_bomb_guard(tiny_run, page_bytes):
    small_limit = Predictor(tiny_run, backend="torch", max_pixels=1_000_000)
    with TestClient(create_app(small_limit)) as c:
        _assert_error(_post(c, "/predict", page_bytes), 413, "decompression-bomb")


def test_busy_server_answers_503(tiny_run, page_bytes):
    pred = Predictor(tiny_run, backend="torch")
    entered, release = threading.Event(), threading.Event()
    real = pred.infer_logits

    def slow(arrays, **kw):
        entered.set()
        release.wait(10)
        return real(arrays, **kw)

    pred.infer_logits = slow
    with TestClient(create_app(pred, workers=1, queue=0)) as c:
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(r=_post(c, "/predict", page_bytes)))
        t.start()
        assert entered.wait(10)
        r = _post(c, "/predict", page_bytes)
        _assert_error(r, 503, "busy")
        assert r.headers.get("retry-after") == "1"
        release.set()
        t.join(10)
        assert first["r"].status_code == 200
        assert _post(c, "/predict", page_bytes).status_code == 200  # capacity is given back


def test_onnx_only_server_predicts_and_explains_by_occlusion(onnx_run, page_bytes):
    run, _ = onnx_run
    with TestClient(create_app(Predictor(run / "model.onnx"))) as c:
        r = _post(c, "/predict", page_bytes)
        assert r.status_code == 200 and "(onnx)" in r.json()["model"]
        e = _post(c, "/explain", page_bytes)
        assert e.status_code == 200 and e.headers["content-type"] == "image/png"
        assert e.headers["X-Method"] == "occlusion" and e.headers["X-Label"] == r.json()["label"]


def test_unexpected_failure_is_a_json_500(tiny_run, page_bytes):
    pred = Predictor(tiny_run, backend="torch")

    def broken(arrays, **kw):
        raise RuntimeError("boom")

    pred.infer_logits = broken
    with TestClient(create_app(pred), raise_server_exceptions=False) as c:
        _assert_error(_post(c, "/predict", page_bytes), 500, "internal error")


def test_digitize_returns_the_reading_signals_and_overlay(client, page_bytes):
    import base64
    import io

    from PIL import Image

    r = _post(client, "/digitize", page_bytes)
    assert r.status_code == 200, r.text
    j = r.json()
    rd = j["reading"]
    assert j["ok"] and rd["layout"] == "3x4+1" and len(rd["leads_printed"]) == 12
    assert set(rd["signals"]) == {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"}
    assert all(len(v) == 5000 for v in rd["signals"].values())
    # 3x4+1 prints 2.5 s of V1 (1250 samples at 500 Hz); the rest is null, as PhysioNet does
    assert sum(v is not None for v in rd["signals"]["V1"]) <= 1300
    overlay = Image.open(io.BytesIO(base64.b64decode(j["overlay_png"])))
    assert overlay.format == "PNG" and max(overlay.size) <= 1600
    _assert_error(_post(client, "/digitize", b"this is text"), 415, "not an image")
