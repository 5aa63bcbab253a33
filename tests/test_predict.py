"""Prediction: Predictor API, inputs (files, folders, globs, images, arrays, bytes), bad files,
outputs written as they come, the CLI grammar."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecgvit.cli import main
from ecgvit.config import KHAN_CLASSES
from ecgvit.runtime.files import predict_files
from ecgvit.runtime.inputs import expand_inputs
from ecgvit.runtime.predictor import NO_MODEL, Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pred(tiny_run):
    return Predictor(tiny_run, backend="torch", workers=2)


def _bad_files(d: Path, good: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "empty": d / "empty.jpg",
        "text": d / "notes.jpg",
        "truncated": d / "truncated.jpg",
        "tiny": d / "tiny.png",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a picture")
    files["truncated"].write_bytes(good.read_bytes()[:3000])
    Image.new("RGB", (40, 30), "white").save(files["tiny"])
    return files


def test_predict_paths_match_the_training_pipeline(pred, tiny_run, synth_pages):
    from ecgvit.data.preprocess import load_page_array
    from ecgvit.models.inference import predict_proba
    from ecgvit.run import load_run

    rows = pred.predict(synth_pages)
    assert [r.path for r in rows] == [str(p) for p in synth_pages]
    lr = load_run(tiny_run)
    ref = predict_proba(lr.model, np.stack([load_page_array(p, lr.preprocess).array for p in synth_pages]))
    for r, p in zip(rows, ref, strict=False):
        assert r.status == "ok" and r.label in KHAN_CLASSES
        got = np.array([r.probabilities[c] for c in KHAN_CLASSES])
        assert np.allclose(got, p, atol=1e-5)
        assert r.probability == pytest.approx(max(got))
        l, t, rr, b = r.crop_box  # on the original 2213x1572 page
        assert 0 <= l < rr <= 2213 and 0 <= t < b <= 1572 and rr - l > 1500


def test_inputs_of_every_kind(pred, synth_pages):
    page = synth_pages[0]
    by_path = pred.predict(page)[0]
    by_bytes = pred.predict(page.read_bytes())[0]
    assert by_bytes.probabilities == pytest.approx(by_path.probabilities, abs=1e-6)  # same draft decode
    img = Image.open(page)
    by_pil, by_array = pred.predict([img, np.asarray(img.convert("RGB"))])
    assert by_pil.status == by_array.status == "ok"
    assert by_pil.probabilities == pytest.approx(by_array.probabilities, abs=1e-6)
    assert by_pil.path == "<input 0>" and by_array.path == "<input 1>"
    bad = pred.predict([np.zeros((5, 5), np.float32)])[0]
    assert bad.status == "bad" and "uint8" in bad.reason


def test_bad_files_are_listed_not_raised(pred, synth_pages, tmp_path):
    bad = _bad_files(tmp_path / "bad", synth_pages[0])
    items = [synth_pages[0], *bad.values(), tmp_path / "missing.jpg", synth_pages[1]]
    rows = pred.predict(items, batch_size=2)
    assert [r.status for r in rows] == ["ok", "bad", "bad", "bad", "bad", "bad", "ok"]
    reasons = {Path(r.path).name: r.reason for r in rows if r.status == "bad"}
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "too small" in reasons["tiny.png"]
    assert "unreadable" in reasons["missing.jpg"]


def test_batching_and_threads_do_not_change_results(tiny_run, synth_pages):
    a = Predictor(tiny_run, backend="torch", workers=1).predict(synth_pages, batch_size=1)
    b = Predictor(tiny_run, backend="torch", workers=3, threads=1).predict(synth_pages, batch_size=3)
    for x, y in zip(a, b, strict=False):
        assert x.label == y.label
        assert x.probabilities == pytest.approx(y.probabilities, abs=1e-5)


def test_expand_inputs_folders_globs_and_missing(synth_dir, tmp_path):
    files, bad = expand_inputs(
        [
            str(synth_dir),
            str(synth_dir / "normal" / "*.jpg"),
            str(tmp_path / "nope.jpg"),
            str(tmp_path / "*.png"),
            str(tmp_path),
        ]
    )
    assert len(files) == 4 and len(set(files)) == 4  # folder recursive; the glob adds no duplicates
    assert all(f.endswith(".jpg") for f in files)
    reasons = [b.reason for b in bad]
    assert (
        reasons == ["no such file or folder", "no files match this pattern", reasons[2]]
        and "no image files" in reasons[2]
    )


def test_cli_csv_written_and_table_printed(tiny_run, synth_dir, tmp_path, capsys):
    (tmp_path / "junk.jpg").write_text("not a jpeg")
    out = tmp_path / "preds.csv"
    rc = main(
        [
            "predict",
            str(tiny_run),
            str(synth_dir),
            str(tmp_path / "junk.jpg"),
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--quiet",
            "--backend",
            "torch",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "4 labelled" in text and "1 bad" in text and "not an image" in text
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5
    assert rows[0].keys() >= {"path", "status", "label", "probability", "reason", *[f"p_{c}" for c in KHAN_CLASSES]}
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4
    for r in ok:
        assert sum(float(r[f"p_{c}"]) for c in KHAN_CLASSES) == pytest.approx(1.0, abs=1e-4)
    assert [r for r in rows if r["status"] == "bad"][0]["reason"].startswith("not an image")


def test_cli_json_complete_and_partial_removed(tiny_run, synth_pages, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert (
        main(["predict", str(tiny_run), *map(str, synth_pages[:2]), "--out", str(out), "--quiet", "--backend", "torch"])
        == 0
    )
    doc = json.loads(out.read_text())
    assert doc["complete"] is True and doc["classes"] == list(KHAN_CLASSES)
    assert len(doc["predictions"]) == 2 and doc["summary"]["ok"] == 2
    assert not (tmp_path / "p.json.partial.jsonl").exists()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_interrupted_run_keeps_finished_batches(tiny_run, synth_pages, tmp_path, monkeypatch, fmt):
    pred = Predictor(tiny_run, backend="torch", workers=1)
    calls = {"n": 0}
    real = pred.infer_logits

    def flaky(arrays, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(arrays, **kw)

    monkeypatch.setattr(pred, "infer_logits", flaky)
    out = tmp_path / f"p.{fmt}"
    with pytest.raises(KeyboardInterrupt):
        predict_files(None, [str(p) for p in synth_pages], out=out, batch_size=2, progress=False, predictor=pred)
    if fmt == "csv":
        rows = list(csv.DictReader(out.open()))
    else:
        doc = json.loads(out.read_text())
        assert doc["complete"] is False
        rows = doc["predictions"]
    assert [r["status"] for r in rows] == ["ok", "ok"]  # the first batch, nothing of the second


def test_cli_without_a_model_uses_the_bundled_one_or_says_so(synth_pages, synth_dir, capsys, monkeypatch):
    import ecgvit.runtime.files as files_mod

    if files_mod.bundled_run() is not None:
        # `ecgvit predict page.jpg` answers with the model shipped in the package (exit 0 when
        # the answer is confident, 1 when it is labelled but low-confidence: the weights decide).
        assert main(["predict", str(synth_pages[0]), "--quiet"]) in (0, 1)
        assert "1 labelled" in capsys.readouterr().out
    monkeypatch.setattr(files_mod, "bundled_run", lambda: None)
    assert main(["predict", str(synth_pages[0])]) == 2
    assert NO_MODEL in capsys.readouterr().err
    assert main(["predict", str(synth_dir)]) == 2  # a folder without config.json is an input, not a run
    assert "no model: pass a RUN folder" in capsys.readouterr().err


def test_cli_run_without_images_and_missing_run(tiny_run, tmp_path, capsys):
    assert main(["predict", str(tiny_run)]) == 2
    assert "no images given" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        Predictor(tmp_path / "nothing")


def test_predictor_rejects_onnx_backend_without_export(tiny_run):
    with pytest.raises(ValueError, match="ecgvit export"):
        Predictor(tiny_run, backend="onnx")


def test_other_architecture_with_colour_input(tmp_path, synth_pages, make_run):
    run = make_run(
        tmp_path / "seedlike", model="vit-seed", size=(28, 32), embed_dim=32, depth=1, num_heads=2, mlp_dim=32
    )
    p = Predictor(run)
    assert p.preprocess.grayscale is False
    r = p.predict(synth_pages[:1])[0]
    assert r.status == "ok" and sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
