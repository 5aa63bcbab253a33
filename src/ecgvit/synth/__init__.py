"""Synthetic 12-lead ECG report pages with known labels (`ecgvit synth`).

    from ecgvit.synth import generate, make_page
    print(generate("synth_out", per_class=50, seed=1, distort="light", workers=2))
    img, signals, params = make_page("history_of_mi", np.random.default_rng(0))
    generate("synth_6x2", per_class=5, layout="6x2")     # layouts: 3x4+1 (default), 3x4, 6x2, 12x1, 3x4+3, 6x2+1
    generate("synth_var", per_class=5, style="random", distort="photo")   # machine families, phone photos
    img, signals, params = make_page("normal", rng, style=get_style("ge_mac"), layout="3x4+3", trace_mask=True)

Styles of other machine families (ge_mac, philips, schiller, nihon_kohden, bionet, textbook) and a
random style sampler are in `ecgvit.synth.styles`. Every page's params (and sidecar) has "truth":
the exact pixel <-> (time, mV) geometry of each printed panel and, for distorted pages, the
homography (and curl) from the clean page (schema: ecgvit.synth.page.TRUTH_DOC; mapping points:
ecgvit.synth.distort.map_points).

Pages that are *not* a supported report (for an out-of-scope gate) come from
`ecgvit.synth.negatives` (`generate_negatives`, `ecgvit synth --negatives`).

Output layout (read by the data indexer as one folder per class):

    OUT/synth_config.json                      the SynthConfig and page style that made the set
    OUT/<class>/<class>_00000.jpg              the page
    OUT/<class>/<class>_00000.npz              signals (12 x 5000 float32 mV, lead order LEADS), fs,
                                               leads, qrs_onsets, beat_types, p_onsets
    OUT/<class>/<class>_00000.json             generation parameters (class, rhythm, territory,
                                               heart rate, noise, distortions, seed, header fields,
                                               truth; page_style when the style is random)
                                               (with trace_masks=True the .npz also has trace_mask)

Each page's RNG is derived from (seed, class index, page index) with numpy's SeedSequence, so a
page's bytes depend on nothing else: same seed -> same files, whatever --workers is.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ecgvit.synth import distort as _distort
from ecgvit.synth import styles as _styles
from ecgvit.synth.jobs import run_jobs
from ecgvit.synth.page import (
    DEFAULT_LAYOUT,
    KHAN_STYLE,
    LAYOUT,
    LAYOUTS,
    PageStyle,
    page_truth,
    random_meta,
    render,
    template,
)
from ecgvit.synth.page import trace_mask as _trace_mask
from ecgvit.synth.signals import CLASSES, ECG, FS, LEADS, TERRITORY_LEADS, derive_limb, simulate
from ecgvit.synth.styles import STYLES, get_style, make_style, sample_style

__all__ = [
    "CLASSES",
    "LEADS",
    "FS",
    "TERRITORY_LEADS",
    "PageStyle",
    "KHAN_STYLE",
    "LAYOUT",
    "LAYOUTS",
    "STYLES",
    "get_style",
    "make_style",
    "sample_style",
    "page_truth",
    "SynthConfig",
    "generate",
    "make_page",
    "render_page",
    "page_rng",
    "encode",
    "simulate",
    "derive_limb",
]

FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic page set."""

    per_class: int = 10
    seed: int = 0
    distort: str = "none"
    fmt: str = "jpg"
    classes: tuple[str, ...] = CLASSES
    style: PageStyle = field(default_factory=PageStyle)
    noise: bool = True
    layout: str = DEFAULT_LAYOUT  # or "random": one per page
    random_style: bool = False  # a style per page from ecgvit.synth.styles.sample_style (`style` unused)
    trace_masks: bool = False  # also store each page's trace mask in its .npz ("trace_mask", HxW uint8)

    def __post_init__(self) -> None:
        validate(self.per_class, self.seed, self.distort, self.fmt, 1, self.layout)
        bad = [c for c in self.classes if c not in CLASSES]
        if bad or not self.classes:
            raise ValueError(f"classes={self.classes!r}: each must be one of {', '.join(CLASSES)}")


def validate(per_class: Any, seed: Any, distort: Any, fmt: Any, workers: Any, layout: Any = DEFAULT_LAYOUT) -> None:
    """Raise ValueError naming the bad value."""
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class={per_class!r}: must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be an integer >= 0")
    if distort not in _distort.LEVELS:
        raise ValueError(f"distort={distort!r}: expected one of {', '.join(_distort.LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers={workers!r}: must be an integer >= 1")
    if not isinstance(layout, str) or (layout not in LAYOUTS and layout != "random"):
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(LAYOUTS)} or 'random'")


def page_rng(seed: int, cls: str, index: int) -> np.random.Generator:
    """The RNG of page `index` of class `cls`: depends only on (seed, class, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), CLASSES.index(cls), int(index)]))


def render_page(
    ecg: ECG,
    rng: np.random.Generator,
    style: PageStyle = KHAN_STYLE,
    distort: str = "none",
    layout: str = DEFAULT_LAYOUT,
    trace_mask: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw `ecg` on a page; returns (HxWx3 uint8 RGB array, params: header fields, distortions, layout,
    truth: the page's exact pixel <-> (time, mV) geometry, see ecgvit.synth.page.TRUTH_DOC).

    `trace_mask=True` adds params["trace_mask"]: an HxW uint8 mask (0..255, anti-aliased) of the
    traces alone as drawn, resampled like the page if it was distorted (the calibration pulses are
    not in it)."""
    meta = random_meta(rng, ecg.heart_rate)
    if style.family != "khan":
        meta.update(_styles.extra_meta(rng, ecg.params))
    a = render(ecg.signals, style, meta, ecg.fs, layout)
    warp: dict[str, Any] = {}
    a, dparams = _distort.apply(a, rng, distort, warp_out=warp)
    truth = page_truth(style, layout, ecg.fs, ecg.signals.shape[1])
    truth.update(warp)
    truth["page_size"] = [int(a.shape[1]), int(a.shape[0])]
    out = {"header": meta, "distortions": dparams, "layout": layout, "truth": truth}
    if trace_mask:
        m = _trace_mask(ecg.signals, style, ecg.fs, layout)
        if distort != "none":
            m = _distort.warp_image(m, truth["homography"], truth["warp"], (a.shape[1], a.shape[0]))
        out["trace_mask"] = m
    return a, out


def make_page(
    cls: str,
    rng: np.random.Generator,
    style: PageStyle = KHAN_STYLE,
    distort: str = "none",
    noise: bool = True,
    as_array: bool = False,
    layout: str = DEFAULT_LAYOUT,
    trace_mask: bool = False,
) -> tuple[Image.Image | np.ndarray, np.ndarray, dict[str, Any]]:
    """One page of class `cls` in memory: (PIL RGB image, or array if as_array; signals 12xN mV; params).

    `layout` arranges the panels: "3x4+1" (Khan template, default), "3x4", "6x2" or "12x1"
    (see ecgvit.synth.page.LAYOUTS); it uses no randomness, so the same RNG gives the same ECG
    and header in every layout.

    Nothing is encoded: a training pipeline can call this on the fly. params["jpeg_quality"]
    (set by distortions) says how `encode` would compress it.
    """
    if cls not in CLASSES:
        raise ValueError(f"class {cls!r}: expected one of {', '.join(CLASSES)}")
    if distort not in _distort.LEVELS:
        raise ValueError(f"distort={distort!r}: expected one of {', '.join(_distort.LEVELS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(LAYOUTS)}")
    ecg = simulate(cls, rng, noise=noise)
    a, rp = render_page(ecg, rng, style, distort, layout, trace_mask=trace_mask)
    params = dict(ecg.params)
    params.update(rp)
    params["jpeg_quality"] = int(rp["distortions"].get("jpeg_quality", style.jpeg_quality))
    params["_ecg"] = ecg  # removed before writing; gives tests the beat annotations
    img: Image.Image | np.ndarray = a if as_array else Image.fromarray(a)
    return img, ecg.signals, params


def encode(a: np.ndarray | Image.Image, fmt: str, quality: int = 75, dpi: int = 200) -> bytes:
    """Page bytes (deterministic for a given input)."""
    im = a if isinstance(a, Image.Image) else Image.fromarray(a)
    b = io.BytesIO()
    if fmt == "jpg":
        im.save(b, "JPEG", quality=int(quality), subsampling=2, dpi=(dpi, dpi))
    elif fmt == "png":
        im.save(b, "PNG", compress_level=3, dpi=(dpi, dpi))
    else:
        raise ValueError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    return b.getvalue()


def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    """An .npz (readable by np.load) with fixed zip timestamps, so equal inputs give equal bytes."""
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for k, v in arrays.items():
            info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            ab = io.BytesIO()
            np.lib.format.write_array(ab, np.asanyarray(v), allow_pickle=False)
            z.writestr(info, ab.getvalue())
    return b.getvalue()


def page_style(cfg: SynthConfig, cls: str, index: int) -> tuple[PageStyle, str]:
    """The (style, layout) of page `index` of class `cls`: the config's, or drawn from an RNG of its own
    (SeedSequence([seed, class index, index, 1])) when the style or layout is random, so the page's
    ECG is the same as with a fixed style."""
    if not cfg.random_style and cfg.layout != "random":
        return cfg.style, cfg.layout
    srng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), CLASSES.index(cls), int(index), 1]))
    if cfg.random_style:
        st, lay = _styles.sample_style(srng)
    else:
        st, lay = cfg.style, str(srng.choice(list(LAYOUTS)))
    return st, (lay if cfg.layout == "random" else cfg.layout)


def _write_page(out: str, cls: str, index: int, cfg: SynthConfig) -> str:
    rng = page_rng(cfg.seed, cls, index)
    style, layout = page_style(cfg, cls, index)
    img, signals, params = make_page(
        cls, rng, style, cfg.distort, cfg.noise, as_array=True, layout=layout, trace_mask=cfg.trace_masks
    )
    ecg: ECG = params.pop("_ecg")
    mask = params.pop("trace_mask", None)
    if cfg.random_style:
        params["page_style"] = asdict(style)
    stem = f"{cls}_{index:05d}"
    d = Path(out) / cls
    data = encode(img, cfg.fmt, params["jpeg_quality"], style.dpi)
    (d / f"{stem}.{cfg.fmt}").write_bytes(data)
    arrays = {
        "signals": signals,
        "fs": np.int64(ecg.fs),
        "leads": np.array(LEADS),
        "qrs_onsets": ecg.qrs_onsets,
        "beat_types": np.array(ecg.beat_types, dtype="<U1"),
        "p_onsets": ecg.p_onsets,
    }
    if mask is not None:
        arrays["trace_mask"] = mask
    (d / f"{stem}.npz").write_bytes(_npz_bytes(arrays))
    side = {
        "file": f"{stem}.{cfg.fmt}",
        "class": cls,
        "seed": {
            "seed": cfg.seed,
            "class_index": CLASSES.index(cls),
            "index": index,
            "derivation": "SeedSequence([seed, class_index, index])",
        },
        "distort": cfg.distort,
        **params,
    }
    (d / f"{stem}.json").write_text(json.dumps(side, indent=1, sort_keys=True, default=_json_default))
    return cls


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def generate(
    out: str | os.PathLike[str],
    per_class: int = 10,
    seed: int = 0,
    distort: str = "none",
    fmt: str = "jpg",
    workers: int = 1,
    progress: bool = True,
    style: PageStyle | str | None = None,
    layout: str = DEFAULT_LAYOUT,
    trace_masks: bool = False,
) -> str:
    """Write `per_class` pages per class under `out` (see module doc); returns a one-paragraph summary.

    `layout`: a key of LAYOUTS ("3x4+1" default, "3x4", "6x2", "12x1", "3x4+3", "6x2+1") or "random"
    (one per page); recorded in synth_config.json and each sidecar (its "truth" has the geometry).
    `style`: a PageStyle, a name of ecgvit.synth.styles.STYLES ("khan" default, "ge_mac", "philips",
    ...) or "random" (ecgvit.synth.styles.sample_style per page; the sidecar's "page_style" has it).
    `trace_masks`: also store each page's trace mask (see make_page) in its .npz as "trace_mask".
    """
    validate(per_class, seed, distort, fmt, workers, layout)
    random_style = isinstance(style, str) and style == "random"
    st = KHAN_STYLE if style is None or random_style else _styles.get_style(style)
    cfg = SynthConfig(
        per_class=int(per_class),
        seed=int(seed),
        distort=distort,
        fmt=fmt,
        style=st,
        layout=layout,
        random_style=random_style,
        trace_masks=bool(trace_masks),
    )
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise ValueError(f"out={str(out)!r}: exists and is not a folder")
    for c in cfg.classes:
        (outp / c).mkdir(parents=True, exist_ok=True)
    cfg_d = asdict(cfg)
    cfg_d["leads"] = list(LEADS)
    cfg_d["fs"] = FS
    (outp / "synth_config.json").write_text(json.dumps(cfg_d, indent=1, sort_keys=True, default=_json_default))
    jobs = [(str(outp), c, i, cfg) for c in cfg.classes for i in range(cfg.per_class)]
    total = len(jobs)
    if not random_style and layout != "random":
        template(cfg.style, cfg.layout)  # drawn once here; each worker process draws its own
    counts, dt = run_jobs(_write_page, jobs, cfg.classes, int(workers), progress, desc="synth", unit="page")
    per = ", ".join(f"{n} {c}" for c, n in counts.items())
    return (
        f"Wrote {total} synthetic ECG pages ({per}) as {fmt.upper()} in layout {layout}, style {'random' if random_style else cfg.style.family}, with distortion '{distort}' and seed {seed} "
        f"to {outp.resolve()} (one folder per class; each page has a .npz of its 12-lead signals and a .json of its parameters) "
        f"in {dt:.1f} s, {total / max(dt, 1e-9):.1f} pages/s with {workers} worker{'s' if workers > 1 else ''}."
    )
