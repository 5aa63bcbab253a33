"""The model on the page reader's leads (issue 28): canonical input, reader gate, training, records."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgvit.config import PreprocessConfig
from ecgvit.data.preprocess import load_page_array
from ecgvit.reader import LEADS, N_SAMPLES, read_page
from ecgvit.reader.canonical import CANONICAL_ROWS, panel_windows, render_signals
from ecgvit.runtime.gate import Gate, GateConfig, reading_structure
from ecgvit.synth import generate
from ecgvit.synth.negatives import generate_negatives
from ecgvit.synth.records import load_records, write_record_pages

H, W = 96, 128


def _cell_ink(img: np.ndarray) -> np.ndarray:
    """Dark pixels per canonical cell: (4 rows, 4 columns)."""
    ys = np.linspace(0, img.shape[0], 5).round().astype(int)
    xs = np.linspace(0, img.shape[1], 5).round().astype(int)
    dark = img < 200
    return np.array([[dark[ys[r] : ys[r + 1], xs[c] : xs[c + 1]].sum() for c in range(4)] for r in range(4)])


def test_render_signals_puts_each_lead_in_its_cell():
    sig = np.full((12, N_SAMPLES), np.nan, np.float32)
    t = np.arange(N_SAMPLES) / 500.0
    # V4 printed only in its standard window (7.5-10 s), as on a 3x4 page
    sig[LEADS.index("V4"), 3750:] = np.sin(2 * np.pi * 1.2 * t[3750:])
    ink = _cell_ink(render_signals(sig, H, W))
    assert ink[0, 3] > 20  # row 0, column 3 is V4's cell
    ink[0, 3] = 0
    assert ink.sum() == 0, "a lead drawn outside its cell, or a blank lead drawn"
    # the rhythm row draws lead II over its whole printed length
    sig[LEADS.index("II")] = np.sin(2 * np.pi * 1.0 * t)
    ink = _cell_ink(render_signals(sig, H, W))
    assert (ink[3] > 10).all() and ink[1, 0] > 10  # II's panel (row 1, column 0) and the rhythm row


def test_render_signals_scales_each_panel_to_its_amplitude():
    t = np.arange(N_SAMPLES) / 500.0
    base = np.sin(2 * np.pi * 1.3 * t).astype(np.float32)
    a = render_signals(np.tile(base, (12, 1)), H, W)
    b = render_signals(np.tile(base * 7.5, (12, 1)), H, W)  # another gain (or z-scored units)
    assert np.array_equal(a, b)


def test_panel_windows():
    full = np.ones((12, N_SAMPLES), bool)
    assert panel_windows(full) == [0, 1, 2, 3]  # 12x1: every lead for 10 s
    std = np.zeros((12, N_SAMPLES), bool)
    for row in CANONICAL_ROWS:
        for c, lead in enumerate(row):
            std[LEADS.index(lead), c * 1250 : (c + 1) * 1250] = True
    assert panel_windows(std) == [0]  # 3x4


def test_canonical_input_is_the_same_for_every_layout(tmp_path):
    # the same ECG (same seed) drawn in three layouts and two carts: the model's input should barely
    # change, while another ECG's differs
    arrays = {}
    for layout, style in (("3x4+1", "khan"), ("6x2", "philips"), ("12x1", "ge_mac")):
        out = tmp_path / layout.replace("+", "p")
        generate(out, per_class=1, seed=11, layout=layout, style=style, progress=False)
        f = sorted(out.glob("normal/*.jpg"))[0]
        arrays[layout] = load_page_array(f, PreprocessConfig(height=H, width=W, form="signals")).array
    other = tmp_path / "other"
    generate(other, per_class=1, seed=12, progress=False)
    arrays["other"] = load_page_array(
        sorted(other.glob("normal/*.jpg"))[0], PreprocessConfig(height=H, width=W, form="signals")
    ).array

    def corr(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.corrcoef(255.0 - x.ravel(), 255.0 - y.ravel())[0, 1])

    same = [corr(arrays["3x4+1"], arrays[k]) for k in ("6x2", "12x1")]
    assert min(same) > 0.6, same
    assert corr(arrays["3x4+1"], arrays["other"]) < min(same) - 0.2


def test_reader_gate_refuses_what_the_reader_cannot_read_and_answers_other_layouts(tmp_path):
    generate_negatives(tmp_path / "neg", per_kind=2, seed=3, progress=False)
    gate = Gate(GateConfig())
    for f in sorted((tmp_path / "neg").glob("*/*.jpg")):
        kind = f.parent.name
        reason = gate.structure_reason(reading_structure(read_page(f, trace=False)))
        if kind in ("layout_6x2", "layout_12x1"):
            assert reason is None, f"{f.name}: a supported layout refused: {reason}"
        else:
            assert reason, f"{f.name}: a {kind} image passed the reader's rules"


def test_text_lines_are_no_traces(tmp_path):
    generate_negatives(tmp_path / "neg", per_kind=6, seed=5, kinds=("text_only",), progress=False)
    for f in sorted((tmp_path / "neg").glob("*/*.jpg")):
        assert read_page(f, trace=False).layout is None, f.name


def _fake_ptbxl(root: Path) -> None:
    (root / "records").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [("1", "train", "normal"), ("2", "train", "mi_any"), ("3", "train", "other"), ("4", "test", "normal")]
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "split", "NORM", "MI", "STTC", "CD", "HYP", "label_hint"])
        for i, split, hint in rows:
            w.writerow([i, split, 0, 0, 0, 0, 0, hint])
            z = (rng.standard_normal((2500, 12)) * 1000).astype(np.int16)
            np.save(root / "records" / f"{i}.npy", z)


def test_records_load_and_draw(tmp_path):
    _fake_ptbxl(tmp_path / "ptbxl_z")
    recs = load_records(tmp_path / "ptbxl_z", split="train")
    assert [(r.name, r.label) for r in recs] == [("ptbxl_1", "normal"), ("ptbxl_2", "history_of_mi")]
    assert recs[0].signals.shape == (12, N_SAMPLES)
    write_record_pages(tmp_path / "pages", recs, seed=0)
    assert sorted(p.relative_to(tmp_path / "pages").as_posix() for p in (tmp_path / "pages").rglob("*.jpg")) == [
        "history_of_mi/ptbxl_2.jpg",
        "normal/ptbxl_1.jpg",
    ]
    with pytest.raises(ValueError, match="labels.csv"):
        load_records(tmp_path)


def test_cotraining_mixes_record_pages_into_batches(tmp_path):
    """--cotrain-records draws the train-split records as pages once (cached), reads them, and the
    run records how many of each class it mixed in; a label the run has no class for is refused."""
    from ecgvit.config import TrainConfig
    from ecgvit.engine.train import cotrain_arrays, train

    _fake_ptbxl(tmp_path / "ptbxl_z")
    data = tmp_path / "pages"
    generate(data, per_class=2, seed=23, progress=False)
    pre = PreprocessConfig(height=H, width=W, form="signals")
    classes = ["normal", "myocardial_infarction", "abnormal_heartbeat", "history_of_mi"]
    cfg = TrainConfig(model="ecgvit-tiny-leads", cotrain_records=str(tmp_path / "ptbxl_z"), cotrain_share=0.5)
    x, y = cotrain_arrays(cfg, pre, classes, tmp_path / "cache", False)
    assert x.shape == (2, H, W) and y.tolist() == [0, 3]  # normal -> normal, MI -> history_of_mi
    assert (x < 128).any(axis=(1, 2)).all()  # drawn and read: ink in every input
    drawn = sorted((tmp_path / "cache" / "cotrain").glob("*/*/*.jpg"))
    stamp = [p.stat().st_mtime_ns for p in drawn]
    x2, _ = cotrain_arrays(cfg, pre, classes, tmp_path / "cache", False)
    assert np.array_equal(x, x2) and [p.stat().st_mtime_ns for p in drawn] == stamp  # cached, not redrawn
    with pytest.raises(ValueError, match="not classes of this run"):
        cotrain_arrays(cfg, pre, ["normal", "abnormal_heartbeat"], tmp_path / "cache", False)
    run = tmp_path / "run"
    cfg = TrainConfig(
        model="ecgvit-tiny-leads",
        cotrain_records=str(tmp_path / "ptbxl_z"),
        cotrain_share=0.5,
        epochs=1,
        pretrain_per_class=0,
        val_fraction=0.0,
        gate=False,
    )
    train(data, run, cfg, preprocess=pre, progress=False, cache_root=tmp_path / "cache")
    meta = json.loads((run / "config.json").read_text())
    assert meta["data"]["cotrain_pages"] == {
        "normal": 1,
        "myocardial_infarction": 0,
        "abnormal_heartbeat": 0,
        "history_of_mi": 1,
    }
    assert meta["train"]["cotrain_share"] == 0.5


def test_leads_model_trains_and_reads_other_layouts(tmp_path):
    """A small ecgvit-tiny-leads trained on Khan-style pages answers a 6x2 page of another cart and
    names its layout; a text page is out of scope with the reader's reason."""
    data = tmp_path / "pages"
    generate(data, per_class=4, seed=21, progress=False)
    generate_negatives(tmp_path / "neg", per_kind=1, seed=2, kinds=("text_only",), progress=False)
    other = tmp_path / "other"
    generate(other, per_class=1, seed=22, layout="6x2", style="philips", progress=False)
    run = tmp_path / "run"
    ecgvit = [sys.executable, "-m", "ecgvit.cli"]
    args = ["train", "--data", str(data), "--out", str(run), "--model", "ecgvit-tiny-leads"]
    args += ["--height", str(H), "--width", str(W), "--epochs", "2", "--pretrain-per-class", "0", "--val-fraction", "0"]
    subprocess.run([*ecgvit, *args, "--quiet"], check=True, capture_output=True, text=True, timeout=600)
    out = tmp_path / "p.json"
    inputs = [str(p) for p in sorted(other.glob("*/*.jpg"))] + [str(p) for p in (tmp_path / "neg").glob("*/*.jpg")]
    # exit status 1 when no page was answered (a 2-epoch model's feature fence is tight): rows count
    done = subprocess.run(
        [*ecgvit, "predict", str(run), *inputs, "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr
    import json

    rows = {Path(r["path"]).parent.name: r for r in json.loads(out.read_text())["predictions"]}
    text = rows.pop("text_only")
    assert text["status"] == "out_of_scope" and "not single traces" in text["reason"], text
    for r in rows.values():
        assert r["layout"] == "6x2", r
        assert r["status"] != "out_of_scope" or "feature distance" in r["reason"], r
    # per-lead explanation: every lead's panel and the rhythm strip, drawn over the page's lead boxes
    from ecgvit import Predictor

    page = sorted(other.glob("normal/*.jpg"))[0]
    img, info = Predictor(str(run)).explain(page, out=tmp_path / "leads.png")
    assert info["method"] == "lead occlusion" and info["layout"] == "6x2"
    assert set(info["leads"]) == {*LEADS, "II rhythm"}
    assert all(v >= 0 for v in info["leads"].values())
    assert (tmp_path / "leads.png").stat().st_size > 0 and img.size[0] > 0


def test_restyled_arrays_redraw_a_page_in_other_styles(tmp_path):
    from ecgvit.data.preprocess import load_arrays
    from ecgvit.engine.restyle import restyled_arrays

    generate(tmp_path / "pages", per_class=1, seed=31, progress=False)
    paths = sorted(str(p) for p in (tmp_path / "pages").glob("*/*.jpg"))[:2]
    md5s = ["%032x" % (i + 1) for i in range(len(paths))]
    cfg = PreprocessConfig(height=H, width=W, form="signals")
    r = restyled_arrays(paths, md5s, cfg, copies=2, seed=0, cache_root=tmp_path / "c", workers=1)
    assert r.shape == (2, 2, H, W) and r.dtype == np.uint8
    own = load_arrays(paths, md5s, cfg=cfg, cache_root=tmp_path / "c", workers=1)
    redrawn = 0
    for i in range(2):
        for k in range(2):
            # the same ECG in another cart's drawing: close to the page's own input, not equal; a
            # drawing the reader cannot read is replaced by the page's own input, never blank
            if np.array_equal(r[i, k], own[i]):
                continue
            c = np.corrcoef(255.0 - r[i, k].ravel(), 255.0 - own[i].ravel())[0, 1]
            assert 0.3 < c < 0.999, c
            redrawn += 1
    assert redrawn >= 2 and (r < 128).any(axis=(2, 3)).all()
    again = restyled_arrays(paths, md5s, cfg, copies=2, seed=0, cache_root=tmp_path / "c", workers=1)
    assert np.array_equal(r, again)  # cached
    with pytest.raises(ValueError, match="reader's leads"):
        restyled_arrays(paths, md5s, PreprocessConfig(height=H, width=W), copies=1, cache_root=tmp_path / "c")
