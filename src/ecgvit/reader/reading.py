"""What the page reader found: `PageReading`, `LeadBox`, `GridInfo`, and each layout's lead order."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
FS = 500
N_SAMPLES = 5000  # 10 s at 500 Hz

_3X4 = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
_6X2 = tuple(zip(LEADS[:6], LEADS[6:], strict=True))

# layout name -> (panel rows (leads left to right), rhythm strips top to bottom): the standard orders
LAYOUT_LEADS: dict[str, tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]] = {
    "3x4": (_3X4, ()),
    "3x4+1": (_3X4, ("II",)),
    "3x4+2": (_3X4, ("V1", "II")),
    "3x4+3": (_3X4, ("V1", "II", "V5")),
    "6x2": (_6X2, ()),
    "6x2+1": (_6X2, ("II",)),
    "12x1": (tuple((lead,) for lead in LEADS), ()),
}


@dataclass
class LeadBox:
    """One printed panel: `box` (l, t, r, b) in the input image's pixels (the axis-aligned bounds of
    the panel on the rectified page mapped back), `baseline_y` (rectified page px), `t0_s` and
    `duration_s` of the record it shows."""

    name: str
    box: tuple[float, float, float, float]
    baseline_y: float
    t0_s: float
    duration_s: float
    row: int = 0
    col: int = 0
    rhythm: bool = False
    # on the rectified page: x of t0 and px per second (the exact pixel <-> time mapping)
    x0: float = 0.0
    px_per_s: float = 0.0


@dataclass
class GridInfo:
    """How the scale was found: `pitch_source` ("grid", "calibration pulse" or "page size"),
    `colour` (RGB of the grid's darkest pixels, None without a grid), `kind` ("1 mm + 5 mm", "1 mm",
    "5 mm", ""), `box` (l, t, r, b on the rectified page) and the periodicity strength on each axis."""

    pitch_source: str = "page size"
    colour: tuple[int, int, int] | None = None
    kind: str = ""
    box: tuple[int, int, int, int] | None = None
    strength: tuple[float, float] = (0.0, 0.0)


def _identity() -> list[list[float]]:
    return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


@dataclass
class PageReading:
    """A page's geometry, leads and signals (see `ecgvit.reader.read_page`).

    signals: 12 x 5000 float32 mV at 500 Hz over 10 s in LEADS order, NaN where a lead (or part of
    the record) is not printed. transform: 3x3 matrix, input image px -> rectified page px.
    reasons: plain sentences for everything that could not be found or was assumed.
    """

    layout: str | None = None
    rows: int = 0
    columns: int = 0
    leads: list[LeadBox] = field(default_factory=list)
    px_per_mm: tuple[float, float] | None = None
    grid: GridInfo = field(default_factory=GridInfo)
    transform: list[list[float]] = field(default_factory=_identity)
    rotation_deg: float = 0.0
    speed_mm_s: float | None = None
    gain_mm_mv: float | None = None
    px_per_mv: float | None = None  # the trace's vertical scale (the pulse's height where one was found)
    calibration: bool = False
    signals: np.ndarray = field(default_factory=lambda: np.full((12, N_SAMPLES), np.nan, np.float32))
    reasons: list[str] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)  # input image (width, height)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # the rectified page's trace ink (bool, grid and text removed), kept on request only
    ink: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """A layout was found and at least one lead traced."""
        return self.layout is not None and bool(np.isfinite(self.signals).any())

    def lead_signal(self, name: str) -> np.ndarray:
        return self.signals[LEADS.index(name)]

    def to_dict(self, signals: bool = False) -> dict[str, Any]:
        """JSON-ready dict; the signals (12 x 5000) only if `signals` (NaN as null)."""
        d: dict[str, Any] = {
            "layout": self.layout,
            "rows": self.rows,
            "columns": self.columns,
            "leads": [asdict(b) for b in self.leads],
            "px_per_mm": None if self.px_per_mm is None else {"x": self.px_per_mm[0], "y": self.px_per_mm[1]},
            "grid": asdict(self.grid),
            "transform": self.transform,
            "rotation_deg": self.rotation_deg,
            "speed_mm_s": self.speed_mm_s,
            "gain_mm_mv": self.gain_mm_mv,
            "px_per_mv": self.px_per_mv,
            "calibration": self.calibration,
            "leads_printed": [n for i, n in enumerate(LEADS) if np.isfinite(self.signals[i]).any()],
            "fs": FS,
            "reasons": list(self.reasons),
            "size": list(self.size),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
        if signals:
            d["signals"] = {
                n: [None if not math.isfinite(v) else round(float(v), 4) for v in self.signals[i]]
                for i, n in enumerate(LEADS)
            }
        return _clean(d)


def _clean(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
