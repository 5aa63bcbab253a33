"""The upload page in a real browser: Debian's Chromium driven by Playwright.

Needs /usr/bin/chromium (`make browser` installs it with apt-get; never `playwright install`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(os.environ.get("ECGVIT_SCREENSHOT", "/tmp/ecgvit_serve_screenshot.png"))

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: run `make browser` (apt-get install chromium)"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(run):
    import uvicorn

    from ecgvit.runtime.predictor import Predictor
    from ecgvit.serve import create_app

    app = create_app(Predictor(run, backend="torch", threads=1), workers=2)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not srv.started:
        if time.time() > deadline or not t.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", srv, t


@pytest.fixture(scope="module")
def server(tiny_run):
    url, srv, t = _serve(tiny_run)
    yield url
    srv.should_exit = True
    t.join(10)


@pytest.fixture(scope="module")
def gated_server():
    from ecgvit.run import bundled_run

    run = bundled_run()
    if run is None:
        pytest.skip("no bundled model (with its out-of-scope gate) in this install")
    url, srv, t = _serve(run)
    yield url
    srv.should_exit = True
    t.join(10)


def test_upload_shows_label_bars_and_heatmap(server, synth_pages):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            external: list[str] = []
            page.on(
                "request",
                lambda req: (
                    None
                    if req.url.startswith(server) or req.url.startswith(("blob:", "data:"))
                    else external.append(req.url)
                ),
            )
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('resnet18')", timeout=15000)
            page.set_input_files("#file", str(synth_pages[0]))
            page.wait_for_function("document.getElementById('label').textContent.length > 0", timeout=30000)
            page.wait_for_function(
                "(() => { const h = document.getElementById('heatmap'); return h.complete && h.naturalWidth > 0 && h.style.display === 'block'; })()",
                timeout=30000,
            )
            # The page reader's overlay and the signals to download (POST /digitize).
            page.wait_for_function(
                "(() => { const o = document.getElementById('overlay'); return o.complete && o.naturalWidth > 0 && o.style.display === 'block'; })()",
                timeout=60000,
            )
            assert "Layout 3x4+1" in page.inner_text("#signote")
            links = page.locator("#downloads a")
            assert links.count() == 2 and links.first.get_attribute("download").endswith(".csv")
            label = page.inner_text("#label")
            bars = page.locator(".bar")
            assert bars.count() == 4
            assert page.locator(".bar.top").count() == 1
            assert page.eval_on_selector("#heatmap", "h => h.naturalWidth") == 1000
            assert page.eval_on_selector("#preview", "p => p.naturalWidth") == 2213
            assert label.replace(" ", "_") in {"normal", "myocardial_infarction", "abnormal_heartbeat", "history_of_mi"}
            assert "error" not in page.inner_text("#status")
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # A bad file is answered with the server's message, not a broken page.
            bad = SCREENSHOT.with_name("not_a_page.jpg")
            bad.write_text("this is text")
            page.set_input_files("#file", str(bad))
            page.wait_for_function("document.getElementById('status').className === 'error'", timeout=15000)
            assert "not an image" in page.inner_text("#status")
            assert external == []
        finally:
            browser.close()


def test_out_of_scope_page_shows_the_reason_not_bars(gated_server, tmp_path):
    import numpy as np
    from PIL import Image

    from ecgvit.synth.negatives import make_negative

    sync_api = pytest.importorskip("playwright.sync_api")
    strip = tmp_path / "rhythm_strip.jpg"
    Image.fromarray(make_negative("single_lead", np.random.default_rng(0))).save(strip, quality=85)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(gated_server + "/")
            page.set_input_files("#file", str(strip))
            page.wait_for_function("document.getElementById('label').dataset.status === 'out_of_scope'", timeout=30000)
            assert page.inner_text("#label") == "Can't read this page"
            assert "single lead" in page.inner_text("#meta")
            assert page.locator(".bar").count() == 0
            page.screenshot(path=str(SCREENSHOT.with_name("ecgvit_out_of_scope.png")), full_page=True)
        finally:
            browser.close()


def test_api_docs_render_offline(server):
    """Swagger UI at /docs draws the API from this server's own files (no CDN request)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page()
            external: list[str] = []
            page.on(
                "request",
                lambda req: (
                    None
                    if req.url.startswith(server) or req.url.startswith(("blob:", "data:"))
                    else external.append(req.url)
                ),
            )
            page.goto(server + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=20000)
            paths = {p.strip() for p in page.locator(".opblock-summary-path").all_inner_texts()}
            assert {"/predict", "/explain", "/healthz"} <= paths, paths
            assert external == []
        finally:
            browser.close()
