"""Generated data for the out-of-scope gate: page layouts (3x4+1, 3x4, 6x2, 12x1) and the
negative kinds of ecgvit.synth.negatives (shape, dtype, determinism, CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecgvit.cli import main
from ecgvit.synth import CLASSES, make_page
from ecgvit.synth.negatives import NEGATIVE_KINDS, generate_negatives, make_negative, negative_rng
from ecgvit.synth.page import KHAN_STYLE, LAYOUTS, row_baselines

ROWS = {"3x4+1": 4, "3x4": 3, "6x2": 6, "12x1": 12}


def trace_rows(
    a: np.ndarray, box: tuple[int, int, int, int] | None = None, frac: float = 0.3, gap: int = 20
) -> list[float]:
    """Centres of the horizontal bands of trace ink (max RGB channel < 100) in `box`'s row profile.

    A trace spends most of its time near its baseline, so its baseline rows hold far more ink
    than the QRS spikes, labels or separators between rows."""
    l, t, r, b = box or (0, 0, a.shape[1] - 1, a.shape[0] - 1)
    ink = a[t : b + 1, l : r + 1].max(2) < 100
    prof = np.convolve(ink.sum(1).astype(float), np.ones(9) / 9, "same")
    rows = np.flatnonzero(prof > frac * prof.max())
    if rows.size == 0:
        return []
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > gap) + 1)
    return [t + float(np.average(r, weights=prof[r])) for r in runs]


def _inner_box() -> tuple[int, int, int, int]:
    l, t, r, b = KHAN_STYLE.grid_box
    bw = KHAN_STYLE.border_width
    return (l + bw, t + bw, r - bw, b - bw)


@pytest.mark.parametrize("kind", NEGATIVE_KINDS)
def test_every_negative_kind_is_an_rgb_image_and_deterministic(kind: str) -> None:
    a = make_negative(kind, negative_rng(0, kind, 0))
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    h, w = a.shape[:2]
    assert 300 <= min(h, w) and max(h, w) <= 3000, a.shape
    assert a.std() > 1, "an empty image"
    np.testing.assert_array_equal(a, make_negative(kind, negative_rng(0, kind, 0)))
    b = make_negative(kind, negative_rng(1, kind, 0))
    assert a.shape != b.shape or not np.array_equal(a, b)
    if kind == "single_lead":
        assert 1600 <= w <= 2400 and 500 <= h <= 700
        assert len(trace_rows(a)) == 1


def test_negative_params_and_unknown_kind() -> None:
    a, p = make_negative("photo", negative_rng(0, "photo", 3), with_params=True)
    assert p["size"] == [a.shape[1], a.shape[0]] and 1 <= p["jpeg_quality"] <= 100
    _, p = make_negative("layout_12x1", negative_rng(0, "layout_12x1", 0), with_params=True)
    assert p["layout"] == "12x1" and p["class"] in CLASSES
    with pytest.raises(ValueError, match="did you mean texture.*valid kinds: single_lead"):
        make_negative("textur", np.random.default_rng(0))


@pytest.mark.parametrize("layout", list(ROWS))
def test_layout_has_its_number_of_trace_rows(layout: str) -> None:
    a, _, p = make_page("normal", np.random.default_rng(5), as_array=True, layout=layout)
    assert p["layout"] == layout and a.shape == (KHAN_STYLE.height, KHAN_STYLE.width, 3)
    rows = trace_rows(a, _inner_box())
    assert len(rows) == ROWS[layout] == LAYOUTS[layout].n_rows, rows
    # each band sits on its baseline (the isoelectric line), not between rows
    assert np.abs(np.array(rows) - np.array(row_baselines(KHAN_STYLE, layout))).max() < 12


def test_default_layout_is_unchanged() -> None:
    for cls, distort in (("myocardial_infarction", "none"), ("abnormal_heartbeat", "light")):
        a, sa, pa = make_page(cls, np.random.default_rng(9), distort=distort, as_array=True)
        b, sb, pb = make_page(cls, np.random.default_rng(9), distort=distort, as_array=True, layout="3x4+1")
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)
        assert pa["layout"] == pb["layout"] == "3x4+1"
    c, sc, _ = make_page(cls, np.random.default_rng(9), distort=distort, as_array=True, layout="6x2")
    np.testing.assert_array_equal(sa, sc)  # the layout draws no randomness: same ECG
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="6x3.*3x4\\+1"):
        make_page("normal", np.random.default_rng(0), layout="6x3")


def test_generate_negatives_is_reproducible_and_checks_arguments(tmp_path: Path) -> None:
    for d in ("a", "b"):
        generate_negatives(tmp_path / d, per_kind=2, seed=4, kinds=("gradient", "shapes"), progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 2 * 2 + 1
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    side = json.loads((tmp_path / "a/shapes/shapes_00001.json").read_text())
    assert side["kind"] == "shapes" and side["seed"]["index"] == 1 and side["file"] == "shapes_00001.jpg"
    for kw in (dict(per_kind=0), dict(kinds="photo,blob"), dict(fmt="gif"), dict(seed=-1), dict(workers=0)):
        with pytest.raises(ValueError):
            generate_negatives(tmp_path / "x", progress=False, **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_cli_negatives_writes_one_folder_per_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "neg"
    assert main(["synth", "--negatives", "--per-kind", "1", "--out", str(out), "--quiet"]) == 0
    assert "9 out-of-scope images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(NEGATIVE_KINDS)
    for k in NEGATIVE_KINDS:
        assert sorted(p.name for p in (out / k).iterdir()) == [f"{k}_00000.jpg", f"{k}_00000.json"]
        assert Image.open(out / k / f"{k}_00000.jpg").mode == "RGB"
    cfg = json.loads((out / "negatives_config.json").read_text())
    assert cfg["kinds"] == list(NEGATIVE_KINDS) and cfg["per_kind"] == 1


def test_cli_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--negatives", "--kinds", "texture,fotos", "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err
    assert "'fotos'" in err and "did you mean photo" in err and ", ".join(NEGATIVE_KINDS) in err
    assert main(["synth", "--per-kind", "2", "--out", str(tmp_path / "n")]) == 2
    assert "--per-kind needs --negatives" in capsys.readouterr().err
    assert main(["synth", "--layout", "6x3", "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'6x3'" in err and ", ".join(LAYOUTS) in err
    assert not (tmp_path / "n").exists()
    # the CLI's lists (kept there so --help stays instant) match the library's
    from ecgvit import cli

    assert cli._SYNTH_LAYOUTS == tuple(LAYOUTS) and cli._NEGATIVE_KINDS == ", ".join(NEGATIVE_KINDS)


def test_cli_layout_6x2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p"
    assert main(["synth", "--layout", "6x2", "--per-class", "1", "--out", str(out), "--quiet"]) == 0
    assert "layout 6x2" in capsys.readouterr().out
    assert json.loads((out / "synth_config.json").read_text())["layout"] == "6x2"
    for cls in CLASSES:
        side = json.loads((out / cls / f"{cls}_00000.json").read_text())
        assert side["layout"] == "6x2"
    a = np.asarray(Image.open(out / "normal/normal_00000.jpg").convert("RGB"))
    assert len(trace_rows(a, _inner_box())) == 6
