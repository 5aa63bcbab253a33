"""The out-of-scope gate: fitted on training pages, it answers real-looking pages and refuses
generated out-of-scope inputs with the right reason, in predict, CSV/JSON and the web API."""

from __future__ import annotations

import csv
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from ecgvit.engine.calibrate import calibrate, fit_temperature
from ecgvit.runtime.files import predict_files
from ecgvit.runtime.gate import Gate, GateConfig, PageStructure, load_gate
from ecgvit.runtime.predictor import Predictor
from ecgvit.synth.negatives import make_negative


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    from ecgvit.synth import generate

    d = tmp_path_factory.mktemp("gate_train")
    generate(d, per_class=4, seed=11, progress=False)
    return d


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory, train_dir, make_run):
    run = make_run(tmp_path_factory.mktemp("gated") / "run")
    summary = calibrate(run, data=train_dir, synthetic_per_class=0, progress=False)
    return run, summary


def test_calibrate_writes_a_gate_that_accepts_its_training_pages(gated_run):
    run, s = gated_run
    cfg = json.loads((run / "gate.json").read_text())
    assert (run / "gate.safetensors").exists()
    assert cfg["rows_typical"] == 4 and cfg["rows_min"] <= 4 <= cfg["rows_max"]
    assert cfg["periodicity_min"] > 0 and cfg["ink_min"] > 0 and cfg["distance_max"] > 0
    assert cfg["temperature"] == 1.0  # no held-out pages and no --oof: nothing to fit it on
    assert s["training_pages_rejected"] == 0


@pytest.mark.parametrize(
    "kind, words",
    [
        ("single_lead", "single lead"),
        ("layout_12x1", "12x1"),
        ("layout_6x2", "6x2"),
        ("blank_grid", "blank grid"),
        ("text_only", "grid"),
        ("shapes", ""),
        ("photo", ""),
    ],
)
def test_generated_out_of_scope_inputs_are_refused_with_a_reason(gated_run, kind, words):
    run, _ = gated_run
    pred = Predictor(run, backend="torch")
    a = make_negative(kind, np.random.default_rng(5))
    (row,) = pred.predict(a)
    assert row.status == "out_of_scope", row
    assert words in row.reason and row.reason
    assert row.label is None and row.probabilities is None


def test_fresh_pages_pass_the_structure_checks(gated_run):
    from ecgvit.synth import make_page

    run, _ = gated_run
    pred = Predictor(run, backend="torch")
    for i, cls in enumerate(["normal", "history_of_mi"]):
        img, _, _ = make_page(cls, np.random.default_rng(100 + i))
        ld = pred.load(img)
        assert pred.gate.structure_reason(ld.structure) is None, ld.structure
        assert ld.structure.trace_rows == 4


def test_blank_page_is_named(gated_run):
    run, _ = gated_run
    (row,) = Predictor(run, backend="torch").predict(np.full((1200, 1700, 3), 250, np.uint8))
    assert row.status == "out_of_scope" and row.reason == "blank page"


def test_csv_rows_of_out_of_scope_pages_have_no_label(gated_run, train_dir, tmp_path):
    run, _ = gated_run
    neg = tmp_path / "blank_grid.jpg"
    Image.fromarray(make_negative("blank_grid", np.random.default_rng(1))).save(neg, quality=85)
    page = sorted(train_dir.rglob("*.jpg"))[0]
    out = tmp_path / "p.csv"
    rows, summary = predict_files(run, [str(page), str(neg)], out=out, progress=False)
    got = {r["path"]: r for r in csv.DictReader(out.open())}
    assert (
        got[str(neg)]["status"] == "out_of_scope" and got[str(neg)]["label"] == "" and got[str(neg)]["p_normal"] == ""
    )
    assert got[str(page)]["status"] in ("ok", "low_confidence") and got[str(page)]["label"]
    assert summary["out_of_scope"] == 1


def test_web_api_says_out_of_scope(gated_run):
    from fastapi.testclient import TestClient

    from ecgvit.serve import create_app

    run, _ = gated_run
    buf = io.BytesIO()
    Image.fromarray(make_negative("single_lead", np.random.default_rng(2))).save(buf, "JPEG", quality=85)
    with TestClient(create_app(Predictor(run, backend="torch"))) as c:
        r = c.post("/predict", files={"file": ("strip.jpg", buf.getvalue(), "image/jpeg")})
    j = r.json()
    assert (
        r.status_code == 200 and j["status"] == "out_of_scope" and j["label"] is None and "single lead" in j["reason"]
    )


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (4000, 4))
    p = np.exp(z / 2.0)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=pi) for pi in p])
    assert fit_temperature(z, y) == pytest.approx(2.0, rel=0.15)


def test_low_confidence_and_feature_distance_decisions():
    s = PageStructure(True, 100.0, 4, 0.02, 0.03, 10.0)
    means = np.zeros((2, 3))
    gate = Gate(
        GateConfig(
            periodicity_min=10, ink_min=0.001, rows_min=3, rows_max=5, distance_max=5.0, confidence_threshold=0.7
        ),
        means,
        np.eye(3),
    )
    logits = np.array([[4.0, 0.0], [0.1, 0.0], [4.0, 0.0]])
    feats = np.array([[1.0, 0, 0], [1.0, 0, 0], [10.0, 0, 0]])
    v = gate.assess([s, s, s], logits, feats)
    assert [x.status for x in v] == ["ok", "low_confidence", "out_of_scope"]
    assert "feature distance 10.0 > 5.0" in v[2].reason
    six = PageStructure(True, 100.0, 6, 0.02, 0.03, 10.0)
    assert "6x2" in gate.structure_reason(six)


def test_reasons_never_print_a_value_equal_to_its_limit():
    # A top probability of 0.789 against a threshold of 0.7916 must not read "0.79 < 0.79".
    gate = Gate(GateConfig(periodicity_min=11.6, ink_min=0.001, rows_min=3, rows_max=5, confidence_threshold=0.7916))
    p = 0.789
    logits = np.log(np.array([[p, 1 - p]]))
    v = gate.assess([PageStructure(True, 100.0, 4, 0.02, 0.03, 10.0)], logits, None)
    assert v[0].status == "low_confidence"
    assert "top probability 0.789 < 0.792" in v[0].reason
    faint = PageStructure(True, 11.5, 4, 0.02, 0.03, 10.0)
    assert "grid regularity 11.5 < 11.6" in gate.structure_reason(faint)
    assert "grid regularity 3 < 12" in gate.structure_reason(PageStructure(True, 3.0, 4, 0.02, 0.03, 10.0))


def test_bundled_model_ships_a_gate():
    from ecgvit.run import bundled_run

    run = bundled_run()
    if run is None:
        pytest.skip("no bundled model in this install")
    gate = load_gate(run)
    assert gate is not None and gate.means is not None and gate.cfg.temperature != 1.0
    pred = Predictor(run)
    # a model on the reader's leads reads 12x1 pages; a page model refuses them
    kinds = ("blank_grid", "photo", "text_only") + (() if pred.preprocess.reads_leads else ("layout_12x1",))
    rows = pred.predict([make_negative(k, np.random.default_rng(3)) for k in kinds])
    assert [r.status for r in rows] == ["out_of_scope"] * len(kinds) and all(r.reason for r in rows)


def test_explain_cli_on_an_out_of_scope_page_says_so(gated_run, tmp_path, capsys):
    from ecgvit.cli import main

    run, _ = gated_run
    page = tmp_path / "strip.jpg"
    Image.fromarray(make_negative("single_lead", np.random.default_rng(4))).save(page, quality=85)
    assert main(["explain", str(run), str(page), "--out", str(tmp_path / "h.png")]) == 0
    out = capsys.readouterr().out
    assert "out of scope: single lead" in out and (tmp_path / "h.png").exists()


def test_structure_ink_measures_are_the_float_means_bit_for_bit():
    """page_structure counts ink in integers (cv2) for speed: the values must be exactly the
    float32 means it computed before, so fitted gates keep their meaning."""
    from ecgvit.runtime.gate import _row_means

    rng = np.random.default_rng(3)
    for h, w in ((1, 1), (7, 3), (312, 133), (305, 532)):
        for p in (0.0, 0.013, 0.5, 1.0):
            mask = rng.random((h, w + 5)) < p
            view = mask[:, 2 : 2 + w]  # a column slice, as page_structure takes
            want = view.astype(np.float32).mean(axis=1)
            got = _row_means(view.view(np.uint8))
            assert got.dtype == np.float32 and np.array_equal(got, want)
            frac = float(np.float32(cv2.countNonZero(view.view(np.uint8)) / view.size))
            assert frac == float(view.astype(np.float32).mean())


def test_page_measures_taken_beside_the_model_give_the_same_answers(gated_run, tmp_path, monkeypatch):
    # One page (`ecgvit predict page.jpg`, serve) takes the gate's page measures on a side
    # thread while the model runs; a batch takes them while decoding. Same rows either way, and
    # a measure that fails is that page's reason, not a crash.
    import ecgvit.runtime.inputs as egate
    from ecgvit.synth import make_page

    run, _ = gated_run
    pred = Predictor(run, backend="torch")
    pages = []
    for i, cls in enumerate(["normal", "abnormal_heartbeat"]):
        img, _, _ = make_page(cls, np.random.default_rng(200 + i))
        pages.append(tmp_path / f"p{i}.png")
        img.save(pages[-1])
    pages.append(tmp_path / "neg.png")
    Image.fromarray(make_negative("single_lead", np.random.default_rng(3))).save(pages[-1])
    batch = pred.predict(pages)
    assert [pred.predict(p)[0] for p in pages] == batch
    ld = pred.load(pages[0])
    assert ld.structure_pending
    assert pred.answer(ld, str(pages[0])) == batch[0] and not ld.structure_pending
    assert pred.load(pages[1]).structure.trace_rows == 4  # read directly: measured on demand

    def broken(*a, **k):
        raise RuntimeError("measure exploded")

    monkeypatch.setattr(egate, "page_structure", broken)
    (row,) = pred.predict(pages[0])
    assert row.status == "bad" and "measure exploded" in row.reason
    pred.close()
