"""`make base-install`: the wheel's base install (no extras) reads pages without PyTorch.

Run by the fresh virtual environment the Makefile target builds from the wheel alone. It writes
a few generated pages, then checks that `ecgvit predict`, `ecgvit explain` and (when the page
reader is installed) `ecgvit digitize` answer them, that `ecgvit serve` answers a real POST
/predict over loopback, that torch was never importable, and prints the sizes of the wheel and
of the environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path


def run(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "ecgvit.cli", *args], capture_output=True, text=True, timeout=600)
    print(f"$ ecgvit {' '.join(args)}\n{r.stdout.strip()}", flush=True)
    if r.returncode not in (0, 1):  # 1: answered, none confidently (the weights decide)
        sys.exit(f"ecgvit {args[0]} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post_page(port: int, page: Path) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{page.name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + page.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return dict(json.loads(r.read()))


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> None:
    if importlib.util.find_spec("torch") is not None:
        sys.exit("torch is importable: this is not a base install")
    from ecgvit.synth import generate

    with tempfile.TemporaryDirectory(prefix="ecgvit-base-") as tmp:
        pages = Path(tmp) / "pages"
        generate(pages, per_class=1, seed=21, progress=False)
        files = sorted(pages.rglob("*.jpg"))
        out = run("predict", str(pages), "--out", f"{tmp}/preds.csv", "--quiet")
        assert "4 inputs: 4 labelled" in out or "labelled" in out, out
        out = run("explain", str(files[0]), "--out", f"{tmp}/heat.png")
        assert "occlusion" in out and Path(f"{tmp}/heat.png").stat().st_size > 0, out
        if importlib.util.find_spec("ecgvit.reader") is not None:
            run("digitize", str(files[0]), "--out", f"{tmp}/signals")
            assert any(Path(f"{tmp}/signals").rglob("*.csv")), "digitize wrote no CSV"
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "ecgvit.cli", "serve", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                    break
                except OSError:
                    if server.poll() is not None:
                        sys.exit(f"ecgvit serve exited: {server.stderr.read() if server.stderr else ''}")
                    time.sleep(0.5)
            answer = post_page(port, files[0])
            print(f"POST /predict: {answer['status']} {answer['label']} p={answer['probability']}", flush=True)
            assert answer["status"] in ("ok", "low_confidence"), answer
        finally:
            server.terminate()
            server.wait(timeout=30)
    if "torch" in sys.modules:
        sys.exit("torch was imported")
    env = Path(sys.prefix)
    wheel = os.environ.get("ECGVIT_WHEEL")
    sizes = f"base environment {dir_size(env) / 1e6:.0f} MB on disk"
    if wheel:
        sizes += f", wheel {Path(wheel).stat().st_size / 1e6:.1f} MB"
    print(f"base install OK: predict, explain (occlusion), digitize, serve without torch; {sizes}")


if __name__ == "__main__":
    main()
