"""The page reader on generated pages of known geometry (ecgvit.reader; issue 27)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from ecgvit.reader import LEADS, PageReading, digitize_files, read_page
from ecgvit.synth import encode, make_page
from ecgvit.synth.styles import get_style


def _page(layout: str = "3x4+1", family: str = "khan", seed: int = 1):
    img, sig, params = make_page(
        "normal", np.random.default_rng(seed), style=get_style(family), as_array=True, layout=layout
    )
    return img, sig[:, :5000], params["truth"]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / u


def _snr(ref: np.ndarray, est: np.ndarray, truth: dict) -> float:
    """Mean over printed leads: the signal where printed vs the estimate, best shift +-20 samples and offset."""
    out = []
    for p in truth["panels"]:
        if p["rhythm"] and p["lead"] in {q["lead"] for q in truth["panels"] if not q["rhythm"]}:
            continue
        i = LEADS.index(p["lead"])
        i0, i1 = int(round(p["t0"] * 500)), int(p["t0"] * 500 + p["duration"] * 500)
        x = ref[i, i0:i1]
        best = -99.0
        for sh in range(-20, 21):
            if i0 + sh < 0 or i1 + sh > 5000:
                continue
            d = x - np.nan_to_num(est[i, i0 + sh : i1 + sh])
            best = max(best, 10 * np.log10(np.sum(x**2) / np.sum((d - d.mean()) ** 2)))
        out.append(best)
    return float(np.mean(out))


def test_clean_page_read_to_known_geometry():
    img, sig, truth = _page("3x4+1")
    r = read_page(img)
    assert isinstance(r, PageReading)
    assert r.layout == "3x4+1" and r.rows == 4 and r.columns == 4
    g = truth["px_per_mm"]["grid"]
    assert r.px_per_mm is not None
    assert abs(r.px_per_mm[0] / g - 1) < 0.01 and abs(r.px_per_mm[1] / g - 1) < 0.01
    assert r.grid.pitch_source == "grid"
    assert r.calibration and r.gain_mm_mv == 10.0 and r.speed_mm_s == 25.0
    assert r.rotation_deg == 0.0
    # every panel where the truth has it
    mine = {(b.name, b.row): b for b in r.leads}
    assert len(mine) == len(truth["panels"]) == 13
    for p in truth["panels"]:
        b = mine[(p["lead"], p["row"])]
        assert _iou(b.box, p["box"]) > 0.9, (p["lead"], b.box, p["box"])
        assert abs(b.t0_s - p["t0"]) < 0.02 and abs(b.duration_s - p["duration"]) < 0.05
    # signals: 12 x 5000 mV, every lead printed on this layout, traced well above chance
    assert r.signals.shape == (12, 5000) and r.signals.dtype == np.float32
    assert np.isfinite(r.signals).all(axis=1).sum() == 1  # only II (the rhythm strip) covers 10 s
    assert np.isfinite(r.signals).any(axis=1).all()
    assert _snr(sig, r.signals, truth) > 10.0
    json.dumps(r.to_dict())  # JSON-ready
    assert len(r.to_dict(signals=True)["signals"]["II"]) == 5000


@pytest.mark.parametrize(
    "layout,family",
    [("3x4", "ge_mac"), ("6x2", "philips"), ("12x1", "khan"), ("3x4+3", "ge_mac"), ("6x2+1", "nihon_kohden")],
)
def test_layouts(layout, family):
    img, sig, truth = _page(layout, family, seed=3)
    r = read_page(img, trace=False)
    assert r.layout == layout, r.reasons
    assert len(r.leads) == len(truth["panels"])
    g = truth["px_per_mm"]["grid"]
    assert r.px_per_mm is not None and abs(r.px_per_mm[0] / g - 1) < 0.01


def test_rotation_recovered():
    img, sig, truth = _page("3x4+1", seed=2)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 3.0, 1.0)  # 3 degrees counter-clockwise on screen
    rot = cv2.warpAffine(img, m, (w, h), borderValue=(255, 255, 255))
    r = read_page(rot)
    assert abs(r.rotation_deg - (-3.0)) < 0.1
    assert r.layout == "3x4+1"
    assert _snr(sig, r.signals, truth) > 6.0


@pytest.mark.parametrize("kind", ["white", "noise", "photo"])
def test_not_an_ecg_gives_reasons(kind):
    rng = np.random.default_rng(0)
    if kind == "white":
        a = np.full((600, 800, 3), 255, np.uint8)
    elif kind == "noise":
        a = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    else:  # smooth blobs, a face-like photo without lines
        a = cv2.GaussianBlur(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), (0, 0), 4)
        a = cv2.resize(a, (800, 600), interpolation=cv2.INTER_CUBIC)
    r = read_page(a)
    assert r.layout is None and not r.ok
    assert r.reasons
    assert np.isnan(r.signals).all()


def test_digitize_files_outputs_and_wfdb_round_trip(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    img, sig, truth = _page("3x4+1", seed=4)
    page = tmp_path / "page one.jpg"
    page.write_bytes(encode(img, "jpg", 90))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    s = digitize_files([str(page), str(bad), str(tmp_path / "missing*.jpg")], out, progress=False)
    assert s["ok"] == 1 and s["bad"] == 2 and s["n"] == 3
    stem = "page_one"
    for suffix in (".hea", ".dat", ".csv", ".json", "_overlay.png"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    rec = wfdb.rdrecord(str(out / stem))
    assert rec.fs == 500 and list(rec.sig_name) == list(LEADS) and rec.p_signal.shape == (5000, 12)
    assert rec.units == ["mV"] * 12
    # NaN where not printed survives the round trip; printed samples agree to the format's step
    got = rec.p_signal.T
    r = read_page(str(page))
    assert np.array_equal(np.isnan(got), np.isnan(r.signals))
    ok = np.isfinite(got)
    assert np.abs(got[ok] - r.signals[ok]).max() < 0.01
    with open(out / f"{stem}.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time_s", *LEADS] and len(rows) == 5001
    d = json.loads((out / f"{stem}.json").read_text())
    assert d["layout"] == "3x4+1" and d["path"] == str(page)
    with open(out / "digitize.csv") as f:
        idx = list(csv.DictReader(f))
    assert [row["status"] for row in idx] == ["bad", "ok", "bad"]
    assert "not an image" in idx[2]["reason"]


def test_unknown_format_is_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="wfdb, csv, json"):
        digitize_files([], tmp_path, formats=("wfdb", "xml"))


def test_cli_digitize_smoke(tmp_path, capsys):
    from ecgvit.cli import main

    img, _, _ = _page("6x2", "ge_mac", seed=5)
    page = tmp_path / "p.png"
    page.write_bytes(encode(img, "png"))
    out = tmp_path / "o"
    assert main(["digitize", str(page), "--out", str(out), "--format", "csv", "--no-overlay", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "6x2" in text and "1 digitized" in text
    assert (out / "p.csv").is_file() and not (out / "p.hea").exists() and not (out / "p_overlay.png").exists()
    assert main(["digitize", str(page), "--out", str(out), "--format", "xml"]) == 2


def test_trace_row_keeps_narrow_spikes_and_their_timing():
    """A QRS spike one column wide, drawn 3 px thick and anti-aliased (up and down strokes merge into
    one bar): the traced tip keeps the spike's height and the steep strokes their timing."""
    from ecgvit.reader.trace import trace_row

    w, h, base = 200, 240, 180.0
    xs = np.arange(w, dtype=np.float64)
    ys = np.full(w, base) + 3.0 * np.sin(xs / 9.0)
    ys[100] = base - 150.0  # the R tip
    ys[102] = base + 30.0  # the S trough
    img = np.zeros((h, w), np.uint8)
    pts = np.stack([np.round(xs * 8), np.round(ys * 8)], 1).astype(np.int32)
    cv2.polylines(img, [pts], False, 255, 3, cv2.LINE_AA, 3)
    px, py = trace_row(img > 100, base, 8.0, 200.0, weight=img)
    assert np.all(np.diff(px) >= 0)
    est = np.interp(xs, px, py)
    # the tip's height: the ink's far edge, so within half the line's width (+ its anti-aliased px)
    assert abs(py.min() - ys[100]) <= 2.5
    assert abs(px[np.argmin(py)] - 100) <= 0.5  # and its time
    assert abs(py.max() - ys[102]) < 2.5
    # the strokes: where the truth crosses half the R height, within a px in time
    half = base - 75.0
    x_up = np.interp(half, ys[99:101][::-1], xs[99:101][::-1])
    sel = (px > 98) & (px < 100.2)
    x_est = np.interp(half, py[sel][::-1], px[sel][::-1])
    assert abs(x_est - x_up) < 1.0
    flat = (xs < 90) | (xs > 110)
    assert np.sqrt(np.mean((est[flat] - ys[flat]) ** 2)) < 0.5


def test_photographed_page_rectified_back_to_its_layout_and_boxes():
    """A clean page seen at an angle (a known homography: keystone + 5 deg + a table around it) reads
    back to its layout; the lead boxes, reported in the input's pixels, match the truth mapped
    through that homography; `transform` maps input px to the rectified page."""
    img, _sig, truth = _page("3x4+1")
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[90, 150], [w - 40, 40], [w + 60, h + 120], [20, h + 20]])
    c, s = np.cos(np.radians(5.0)), np.sin(np.radians(5.0))
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0, 0, 1.0]])
    H = R @ cv2.getPerspectiveTransform(src, dst)
    q = cv2.perspectiveTransform(src[None], H)[0]
    H = np.array([[1, 0, 40 - q[:, 0].min()], [0, 1, 40 - q[:, 1].min()], [0, 0, 1.0]]) @ H
    q = cv2.perspectiveTransform(src[None], H)[0]
    size = (int(q[:, 0].max()) + 40, int(q[:, 1].max()) + 40)
    photo = cv2.warpPerspective(img, H, size, flags=cv2.INTER_LINEAR, borderValue=(90, 80, 70))
    r = read_page(photo, trace=False)
    assert r.layout == "3x4+1", r.reasons
    assert any("rectified" in x for x in r.reasons)
    T = np.array(r.transform)
    assert T.shape == (3, 3) and np.abs(T - np.eye(3)).max() > 1e-3
    mine = {(b.name, b.row): b.box for b in r.leads}
    ious = []
    for p in truth["panels"]:
        l, t, rr, b = p["box"]
        pts = cv2.perspectiveTransform(np.float32([[[l, t], [rr, t], [rr, b], [l, b]]]), H)[0]
        tb = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
        ious.append(_iou(mine[(p["lead"], p["row"])], tb))
    assert np.mean(ious) > 0.9 and min(ious) > 0.8, ious
    # the page's 1 mm pitch on the rectified page is square (both axes within 3 %)
    assert r.px_per_mm is not None and abs(r.px_per_mm[0] / r.px_per_mm[1] - 1) < 0.03


def test_quick_flatness_gate_reads_a_flat_page_as_the_full_fit_does():
    """A clean page passes the quick flatness test, and reading it through the gate gives what the
    full rectification fit gives (same layout, boxes, signals); a keystoned copy does not pass it."""
    from ecgvit.reader import geometry as geo
    from ecgvit.reader.read import _attempt

    img, _sig, _truth = _page("3x4+1")
    q = geo.quick_flat_fit(geo.page_masks(img).grid)
    assert q is not None and geo.looks_flat(q)
    fast, gated = _attempt(img, True, quick=True)
    full, _ = _attempt(img, True, quick=False)
    assert gated and fast.layout == full.layout == "3x4+1"
    assert [(b.name, b.box) for b in fast.leads] == [(b.name, b.box) for b in full.leads]
    np.testing.assert_array_equal(fast.signals, full.signals)
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[60, 40], [w - 60, 0], [w, h], [0, h - 20]])
    keyed = cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (w, h), borderValue=(255, 255, 255))
    q2 = geo.quick_flat_fit(geo.page_masks(keyed).grid)
    assert q2 is None or not geo.looks_flat(q2)


def test_thin_trace_on_a_half_scale_page_is_read():
    # a 0.15 mm trace at 200 dpi is ~1.2 px; the classifier reads pages at half scale, where it is
    # anti-aliased grey and breaks into dashes at the ink threshold: the faint-ink retry reads it
    from ecgvit.reader import geometry as geo
    from ecgvit.synth.styles import make_style

    st = make_style("khan", trace_width_mm=0.15)
    img, sig, params = make_page("normal", np.random.default_rng(5), style=st, as_array=True)
    half = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    plain, grown = geo.page_masks(half), geo.page_masks(half, grow=True)
    assert grown.ink.sum() > 1.2 * plain.ink.sum() and not (plain.ink & ~grown.ink).any()
    r = read_page(half)
    assert r.layout == "3x4+1" and len(r.leads) == 13
    assert any("faint ink" in s for s in r.reasons)
    # a page whose traces read whole never takes the retry
    thick = read_page(cv2.resize(_page()[0], (1106, 786), interpolation=cv2.INTER_AREA))
    assert thick.layout == "3x4+1" and not any("faint ink" in s for s in thick.reasons)


@pytest.mark.parametrize("family", ["ge_mac", "textbook"])
def test_3x4_plus_3_told_from_6x2_without_separator_marks(monkeypatch, family):
    # 6 rows are 3x4+3 or 6x2; with no separator or tick to see (monkeypatched away), the rhythm
    # strips repeating the panels above them still tell a 3x4+3 page
    import ecgvit.reader.read as rd

    monkeypatch.setattr(rd, "_boundary_mark", lambda *a, **k: False)
    for layout in ("3x4+3", "6x2"):
        img, _, truth = _page(layout, family, seed=3)
        assert read_page(img).layout == layout == truth["layout"]


def test_grid_as_dark_as_the_trace_is_read_as_grid():
    # a black-and-white print: the grid's major lines are as dark as the trace, so the first
    # reading takes them for ink; the retry splits the darker trace from them and takes lines that
    # cross the whole grid as grid
    from ecgvit.synth.styles import make_style

    st = make_style("ge_mac", grid_colour="black", grid_kind="lines")
    img, sig, params = make_page("normal", np.random.default_rng(2), style=st, as_array=True)
    r = read_page(img)
    assert r.layout == "3x4+1" and len(r.leads) == 13
    assert any("grid as dark as the trace" in s for s in r.reasons)
    assert _snr(sig[:, :5000], r.signals, params["truth"]) > 4.0


@pytest.mark.parametrize(("grid", "trace"), [("black", "dark_blue"), ("grey", "dark_red")])
def test_coloured_trace_on_a_grid_as_dark_as_it(grid, trace):
    # a blue or red trace over a grey grid whose major lines are as dark as it: neither the first
    # reading nor a darker threshold (it keeps the grid, the darker part) tells them apart; the
    # trace is the part with colour
    from ecgvit.synth.styles import make_style

    st = make_style("ge_mac", grid_colour=grid, grid_kind="lines", trace_colour=trace, dpi=150)
    img, sig, params = make_page("normal", np.random.default_rng(5), style=st, as_array=True, layout="6x2")
    r = read_page(img)
    assert r.layout == "6x2" and len(r.leads) == 12, r.reasons
    assert _snr(sig[:, :5000], r.signals, params["truth"]) > 4.0


def test_tall_pulse_past_its_row_band_gives_the_gain():
    # at 20 mm/mV the pulse is 20 mm tall and a 6x2 page's rows are ~25 mm apart: the pulse rises
    # past the row's band (halfway to the next baseline) and must still be found
    from ecgvit.synth.styles import make_style

    img, sig, params = make_page(
        "normal", np.random.default_rng(4), style=make_style("ge_mac", gain_mm_mv=20.0), as_array=True, layout="6x2"
    )
    r = read_page(img)
    assert r.layout == "6x2" and r.gain_mm_mv == 20.0
    assert _snr(sig[:, :5000], r.signals, params["truth"]) > 3.0


def _small_page(family: str, trace_grey: int | None, scale: float, deg: float = 0.0, grid: str = "red"):
    """A 150 dpi page with a 0.15 mm trace on a `grid` grid, shrunk by `scale` (a web figure), its
    trace `trace_grey` if given, turned `deg` degrees as a scanner would (cubic resampling)."""
    import dataclasses

    from ecgvit.synth.styles import make_style

    st = make_style(family, dpi=150, trace_width_mm=0.15, grid_colour=grid)
    if trace_grey is not None:
        st = dataclasses.replace(st, trace_color=(trace_grey,) * 3)
    img, sig, params = make_page("normal", np.random.default_rng(1), style=st, as_array=True)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if deg:
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
        img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderValue=(255, 255, 255))
    return img, params["truth"]


@pytest.mark.parametrize(("family", "grid"), [("ge_mac", "red"), ("textbook", "green")])
def test_light_grey_trace_on_a_coloured_grid_is_read(family, grid):
    # a thin trace on a shrunk figure is anti-aliased to light grey, lighter than any ink threshold
    # a grey grid would allow; a red grid keeps its brightest channel near paper, so the last retry
    # takes everything darker than that as ink; a green grid's lines are darker, but tinted: there
    # the retry takes what is dark and has no colour
    img, truth = _small_page(family, trace_grey=165, scale=0.7, grid=grid)
    r = read_page(img)
    assert r.layout == truth["layout"] == "3x4+1" and len(r.leads) == 13, r.reasons
    assert any("light grey ink" in s for s in r.reasons)


def test_thin_trace_turned_slightly_is_read_whole():
    # a 1 px trace turned 0.3 deg: rotating it back with linear interpolation spread it over two
    # lighter pixels and it broke into dashes at the ink threshold; unturned it reads either way
    for deg in (0.0, 0.3):
        img, truth = _small_page("textbook", trace_grey=None, scale=0.5, deg=deg)
        r = read_page(img)
        assert r.layout == truth["layout"] == "3x4+1", (deg, r.reasons)
        assert abs(r.rotation_deg + deg) < 0.1


def test_rows_closer_than_half_the_row_pitch_are_one():
    from ecgvit.reader.read import _merge_split_rows

    prof = np.zeros(500)
    for y, density in ((100, 5.0), (200, 3.0), (215, 6.0), (300, 5.0), (400, 5.0)):
        prof[y] = density
    # 200 and 215 are one row read twice: the denser (215) is kept
    assert _merge_split_rows([100.0, 200.0, 215.0, 300.0, 400.0], prof, 0) == [100.0, 215.0, 300.0, 400.0]
    # rows at a steady pitch are left alone, and so are two rows (no pitch to compare against)
    assert _merge_split_rows([100.0, 200.0, 300.0, 400.0], prof, 0) == [100.0, 200.0, 300.0, 400.0]
    assert _merge_split_rows([200.0, 215.0], prof, 0) == [200.0, 215.0]


def test_quiet_rows_of_a_low_gain_page_are_traces():
    # a 12x1 page at 5 mm/mV (printed at half that, as carts do to fit 12 rows): most leads have no
    # stroke as tall as a QRS elsewhere; rows running as the others do, one stroke a column, are
    # traces all the same, while text and ruled lines still are not
    from ecgvit.synth.styles import make_style

    for seed in (0, 1):
        img, sig, params = make_page(
            "normal",
            np.random.default_rng(seed),
            style=make_style("ge_mac", dpi=150, gain_mm_mv=5.0),
            as_array=True,
            layout="12x1",
        )
        r = read_page(img)
        assert r.layout == "12x1" and r.rows == 12 and len(r.leads) == 12, r.reasons


def test_grid_as_dark_as_the_trace_whose_cores_fall_with_the_trace():
    # a black-and-white 600 dpi page saved as JPEG and shown at a quarter: the grid's major lines
    # blur to cores as dark as the trace's edges, the darker side of the second threshold holds
    # trace and grid cores and its long lines make it look like the grid; taking that side as the
    # trace regardless (its long lines still grid) reads the page
    from ecgvit.synth.styles import make_style

    st = make_style("textbook", dpi=600, grid_colour="black", grid_kind="lines")
    img, sig, params = make_page("normal", np.random.default_rng(0), style=st, as_array=True, layout="3x4")
    _, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
    small = cv2.resize(cv2.imdecode(buf, cv2.IMREAD_COLOR), None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    r = read_page(np.ascontiguousarray(small[:, :, ::-1]))
    assert r.layout == "3x4" and len(r.leads) == 12, r.reasons
    assert any("darker ink taken as the trace" in s for s in r.reasons)
