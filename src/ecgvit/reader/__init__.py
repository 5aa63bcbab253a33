"""The page reader: from any 12-lead ECG page image to its geometry, leads and signals.

    from ecgvit.reader import read_page, digitize_files
    r = read_page("page.jpg")          # PageReading: layout, leads (boxes), px/mm, signals (12 x 5000 mV)
    print(r.layout, r.px_per_mm, r.reasons)
    digitize_files(["pages/"], "out/")  # WFDB + CSV + JSON + overlay PNG per page

A leaf module: numpy, OpenCV, PIL, SciPy and `ecgvit.data.io` only (no torch).
"""

from __future__ import annotations

from ecgvit.reader.digitize import FORMATS, digitize_files, draw_overlay, format_table
from ecgvit.reader.read import read_page
from ecgvit.reader.reading import FS, LAYOUT_LEADS, LEADS, N_SAMPLES, GridInfo, LeadBox, PageReading

__all__ = [
    "digitize_files",
    "draw_overlay",
    "format_table",
    "FORMATS",
    "read_page",
    "PageReading",
    "LeadBox",
    "GridInfo",
    "LEADS",
    "FS",
    "N_SAMPLES",
    "LAYOUT_LEADS",
]
