"""Synthetic page styles, layouts, the photo distortion and the CLI's style/layout/distortion options."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ecgvit.cli import build_parser, main
from ecgvit.synth import KHAN_STYLE, LEADS, encode, generate, make_page, page_rng
from ecgvit.synth import distort as D
from ecgvit.synth.page import LAYOUTS, get_layout, page_truth, row_baselines, template
from ecgvit.synth.styles import FAMILY_NAMES, STYLES, get_style, make_style, sample_style

LEAD_IX = {lead: i for i, lead in enumerate(LEADS)}

# sha256 prefixes of pages made by the code before styles, truth and the new layouts were added
# (seeds fixed, so deterministic): the default Khan output must not change
KHAN_HASHES = {
    "3x4+1/none": "c44707a6821c03bd",
    "3x4+1/heavy": "f2c26e3695dd4692",
    "3x4/light": "9c6737db59016246",
    "6x2/none": "877ec5c1cb7908a5",
    "12x1/heavy": "7d407ae6a2d27a14",
}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def test_default_khan_pages_unchanged() -> None:
    for key, want in KHAN_HASHES.items():
        lay, dist = key.split("/")
        img, _, _ = make_page("normal", page_rng(0, "normal", 3), distort=dist, as_array=True, layout=lay)
        assert _sha(img.tobytes()) == want, key
    img, _, _ = make_page("myocardial_infarction", page_rng(5, "myocardial_infarction", 1), as_array=True)
    assert _sha(encode(img, "jpg", 75)) == "cbbe2534d52fa9fc"
    img, _, _ = make_page("normal", page_rng(0, "normal", 0), style=KHAN_STYLE.scaled(0.5), as_array=True)
    assert _sha(img.tobytes()) == "a37c19b3707dd550"
    assert get_style("khan") is KHAN_STYLE and make_style("khan") is KHAN_STYLE


def _ink_in_boxes(mask: np.ndarray, truth: dict) -> float:
    inside = np.zeros(mask.shape, bool)
    for p in truth["panels"]:
        l, t, r, b = p["box"]
        assert 0 <= l < r < mask.shape[1] and 0 <= t < b < mask.shape[0], p
        inside[int(t) : int(np.ceil(b)) + 1, int(l) - 2 : int(np.ceil(r)) + 3] = True
    return float(mask[inside].sum() / max(mask.sum(), 1))


@pytest.mark.parametrize("layout", ["3x4+3", "6x2+1"])
def test_new_layouts(layout: str) -> None:
    img, sig, p = make_page("normal", np.random.default_rng(2), as_array=True, layout=layout, trace_mask=True)
    assert img.shape == (1572, 2213, 3)
    lay = get_layout(layout)
    leads = [q["lead"] for q in p["truth"]["panels"]]
    if layout == "3x4+3":
        assert leads[-3:] == ["V1", "II", "V5"] and len(leads) == 15
    else:
        assert leads[-1] == "II" and len(leads) == 13
    assert len(row_baselines(KHAN_STYLE, lay)) == lay.n_rows
    assert [q["duration"] for q in p["truth"]["panels"]][-1] == pytest.approx(9.998, abs=0.01)
    assert _ink_in_boxes(p["trace_mask"], p["truth"]) > 0.99


@pytest.mark.parametrize("name", [n for n in FAMILY_NAMES if n != "khan"])
def test_family_styles_render_with_truth(name: str) -> None:
    st = STYLES[name]
    assert (st.width, st.height) == (2339, 1654) and st.family == name  # A4 landscape at 200 dpi
    img, sig, p = make_page("normal", np.random.default_rng(4), style=st, as_array=True, trace_mask=True)
    assert img.shape == (1654, 2339, 3)
    truth = p["truth"]
    assert truth["style"] == name and truth["px_per_mm"]["x"] == pytest.approx(200 / 25.4)
    m = p["trace_mask"]
    assert _ink_in_boxes(m, truth) > 0.97
    assert img[m > 200].mean() < 120  # the traces are where the mask says
    # a header above the grid (the textbook figure has none: its grid fills the page)
    top = st.grid_box[1]
    assert (top > 0 and template(st)[:top].min() < 100) or (name == "textbook" and top == 0)


def test_paper_dpi_speed_gain_and_calibration() -> None:
    st = make_style("philips", paper="letter", dpi=100, speed_mm_s=50, gain_mm_mv=20, grid_colour="green")
    assert (st.width, st.height) == (1100, 850)
    truth = page_truth(st, "3x4")
    ps = [q for q in truth["panels"] if q["row"] == 0]
    assert [q["t0"] for q in ps] == [0.0, 1.25, 2.5, 3.75]  # 50 mm/s: 1.25 s columns, contiguous
    assert truth["px_per_s"] == pytest.approx(50 * 100 / 25.4) and truth["gain_mm_mv"] == 20.0
    assert ps[-1]["box"][2] < st.width
    # calibration pulse: 20 mm high (1 mV at 20 mm/mV), 0.2 s = 10 mm wide at 50 mm/s
    c0, c1, c2, c3 = st.cal_x
    assert (c2 - c1) == pytest.approx(10 * st.px_per_mm, abs=1)
    a = template(st, "3x4").astype(int).sum(2)
    y = row_baselines(st, "3x4")[0]
    top = y - int(round(20 * st.px_per_mm))
    assert a[top - 1 : top + 2, (c1 + c2) // 2].min() < 200 and a[top - 8 : top - 3, (c1 + c2) // 2].min() > 200
    # 12x1 keeps the layout's half gain
    assert page_truth(st, "12x1")["gain_mm_mv"] == 10.0
    st2 = make_style("textbook", dpi=150, grid_kind="major", trace_colour="dark_blue")
    img, _, p = make_page("normal", np.random.default_rng(0), style=st2, as_array=True, layout="6x2+1")
    assert img.shape[:2] == (st2.height, st2.width) and p["truth"]["grid_box"] == [0, 0, st2.width - 1, st2.height - 1]


def test_sample_style_is_varied_and_valid() -> None:
    seen = set()
    for s in range(40):
        st, lay = sample_style(np.random.default_rng(s))
        assert lay in LAYOUTS and st.dpi in (100, 150, 200, 300, 400, 600)
        t = page_truth(st, lay)
        for q in t["panels"]:
            l, tt, r, b = q["box"]
            assert 0 <= l < r < st.width and 0 <= tt < b < st.height
        seen.add((st.family, lay, st.speed_mm_s, st.gain_mm_mv))
    assert len({f for f, *_ in seen}) >= 5 and len({x[1] for x in seen}) >= 4
    assert sample_style(np.random.default_rng(3)) == sample_style(np.random.default_rng(3))


def test_photo_distortion_truth_maps_onto_the_page() -> None:
    img, sig, p = make_page("normal", np.random.default_rng(12), distort="photo", as_array=True, trace_mask=True)
    d, truth = p["distortions"], p["truth"]
    assert d["level"] == "photo" and max(img.shape[:2]) <= D.PHOTO_MAX_PX and 40 <= d["jpeg_quality"] <= 85
    assert truth["page_size"] == [img.shape[1], img.shape[0]]
    m = p["trace_mask"]
    from ecgvit.synth.page import trace_mask

    ys, xs = np.nonzero(trace_mask(sig, KHAN_STYLE) > 250)
    sel = np.random.default_rng(0).choice(len(xs), 500, replace=False)
    q = D.map_points(np.stack([xs[sel], ys[sel]], 1), truth["homography"], truth["warp"])
    ok = (q[:, 0] > 1) & (q[:, 1] > 1) & (q[:, 0] < img.shape[1] - 2) & (q[:, 1] < img.shape[0] - 2)
    assert ok.mean() > 0.5
    qi = np.round(q[ok]).astype(int)
    assert np.median(m[qi[:, 1], qi[:, 0]]) > 150  # mapped trace points land on the warped trace mask
    g = img.mean(2)
    assert np.median(g[qi[:, 1], qi[:, 0]]) < np.median(g[m == 0]) - 40
    # a curl is exactly invertible
    w = {"kind": "curl", "axis": "x", "depth": 0.05, "asym": 0.01, "centre": [1000.0, 700.0], "half": 1000.0}
    x = np.array([0.0, 300.0, 1900.0])
    y = np.array([10.0, 800.0, 1300.0])
    xc, yc = D.curl_forward(x, y, w)
    xb, yb = D._curl_inverse(xc, yc, w)
    np.testing.assert_allclose(np.stack([xb, yb]), np.stack([x, y]), atol=0.05)


def test_bad_names_raise_valueerror_naming_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ge_mac, philips"):
        get_style("mortara")
    with pytest.raises(ValueError, match="khan, ge_mac"):
        make_style("mortara")
    with pytest.raises(ValueError, match="red, pink"):
        make_style("ge_mac", grid_colour="purple")
    with pytest.raises(ValueError, match="a4, letter"):
        make_style("ge_mac", paper="a3")
    with pytest.raises(ValueError, match="3x4\\+3, 6x2\\+1"):
        get_layout("4x3")
    with pytest.raises(ValueError, match="photo"):
        make_page("normal", np.random.default_rng(0), distort="phone")
    with pytest.raises(ValueError, match="ge_mac"):
        generate(tmp_path / "x", per_class=1, style="mortara", progress=False)


def test_cli_style_layout_distort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flag, bad, valid in (
        ("--style", "mortara", ", ".join(STYLES)),
        ("--layout", "4x3", ", ".join(LAYOUTS)),
        ("--distort", "phone", ", ".join(D.LEVELS)),
    ):
        assert main(["synth", flag, bad, "--out", str(tmp_path / "n")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"'{bad}'" in err and valid in err, err
    assert not (tmp_path / "n").exists()
    a = build_parser().parse_args(["synth", "--out", "x"])
    assert a._synth_styles == tuple(STYLES) and a._synth_levels == D.LEVELS
    out = tmp_path / "r"
    assert main(["synth", "--style", "random", "--per-class", "1", "--out", str(out), "--quiet", "--seed", "3"]) == 0
    assert "style random" in capsys.readouterr().out
    for side in out.glob("*/*.json"):
        s = json.loads(side.read_text())
        assert s["truth"]["style"] == s["page_style"]["family"] and s["truth"]["layout"] in LAYOUTS
    out2 = tmp_path / "g"
    assert (
        main(["synth", "--style", "ge_mac", "--layout", "3x4+3", "--per-class", "1", "--out", str(out2), "--quiet"])
        == 0
    )
    s = json.loads(next(out2.glob("normal/*.json")).read_text())
    assert s["truth"]["style"] == "ge_mac" and s["truth"]["layout"] == "3x4+3" and "page_style" not in s
    assert len(s["truth"]["calibration"]) == 6 and s["truth"]["calibration"][0]["height_px"] == 79  # 10 mm at 200 dpi


def test_trace_masks_in_npz(tmp_path: Path) -> None:
    generate(tmp_path, per_class=1, seed=2, distort="light", progress=False, trace_masks=True, layout="12x1")
    page = next(tmp_path.glob("normal/*.jpg"))
    z = np.load(page.with_suffix(".npz"))
    m = z["trace_mask"]
    assert m.dtype == np.uint8 and m.shape == (1572, 2213) and m.max() == 255
    from PIL import Image

    g = np.asarray(Image.open(page).convert("L"))
    assert g[m > 200].mean() < g[m == 0].mean() - 80


@pytest.mark.parametrize(
    "kw, distort",
    [
        (dict(family="ge_mac", paper="letter", dpi=300, speed_mm_s=50.0, gain_mm_mv=20.0), "none"),
        (dict(family="textbook", dpi=100, gain_mm_mv=5.0), "none"),
        (dict(family="nihon_kohden", dpi=300), "photo"),
    ],
)
def test_mapping_reproduces_samples_on_other_styles(kw: dict, distort: str) -> None:
    st = make_style(kw.pop("family"), **kw)
    img, sig, p = make_page("normal", np.random.default_rng(8), style=st, distort=distort, as_array=True, noise=False)
    truth = p["truth"]
    g = img.mean(2)
    pts, ref = [], []
    for panel in truth["panels"]:
        for frac in (0.2, 0.5, 0.8):
            k = int(panel["duration"] * truth["px_per_s"] * frac)
            t = panel["t0"] + k / truth["px_per_s"]
            mv = float(np.interp(t, np.arange(sig.shape[1]) / truth["fs"], sig[LEAD_IX[panel["lead"]]]))
            y = panel["baseline_y"] - mv * truth["px_per_mv"]
            if truth["clip_y"][0] + 2 < y < truth["clip_y"][1] - 2:
                pts.append((panel["x0"] + k, y))
    q = D.map_points(pts, truth["homography"], truth["warp"])
    for x, y in q:
        xi, yi = int(round(x)), int(round(y))
        if 2 <= xi < img.shape[1] - 2 and 2 <= yi < img.shape[0] - 2:
            ref.append(g[yi - 1 : yi + 2, xi - 1 : xi + 2].min())
    assert len(ref) > 20
    assert np.median(ref) < np.median(g) - 60, (np.median(ref), np.median(g))


def test_sample_style_speeds_restricts_the_paper_speed() -> None:
    speeds = {sample_style(np.random.default_rng(s), speeds=(25.0,))[0].speed_mm_s for s in range(30)}
    assert speeds == {25.0}
    assert {sample_style(np.random.default_rng(s))[0].speed_mm_s for s in range(30)} == {25.0, 50.0}
    with pytest.raises(ValueError, match="speeds: 30.0"):
        sample_style(np.random.default_rng(0), speeds=(30.0,))
