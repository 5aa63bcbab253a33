"""Page styles of several ECG machine families, and a random style sampler for varied test beds.

    from ecgvit.synth.styles import STYLES, get_style, make_style, sample_style
    st = get_style("ge_mac")                                   # A4, 200 dpi, 25 mm/s, 10 mm/mV
    st = make_style("philips", paper="letter", dpi=300, speed_mm_s=50, gain_mm_mv=5, grid_colour="orange")
    st, layout = sample_style(np.random.default_rng(0))        # family, colours, dpi, speed, gain, layout

Families ("khan" is the default Khan & Hussain template, drawn by ecgvit.synth.page and unchanged):

* ge_mac: patient fields top-left, a measurements block (rate, PR, QRS, QT/QTc, axes), red solid
  1 mm + 5 mm grid, short tick marks between columns, labels above the baseline.
* philips: light orange grid, labels in the panels' top-left corners, a one-line ID/date header.
* schiller: a framed header table, red 5 mm-only grid, dark blue trace, column lines.
* nihon_kohden: monospaced text, green grid, labels below the baseline.
* bionet: a coloured title bar, dotted blue grid.
* textbook: a web/textbook figure: no header or footer, the grid fills the page.

The look is imitated from memory of such printouts (no vendor material); the names say which kind of
machine a style resembles, nothing more. Every family shares the geometry rules of `make_style`: traces
250 mm wide (10 s at 25 mm/s, 5 s at 50 mm/s) centred on the paper after a calibration zone holding a
pulse of 1 mV (`gain` mm high) and 0.2 s (5 mm at 25 mm/s) wide; trace rows evenly spaced in the grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ecgvit.synth.page import (
    KHAN_STYLE,
    LAYOUTS,
    RGB,
    FamilyDrawer,
    Layout,
    PageStyle,
    _draw_grid,
    _font,
    _text,
    panel_s,
    register_family,
    row_bands,
    row_baselines,
)

PAPERS: dict[str, tuple[float, float]] = {"a4": (297.0, 210.0), "letter": (279.4, 215.9)}  # landscape mm
# grid colour name -> (minor, major) RGB; "dots" grids use the major colour for every dot
GRID_COLOURS: dict[str, tuple[RGB, RGB]] = {
    "red": ((250, 190, 190), (232, 110, 110)),
    "pink": ((252, 214, 224), (240, 150, 175)),
    "orange": ((255, 220, 185), (245, 160, 100)),
    "green": ((196, 232, 196), (110, 186, 120)),
    "blue": ((205, 218, 245), (120, 150, 220)),
    "grey": ((218, 218, 218), (160, 160, 160)),
    "black": ((190, 190, 190), (70, 70, 70)),
}
TRACE_COLOURS: dict[str, RGB] = {
    "black": (0, 0, 0),
    "dark_blue": (20, 30, 120),
    "dark_green": (10, 80, 35),
    "dark_red": (120, 10, 20),
}
GRID_KIND_NAMES = ("lines", "dots", "major")
DPIS = (100, 150, 200, 300, 400, 600)
SPEEDS = (25.0, 50.0)
GAINS = (5.0, 10.0, 20.0)


@dataclass(frozen=True)
class Family:
    """A machine family's look (lengths in mm)."""

    name: str
    header_mm: float
    footer_mm: float
    margin_mm: float
    grid_colour: str
    grid_kind: str
    trace_colour: str
    trace_width_mm: float
    font: str
    label_font: str
    label_pos: str
    separator: str
    device: str
    text_mm: float = 2.6  # header text height
    label_mm: float = 3.0
    border: bool = True


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "ge_mac",
            34,
            9,
            6,
            "red",
            "lines",
            "black",
            0.25,
            "DejaVuSans.ttf",
            "DejaVuSans-Bold.ttf",
            "baseline",
            "tick",
            "MAC-type 12SL",
        ),
        Family(
            "philips",
            30,
            9,
            5,
            "orange",
            "lines",
            "black",
            0.22,
            "DejaVuSansCondensed.ttf",
            "DejaVuSansCondensed-Bold.ttf",
            "corner",
            "none",
            "PW-type TC",
        ),
        Family(
            "schiller",
            30,
            9,
            7,
            "red",
            "major",
            "dark_blue",
            0.3,
            "DejaVuSerif.ttf",
            "DejaVuSerif-Bold.ttf",
            "baseline",
            "line",
            "AT-type 102",
        ),
        Family(
            "nihon_kohden",
            26,
            8,
            5,
            "green",
            "lines",
            "black",
            0.25,
            "DejaVuSansMono.ttf",
            "DejaVuSansMono-Bold.ttf",
            "below",
            "tick",
            "ECG-type 1350",
        ),
        Family(
            "bionet",
            24,
            8,
            6,
            "blue",
            "dots",
            "black",
            0.3,
            "DejaVuSans.ttf",
            "DejaVuSans-Bold.ttf",
            "corner",
            "line",
            "CardioCare-type",
        ),
        Family(
            "textbook",
            0,
            0,
            0,
            "pink",
            "lines",
            "black",
            0.35,
            "DejaVuSans.ttf",
            "DejaVuSans-Bold.ttf",
            "baseline",
            "none",
            "",
            label_mm=3.6,
            border=False,
        ),
    )
}
FAMILY_NAMES: tuple[str, ...] = ("khan", *FAMILIES)


def _choose(name: str, value: str, valid: Any) -> str:
    if value not in valid:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(valid)}")
    return value


def make_style(
    family: str = "ge_mac",
    *,
    paper: str = "a4",
    dpi: int = 200,
    speed_mm_s: float = 25.0,
    gain_mm_mv: float = 10.0,
    grid_colour: str | None = None,
    grid_kind: str | None = None,
    trace_colour: str | None = None,
    trace_width_mm: float | None = None,
    jpeg_quality: int = 85,
) -> PageStyle:
    """The `PageStyle` of `family` on landscape `paper` ("a4", "letter") at `dpi`.

    None keeps the family's grid colour (a GRID_COLOURS name), grid kind ("lines", "dots", "major"),
    trace colour (a TRACE_COLOURS name) and trace width. "khan" returns the Khan template (its own
    paper size; `paper` is ignored) scaled to `dpi` with the overrides applied.
    """
    _choose("family", family, FAMILY_NAMES)
    _choose("paper", paper, PAPERS)
    if grid_colour is not None:
        _choose("grid_colour", grid_colour, GRID_COLOURS)
    if grid_kind is not None:
        _choose("grid_kind", grid_kind, GRID_KIND_NAMES)
    if trace_colour is not None:
        _choose("trace_colour", trace_colour, TRACE_COLOURS)
    if not 50 <= int(dpi) <= 1200:
        raise ValueError(f"dpi={dpi!r}: expected 50..1200")
    if family == "khan":
        st = KHAN_STYLE if int(dpi) == 200 else KHAN_STYLE.scaled(int(dpi) / 200.0)
        over: dict[str, Any] = {}
        if float(speed_mm_s) != st.speed_mm_s:
            over["speed_mm_s"] = float(speed_mm_s)
        if float(gain_mm_mv) != st.gain_mm_mv:
            over["gain_mm_mv"] = float(gain_mm_mv)
        if grid_colour is not None:
            mi, ma = GRID_COLOURS[grid_colour]
            over.update(minor_color=ma, major_color=ma, faint_color=mi, border_color=ma)
        if grid_kind is not None and grid_kind != st.grid_kind:
            mi, ma = GRID_COLOURS[grid_colour or "pink"]
            over.update(grid_kind=grid_kind, minor_color=mi, major_color=ma, faint_color=None)
        if trace_colour is not None:
            over["trace_color"] = TRACE_COLOURS[trace_colour]
        if trace_width_mm is not None:
            over["trace_width"] = max(1, int(round(trace_width_mm * st.px_per_mm)))
        return replace(st, **over) if over else st
    f = FAMILIES[family]
    ppm = int(dpi) / 25.4
    pw_mm, ph_mm = PAPERS[paper]
    w, h = int(round(pw_mm * ppm)), int(round(ph_mm * ppm))
    # calibration zone: 1 mm, foot 2 mm, pulse 0.2 s, foot 2 mm, 1 mm gap; then 250 mm of traces
    pulse_mm = 0.2 * float(speed_mm_s)
    zone_mm = 1 + 2 + pulse_mm + 2 + 1
    left_mm = (pw_mm - zone_mm - 250.0) / 2
    panel_x0 = (left_mm + zone_mm) * ppm
    c0 = (left_mm + 1) * ppm
    cal_x = tuple(int(round(c0 + d * ppm)) for d in (0.0, 2.0, 2.0 + pulse_mm, 4.0 + pulse_mm))
    if f.border:
        margin = min(f.margin_mm, left_mm - 0.5)
        gl, gt = int(round(margin * ppm)), int(round(f.header_mm * ppm))
        grid_box = (gl, gt, w - 1 - gl, h - 1 - int(round(f.footer_mm * ppm)))
        bw = max(1, int(round(0.15 * ppm)))
    else:
        grid_box, bw = (0, 0, w - 1, h - 1), 0
    mi, ma = GRID_COLOURS[grid_colour or f.grid_colour]
    kind = grid_kind or f.grid_kind
    line_w = max(1, int(round(0.1 * ppm)))
    tw = trace_width_mm if trace_width_mm is not None else f.trace_width_mm
    text_px = max(6, int(round(f.text_mm * ppm)))
    return PageStyle(
        width=w,
        height=h,
        dpi=int(dpi),
        grid_box=grid_box,
        border_color=ma,
        border_width=bw,
        grid_kind=kind,
        grid_pitch_px=None,
        grid_origin=(panel_x0, float(grid_box[1] + bw)),
        minor_color=ma if kind == "dots" else mi,
        major_color=ma,
        faint_color=None,
        minor_width=line_w,
        major_width=max(1, int(round(0.2 * ppm))) if kind != "dots" else 1,
        trace_color=TRACE_COLOURS[trace_colour or f.trace_colour],
        trace_width=max(1, int(round(tw * ppm))),
        speed_mm_s=float(speed_mm_s),
        gain_mm_mv=float(gain_mm_mv),
        panel_x0=panel_x0,
        separator_width=max(1, int(round(0.25 * ppm))),
        cal_x=cal_x,  # type: ignore[arg-type]  # a 4-tuple built by a generator
        cal_width=max(1, int(round(tw * ppm))),
        label_dx=int(round(1.0 * ppm)),
        label_dy=int(round(-3.5 * ppm)),
        font_file=f.font,
        label_font_file=f.label_font,
        title_size=max(6, int(round(4.0 * ppm))),
        header_size=text_px,
        label_size=max(6, int(round(f.label_mm * ppm))),
        footer_size=max(6, int(round(2.3 * ppm))),
        jpeg_quality=int(jpeg_quality),
        title="",
        device_text=f.device,
        filter_text="",
        family=family,
        label_pos=f.label_pos,
        separator=f.separator,
        paper=paper,
    )


STYLES: dict[str, PageStyle] = {name: make_style(name) for name in FAMILY_NAMES}


def get_style(name: str | PageStyle, **kwargs: Any) -> PageStyle:
    """The named style (a key of STYLES; ValueError naming the valid ones otherwise); keyword
    arguments are those of `make_style` (paper, dpi, speed_mm_s, gain_mm_mv, colours...)."""
    if isinstance(name, PageStyle):
        return name
    if name not in STYLES:
        raise ValueError(f"style={name!r}: expected one of {', '.join(STYLES)} (or 'random')")
    return make_style(name, **kwargs) if kwargs else STYLES[name]


def sample_style(
    rng: np.random.Generator, layouts: tuple[str, ...] | None = None, speeds: tuple[float, ...] | None = None
) -> tuple[PageStyle, str]:
    """A random (style, layout): family, paper, dpi, speed, gain, grid colour and kind, trace colour
    and width, and a layout of `layouts` (default: all of LAYOUTS). About half the colour and grid
    choices keep the family's own. `speeds` (mm/s, default SPEEDS, 25 four times as often as 50):
    the paper speeds to draw from (a record known only in 2.5 s windows, as a 3x4 page prints it,
    has no signal for the windows a 50 mm/s page shows: (25.0,))."""
    for v in speeds or ():
        if v not in SPEEDS:
            raise ValueError(f"speeds: {v!r} mm/s is not one of {SPEEDS}")
    fam = str(rng.choice(FAMILY_NAMES))
    paper = str(rng.choice(list(PAPERS)))
    dpi = int(rng.choice(DPIS, p=[0.15, 0.2, 0.3, 0.2, 0.1, 0.05]))
    speed = float(rng.choice(SPEEDS, p=[0.8, 0.2]) if not speeds else rng.choice(speeds))
    gain = float(rng.choice(GAINS, p=[0.15, 0.7, 0.15]))
    gc = str(rng.choice(list(GRID_COLOURS))) if rng.random() < 0.5 else None
    gk = str(rng.choice(GRID_KIND_NAMES)) if rng.random() < 0.4 else None
    tc = str(rng.choice(list(TRACE_COLOURS))) if rng.random() < 0.4 else None
    tw = float(rng.uniform(0.15, 0.4)) if rng.random() < 0.5 else None
    names = tuple(LAYOUTS) if layouts is None else layouts
    layout = str(rng.choice(names))
    st = make_style(
        fam,
        paper=paper,
        dpi=dpi,
        speed_mm_s=speed,
        gain_mm_mv=gain,
        grid_colour=gc,
        grid_kind=gk,
        trace_colour=tc,
        trace_width_mm=tw,
    )
    return st, layout


# ------------------------------------------------------------------------------------------------
# drawing of the non-Khan families (called by ecgvit.synth.page.template / render)


class _Pen:
    """Text in mm coordinates (x from the left, y of the text baseline from the top)."""

    def __init__(self, d: ImageDraw.ImageDraw, st: PageStyle) -> None:
        self.d, self.st, self.ppm = d, st, st.px_per_mm

    def __call__(self, x_mm: float, y_mm: float, s: str, size: int | None = None, bold: bool = False,
                 anchor: str = "ls", fill: RGB | None = None) -> None:  # fmt: skip
        st = self.st
        font = _font((st.label_font_file or st.font_file) if bold else st.font_file, size or st.header_size)
        _text(self.d, (x_mm * self.ppm, y_mm * self.ppm), s, font, fill or st.ink_color, anchor)

    def right(self, from_right_mm: float) -> float:
        return self.st.width / self.ppm - from_right_mm


def _fields(meta: dict[str, Any], st: PageStyle, lay: Layout) -> dict[str, Any]:
    """Header values with defaults (a page drawn with only random_meta's fields still fills in)."""
    hr = int(round(float(meta.get("heart_rate", 0) or 0)))
    qtc = int(meta.get("qtc", 420))
    rr = 60.0 / hr if hr > 0 else 1.0
    v = {
        "id": meta.get("id", ""),
        "sex": meta.get("sex", ""),
        "date": meta.get("date", ""),
        "time": meta.get("time", ""),
        "hr": hr,
        "name": meta.get("name", "ANONYMOUS"),
        "age": meta.get("age", 60),
        "height": meta.get("height", 170),
        "weight": meta.get("weight", 70),
        "pr": meta.get("pr", 160),
        "qrs": meta.get("qrs", 90),
        "qt": meta.get("qt", int(round(qtc * rr**0.5))),
        "qtc": qtc,
        "pax": meta.get("p_axis", 50),
        "rax": meta.get("r_axis", 45),
        "tax": meta.get("t_axis", 40),
        "room": meta.get("room", 1),
        "speed": f"{st.speed_mm_s:g}",
        "gain": f"{st.gain_mm_mv * lay.gain_factor:g}",
        "fmt": lay.footer,
        "device": st.device_text,
    }
    return v


def extra_meta(rng: np.random.Generator, ecg_params: dict[str, Any]) -> dict[str, Any]:
    """More fake header fields for the non-Khan families (measurements from the ECG's parameters
    where it has them; no class-revealing interpretation text)."""
    return {
        "name": f"PATIENT {int(rng.integers(1000, 9999))}",
        "age": int(rng.integers(25, 90)),
        "height": int(rng.integers(150, 195)),
        "weight": int(rng.integers(45, 120)),
        "pr": int(rng.integers(130, 210)),
        "qrs": int(round(float(ecg_params.get("qrs_ms", rng.uniform(80, 110))))),
        "qtc": int(round(1000 * float(ecg_params.get("qtc_s", rng.uniform(0.39, 0.45))))),
        "p_axis": int(rng.integers(20, 75)),
        "r_axis": int(round(float(ecg_params.get("axis_deg", rng.uniform(-20, 80))))),
        "t_axis": int(rng.integers(10, 70)),
        "room": int(rng.integers(1, 40)),
    }


def _ge_static(p: _Pen, st: PageStyle) -> None:
    for k, lab in enumerate(("Vent. rate", "PR interval", "QRS duration", "QT/QTc", "P-R-T axes")):
        p(80, 9 + 5 * k, lab)
    p(140, 14, "Unconfirmed report")
    p(140, 19, "Technician:")
    p(140, 24, "Referred by:")
    p(140, 29, "Confirmed by:")


def _ge_fields(p: _Pen, st: PageStyle, v: dict[str, Any]) -> None:
    p(8, 9, str(v["name"]), size=st.title_size, bold=True)
    p(8, 15, f"ID:{v['id']}")
    p(8, 20, f"{v['age']} yr   {v['sex']}")
    p(8, 25, f"{v['height']} cm   {v['weight']} kg")
    p(8, 30, f"Loc:{v['room']}   Option:23")
    vals = (f"{v['hr']} BPM", f"{v['pr']} ms", f"{v['qrs']} ms", f"{v['qt']}/{v['qtc']} ms")
    for k, s in enumerate(vals):
        p(108, 9 + 5 * k, s)
    p(108, 29, f"{v['pax']}  {v['rax']}  {v['tax']}")
    p(140, 9, f"{v['date']}  {v['time']}", bold=True)
    fy = st.height / p.ppm - 3
    p(8, fy, f"{v['speed']}mm/s   {v['gain']}mm/mV   0.05-150 Hz   60 Hz   {v['device']}   {v['fmt']}",
      size=st.footer_size)  # fmt: skip
    p(p.right(8), fy, "Page 1 of 1", size=st.footer_size, anchor="rs")


def _philips_static(p: _Pen, st: PageStyle) -> None:
    for k, lab in enumerate(("Rate", "PR", "QRSD", "QT", "QTc")):
        p(95, 10 + 4 * k, lab)
    p(130, 10, "--AXIS--")
    for k, lab in enumerate(("P", "QRS", "T")):
        p(130, 14 + 4 * k, lab)
    p(175, 10, "-- Unconfirmed diagnosis --")


def _philips_fields(p: _Pen, st: PageStyle, v: dict[str, Any]) -> None:
    p(8, 7, f"ID:{v['id']}     {v['date']}  {v['time']}", bold=True)
    p(8, 12, str(v["name"]))
    p(8, 17, f"{v['sex']}   {v['age']} Years")
    p(8, 22, f"Room:{v['room']}")
    for k, s in enumerate((v["hr"], v["pr"], v["qrs"], v["qt"], v["qtc"])):
        p(112, 10 + 4 * k, str(s), anchor="rs")
    for k, s in enumerate((v["pax"], v["rax"], v["tax"])):
        p(150, 14 + 4 * k, str(s), anchor="rs")
    fy = st.height / p.ppm - 3
    p(8, fy, f"Speed: {v['speed']} mm/sec   Limb: {v['gain']} mm/mV   Chest: {v['gain']} mm/mV   F 50~ 0.15-100 Hz W",
      size=st.footer_size)  # fmt: skip
    p(p.right(8), fy, f"{v['device']}   {v['fmt']}", size=st.footer_size, anchor="rs")


def _schiller_static(p: _Pen, st: PageStyle, a: np.ndarray) -> None:
    ppm = p.ppm
    x0, x1 = int(7 * ppm), st.width - int(7 * ppm)
    y0, y1 = int(3 * ppm), int(27 * ppm)
    lw = max(1, int(round(0.25 * ppm)))
    cv2.rectangle(a, (x0, y0), (x1, y1), st.ink_color, lw)
    xm = int(110 * ppm)
    cv2.line(a, (xm, y0), (xm, y1), st.ink_color, lw)


def _schiller_labels(p: _Pen, st: PageStyle) -> None:
    for k, lab in enumerate(("Name:", "ID:", "Age / Sex:", "Height / Weight:")):
        p(10, 8 + 5 * k, lab)
    for k, lab in enumerate(("HR", "PQ", "QRS", "QT/QTc")):
        p(114, 8 + 5 * k, lab)
    p(180, 8, "Interpretation:", bold=True)


def _schiller_fields(p: _Pen, st: PageStyle, v: dict[str, Any]) -> None:
    vals = (str(v["name"]), str(v["id"]), f"{v['age']} / {v['sex']}", f"{v['height']} cm / {v['weight']} kg")
    for k, s in enumerate(vals):
        p(45, 8 + 5 * k, s)
    vals = (f"{v['hr']} /min", f"{v['pr']} ms", f"{v['qrs']} ms", f"{v['qt']} / {v['qtc']} ms")
    for k, s in enumerate(vals):
        p(135, 8 + 5 * k, s)
    p(180, 13, "not confirmed")
    p(180, 18, f"{v['date']}  {v['time']}")
    fy = st.height / p.ppm - 3
    p(8, fy, f"{v['speed']} mm/s   {v['gain']} mm/mV   ADS  0.08-150 Hz  50 Hz   {v['fmt']}", size=st.footer_size)
    p(p.right(8), fy, v["device"], size=st.footer_size, anchor="rs")


def _nk_static(p: _Pen, st: PageStyle) -> None:
    p(p.right(6), 7, st.device_text, bold=True, anchor="rs")


def _nk_fields(p: _Pen, st: PageStyle, v: dict[str, Any]) -> None:
    p(6, 7, f"ID {v['id']}   {v['sex'][:1]}  {v['age']}Y   {v['height']}cm {v['weight']}kg")
    p(6, 13, f"{v['date']} {v['time']}")
    p(6, 19, f"HR {v['hr']}bpm  PR {v['pr']}ms  QRS {v['qrs']}ms  QT/QTc {v['qt']}/{v['qtc']}ms  AXIS {v['rax']}")
    fy = st.height / p.ppm - 2.5
    p(6, fy, f"{v['speed']}mm/s  {v['gain']}mm/mV  HUM 50Hz  EMG 35Hz  DFT 0.5Hz  {v['fmt']}", size=st.footer_size)


def _bionet_static(p: _Pen, st: PageStyle, a: np.ndarray) -> None:
    cv2.rectangle(a, (0, 0), (st.width - 1, int(9 * p.ppm)), (30, 60, 130), -1)


def _bionet_labels(p: _Pen, st: PageStyle) -> None:
    p(8, 6.5, "12 LEAD ECG REPORT", size=st.title_size, bold=True, fill=(255, 255, 255))
    p(p.right(8), 6.5, st.device_text, fill=(255, 255, 255), anchor="rs")


def _bionet_fields(p: _Pen, st: PageStyle, v: dict[str, Any]) -> None:
    p(8, 15, f"Name: {v['name']}     ID: {v['id']}     Sex: {v['sex']}     Age: {v['age']}")
    p(8, 21, f"HR: {v['hr']} bpm   PR: {v['pr']} ms   QRS: {v['qrs']} ms   QT/QTc: {v['qt']}/{v['qtc']} ms")
    p(p.right(8), 15, f"{v['date']}  {v['time']}", anchor="rs")
    fy = st.height / p.ppm - 2.5
    p(8, fy, f"{v['speed']} mm/s  {v['gain']} mm/mV  0.05-150 Hz  {v['fmt']}", size=st.footer_size)


_SHAPES: dict[str, Callable[[_Pen, PageStyle, np.ndarray], None]] = {
    "schiller": _schiller_static,
    "bionet": _bionet_static,
}
_LABELS: dict[str, Callable[[_Pen, PageStyle], None]] = {
    "ge_mac": _ge_static,
    "philips": _philips_static,
    "schiller": _schiller_labels,
    "nihon_kohden": _nk_static,
    "bionet": _bionet_labels,
}
_FIELDS: dict[str, Callable[[_Pen, PageStyle, dict[str, Any]], None]] = {
    "ge_mac": _ge_fields,
    "philips": _philips_fields,
    "schiller": _schiller_fields,
    "nihon_kohden": _nk_fields,
    "bionet": _bionet_fields,
}


def family_template(st: PageStyle, lay: Layout) -> np.ndarray:
    """The static part of a non-Khan page: paper, grid, separators, calibration pulses, lead labels,
    the family's fixed header shapes and labels."""
    if st.family not in FAMILIES:
        raise ValueError(f"family={st.family!r}: expected one of {', '.join(FAMILY_NAMES)}")
    a = np.empty((st.height, st.width, 3), np.uint8)
    a[:] = st.paper_color
    _draw_grid(a, st)
    ppm = st.px_per_mm
    base = row_baselines(st, lay)
    bands = row_bands(st, lay)
    n_main = len(lay.rows)
    pw = panel_s(st, lay) * st.px_per_s
    sw = st.separator_width
    for k in range(1, len(lay.rows[0])):
        x = int(round(st.panel_x0 + k * pw))
        if st.separator == "line":
            cv2.line(a, (x, int(bands[0][0] + ppm)), (x, int(bands[n_main - 1][1] - ppm)), st.ink_color, sw)
        elif st.separator == "tick":
            for r in range(n_main):
                y = base[r]
                cv2.line(a, (x, int(y - 2 * ppm)), (x, int(y + 2 * ppm)), st.ink_color, sw)
    hcal = int(round(st.px_per_mv * lay.gain_factor))
    c0, c1, c2, c3 = st.cal_x
    for y in base:
        pts = np.array([[c0, y], [c1, y], [c1, y - hcal], [c2, y - hcal], [c2, y], [c3, y]], np.int32)
        cv2.polylines(a, [pts], False, st.trace_color, st.cal_width, cv2.LINE_AA)
    pen_shape = _SHAPES.get(st.family)
    if pen_shape is not None:
        pen_shape(_Pen(ImageDraw.Draw(Image.new("RGB", (1, 1))), st), st, a)
    im = Image.fromarray(a)
    d = ImageDraw.Draw(im)
    p = _Pen(d, st)
    lab = _LABELS.get(st.family)
    if lab is not None:
        lab(p, st)
    fl = _font(st.label_font_file or st.font_file, st.label_size)
    panels = [(r, c, lead) for r, row in enumerate(lay.rows) for c, lead in enumerate(row)]
    panels += [(n_main + k, 0, lead) for k, lead in enumerate(lay.rhythm_leads)]
    for r, c, lead in panels:
        lx = st.panel_x0 + c * pw + st.label_dx
        if st.label_pos == "corner":
            _text(d, (lx, bands[r][0] + ppm), lead, fl, st.ink_color, "lt")
        elif st.label_pos == "below":
            _text(d, (lx, base[r] + 1.5 * ppm), lead, fl, st.ink_color, "lt")
        else:
            _text(d, (lx, base[r] + st.label_dy), lead, fl, st.ink_color, "ls")
    return np.asarray(im).copy()


def draw_fields(d: ImageDraw.ImageDraw, st: PageStyle, lay: Layout, meta: dict[str, Any]) -> None:
    """The page's own header/footer values (ID, date, measurements...) for a non-Khan family."""
    f = _FIELDS.get(st.family)
    if f is not None:
        f(_Pen(d, st), st, _fields(meta, st, lay))


for _name in FAMILIES:
    register_family(_name, FamilyDrawer(template=family_template, fields=draw_fields))
