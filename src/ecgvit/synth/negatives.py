"""Images that are *not* a supported 12-lead report page: test and training data for an
out-of-scope gate (`ecgvit synth --negatives`).

    from ecgvit.synth.negatives import NEGATIVE_KINDS, generate_negatives, make_negative
    a = make_negative("texture", np.random.default_rng(0))        # HxWx3 uint8 RGB
    print(generate_negatives("neg_out", per_kind=20, seed=1))

Kinds (NEGATIVE_KINDS):

    single_lead   one zoomed lead strip on ECG grid (1600-2400 x 500-700 px): a rhythm-strip photo
    layout_6x2    a full report page in the 6x2 layout (5 s panels), random class
    layout_12x1   a full report page in the 12x1 layout (12 rows of 10 s), random class
    blank_grid    the page grid and border with no traces (half of them with the header text)
    text_only     a white page of typed text (letter / lab report), no grid
    texture       procedural textures: multi-octave value noise, coloured; plain, wood or marble
    gradient      smooth 2-3 colour linear or radial gradients with mild noise
    shapes        random filled/outlined circles, rectangles, lines, polygons on a background
    photo         a non-ECG "scene": sky/ground gradients, shapes, blur, sensor noise, JPEG

Output layout:

    OUT/negatives_config.json            kinds, per_kind, seed, format
    OUT/<kind>/<kind>_00000.jpg          the image
    OUT/<kind>/<kind>_00000.json         its parameters (size, colours, variant, seed)

An image's RNG is derived from (seed, kind, index) with numpy's SeedSequence (see `negative_rng`),
so its bytes depend on nothing else, whatever `workers` is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ecgvit.synth import _json_default, encode, make_page
from ecgvit.synth.jobs import run_jobs
from ecgvit.synth.page import KHAN_STYLE, _font, blank_page
from ecgvit.synth.signals import CLASSES, FS, LEADS, simulate

NEGATIVE_KINDS: tuple[str, ...] = (
    "single_lead",
    "layout_6x2",
    "layout_12x1",
    "blank_grid",
    "text_only",
    "texture",
    "gradient",
    "shapes",
    "photo",
)
FORMATS = ("jpg", "png")
# keeps negative RNG streams apart from the class pages' SeedSequence([seed, class_index, index])
_KIND_OFFSET = 1000

Params = dict[str, Any]


def negative_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """The RNG of image `index` of `kind`: depends only on (seed, kind, index)."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), _KIND_OFFSET + NEGATIVE_KINDS.index(kind), int(index)])
    )


# --------------------------------------------------------------------------- helpers


def _size(rng: np.random.Generator, lo: int = 800, hi: int = 3000) -> tuple[int, int]:
    """(width, height): long side in lo..hi, aspect 1:1 .. 2:1, portrait or landscape."""
    long = int(rng.integers(lo, hi + 1))
    short = max(lo // 2, int(round(long / rng.uniform(1.0, 2.0))))
    return (long, short) if rng.random() < 0.5 else (short, long)


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))  # type: ignore[return-value]


def _add_noise(a: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """`a` plus Gaussian pixel noise (rounded to integers) from a 257x263 tile repeated with a
    random offset: a full-size normal draw in float would cost ~0.3 s on a 9 MP image."""
    h, w = a.shape[:2]
    tile = np.round(rng.standard_normal((257, 263, 3), dtype=np.float32) * np.float32(sigma)).astype(np.int16)
    oy, ox = int(rng.integers(0, 257)), int(rng.integers(0, 263))
    reps = ((h + oy) // 257 + 1, (w + ox) // 263 + 1, 1)
    out = a.astype(np.int16)
    out += np.tile(tile, reps)[oy : oy + h, ox : ox + w]
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _value_noise(
    rng: np.random.Generator, h: int, w: int, octaves: int, base_cells: float, persistence: float
) -> np.ndarray:
    """Multi-octave value noise in [0, 1] (float32 HxW): random lattices upsampled bicubically.
    Built at a quarter of the size and upsampled once (the finest octave is still ~8 px)."""
    sh, sw = max(8, h // 4), max(8, w // 4)
    acc = np.zeros((sh, sw), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base_cells * 2**o
        gh = max(2, int(round(cells * sh / max(sh, sw))) + 1)
        gw = max(2, int(round(cells * sw / max(sh, sw))) + 1)
        g = rng.random((gh, gw), dtype=np.float32)
        acc += np.float32(amp) * cv2.resize(g, (sw, sh), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    acc /= np.float32(total)
    full = np.asarray(cv2.resize(acc, (w, h), interpolation=cv2.INTER_LINEAR))
    lo, hi = float(full.min()), float(full.max())
    return (full - lo) / max(hi - lo, 1e-6)


def _palette(t: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Map t in [0, 1] (HxW) through evenly spaced colour stops -> HxWx3 uint8 (via a 256-entry LUT)."""
    stops = np.linspace(0, 1, len(colours))
    x = np.linspace(0, 1, 256)
    lut = np.stack([np.interp(x, stops, [c[k] for c in colours]) for k in range(3)], 1).astype(np.uint8)
    idx = np.clip(t * 255 + 0.5, 0, 255).astype(np.uint8)
    return lut[idx]


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", a[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert ok and dec is not None
    return np.ascontiguousarray(dec[..., ::-1])


# --------------------------------------------------------------------------- kinds


def _single_lead(rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    w, h = int(rng.integers(1600, 2401)), int(rng.integers(500, 701))
    px_per_mm = float(rng.uniform(7.0, 14.0))  # zoom: 180..360 dpi worth of paper
    m = int(rng.integers(0, 40))
    lines = rng.random() < 0.4
    st = replace(
        KHAN_STYLE,
        width=w,
        height=h,
        dpi=max(1, int(round(px_per_mm * 25.4))),
        grid_box=(m, m, w - 1 - m, h - 1 - m),
        grid_pitch_px=px_per_mm,
        grid_origin=(float(rng.uniform(0, 5 * px_per_mm)), float(rng.uniform(0, 5 * px_per_mm))),
        border_width=int(rng.integers(1, 5)) if m else 1,
        grid_kind="lines" if lines else "dots",
        minor_color=(250, 205, 210) if lines else KHAN_STYLE.minor_color,
        major_color=(240, 150, 160) if lines else KHAN_STYLE.major_color,
        faint_color=None if lines else KHAN_STYLE.faint_color,
        border_color=KHAN_STYLE.border_color if m else KHAN_STYLE.paper_color,
    )
    a = blank_page(st, header=False)
    cls = str(rng.choice(CLASSES))
    lead = "II" if rng.random() < 0.6 else str(rng.choice(LEADS))
    ecg = simulate(cls, rng, noise=True)
    x = ecg.signals[LEADS.index(lead)].astype(np.float64)
    pps, ppmv = 25.0 * px_per_mm, 10.0 * px_per_mm
    x0 = m + st.border_width + float(rng.uniform(0.01, 0.06) * w)
    dur = min((w - 1 - m - st.border_width - 2 - x0) / pps, (x.size - 1) / FS)
    xs = x0 + np.arange(int(dur * pps) + 1, dtype=np.float64)
    v = np.interp((xs - x0) / pps, np.arange(x.size) / FS, x)
    v -= np.median(v)
    y0 = h * float(rng.uniform(0.5, 0.65))
    ys = np.clip(y0 - v * ppmv, m + st.border_width + 1, h - 2 - m - st.border_width)
    pts = np.stack([np.round(xs * 8), np.round(ys * 8)], 1).astype(np.int32)
    tw = max(1, int(round(px_per_mm / 3.5)))
    cv2.polylines(a, [pts], False, (0, 0, 0), tw, cv2.LINE_AA, 3)
    label = rng.random() < 0.7
    if label:
        im = Image.fromarray(a)
        ImageDraw.Draw(im).text(
            (x0 + 4, y0 - 1.5 * ppmv),
            lead,
            font=_font(KHAN_STYLE.font_file, int(3.5 * px_per_mm)),
            fill=(0, 0, 0),
            anchor="ls",
        )
        a = np.array(im)
    return a, {
        "size": [w, h],
        "px_per_mm": round(px_per_mm, 3),
        "grid": st.grid_kind,
        "lead": lead,
        "class": cls,
        "seconds": round(dur, 2),
        "label": label,
    }


def _layout_page(layout: str) -> Callable[[np.random.Generator], tuple[np.ndarray, Params]]:
    def make(rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        cls = str(rng.choice(CLASSES))
        distort = "light" if rng.random() < 0.3 else "none"
        img, _, p = make_page(cls, rng, distort=distort, as_array=True, layout=layout)
        a = np.asarray(img)
        return a, {
            "layout": layout,
            "class": cls,
            "distort": distort,
            "size": [int(a.shape[1]), int(a.shape[0])],
        }

    return make


def _blank_grid(rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    lines = rng.random() < 0.3
    header = rng.random() < 0.5
    scale = float(rng.choice([0.5, 0.75, 1.0]))
    st = KHAN_STYLE if scale == 1.0 else KHAN_STYLE.scaled(scale)
    if lines:
        st = replace(st, grid_kind="lines", minor_color=(250, 205, 210), major_color=(240, 150, 160), faint_color=None)
    a = blank_page(st, header=header)
    return a, {"size": [st.width, st.height], "grid": st.grid_kind, "header": header, "scale": scale}


_WORDS = (
    "patient report result normal range value sample blood serum glucose cholesterol sodium potassium "
    "creatinine haemoglobin platelets the of and to in for with on at by from this that is was were be "
    "please find attached letter dear doctor regards follow up appointment clinic hospital department "
    "date reference number review history examination plan treatment medication dose daily morning "
    "evening tablet recommended advised discussed further information contact office invoice total "
    "payment account meeting schedule project summary notes page section table figure analysis"
).split()


def _text_only(rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    portrait = rng.random() < 0.75
    short = int(rng.integers(1000, 1800))
    w, h = (short, int(short * 1.414)) if portrait else (int(short * 1.414), short)
    paper = tuple(int(v) for v in rng.integers(238, 256, 3))
    im = Image.new("RGB", (w, h), paper)
    d = ImageDraw.Draw(im)
    font_file = str(rng.choice(["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"]))
    size = int(w * rng.uniform(0.011, 0.018))
    f, fb = _font(font_file, size), _font(font_file, int(size * 1.6))
    ink = tuple(int(v) for v in rng.integers(0, 60, 3))
    mx = int(w * rng.uniform(0.07, 0.12))
    y = int(h * rng.uniform(0.05, 0.1))
    variant = "lab_report" if rng.random() < 0.5 else "letter"
    title = (
        "LABORATORY REPORT" if variant == "lab_report" else " ".join(str(s).capitalize() for s in rng.choice(_WORDS, 3))
    )
    d.text((mx, y), title, font=fb, fill=ink, anchor="lt")
    y += int(size * 3)
    lh = int(size * rng.uniform(1.35, 1.7))
    n_lines = 0
    while y < h * 0.9:
        if variant == "lab_report" and rng.random() < 0.7:
            name = " ".join(str(s).capitalize() for s in rng.choice(_WORDS, int(rng.integers(1, 3))))
            val = f"{rng.uniform(0.1, 300):.1f}"
            lo = rng.uniform(0.1, 100)
            d.text((mx, y), name, font=f, fill=ink, anchor="lt")
            d.text((mx + w * 0.45, y), val, font=f, fill=ink, anchor="lt")
            d.text((mx + w * 0.62, y), f"{lo:.1f} - {lo * rng.uniform(1.2, 3):.1f}", font=f, fill=ink, anchor="lt")
        elif rng.random() < 0.12:
            y += lh  # paragraph break
        else:
            line = ""
            maxw = (w - 2 * mx) * rng.uniform(0.85, 1.0)  # ragged right margin
            while True:
                nxt = (line + " " + str(rng.choice(_WORDS))).strip()
                if d.textlength(nxt, font=f) > maxw:
                    break
                line = nxt
            d.text((mx, y), line[:1].upper() + line[1:], font=f, fill=ink, anchor="lt")
        y += lh
        n_lines += 1
    return np.array(im), {"size": [w, h], "variant": variant, "font": font_file, "font_size": size, "lines": n_lines}


def _texture(rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    w, h = _size(rng)
    variant = str(rng.choice(["noise", "wood", "marble"]))
    octaves = int(rng.integers(3, 7))
    n = _value_noise(rng, h, w, octaves, float(rng.uniform(2, 8)), float(rng.uniform(0.4, 0.65)))
    if variant == "wood":
        cx, cy = rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h
        yy, xx = np.ogrid[0:h, 0:w]
        r = np.sqrt(
            ((xx - cx) / max(w, h)) ** 2 + ((yy - cy) / max(w, h) * rng.uniform(0.2, 1.0)) ** 2, dtype=np.float32
        )
        t = np.sin((r * rng.uniform(5, 20) + n * rng.uniform(1, 3)) * np.float32(2 * np.pi)) * 0.5 + 0.5
        base = _colour(rng, 90, 200)
        colours = [tuple(int(c * 0.55) for c in base), base]
    elif variant == "marble":
        ang = rng.uniform(0, np.pi)
        yy, xx = np.ogrid[0:h, 0:w]
        u = (xx * np.cos(ang) + yy * np.sin(ang)).astype(np.float32) / max(w, h)
        t = np.abs(np.sin((u * rng.uniform(3, 10) + n * rng.uniform(3, 8)) * np.float32(np.pi))) ** np.float32(
            rng.uniform(0.3, 1.0)
        )
        colours = [_colour(rng, 0, 120), _colour(rng, 170, 256)]
    else:
        t = n
        colours = [_colour(rng) for _ in range(int(rng.integers(2, 4)))]
    a = _palette(t.astype(np.float32), colours)  # type: ignore[arg-type]
    return a, {"size": [w, h], "variant": variant, "octaves": octaves, "colours": [list(c) for c in colours]}


def _gradient(rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    w, h = _size(rng)
    colours = [_colour(rng) for _ in range(int(rng.integers(2, 4)))]
    radial = rng.random() < 0.4
    # computed on a small grid (gradients are smooth) and upsampled
    sw, sh = max(2, w // 8), max(2, h // 8)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    xx /= sw
    yy /= sh
    if radial:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    else:
        ang = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(ang) + yy * np.sin(ang)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    small = _palette(t, colours)
    a = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = float(rng.uniform(1.0, 4.0))
    a = _add_noise(a, rng, sigma)
    return a, {
        "size": [w, h],
        "radial": bool(radial),
        "colours": [list(c) for c in colours],
        "noise_sigma": round(sigma, 2),
    }


def _draw_shapes(
    a: np.ndarray, rng: np.random.Generator, n: int, palette: Callable[[], tuple[int, int, int]] | None = None
) -> list[str]:
    h, w = a.shape[:2]
    s = max(h, w)
    kinds = []
    for _ in range(n):
        k = str(rng.choice(["circle", "rectangle", "line", "polygon", "ellipse"]))
        c = palette() if palette else _colour(rng)
        filled = rng.random() < 0.6
        th = -1 if filled else int(rng.integers(2, max(3, s // 150)))
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if k == "circle":
            cv2.circle(a, p, int(rng.uniform(0.01, 0.2) * s), c, th, cv2.LINE_AA)
        elif k == "ellipse":
            ax = (int(rng.uniform(0.01, 0.2) * s), int(rng.uniform(0.01, 0.2) * s))
            cv2.ellipse(a, p, ax, float(rng.uniform(0, 180)), 0, 360, c, th, cv2.LINE_AA)
        elif k == "rectangle":
            q = (p[0] + int(rng.uniform(-0.3, 0.3) * w), p[1] + int(rng.uniform(-0.3, 0.3) * h))
            cv2.rectangle(a, p, q, c, th, cv2.LINE_AA)
        elif k == "line":
            q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(a, p, q, c, int(rng.integers(1, max(2, s // 100))), cv2.LINE_AA)
        else:
            m = int(rng.integers(3, 8))
            r = rng.uniform(0.02, 0.2) * s
            ang = np.sort(rng.uniform(0, 2 * np.pi, m))
            rad = r * rng.uniform(0.5, 1.0, m)
            pts = np.stack([p[0] + rad * np.cos(ang), p[1] + rad * np.sin(ang)], 1).astype(np.int32)
            if filled:
                cv2.fillPoly(a, [pts], c, cv2.LINE_AA)
            else:
                cv2.polylines(a, [pts], True, c, th, cv2.LINE_AA)
        kinds.append(k)
    return kinds


def _shapes(rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    w, h = _size(rng)
    bg = _colour(rng)
    a = np.empty((h, w, 3), np.uint8)
    a[:] = bg
    n = int(rng.integers(5, 40))
    kinds = _draw_shapes(a, rng, n)
    return a, {"size": [w, h], "background": list(bg), "n_shapes": n, "shapes": sorted(set(kinds))}


def _photo(rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    W, H = _size(rng)
    # the scene is drawn and blurred at <= 1200 px, then upsampled: blur makes the detail moot,
    # and it keeps a 3000 px image well under 0.3 s; noise and JPEG act at full size
    f = min(1.0, 1200 / max(W, H))
    w, h = max(8, int(round(W * f))), max(8, int(round(H * f)))
    horizon = float(rng.uniform(0.3, 0.75))
    sky = [_colour(rng, 90, 256), _colour(rng, 150, 256)]
    ground = [_colour(rng, 20, 180), _colour(rng, 0, 120)]
    # vertical profile: sky gradient down to the horizon, ground gradient below it
    sh = max(4, h // 8)
    y = np.arange(sh, dtype=np.float32) / sh
    col = np.empty((sh, 3), np.float32)
    top = y < horizon
    ts = (y[top] / horizon)[:, None]
    col[top] = (1 - ts) * np.array(sky[0], np.float32) + ts * np.array(sky[1], np.float32)
    tg = ((y[~top] - horizon) / (1 - horizon))[:, None]
    col[~top] = (1 - tg) * np.array(ground[0], np.float32) + tg * np.array(ground[1], np.float32)
    small = np.repeat(col[:, None, :], max(4, w // 8), axis=1)
    # a little large-scale mottling (clouds, grass)
    mott = _value_noise(rng, sh, small.shape[1], 3, 4.0, 0.5)[..., None]
    small = np.clip(small * (0.85 + 0.3 * mott), 0, 255).astype(np.uint8)
    a = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    hy = int(horizon * h)
    n = int(rng.integers(4, 25))
    # objects sit around and below the horizon, in muted colours
    sub = a[max(0, hy - h // 4) :]
    kinds = _draw_shapes(sub, rng, n, palette=lambda: _colour(rng, 20, 200))
    if rng.random() < 0.5:  # a sun or lamp
        cv2.circle(
            a,
            (int(rng.integers(0, w)), int(rng.uniform(0.05, 0.8) * hy)),
            int(rng.uniform(0.02, 0.08) * max(w, h)),
            (255, 250, 220),
            -1,
            cv2.LINE_AA,
        )
    blur = float(rng.uniform(0.8, 3.0)) * max(W, H) / 1500  # in full-size pixels
    a = cv2.GaussianBlur(a, (0, 0), max(0.3, blur * f))
    if (w, h) != (W, H):
        a = cv2.resize(a, (W, H), interpolation=cv2.INTER_LINEAR)
    sigma = float(rng.uniform(2.0, 8.0))
    a = _add_noise(a, rng, sigma)
    q = int(rng.integers(40, 90))
    a = _jpeg(a, q)
    return a, {
        "size": [W, H],
        "horizon": round(horizon, 3),
        "n_shapes": n,
        "shapes": sorted(set(kinds)),
        "blur_sigma": round(blur, 2),
        "noise_sigma": round(sigma, 2),
        "jpeg_quality": q,
    }


_MAKERS: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, Params]]] = {
    "single_lead": _single_lead,
    "layout_6x2": _layout_page("6x2"),
    "layout_12x1": _layout_page("12x1"),
    "blank_grid": _blank_grid,
    "text_only": _text_only,
    "texture": _texture,
    "gradient": _gradient,
    "shapes": _shapes,
    "photo": _photo,
}
assert tuple(_MAKERS) == NEGATIVE_KINDS


def check_kinds(kinds: Any) -> tuple[str, ...]:
    """`kinds` as a tuple, or ValueError naming the unknown ones, a close match and the valid kinds."""
    import difflib

    if isinstance(kinds, str):
        kinds = tuple(k.strip() for k in kinds.split(",") if k.strip())
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds: none given; valid kinds: {', '.join(NEGATIVE_KINDS)}")
    for k in kinds:
        if k not in NEGATIVE_KINDS:
            close = difflib.get_close_matches(str(k), NEGATIVE_KINDS, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown negative kind {k!r}{hint}; valid kinds: {', '.join(NEGATIVE_KINDS)}")
    return tuple(dict.fromkeys(kinds))


def make_negative(
    kind: str, rng: np.random.Generator, with_params: bool = False
) -> np.ndarray | tuple[np.ndarray, Params]:
    """One out-of-scope image of `kind` (HxWx3 uint8 RGB); with `with_params`, (image, params)."""
    check_kinds((kind,))
    a, p = _MAKERS[kind](rng)
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return (a, p) if with_params else a


def _write(out: str, kind: str, index: int, seed: int, fmt: str) -> str:
    a, p = make_negative(kind, negative_rng(seed, kind, index), with_params=True)
    stem = f"{kind}_{index:05d}"
    d = Path(out) / kind
    (d / f"{stem}.{fmt}").write_bytes(encode(a, fmt, quality=85))
    side = {
        "file": f"{stem}.{fmt}",
        "kind": kind,
        "seed": {
            "seed": seed,
            "kind_index": NEGATIVE_KINDS.index(kind),
            "index": index,
            "derivation": f"SeedSequence([seed, {_KIND_OFFSET} + kind_index, index])",
        },
        **p,
    }
    (d / f"{stem}.json").write_text(json.dumps(side, indent=1, sort_keys=True, default=_json_default))
    return kind


def generate_negatives(
    out: str | os.PathLike[str],
    per_kind: int = 10,
    seed: int = 0,
    kinds: Any = NEGATIVE_KINDS,
    fmt: str = "jpg",
    workers: int = 1,
    progress: bool = True,
) -> str:
    """Write `per_kind` images of each kind under `out` (see module doc); returns a one-paragraph summary."""
    kinds = check_kinds(kinds)
    if isinstance(per_kind, bool) or not isinstance(per_kind, (int, np.integer)) or per_kind < 1:
        raise ValueError(f"per_kind={per_kind!r}: must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be an integer >= 0")
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers={workers!r}: must be an integer >= 1")
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise ValueError(f"out={str(out)!r}: exists and is not a folder")
    for k in kinds:
        (outp / k).mkdir(parents=True, exist_ok=True)
    cfg = {
        "kinds": list(kinds),
        "per_kind": int(per_kind),
        "seed": int(seed),
        "format": fmt,
        "rng": f"SeedSequence([seed, {_KIND_OFFSET} + NEGATIVE_KINDS.index(kind), index])",
        "all_kinds": list(NEGATIVE_KINDS),
    }
    (outp / "negatives_config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))
    jobs = [(str(outp), k, i, int(seed), fmt) for k in kinds for i in range(int(per_kind))]
    counts, dt = run_jobs(_write, jobs, kinds, int(workers), progress, desc="negatives", unit="image")
    per = ", ".join(f"{n} {k}" for k, n in counts.items())
    return (
        f"Wrote {len(jobs)} out-of-scope images ({per}) as {fmt.upper()} with seed {seed} to {outp.resolve()} "
        f"(one folder per kind; each image has a .json of its parameters) in {dt:.1f} s, "
        f"{len(jobs) / max(dt, 1e-9):.1f} images/s with {workers} worker{'s' if workers > 1 else ''}."
    )
