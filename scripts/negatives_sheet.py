"""Contact sheet of the generated gate data: supported pages (green captions) and every
out-of-scope kind from ecgvit.synth.negatives (red captions).

    python scripts/negatives_sheet.py [--out docs/negatives.png] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ecgvit.synth import make_page
from ecgvit.synth.negatives import NEGATIVE_KINDS, make_negative, negative_rng
from ecgvit.synth.page import _font

TILE_W, TILE_H, CAP = 330, 236, 24
COLS = 4


def _tile(a: np.ndarray, caption: str, ok: bool) -> Image.Image:
    t = Image.new("RGB", (TILE_W, TILE_H + CAP), (40, 40, 40))
    im = Image.fromarray(a)
    im.thumbnail((TILE_W - 8, TILE_H - 8), Image.LANCZOS)
    t.paste(im, ((TILE_W - im.width) // 2, (TILE_H - im.height) // 2))
    d = ImageDraw.Draw(t)
    d.rectangle((0, TILE_H, TILE_W, TILE_H + CAP), fill=(30, 120, 50) if ok else (150, 35, 35))
    d.text(
        (TILE_W // 2, TILE_H + CAP // 2), caption, font=_font("DejaVuSans.ttf", 15), fill=(255, 255, 255), anchor="mm"
    )
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/negatives.png")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    tiles = []
    for i, (layout, distort) in enumerate([("3x4+1", "none"), ("3x4", "none"), ("3x4+1", "heavy")]):
        page, _, _ = make_page(
            "myocardial_infarction", np.random.default_rng([a.seed, i]), distort=distort, as_array=True, layout=layout
        )
        tiles.append(_tile(np.asarray(page), f"page {layout}" + (f" ({distort})" if distort != "none" else ""), True))
    for k in NEGATIVE_KINDS:
        tiles.append(_tile(make_negative(k, negative_rng(a.seed, k, 0)), f"negative: {k}", False))  # type: ignore[arg-type]
    rows = (len(tiles) + COLS - 1) // COLS
    sheet = Image.new("RGB", (COLS * TILE_W, rows * (TILE_H + CAP)), (40, 40, 40))
    for j, t in enumerate(tiles):
        sheet.paste(t, ((j % COLS) * TILE_W, (j // COLS) * (TILE_H + CAP)))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette keeps the PNG small (the sheet is for looking at, not measuring)
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"{out}: {len(tiles)} tiles, {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
