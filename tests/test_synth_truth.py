"""Truth sidecar of synthetic pages: panel boxes, the pixel <-> (time, mV) mapping, homographies."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ecgvit.synth import KHAN_STYLE, LEADS, generate, make_page
from ecgvit.synth.page import LAYOUTS, page_truth, trace_mask, trace_polylines

IX = {lead: i for i, lead in enumerate(LEADS)}


def _px(truth: dict, panel: dict, t: float, mv: float) -> tuple[float, float]:
    x = panel["x0"] + (t - panel["t0"]) * truth["px_per_s"]
    y = panel["baseline_y"] - mv * truth["px_per_mv"]
    return x, y


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_truth_boxes_hold_their_trace_ink(layout: str) -> None:
    img, sig, p = make_page("normal", np.random.default_rng(3), as_array=True, layout=layout)
    truth = p["truth"]
    assert truth["layout"] == layout and truth["page_size"] == [img.shape[1], img.shape[0]]
    lay = LAYOUTS[layout]
    assert len(truth["panels"]) == sum(len(r) for r in lay.rows) + len(lay.rhythm_leads)
    polys = trace_polylines(sig, KHAN_STYLE, layout=layout)
    fractions = []
    for panel, poly in zip(truth["panels"], polys, strict=True):
        l, t, r, b = panel["box"]
        assert 0 <= l < r < img.shape[1] and 0 <= t < b < img.shape[0], panel
        # this panel's own ink, drawn alone, lies (almost all) inside its box
        m = np.zeros(img.shape[:2], np.uint8)
        cv2.polylines(m, [poly], False, 255, KHAN_STYLE.trace_width, cv2.LINE_AA, 3)
        inside = m[int(t) : int(np.ceil(b)) + 1, int(l) - 2 : int(np.ceil(r)) + 3].sum()
        # (tall QRS complexes may reach into the next row's band on 6- and 7-row pages, as on paper)
        assert inside >= 0.85 * m.sum(), (panel["lead"], inside / m.sum())
        fractions.append(inside / m.sum())
        # the page is dark where the trace is
        assert img[m > 200].mean() < 90
    assert np.mean(fractions) > 0.97, fractions


def test_mapping_reproduces_a_sample_pixel() -> None:
    img, sig, p = make_page("normal", np.random.default_rng(5), as_array=True, noise=False)
    truth = p["truth"]
    mask = trace_mask(sig, KHAN_STYLE)
    for panel in truth["panels"]:
        # the sample at the middle of the panel, on a whole pixel column
        k = int(panel["duration"] * truth["px_per_s"] / 2)
        t = panel["t0"] + k / truth["px_per_s"]
        mv = float(np.interp(t, np.arange(sig.shape[1]) / truth["fs"], sig[IX[panel["lead"]]]))
        x, y = _px(truth, panel, t, mv)
        xi, yi = int(round(x)), int(round(y))
        assert mask[yi - 1 : yi + 2, xi - 1 : xi + 2].max() > 200, (panel["lead"], x, y)
        assert img[yi - 1 : yi + 2, xi - 1 : xi + 2].min() < 80


@pytest.mark.parametrize("level", ["light", "heavy"])
def test_homography_maps_truth_onto_a_distorted_page(level: str) -> None:
    clean, sig, p0 = make_page("normal", np.random.default_rng(9), as_array=True, noise=False)
    dist, _, p = make_page("normal", np.random.default_rng(9), as_array=True, noise=False, distort=level)
    H = np.array(p["truth"]["homography"])
    assert not np.allclose(H, np.eye(3))
    ys, xs = np.nonzero(trace_mask(sig, KHAN_STYLE) > 250)
    sel = np.random.default_rng(0).choice(len(xs), 300, replace=False)
    q = H @ np.stack([xs[sel], ys[sel], np.ones(300)])
    qx, qy = q[0] / q[2], q[1] / q[2]
    ok = (qx > 2) & (qy > 2) & (qx < dist.shape[1] - 3) & (qy < dist.shape[0] - 3)
    g = dist.mean(2)
    vals = [
        g[int(round(b)) - 1 : int(round(b)) + 2, int(round(a)) - 1 : int(round(a)) + 2].min()
        for a, b in zip(qx[ok], qy[ok], strict=True)
    ]
    assert np.median(vals) < np.median(g) - 60


def test_sidecar_has_truth(tmp_path: Path) -> None:
    generate(tmp_path, per_class=1, seed=1, progress=False, layout="6x2")
    side = json.loads(next(tmp_path.glob("normal/*.json")).read_text())
    truth = side["truth"]
    assert truth == json.loads(json.dumps(page_truth(KHAN_STYLE, "6x2"))) | {"page_size": [2213, 1572]}
    assert truth["px_per_mm"]["grid"] == pytest.approx(7.944)
    assert truth["gain_mm_mv"] == 10.0 and truth["speed_mm_s"] == 25.0
    assert [q["lead"] for q in truth["panels"]][:2] == ["I", "V1"]
