"""Shared fixtures: small generated ECG-like report pages (no real data in tests).

A page is white paper with a header line of text (changes with `header`), a pink millimetre grid
in the trace area (the Khan fallback box) and a thick random black trace drawn from `seed`:
distinct seeds give clearly different traces (far apart in pHash), the same seed gives the same
trace, so a re-encoded or re-headed copy is a near duplicate.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

PAGE_SIZE = (600, 428)  # width, height: Khan aspect ratio, above the 256 px min side
TRACE_BOX = (0.031, 0.181, 0.982, 0.965)


def page_image(seed: int, size: tuple[int, int] = PAGE_SIZE, header: str | None = None) -> Image.Image:
    """An RGB page-like image whose trace depends only on `seed`."""
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), header if header is not None else f"ID {seed:06d}  2020-08-06 10:04", fill="black")
    left, top, right, bottom = (round(f * s) for f, s in zip(TRACE_BOX, (w, h, w, h), strict=False))
    for x in range(left, right + 1, 6):
        d.line([(x, top), (x, bottom)], fill=(250, 200, 210) if (x - left) % 30 else (240, 150, 170), width=1)
    for y in range(top, bottom + 1, 6):
        d.line([(left, y), (right, y)], fill=(250, 200, 210) if (y - top) % 30 else (240, 150, 170), width=1)
    rng = np.random.default_rng(seed)
    xs = np.linspace(left + 4, right - 4, 24)
    ys = rng.uniform(top + 6, bottom - 6, size=len(xs))
    d.line(list(zip(xs.tolist(), ys.tolist(), strict=False)), fill="black", width=5)
    # a few solid blocks at random places make the low frequencies differ strongly between seeds
    for _ in range(3):
        x0 = rng.uniform(left, right - 80)
        y0 = rng.uniform(top, bottom - 60)
        d.rectangle([x0, y0, x0 + 70, y0 + 50], fill="black")
    return img


def save_page(
    path: Path, seed: int, *, header: str | None = None, quality: int = 92, size: tuple[int, int] = PAGE_SIZE
) -> Path:
    """Write a page to `path` (format from the suffix; JPEG at `quality`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = page_image(seed, size=size, header=header)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, "JPEG", quality=quality)
    else:
        img.save(path)
    return path


@pytest.fixture
def make_page() -> Callable[..., Path]:
    """`make_page(path, seed, header=None, quality=92, size=PAGE_SIZE) -> path`."""
    return save_page


@pytest.fixture
def class_tree(tmp_path: Path) -> Callable[..., Path]:
    """`class_tree({folder: n_pages}, root=None, seed0=0) -> root`: one folder per class, distinct pages."""

    def build(spec: dict[str, int], root: Path | None = None, seed0: int = 0) -> Path:
        root = root or tmp_path / "data"
        seed = seed0
        for folder, n in spec.items():
            for i in range(n):
                save_page(root / folder / f"p{i:03d}.jpg", seed)
                seed += 1
        return root

    return build


# --- model runs and full-size synthetic pages (predict, explain, export, serve tests) ---------
# Runs are built from a registered architecture with seeded random weights (create_model +
# save_model, the layout `ecgvit train` writes): fast, and every code path downstream of
# training (preprocessing recorded with the model, weights loading, export) is the real one.
# Pages are full-size (2213x1572) synthetic report pages from `ecgvit.synth`.

TEST_MODEL = "resnet18"
TEST_SIZE = (64, 96)


def build_run(
    out: Path, model: str = TEST_MODEL, size: tuple[int, int] | None = TEST_SIZE, seed: int = 0, **model_kwargs
) -> Path:
    """A run folder (config.json + model.safetensors) holding `model` with seeded random weights."""
    from ecgvit.config import KHAN_CLASSES, to_dict
    from ecgvit.engine.train import save_model
    from ecgvit.models import create_model, get_spec

    spec = get_spec(model)
    size = tuple(size or spec.img_size)
    torch.manual_seed(seed)
    m = create_model(model, num_classes=len(KHAN_CLASSES), img_size=size, **model_kwargs).eval()
    pre = spec.preprocess(height=size[0], width=size[1])
    meta = {
        "classes": list(KHAN_CLASSES),
        "model": {
            "name": model,
            "img_size": list(size),
            "in_chans": spec.in_chans,
            "kwargs": model_kwargs,
            "params": sum(p.numel() for p in m.parameters()),
        },
        "preprocess": to_dict(pre),
        "finished": True,
        "note": "random weights (test fixture)",
    }
    out.mkdir(parents=True, exist_ok=True)
    save_model(out, m, meta)
    return out


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """One synthetic 2213x1572 JPEG page per class."""
    from ecgvit.synth import generate

    d = tmp_path_factory.mktemp("synth")
    generate(d, per_class=1, seed=3, progress=False)
    return d


@pytest.fixture(scope="session")
def synth_pages(synth_dir) -> list[Path]:
    return sorted(synth_dir.rglob("*.jpg"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("runs") / "cnn")


@pytest.fixture(scope="session")
def onnx_run(tmp_path_factory, tiny_run) -> tuple[Path, dict]:
    """A copy of tiny_run exported to RUN/model.onnx; returns (run, export report)."""
    from ecgvit.export import export_onnx

    run = tmp_path_factory.mktemp("runs") / "cnn_onnx"
    shutil.copytree(tiny_run, run)
    report = export_onnx(run)
    return run, report


@pytest.fixture(scope="session")
def make_run():
    """`make_run(out, model=..., size=..., seed=...)`: a run folder with seeded random weights."""
    return build_run


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread while these tests run: on a shared 2-core machine, OpenMP threads
    spinning against other processes make small forwards 5-30x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
