"""The model shipped inside the package: its files load, its config matches the code, and its
answers on generated pages are deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecgvit.run import bundled_run

pytestmark = pytest.mark.skipif(
    bundled_run() is None, reason="no bundled model in this checkout (scripts/train_bundled.py makes it)"
)


def test_bundled_config_matches_the_code():
    from ecgvit.config import KHAN_CLASSES, PreprocessConfig, TrainConfig, from_dict
    from ecgvit.models import get_spec

    meta = json.loads((bundled_run() / "config.json").read_text())
    assert meta["classes"] == list(KHAN_CLASSES)
    from_dict(PreprocessConfig, meta["preprocess"])  # raises on a field the code no longer knows
    from_dict(TrainConfig, meta["train"])
    get_spec(meta["model"]["name"])
    assert (bundled_run() / "model.safetensors").stat().st_size < 25e6


def test_bundled_predictions_are_deterministic(tmp_path):
    from ecgvit.data.preprocess import load_arrays
    from ecgvit.models.inference import predict_proba
    from ecgvit.run import load_run
    from ecgvit.synth import generate

    generate(tmp_path / "pages", per_class=1, seed=11, progress=False)
    paths = sorted(str(p) for p in (tmp_path / "pages").rglob("*.jpg"))
    a = load_run(bundled_run())
    x = load_arrays(paths, cfg=a.preprocess, cache_root=tmp_path / "c", workers=1)
    p1 = predict_proba(a.model, x)
    p2 = predict_proba(load_run(bundled_run()).model, x)
    np.testing.assert_array_equal(p1.argmax(1), p2.argmax(1))
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    assert p1.shape == (4, 4) and np.allclose(p1.sum(1), 1, atol=1e-5)


def test_bundled_model_runs_on_its_shipped_onnx(tmp_path):
    # The package ships model.onnx beside the weights, so `ecgvit predict` runs ONNX Runtime
    # out of the box; it must come from these very weights and answer as PyTorch does.
    from ecgvit.runtime.predictor import Predictor
    from ecgvit.synth import generate

    generate(tmp_path / "pages", per_class=1, seed=11, progress=False)
    paths = sorted(str(p) for p in (tmp_path / "pages").rglob("*.jpg"))
    fast = Predictor(bundled_run())
    assert fast.backend == "onnx" and fast.gate is not None
    ref = Predictor(bundled_run(), backend="torch")
    for a, b in zip(fast.predict(paths), ref.predict(paths), strict=False):
        assert (a.status, a.label) == (b.status, b.label)
        for k, v in b.probabilities.items():
            assert a.probabilities[k] == pytest.approx(v, abs=1e-5)


def test_predict_with_the_shipped_onnx_never_imports_torch_or_the_engine(tmp_path):
    # Importing torch costs ~1.2 s: `ecgvit predict page.jpg` (and every worker process) with an
    # ONNX model must not pay it, nor load any training code. Checked in a fresh interpreter.
    import subprocess
    import sys

    from ecgvit.synth import generate

    generate(tmp_path / "pages", per_class=1, seed=5, progress=False)
    page = str(sorted((tmp_path / "pages").rglob("*.jpg"))[0])
    code = (
        "import sys\nfrom ecgvit.cli import main\n"
        # 0: answered with confidence; 1: answered, but not confidently. Either run read the
        # page; which one depends on the shipped weights, not on what is tested here.
        f"assert main(['predict', {page!r}, '--quiet']) in (0, 1)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "engine = sorted(m for m in sys.modules if m == 'ecgvit.engine' or m.startswith('ecgvit.engine.'))\n"
        "assert not engine, f'training code imported: {engine}'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 inputs: 1" in r.stdout


def test_every_bundled_model_answers_by_name(tmp_path):
    # `ecgvit predict NAME page.jpg` / Predictor(NAME): each bundled model by its folder's name
    from ecgvit.run import BUNDLED_NAME, bundled_names
    from ecgvit.runtime.files import split_model_and_paths
    from ecgvit.runtime.predictor import Predictor
    from ecgvit.synth import generate

    names = bundled_names()
    assert names[0] == BUNDLED_NAME
    generate(tmp_path / "pages", per_class=1, seed=12, progress=False)
    page = str(sorted((tmp_path / "pages").rglob("*.jpg"))[0])
    for name in names:
        model, paths = split_model_and_paths([name, page])
        assert model == str(bundled_run(name)) and paths == [page]
        (row,) = Predictor(name).predict([page])
        assert row.status in ("ok", "low_confidence", "out_of_scope"), row
