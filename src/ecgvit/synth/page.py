"""Rendering a 12-lead ECG onto a report page that imitates the Khan & Hussain template.

Everything that does not change from page to page (header labels, rules, the pink border, the
dotted millimetre grid, lead labels, calibration pulses, column separators) is drawn once per
`PageStyle` into a cached template; a page is then a copy of the template, a few text fields
(ID, sex, heart rate, date/time) and 16 anti-aliased polylines (cv2.LINE_AA).

Layouts (`layout=`): "3x4+1" (the Khan template: 3 rows x 4 columns of 2.5 s panels plus a 10 s
rhythm strip of lead II; the default), "3x4" (no rhythm strip), "6x2" (6 rows x 2 columns of 5 s
panels: I..aVF left, V1..V6 right) and "12x1" (12 rows of 10 s, drawn at half gain, 5 mm/mV, as
machines do so the rows stay apart), "3x4+3" (3x4 plus 10 s rhythm strips of V1, II and V5, the
common order) and "6x2+1" (6x2 plus a 10 s lead II strip). Except for "3x4+1" in the Khan style,
whose baselines are the measured ones below, rows are spaced evenly inside the grid box. At a paper
speed other than 25 mm/s panels show proportionally fewer seconds (`panel_s`), so the page keeps
its width and columns stay contiguous in time.

Other machine families' looks (headers, labels, grids) are in ecgvit.synth.styles. `page_truth`
gives any page's exact pixel <-> (time, mV) geometry (TRUTH_DOC has the schema); `trace_mask` the
traces alone.

Default geometry was measured on the real 2213x1572, 200 dpi pages (see benchmarks/synth_fidelity.py):
border x=67..2176, y=283..1517 (4 px pink), grid pitch 7.944 px per mm (traces: 200/25.4 = 7.874 px per mm), panels of 2.5 s
(492 px) starting at x=152, row baselines y=467/767/1067/1370, column separators at 644/1136/1628.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ecgvit.synth.signals import FS, LEADS, N_SAMPLES

RGB = tuple[int, int, int]

_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/Library/Fonts",
    "C:/Windows/Fonts",
)


GRID_KINDS = ("dots", "lines", "major")
LABEL_POSITIONS = ("baseline", "corner", "below")
SEPARATORS = ("line", "tick", "none")


@dataclass(frozen=True)
class PageStyle:
    """Geometry, colours and fonts of a report page (pixels at `dpi`; colours RGB).

    Defaults imitate the Khan & Hussain ECG machine template. `grid_kind="dots"` draws the
    template's dotted grid (a dot at every 1 mm intersection, dots every 0.5 mm along 5 mm lines,
    which after JPEG 4:2:0 chroma subsampling looks like the real pages' pink dotted grid);
    `grid_kind="lines"` draws solid minor/major lines as on many other machines; `grid_kind="major"`
    only the 5 mm lines. Families other than "khan" (see ecgvit.synth.styles) draw their own header,
    footer, labels and separators; build them with `ecgvit.synth.styles.make_style`.
    """

    width: int = 2213
    height: int = 1572
    dpi: int = 200
    # pink border rectangle (left, top, right, bottom), inclusive outer pixels
    grid_box: tuple[int, int, int, int] = (67, 283, 2176, 1517)
    border_color: RGB = (250, 162, 172)
    border_width: int = 4
    grid_kind: str = "dots"
    # grid pitch in px per mm; None = dpi/25.4. The real Khan pages print the grid ~0.9% larger
    # than the traces' scale (measured 7.944 px/mm vs 7.874; benchmarks/synth_fidelity.py).
    grid_pitch_px: float | None = 7.944
    grid_origin: tuple[float, float] = (105.0, 324.0)  # a 5 mm line crossing
    minor_color: RGB = (225, 40, 55)  # dots; for "lines" use a light pink such as (250, 205, 210)
    major_color: RGB = (225, 40, 55)
    faint_color: RGB | None = (244, 184, 192)
    minor_width: int = 1
    major_width: int = 1
    paper_color: RGB = (255, 255, 255)
    ink_color: RGB = (0, 0, 0)
    trace_color: RGB = (0, 0, 0)
    trace_width: int = 2
    speed_mm_s: float = 25.0
    gain_mm_mv: float = 10.0
    panel_x0: float = 152.0
    row_baselines: tuple[int, int, int, int] = (467, 767, 1067, 1370)
    separator_width: int = 2
    separator_extent: tuple[int, int] = (-107, 43)  # from row 1 baseline - 107 to row 3 baseline + 43
    cal_x: tuple[int, int, int, int] = (97, 105, 122, 130)  # foot start, rise, fall, foot end
    cal_width: int = 2
    label_dx: int = 3
    label_dy: int = -12  # label bottom relative to the baseline
    font_file: str = "DejaVuSerif.ttf"
    title_size: int = 40
    header_size: int = 25
    label_size: int = 26
    footer_size: int = 18
    jpeg_quality: int = 75
    family: str = "khan"  # the header/footer template (see ecgvit.synth.styles.FAMILIES)
    label_pos: str = "baseline"  # lead labels: "baseline" (above the baseline), "corner" (panel top-left), "below"
    separator: str = "line"  # between columns: "line", "tick" (short marks at the baselines) or "none"
    label_font_file: str | None = None  # None: font_file
    paper: str = "khan"  # paper name, recorded only ("a4", "letter"; the Khan template is its own size)
    # header fields
    title: str = "ECG REPORT"
    device_text: str = "SE-3  V1.0  SEMIP  V1.7"
    filter_text: str = "0.67~25Hz  AC50"

    def __post_init__(self) -> None:
        if self.grid_kind not in GRID_KINDS:
            raise ValueError(f"grid_kind={self.grid_kind!r}: expected one of {', '.join(GRID_KINDS)}")
        if self.label_pos not in LABEL_POSITIONS:
            raise ValueError(f"label_pos={self.label_pos!r}: expected one of {', '.join(LABEL_POSITIONS)}")
        if self.separator not in SEPARATORS:
            raise ValueError(f"separator={self.separator!r}: expected one of {', '.join(SEPARATORS)}")
        if self.speed_mm_s <= 0 or self.gain_mm_mv <= 0:
            raise ValueError(f"speed_mm_s={self.speed_mm_s}, gain_mm_mv={self.gain_mm_mv}: must be > 0")
        l, t, r, b = self.grid_box
        if not (0 <= l < r < self.width and 0 <= t < b < self.height):
            raise ValueError(f"grid_box={self.grid_box!r} does not fit a {self.width}x{self.height} page")
        if self.trace_width < 1:
            raise ValueError(f"trace_width={self.trace_width}: must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality}: must be in 1..100")

    @property
    def px_per_mm(self) -> float:
        return self.dpi / 25.4

    @property
    def px_per_s(self) -> float:
        return self.speed_mm_s * self.px_per_mm

    @property
    def px_per_mv(self) -> float:
        return self.gain_mm_mv * self.px_per_mm

    @property
    def panel_w(self) -> float:
        return 2.5 * self.px_per_s

    def scaled(self, factor: float) -> PageStyle:
        """The same template at another resolution (e.g. 0.5 for 100 dpi)."""
        f = factor
        s = lambda v: int(round(v * f))  # noqa: E731
        return replace(
            self,
            width=s(self.width),
            height=s(self.height),
            dpi=s(self.dpi),
            grid_box=tuple(s(v) for v in self.grid_box),  # type: ignore[arg-type]
            border_width=max(1, s(self.border_width)),
            grid_origin=(self.grid_origin[0] * f, self.grid_origin[1] * f),
            grid_pitch_px=None if self.grid_pitch_px is None else self.grid_pitch_px * f,
            trace_width=max(1, s(self.trace_width)),
            panel_x0=self.panel_x0 * f,
            row_baselines=tuple(s(v) for v in self.row_baselines),  # type: ignore[arg-type]
            separator_width=max(1, s(self.separator_width)),
            separator_extent=(s(self.separator_extent[0]), s(self.separator_extent[1])),
            cal_x=tuple(s(v) for v in self.cal_x),  # type: ignore[arg-type]
            cal_width=max(1, s(self.cal_width)),
            label_dx=s(self.label_dx),
            label_dy=s(self.label_dy),
            title_size=max(6, s(self.title_size)),
            header_size=max(6, s(self.header_size)),
            label_size=max(6, s(self.label_size)),
            footer_size=max(6, s(self.footer_size)),
        )


KHAN_STYLE = PageStyle()

# Panel layout: (row, column) -> lead; row 3 is the 10 s rhythm strip of lead II.
LAYOUT: tuple[tuple[str, str, str, str], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
RHYTHM_LEAD = "II"


@dataclass(frozen=True)
class Layout:
    """Panel arrangement: `rows[r][c]` is the lead of panel (r, c); each panel lasts `panel_s`
    seconds and starts at `panel_s * c` seconds into the record; `rhythm` (if set) adds a 10 s row."""

    name: str
    rows: tuple[tuple[str, ...], ...]
    panel_s: float
    rhythm: str | None
    footer: str  # the footer's format field, e.g. "4*2.5s+1r" (columns * seconds + rhythm rows)
    gain_factor: float = 1.0  # relative to PageStyle.gain_mm_mv
    rhythms: tuple[str, ...] = ()  # several rhythm strips (e.g. "3x4+3": V1, II, V5); overrides `rhythm`

    @property
    def rhythm_leads(self) -> tuple[str, ...]:
        """Leads of the 10 s rhythm strips, top to bottom."""
        if self.rhythms:
            return self.rhythms
        return () if self.rhythm is None else (self.rhythm,)

    @property
    def n_rows(self) -> int:
        return len(self.rows) + len(self.rhythm_leads)


LAYOUTS: dict[str, Layout] = {
    "3x4+1": Layout("3x4+1", LAYOUT, 2.5, RHYTHM_LEAD, "4*2.5s+1r"),
    "3x4": Layout("3x4", LAYOUT, 2.5, None, "4*2.5s"),
    "6x2": Layout("6x2", tuple(zip(LEADS[:6], LEADS[6:], strict=False)), 5.0, None, "2*5s"),
    "12x1": Layout("12x1", tuple((lead,) for lead in LEADS), 10.0, None, "1*10s", gain_factor=0.5),
    # three 10 s rhythm strips, in the common V1, II, V5 order
    "3x4+3": Layout("3x4+3", LAYOUT, 2.5, "V1", "4*2.5s+3r", rhythms=("V1", "II", "V5")),
    "6x2+1": Layout("6x2+1", tuple(zip(LEADS[:6], LEADS[6:], strict=False)), 5.0, RHYTHM_LEAD, "2*5s+1r"),
}
DEFAULT_LAYOUT = "3x4+1"


def get_layout(layout: str | Layout) -> Layout:
    """The `Layout` named `layout` (ValueError naming the valid ones otherwise)."""
    if isinstance(layout, Layout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(LAYOUTS)}")
    return LAYOUTS[layout]


def row_baselines(st: PageStyle, layout: str | Layout = DEFAULT_LAYOUT) -> tuple[int, ...]:
    """Baseline y of every trace row (the rhythm strip last). "3x4+1" uses the style's measured
    baselines; other layouts space their rows evenly inside the grid box, each baseline 60% of
    the way down its row (most of a QRS is above the baseline)."""
    lay = get_layout(layout)
    if lay.name == "3x4+1" and st.family == "khan":
        return tuple(st.row_baselines)
    _, t, _, b = st.grid_box
    it, ib = t + st.border_width, b - st.border_width
    pitch = (ib - it) / lay.n_rows
    return tuple(int(round(it + pitch * (k + 0.6))) for k in range(lay.n_rows))


@functools.lru_cache(maxsize=16)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for d in _FONT_DIRS:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return ImageFont.truetype(p, size)
    try:
        return ImageFont.truetype(name, size)
    except OSError:
        return ImageFont.load_default(size=size)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], s: str, font: Any, fill: RGB, anchor: str = "ls") -> None:
    draw.text(xy, s, font=font, fill=fill, anchor=anchor)


def _draw_grid(a: np.ndarray, st: PageStyle) -> None:
    l, t, r, b = st.grid_box
    bw = st.border_width
    il, it, ir, ib = l + bw, t + bw, r - bw, b - bw  # inside the border
    p = st.grid_pitch_px or st.px_per_mm
    ox, oy = st.grid_origin
    kx0 = int(np.ceil((il - ox) / p))
    kx1 = int(np.floor((ir - ox) / p))
    ky0 = int(np.ceil((it - oy) / p))
    ky1 = int(np.floor((ib - oy) / p))
    xs = ox + p * np.arange(kx0, kx1 + 1)
    ys = oy + p * np.arange(ky0, ky1 + 1)
    major_x = (np.arange(kx0, kx1 + 1) % 5) == 0
    major_y = (np.arange(ky0, ky1 + 1) % 5) == 0
    if st.grid_kind == "dots":
        xi = np.round(xs).astype(int)
        yi = np.round(ys).astype(int)
        if st.faint_color is not None:
            # faint dots on a 0.5 mm lattice: the pale pink haze between the real template's dots
            hx = np.round(ox + p / 2 * np.arange(2 * kx0 - 1, 2 * kx1 + 2)).astype(int)
            hy = np.round(oy + p / 2 * np.arange(2 * ky0 - 1, 2 * ky1 + 2)).astype(int)
            hx = hx[(hx > il) & (hx < ir)]
            hy = hy[(hy > it) & (hy < ib)]
            a[np.ix_(hy, hx)] = st.faint_color
        # a dot at every 1 mm crossing
        a[np.ix_(yi, xi)] = st.minor_color
        # 5 mm lines: dots every 0.5 mm along them
        half_y = np.round(oy + p / 2 * np.arange(2 * ky0, 2 * ky1 + 1)).astype(int)
        half_x = np.round(ox + p / 2 * np.arange(2 * kx0, 2 * kx1 + 1)).astype(int)
        half_y = half_y[(half_y > it) & (half_y < ib)]
        half_x = half_x[(half_x > il) & (half_x < ir)]
        a[np.ix_(half_y, xi[major_x])] = st.major_color
        a[np.ix_(yi[major_y], half_x)] = st.major_color
    elif st.grid_kind == "major":
        for x in xs[major_x]:
            cv2.line(a, (int(round(x)), it), (int(round(x)), ib), st.major_color, st.major_width)
        for y in ys[major_y]:
            cv2.line(a, (il, int(round(y))), (ir, int(round(y))), st.major_color, st.major_width)
    else:
        for x, mj in zip(xs, major_x, strict=False):
            xv = int(round(x))
            c, w = (st.major_color, st.major_width) if mj else (st.minor_color, st.minor_width)
            cv2.line(a, (xv, it), (xv, ib), c, w)
        for y, mj in zip(ys, major_y, strict=False):
            yv = int(round(y))
            c, w = (st.major_color, st.major_width) if mj else (st.minor_color, st.minor_width)
            cv2.line(a, (il, yv), (ir, yv), c, w)
        # majors on top
        for x, mj in zip(xs, major_x, strict=False):
            if mj:
                cv2.line(a, (int(round(x)), it), (int(round(x)), ib), st.major_color, st.major_width)
        for y, mj in zip(ys, major_y, strict=False):
            if mj:
                cv2.line(a, (il, int(round(y))), (ir, int(round(y))), st.major_color, st.major_width)
    # pink border rectangle (the crop detector looks for it)
    c = st.border_color
    a[t : b + 1, l : l + bw] = c
    a[t : b + 1, r - bw + 1 : r + 1] = c
    a[t : t + bw, l : r + 1] = c
    a[b - bw + 1 : b + 1, l : r + 1] = c


def _draw_rules(a: np.ndarray, st: PageStyle) -> None:
    """The two black rules under the header."""
    s = st.width / 2213.0  # header positions scale with the page width
    x0, x1 = int(68 * s), int(2154 * s)
    for y in (136, 142):
        cv2.rectangle(a, (x0, int(y * s)), (x1, int((y + 3) * s)), st.ink_color, -1)


def _draw_header_text(d: ImageDraw.ImageDraw, st: PageStyle) -> None:
    """The template's fixed header labels (title, field names)."""
    s = st.width / 2213.0
    ink = st.ink_color
    ft = _font(st.font_file, st.title_size)
    fh = _font(st.font_file, st.header_size)
    _text(d, (1135 * s, 61 * s), st.title, ft, ink, "ms")
    row1 = [
        (322, "Years"),
        (617, "cm"),
        (765, "kg"),
        (907, "/"),
        (958, "mmHg"),
        (1095, "Race:Unknown"),
        (1334, "Room No.:"),
        (1525, "Department:"),
    ]
    for x, txt in row1:
        _text(d, (x * s, 92 * s), txt, fh, ink)
    _text(d, (70 * s, 92 * s), "ID :", fh, ink)
    _text(d, (70 * s, 124 * s), "Exam.Room:", fh, ink)
    _text(d, (279 * s, 124 * s), "Medication:", fh, ink)
    _text(d, (70 * s, 170 * s), "Diagnosis Information:", fh, ink)
    _text(d, (1557 * s, 203 * s), "Technician :", fh, ink)
    _text(d, (1557 * s, 236 * s), "Ref-Phys. :", fh, ink)
    _text(d, (1557 * s, 269 * s), "Report Confirmed by:", fh, ink)


def blank_page(st: PageStyle, header: bool = True) -> np.ndarray:
    """Paper, grid and border (and, if `header`, the header rules and labels) with no traces."""
    a = np.empty((st.height, st.width, 3), np.uint8)
    a[:] = st.paper_color
    _draw_grid(a, st)
    if not header:
        return a
    _draw_rules(a, st)
    im = Image.fromarray(a)
    _draw_header_text(ImageDraw.Draw(im), st)
    return np.array(im)


def template(st: PageStyle, layout: str = DEFAULT_LAYOUT) -> np.ndarray:
    """The static part of a page (read-only HxWx3 uint8 RGB array), cached per style and layout."""
    return _template(st, get_layout(layout).name)


@dataclass(frozen=True)
class FamilyDrawer:
    """How a machine family other than the Khan template draws its page (`ecgvit.synth.styles`
    registers one per family; this module only looks them up, so it never imports that one)."""

    template: Callable[[PageStyle, Layout], np.ndarray]  # the static page: grid, header, labels
    fields: Callable[[ImageDraw.ImageDraw, PageStyle, Layout, dict[str, Any]], None]  # the per-page text


_FAMILY_DRAWERS: dict[str, FamilyDrawer] = {}


def register_family(name: str, drawer: FamilyDrawer) -> None:
    _FAMILY_DRAWERS[name] = drawer


def _family(name: str) -> FamilyDrawer:
    if name not in _FAMILY_DRAWERS:
        raise ValueError(f"family={name!r}: expected khan or one of {', '.join(sorted(_FAMILY_DRAWERS))}")
    return _FAMILY_DRAWERS[name]


@functools.lru_cache(maxsize=16)
def _template(st: PageStyle, layout: str) -> np.ndarray:
    lay = LAYOUTS[layout]
    if st.family != "khan":
        out = _family(st.family).template(st, lay)
        out.setflags(write=False)
        return out
    a = np.empty((st.height, st.width, 3), np.uint8)
    a[:] = st.paper_color
    _draw_grid(a, st)
    ink = st.ink_color
    _draw_rules(a, st)
    # separators and calibration pulses
    base = row_baselines(st, lay)
    n_main = len(lay.rows)
    if lay.name == "3x4+1":
        y_top, y_bot = base[0] + st.separator_extent[0], base[2] + st.separator_extent[1]
    else:  # the template's extents, in units of its 300 px row pitch
        f = (base[1] - base[0]) / 300.0 if len(base) > 1 else 1.0
        y_top = int(round(base[0] + st.separator_extent[0] * f))
        y_bot = int(round(base[n_main - 1] + st.separator_extent[1] * f))
    panel_w = panel_s(st, lay) * st.px_per_s
    for k in range(1, len(lay.rows[0])):
        x = int(round(st.panel_x0 + k * panel_w))
        cv2.line(a, (x, y_top), (x, y_bot), st.ink_color, st.separator_width)
    h = int(round(st.px_per_mv * lay.gain_factor))
    c0, c1, c2, c3 = st.cal_x
    for y in base:
        pts = np.array([[c0, y], [c1, y], [c1, y - h], [c2, y - h], [c2, y], [c3, y]], np.int32)
        cv2.polylines(a, [pts], False, st.trace_color, st.cal_width, cv2.LINE_AA)
    im = Image.fromarray(a)
    d = ImageDraw.Draw(im)
    fl = _font(st.font_file, st.label_size)
    _draw_header_text(d, st)
    for r, row in enumerate(lay.rows):
        for c, lead in enumerate(row):
            lx = st.panel_x0 + c * panel_w + st.label_dx
            _text(d, (lx, base[r] + st.label_dy), lead, fl, ink)
    for k, lead in enumerate(lay.rhythm_leads):
        _text(d, (st.panel_x0 + st.label_dx, base[n_main + k] + st.label_dy), lead, fl, ink)
    out = np.asarray(im).copy()
    out.setflags(write=False)
    return out


def panel_s(st: PageStyle, layout: str | Layout = DEFAULT_LAYOUT) -> float:
    """Seconds per panel as printed: the layout's panel length at 25 mm/s, shortened at faster speeds
    (at 50 mm/s a 3x4 column shows 1.25 s) so the printed page keeps its width and the columns stay
    contiguous in time (column c starts at c * panel_s)."""
    lay = get_layout(layout)
    return lay.panel_s if st.speed_mm_s == 25.0 else lay.panel_s * 25.0 / st.speed_mm_s


def panel_specs(
    st: PageStyle, layout: str | Layout = DEFAULT_LAYOUT, fs: int = FS, n: int = N_SAMPLES
) -> list[dict[str, Any]]:
    """Where each printed panel is (in drawing order: rows left to right, then rhythm strips):
    dicts with lead, row, col, x0 (px of t0), t0 (s), n_px (drawn columns after x0), duration (s,
    = n_px / px_per_s), baseline_y (px). A record of `n` samples at `fs` Hz is assumed."""
    lay = get_layout(layout)
    pps = st.px_per_s
    base = row_baselines(st, lay)
    ps = panel_s(st, lay)
    pw = ps * pps
    out: list[dict[str, Any]] = []

    def add(lead: str, row: int, col: int, x0: float, t0: float, dur: float) -> None:
        npx = int(dur * pps)
        out.append(dict(lead=lead, row=row, col=col, x0=x0, t0=t0, n_px=npx, duration=npx / pps, baseline_y=base[row]))

    for rr, row in enumerate(lay.rows):
        for c, lead in enumerate(row):
            add(lead, rr, c, st.panel_x0 + c * pw, ps * c, ps - 1.0 / fs)
    rhythm_s = 10.0 if st.speed_mm_s == 25.0 else 10.0 * 25.0 / st.speed_mm_s
    for k, lead in enumerate(lay.rhythm_leads):
        add(lead, len(lay.rows) + k, 0, st.panel_x0, 0.0, min(rhythm_s, (n - 1) / fs))
    return out


def row_bands(st: PageStyle, layout: str | Layout = DEFAULT_LAYOUT) -> list[tuple[float, float]]:
    """(top, bottom) y of each trace row's band: halfway to the neighbouring baselines, the grid's
    inner edge for the first and last row."""
    base = row_baselines(st, layout)
    _, t, _, b = st.grid_box
    it, ib = float(t + st.border_width), float(b - st.border_width)
    edges = [it] + [(base[k] + base[k + 1]) / 2.0 for k in range(len(base) - 1)] + [ib]
    return [(edges[k], edges[k + 1]) for k in range(len(base))]


def page_truth(
    st: PageStyle, layout: str | Layout = DEFAULT_LAYOUT, fs: int = FS, n: int = N_SAMPLES
) -> dict[str, Any]:
    """Exact pixel <-> (time, mV) geometry of a clean page (JSON-ready; schema in TRUTH_DOC).

    For every panel: x = x0 + (t - t0) * px_per_s and y = baseline_y - mV * px_per_mv, for t in
    [t0, t0 + duration]; trace y is clipped to `clip_y` (the grid's inside). `homography` (clean page
    -> this page) is the identity here; distortions replace it (see ecgvit.synth.render_page)."""
    lay = get_layout(layout)
    bands = row_bands(st, lay)
    _, t, _, b = st.grid_box
    clip = [float(t + st.border_width), float(b - st.border_width)]
    ppm = st.px_per_mv * lay.gain_factor
    panels = []
    for p in panel_specs(st, lay, fs, n):
        top, bot = bands[p["row"]]
        panels.append(
            {
                "lead": p["lead"],
                "row": p["row"],
                "col": p["col"],
                "box": [round(p["x0"], 4), round(top, 4), round(p["x0"] + p["n_px"], 4), round(bot, 4)],
                "baseline_y": float(p["baseline_y"]),
                "x0": round(p["x0"], 4),
                "t0": round(p["t0"], 6),
                "duration": round(p["duration"], 6),
                "rhythm": p["row"] >= len(lay.rows),
            }
        )
    grid_pitch = st.grid_pitch_px or st.px_per_mm
    hcal = int(round(ppm))  # as drawn
    cal = [
        {"row": r, "baseline_y": float(y), "x": [int(v) for v in st.cal_x], "height_px": hcal}
        for r, y in enumerate(row_baselines(st, lay))
    ]
    return {
        "version": 1,
        "style": st.family,
        "layout": lay.name,
        "page_size": [st.width, st.height],
        "clean_page_size": [st.width, st.height],
        "dpi": st.dpi,
        "px_per_mm": {"x": st.px_per_mm, "y": st.px_per_mm, "grid": grid_pitch},
        "speed_mm_s": st.speed_mm_s,
        "gain_mm_mv": st.gain_mm_mv * lay.gain_factor,
        "px_per_s": st.px_per_s,
        "px_per_mv": ppm,
        "fs": fs,
        "grid_box": list(st.grid_box),
        "grid_origin": [float(st.grid_origin[0]), float(st.grid_origin[1])],
        "grid_kind": st.grid_kind,
        "clip_y": clip,
        "panels": panels,
        "calibration": cal,
        "homography": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "warp": None,
    }


TRUTH_DOC = """truth = {version: 1, style: family name, layout: name, page_size: [w, h] px of this page (a photo
may be smaller), clean_page_size: [w, h] of the clean page, whose pixels every other coordinate is in, dpi,
px_per_mm: {x, y: trace scale (dpi/25.4), grid: grid pitch px/mm (differs on the Khan template)},
speed_mm_s, gain_mm_mv (effective: the layout's gain_factor included), px_per_s, px_per_mv (effective),
fs: Hz of the signals in the .npz, grid_box: [l, t, r, b] outer border px, grid_origin: [x, y] a 5 mm
line crossing, grid_kind, clip_y: [ymin, ymax] traces are clipped to, panels: [{lead, row, col,
box: [l, t, r, b] px (time extent x row band), baseline_y, x0: px of t0, t0: s, duration: s, rhythm: bool}],
calibration: [{row, baseline_y, x: [foot start, rise, fall, foot end] px, height_px: 1 mV as drawn}],
homography: 3x3 clean-page px -> this page's px (identity unless distorted), warp: null or the non-projective
warp applied before the homography (see ecgvit.synth.distort.map_points)}
clean page: x = x0 + (t - t0) * px_per_s, y = baseline_y - mV * px_per_mv."""


def trace_polylines(
    signals: np.ndarray, st: PageStyle, fs: int = FS, shift: int = 3, layout: str | Layout = DEFAULT_LAYOUT
) -> list[np.ndarray]:
    """Fixed-point (cv2 `shift`) polylines of the panels and rhythm strips (order of `panel_specs`)."""
    lay = get_layout(layout)
    idx = {lead: i for i, lead in enumerate(LEADS)}
    pps, ppm = st.px_per_s, st.px_per_mv * lay.gain_factor
    scale = 1 << shift
    l, t, r, b = st.grid_box
    ymin, ymax = t + st.border_width, b - st.border_width
    out: list[np.ndarray] = []
    n = signals.shape[1]
    tsig = np.arange(n) / fs
    for p in panel_specs(st, lay, fs, n):
        x0, t0, npx, y0 = p["x0"], p["t0"], p["n_px"], p["baseline_y"]
        xs = x0 + np.arange(npx + 1, dtype=np.float64)
        ts = t0 + (xs - x0) / pps
        v = np.interp(ts, tsig, signals[idx[p["lead"]]])
        ys = np.clip(y0 - v * ppm, ymin, ymax)
        out.append(np.stack([np.round(xs * scale), np.round(ys * scale)], 1).astype(np.int32))
    return out


def trace_mask(signals: np.ndarray, st: PageStyle, fs: int = FS, layout: str | Layout = DEFAULT_LAYOUT) -> np.ndarray:
    """HxW uint8 mask (0..255, anti-aliased) of the traces alone, drawn exactly as on the page."""
    m = np.zeros((st.height, st.width), np.uint8)
    shift = 3
    cv2.polylines(m, trace_polylines(signals, st, fs, shift, layout), False, 255, st.trace_width, cv2.LINE_AA, shift)
    return m


def render(
    signals: np.ndarray, st: PageStyle, meta: dict[str, Any], fs: int = FS, layout: str = DEFAULT_LAYOUT
) -> np.ndarray:
    """A page (HxWx3 uint8 RGB) with `signals` (12 x N mV, order LEADS) and header fields `meta`,
    panels arranged as `layout` (a key of LAYOUTS).

    meta keys: id, sex, heart_rate, date, time.
    """
    lay = get_layout(layout)
    im = Image.fromarray(template(st, lay.name))
    d = ImageDraw.Draw(im)
    if st.family != "khan":
        _family(st.family).fields(d, st, lay, meta)
        return _draw_traces(np.array(im), signals, st, fs, lay)
    s = st.width / 2213.0
    fh = _font(st.font_file, st.header_size)
    ff = _font(st.font_file, st.footer_size)
    ink = st.ink_color
    _text(d, (132 * s, 92 * s), str(meta.get("id", "")), fh, ink)
    _text(d, (447 * s, 92 * s), str(meta.get("sex", "")), fh, ink)
    hr = int(round(float(meta.get("heart_rate", 0))))
    foot = f"{st.filter_text}  {st.speed_mm_s:g}mm/s  {st.gain_mm_mv * lay.gain_factor:g}mm/mV  {lay.footer}  \u2665{hr}   {st.device_text}"
    fy = 1552 * st.height / 1572.0
    _text(d, (69 * s, fy), foot, ff, ink)
    _text(d, (1793 * s, fy), f"{meta.get('date', '')}  {meta.get('time', '')}", ff, ink)
    return _draw_traces(np.array(im), signals, st, fs, lay)


def _draw_traces(a: np.ndarray, signals: np.ndarray, st: PageStyle, fs: int, lay: Layout) -> np.ndarray:
    shift = 3
    cv2.polylines(
        a, trace_polylines(signals, st, fs, shift, lay), False, st.trace_color, st.trace_width, cv2.LINE_AA, shift
    )
    return a


def random_meta(rng: np.random.Generator, heart_rate: float) -> dict[str, Any]:
    """Fake header fields in the template's formats (no real person behind them)."""
    day = int(rng.integers(0, 730))
    y, m, dd = 2019, 1, 1
    import datetime as _dt

    date = _dt.date(2019, 6, 1) + _dt.timedelta(days=day)
    hh, mm, ss = int(rng.integers(1, 13)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    del y, m, dd
    return {
        "id": str(int(rng.integers(100000, 999999))),
        "sex": str(rng.choice(["Male", "Female"])),
        "heart_rate": round(float(heart_rate)),
        "date": date.isoformat(),
        "time": f"{hh:02d}:{mm:02d}:{ss:02d} {'AM' if rng.random() < 0.5 else 'PM'}",
    }
