"""Fixtures for the predict / explain / export / serve tests (imported by those test files).

Runs are built from a registered architecture with seeded random weights (create_model +
save_model, the layout `ecgvit train` writes): fast, and every code path downstream of
training (preprocessing recorded with the model, weights loading, export) is the real one.
Pages are full-size (2213x1572) synthetic report pages from `ecgvit.synth`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

TEST_MODEL = "resnet18"
TEST_SIZE = (64, 96)


def make_run(
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
    return make_run(tmp_path_factory.mktemp("runs") / "cnn")


@pytest.fixture(scope="session")
def onnx_run(tmp_path_factory, tiny_run) -> tuple[Path, dict]:
    """A copy of tiny_run exported to RUN/model.onnx; returns (run, export report)."""
    from ecgvit.export import export_onnx

    run = tmp_path_factory.mktemp("runs") / "cnn_onnx"
    shutil.copytree(tiny_run, run)
    report = export_onnx(run)
    return run, report


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while these tests run: on a shared 2-core machine, OpenMP threads
    spinning against other processes make small forwards 5-30x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
