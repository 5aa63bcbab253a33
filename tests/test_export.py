"""ONNX export: parity with PyTorch at the real input size, dynamic batch, config travels with
the file, predict picks RUN/model.onnx only while it matches the weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ecgvit.cli import main
from ecgvit.config import KHAN_CLASSES
from ecgvit.runtime.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_export_report_and_files(onnx_run):
    run, report = onnx_run
    assert report["max_abs_logit_diff"] <= 1e-4
    assert (run / "model.onnx").exists() and (run / "model.onnx.json").exists()
    meta = json.loads((run / "model.onnx.json").read_text())
    assert meta["classes"] == list(KHAN_CLASSES) and meta["export"]["weights_sha256"]


def test_parity_on_real_pages_any_batch(onnx_run, synth_pages):
    import onnxruntime as ort

    from ecgvit.models import prepare_batch
    from ecgvit.run import load_run

    run, _ = onnx_run
    lr = load_run(run)
    pred = Predictor(run, backend="torch")
    arrays = np.stack([pred.load(p).array for p in synth_pages])  # 4 real pages, real preprocessing
    sess = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3, 4):
        x = prepare_batch(arrays[:n])
        with torch.no_grad():
            ref = lr.model(x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == (n, len(KHAN_CLASSES))
        assert np.abs(got - ref).max() <= 1e-4


def test_onnx_runs_in_chunks_with_the_logits_of_one_call(onnx_run, synth_pages, monkeypatch):
    """Predictor feeds ONNX Runtime ORT_CHUNK pages at a time (faster: the activations stay in
    cache); any batch length, a partial last chunk included, gives what one call gives."""
    import ecgvit.runtime.backends as predict_mod
    from ecgvit.data.preprocess import model_input

    run, _ = onnx_run
    pred = Predictor(run, backend="onnx")
    pages = np.stack([pred.load(p).array for p in synth_pages])
    arrays = np.concatenate([pages, pages[::-1], pages[:3]])  # 11 pages
    be = pred.model_backend
    whole = be.session.run(None, {be.session.get_inputs()[0].name: model_input(arrays)})
    for chunk in (1, 4, predict_mod.ORT_CHUNK):
        monkeypatch.setattr(predict_mod, "ORT_CHUNK", chunk)
        logits, feats = pred.infer_logits(arrays, features=True)
        assert logits.shape == whole[0].shape and feats.shape == whole[1].shape
        assert np.abs(logits - whole[0]).max() <= 1e-5 and np.abs(feats - whole[1]).max() <= 1e-5
        only, none = pred.infer_logits(arrays)
        assert none is None and np.array_equal(only, logits)


def test_predict_uses_onnx_alone_and_beside_the_run(onnx_run, synth_pages):
    run, _ = onnx_run
    auto = Predictor(run)
    assert auto.backend == "onnx"
    alone = Predictor(run / "model.onnx")  # config read from the model's metadata
    assert alone.backend == "onnx" and alone.classes == list(KHAN_CLASSES) and alone.run is None
    ref = Predictor(run, backend="torch").predict(synth_pages)
    for a, b, c in zip(auto.predict(synth_pages), alone.predict(synth_pages), ref, strict=False):
        assert a.label == b.label == c.label
        for k in KHAN_CLASSES:
            assert a.probabilities[k] == pytest.approx(c.probabilities[k], abs=1e-5)
    with pytest.raises(ValueError, match="needs PyTorch and the run's weights"):
        alone.explain(synth_pages[0], method="rollout")
    _, info = alone.explain(synth_pages[0])  # no PyTorch weights: an occlusion map on ONNX Runtime
    assert info["method"] == "occlusion" and info["label"] == ref[0].label


def test_stale_onnx_is_not_used(onnx_run, tmp_path, caplog, make_run):
    run, _ = onnx_run
    stale = tmp_path / "stale"
    shutil.copytree(run, stale)
    make_run(stale, seed=123)  # new weights in the same folder; the old model.onnx stays
    p = Predictor(stale)
    assert p.backend == "torch"
    assert "out of date" in caplog.text  # logged to the "ecgvit" logger (the CLI shows it on stderr)
    with pytest.raises(ValueError, match="other weights"):
        Predictor(stale, backend="onnx")


def test_cli_predict_with_onnx_file_first(onnx_run, synth_pages, capsys):
    run, _ = onnx_run
    assert main(["predict", str(run / "model.onnx"), str(synth_pages[0]), "--quiet"]) == 0
    assert "1 labelled" in capsys.readouterr().out


def test_cli_export(tiny_run, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_run), "--onnx", str(out), "--exporter", "torchscript"]) == 0
    text = capsys.readouterr().out
    assert "parity max |logit diff|" in text and out.exists()
    assert not (tiny_run / "model.onnx").exists()
    assert main(["export", str(tmp_path / "norun")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty")]) == 2
    assert "not a training run" in capsys.readouterr().err


def test_default_model_exports_at_its_real_size(tmp_path, make_run):
    from ecgvit.config import DEFAULT_MODEL
    from ecgvit.models import list_models

    if DEFAULT_MODEL not in list_models():
        pytest.skip(f"default model {DEFAULT_MODEL!r} is not registered yet")
    from ecgvit.export import export_onnx

    run = make_run(tmp_path / "default", model=DEFAULT_MODEL, size=None)
    report = export_onnx(run)
    assert report["max_abs_logit_diff"] <= 1e-4


def test_onnx_input_is_bit_identical_to_prepare_batch():
    # The ONNX path feeds model_input's NumPy array, training and export prepare_batch's tensor
    # (built on it): they must agree to the bit, or predictions move between backends.
    from ecgvit.data.preprocess import model_input
    from ecgvit.models import prepare_batch

    rng = np.random.default_rng(0)
    for shape in [(3, 192, 320), (2, 48, 64, 3), (1, 1, 256)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        a.flat[:256] = np.arange(256, dtype=np.uint8)  # every grey level
        x, y = model_input(a), prepare_batch(a).numpy()
        assert x.shape == y.shape and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32))
    with pytest.raises(ValueError, match="uint8"):
        model_input(np.zeros((2, 8, 8), np.float32))


def _library_threads(_: int) -> tuple[int, int]:
    import cv2
    from threadpoolctl import threadpool_info

    # BLAS only: unpickling this function imports this test module, and with it torch's OpenMP,
    # which a real worker never loads.
    return cv2.getNumThreads(), max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=1)


def test_worker_processes_give_the_same_rows_in_order(onnx_run, synth_pages, tmp_path):
    run, _ = onnx_run
    bad = tmp_path / "not_a_page.jpg"
    bad.write_bytes(b"this is not a JPEG")
    items = [str(p) for p in synth_pages] + [str(bad)] + [str(p) for p in synth_pages[::-1]]
    ref = Predictor(run, batch_size=2).predict(items)
    pred = Predictor(run, batch_size=2, processes=2)
    try:
        rows = pred.predict(items)
        assert pred._pool is not None and pred._pool.n == 2  # whole batches ran in 2 processes
        assert rows == ref  # same rows, same order, the bad file in its place
        assert [r.path for r in rows] == items and rows[len(synth_pages)].status == "bad"
        assert pred.predict(items[:3]) == ref[:3]  # the pool is kept and reused
        # The processes are the parallelism: each runs OpenCV and BLAS on one thread.
        assert set(pred._pool.map(_library_threads, range(4))) == {(1, 1)}
        arrays = [pred.load(p).array for p in synth_pages]
        pred.close()
        assert pred._pool is None
        pred.predict(arrays)  # not files: decode threads, no pool started
        assert pred._pool is None
    finally:
        pred.close()
    with pytest.raises(ValueError, match="processes=-1"):
        Predictor(run, processes=-1)


def test_cli_predict_processes_flag(onnx_run, synth_pages, tmp_path, capsys):
    run, _ = onnx_run
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}.csv"
        assert (
            main(
                [
                    "predict",
                    str(run),
                    *map(str, synth_pages),
                    "--batch-size",
                    "1",
                    "--processes",
                    str(n),
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
        outs[n] = out.read_text()
    capsys.readouterr()
    assert outs[1] == outs[2] and outs[1].count("\n") == len(synth_pages) + 1
