"""Crop detection on drawn pages, preprocessing shapes/modes, and the on-disk cache."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from ecgvit.config import PreprocessConfig, config_hash, from_dict, to_dict
from ecgvit.data.crop import find_trace_box
from ecgvit.data.preprocess import PageCache, load_arrays, load_page_array, preprocess_image


def drawn_page(box=(120, 380, 2100, 1500), size=(2213, 1572), grid=(240, 170, 175), seed=0) -> Image.Image:
    """A report-like page: header text, a dotted pink grid with a border in `box`, black traces."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    for i, y in enumerate(range(40, 300, 45)):
        d.text((60, y), f"ID : {rng.integers(1e5, 1e6)}  Years  Male  Room No.: {i}", fill="black")
    d.line([(50, 320), (2160, 320)], fill="black", width=5)
    l, t, r, b = box
    pitch = 8
    for x in range(l, r, pitch):
        for y in range(t, b, pitch):
            d.point((x, y), fill=grid)
    for x in range(l, r, pitch * 5):
        d.line([(x, t), (x, b)], fill=(248, 200, 200), width=1)
    for y in range(t, b, pitch * 5):
        d.line([(l, y), (r, y)], fill=(248, 200, 200), width=1)
    d.rectangle([l, t, r, b], outline=grid, width=3)
    for row in range(4):
        y0 = t + (row + 0.6) * (b - t) / 4.4
        xs = np.arange(l + 40, r - 40, 3)
        ys = y0 + 25 * np.sin(xs / 37.0 + row) + rng.normal(0, 2, xs.size)
        d.line(list(zip(xs.tolist(), ys.tolist(), strict=False)), fill="black", width=3)
    d.text((60, size[1] - 40), "0.67~25Hz AC50 25mm/s 10mm/mV  2020-10-15 07:47:57 PM", fill="black")
    return im


@pytest.mark.parametrize("box", [(120, 380, 2100, 1500), (68, 283, 2176, 1517), (300, 500, 1900, 1300)])
def test_grid_is_found_where_it_was_drawn(box):
    im = drawn_page(box=box)
    res = find_trace_box(im)
    assert res.detected, res.reason
    tol = 0.012 * im.width  # about 26 px on a 2213 px page
    assert np.all(np.abs(np.array(res.box) - np.array(box)) <= tol), (res.box, box)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 0.36])
def test_detection_is_scale_invariant(scale):
    full = drawn_page()
    im = full.resize((round(full.width * scale), round(full.height * scale)), Image.Resampling.BOX)
    res = find_trace_box(im)
    assert res.detected, res.reason
    frac = np.array(res.fraction(im.size))
    expected = np.array([120 / 2213, 380 / 1572, 2100 / 2213, 1500 / 1572])
    assert np.all(np.abs(frac - expected) < 0.015), frac


def test_green_grid_is_found_too():
    im = drawn_page(grid=(150, 215, 160))
    assert find_trace_box(im).detected


@pytest.mark.parametrize("kind", ["blank", "black_text", "gray_noise"])
def test_pages_without_grid_fall_back_and_say_so(kind):
    rng = np.random.default_rng(1)
    if kind == "blank":
        im = Image.new("RGB", (1200, 900), "white")
    elif kind == "black_text":
        im = Image.new("RGB", (1200, 900), "white")
        d = ImageDraw.Draw(im)
        for y in range(0, 900, 30):
            d.text((10, y), "lorem ipsum " * 12, fill="black")
    else:
        g = rng.integers(0, 256, (900, 1200), dtype=np.uint8)
        im = Image.fromarray(g).convert("RGB")
    res = find_trace_box(im, fallback_box=(0.1, 0.2, 0.9, 0.8))
    assert not res.detected
    assert "fallback" in res.reason
    assert res.box == (120, 180, 1080, 720)


def test_preprocess_drops_header_and_footer(tmp_path):
    im = drawn_page()
    cfg = PreprocessConfig(height=100, width=140, grayscale=True)
    out = preprocess_image(im, cfg)
    assert out.array.shape == (100, 140) and out.array.dtype == np.uint8
    assert out.crop is not None and out.crop.detected
    # The crop starts below the header rule at y=320.
    assert out.crop.box[1] > 330


@pytest.mark.parametrize("grayscale,shape", [(True, (64, 96)), (False, (64, 96, 3))])
def test_load_page_array_modes_and_draft(tmp_path, grayscale, shape):
    p = tmp_path / "page.jpg"
    drawn_page().save(p, quality=90)
    for crop in ("auto", "box", "none"):
        arr = load_page_array(p, PreprocessConfig(height=64, width=96, grayscale=grayscale, crop=crop)).array
        assert arr.shape == shape


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="crop='diagonal'"):
        PreprocessConfig(crop="diagonal")
    with pytest.raises(ValueError, match="fallback_box"):
        PreprocessConfig(fallback_box=(0.5, 0.2, 0.4, 0.9))
    with pytest.raises(ValueError, match="heigth"):
        from_dict(PreprocessConfig, {"heigth": 10})
    cfg = PreprocessConfig(height=99)
    assert from_dict(PreprocessConfig, to_dict(cfg)) == cfg
    assert config_hash(cfg) != config_hash(PreprocessConfig())


def test_cache_second_pass_decodes_nothing(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.jpg"
        drawn_page(seed=i).save(p, quality=85)
        paths.append(p)
    cfg = PreprocessConfig(height=48, width=64)
    first = load_arrays(paths, cfg=cfg, cache_root=tmp_path / "cache", workers=1)
    assert first.shape == (3, 48, 64)

    import ecgvit.data.preprocess as pre

    def boom(*a, **k):
        raise AssertionError("decoded a page although the cache was warm")

    monkeypatch.setattr(pre, "open_page", boom)
    second = load_arrays(paths, cfg=cfg, cache_root=tmp_path / "cache", workers=1)
    np.testing.assert_array_equal(first, second)
    # Another config is another cache entry, never a stale hit.
    assert (
        PageCache(PreprocessConfig(height=40, width=64), tmp_path / "cache").dir
        != PageCache(cfg, tmp_path / "cache").dir
    )


def test_cache_filled_by_worker_processes_matches_inline(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"p{i}.jpg"
        drawn_page(seed=10 + i).save(p, quality=85)
        paths.append(p)
    cfg = PreprocessConfig(height=48, width=64)
    inline = load_arrays(paths, cfg=cfg, cache_root=tmp_path / "inline", workers=1)
    # Two spawned processes (one OpenCV thread each) fill the cache with the same bytes.
    pooled = load_arrays(paths, cfg=cfg, cache_root=tmp_path / "pooled", workers=2)
    np.testing.assert_array_equal(inline, pooled)


def test_damaged_cache_entry_is_recomputed(tmp_path):
    p = tmp_path / "p.jpg"
    drawn_page().save(p)
    cfg = PreprocessConfig(height=32, width=48)
    cache = PageCache(cfg, tmp_path / "c")
    a = cache.get(p)
    f = next(cache.dir.rglob("*.npy"))
    f.write_bytes(b"garbage")
    b = PageCache(cfg, tmp_path / "c").get(p)
    np.testing.assert_array_equal(a, b)


def test_lightly_distorted_photos_still_crop_to_the_grid():
    """A tinted background round the page or a colour cast once made the whole image look like
    grid (about half of these pages); the texture fallback finds the real grid box."""
    import io

    from ecgvit.data.preprocess import draft_size
    from ecgvit.synth import make_page

    draft = draft_size(PreprocessConfig(height=192, width=320))  # what predict decodes
    whole, inside = 0, 0
    for i in range(6):
        img, _, p = make_page("normal", np.random.default_rng(300 + i), distort="light")
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=p["jpeg_quality"])
        im = Image.open(io.BytesIO(buf.getvalue()))
        im.draft("RGB", draft)
        im = im.convert("RGB")
        l, t, r, b = find_trace_box(im).box
        w, h = im.size
        whole += (r - l) >= 0.97 * w and (b - t) >= 0.97 * h
        # The drawn grid spans ~95% x 78% of the page and leaves the header out.
        inside += t > 0.1 * h and 0.6 < (b - t) / h < 0.9
    assert whole <= 1 and inside >= 5, (whole, inside)


def test_order_stats_are_np_partitions_values():
    """Crop detection's percentiles come from a radix select on float32 maps: the same values
    np.partition gives, for ties, zeros, NaN, negatives (which take np.partition) and sizes."""
    from ecgvit.data.crop import _order_stats, _percentiles

    rng = np.random.default_rng(5)
    arrays = [
        rng.random(54_000).astype(np.float32) * 40,
        (rng.random(7_000) ** 8).astype(np.float32),  # many values within a few bins
        np.round(rng.random(999) * 3).astype(np.float32),  # heavy ties
        np.zeros(10, np.float32),
        np.array([3.0], np.float32),
        np.r_[rng.random(500), [np.nan, np.inf, 0.0]].astype(np.float32),
        (rng.random(800) - 0.5).astype(np.float32),  # negatives: np.partition's path
        np.r_[np.ones(20), [-0.0]].astype(np.float32),
        rng.random(300),  # float64: np.partition's path
    ]
    for v in arrays:
        n = v.size
        idx = sorted({min(n - 1, int(np.floor((n - 1) * q / 100)) + d) for q in (0, 50, 75, 90, 100) for d in (0, 1)})
        want = np.partition(v, idx)[idx]
        got = _order_stats(v, idx)
        got = np.array([got[i] for i in idx], v.dtype)
        assert np.array_equal(want, got, equal_nan=True)
        if not np.isnan(v).any():
            assert np.allclose(_percentiles(v, (75, 90)), np.percentile(v, (75, 90)), rtol=0, atol=1e-6)


def test_pil_luma_is_pils_grey_conversion_for_every_colour():
    # All 2**24 RGB colours at once: the float32 weighted sum must truncate to exactly PIL's
    # fixed-point (19595 R + 38470 G + 7471 B + 32768) >> 16, ties included.
    from ecgvit.data.preprocess import pil_luma

    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
    want = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(pil_luma(rgb), want)
    assert np.array_equal(pil_luma(rgb[100:300, 7:501]), want[100:300, 7:501])  # a crop view, as preprocessing passes


@pytest.mark.parametrize("grayscale", [True, False])
@pytest.mark.parametrize("crop", ["auto", "box", "none"])
def test_preprocess_array_gives_the_pil_paths_bytes(grayscale, crop):
    # Prediction preprocesses the decoder's array; training caches went through PIL images.
    # The model must see the same bytes either way.
    from ecgvit.data.preprocess import preprocess_array

    page = drawn_page(size=(553, 393), box=(30, 95, 525, 380), seed=3)
    cfg = PreprocessConfig(height=64, width=96, grayscale=grayscale, crop=crop)
    a = preprocess_array(np.asarray(page), cfg)
    ref = page.crop(a.crop.box) if a.crop is not None else page  # what the PIL path did
    ref = np.asarray(ref.convert("L") if grayscale else ref)
    ref = cv2.resize(ref, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
    assert np.array_equal(a.array, ref)
    assert (a.crop is None) == (crop == "none")
    assert np.array_equal(preprocess_image(page, cfg).array, a.array)
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess_array(np.asarray(page.convert("L")), cfg)


def test_column_means_are_numpys_bit_for_bit():
    from ecgvit.data.crop import column_means

    rng = np.random.default_rng(0)
    for shape in [(2, 7), (300, 513), (41, 3)]:
        a = (rng.random(shape, dtype=np.float32) * 255).astype(np.float32)
        for view in (a, a[1:, 2:], a[::1, 1:-1], a[::2], a[:, ::2], np.asfortranarray(a)):
            assert np.array_equal(column_means(view), view.mean(axis=0))
    assert np.array_equal(
        column_means(np.arange(12.0).reshape(3, 4)), np.arange(12.0).reshape(3, 4).mean(axis=0)
    )  # float64: numpy's own
