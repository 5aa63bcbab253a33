"""Real recorded ECGs drawn as pages: a folder of 12-lead records in random generator styles.

    from ecgvit.synth.records import load_records, write_record_pages
    recs = load_records("ptbxl_z", split="train")          # the ptbxl_z layout (see its .md)
    write_record_pages("pages", recs, seed=0, workers=2)   # pages/<class>/<record>.jpg

The folder layout is `../shared/data/ptbxl_z`'s: `labels.csv` (ecg_id, split, label_hint, ...)
and `records/<ecg_id>.npy` (int16, (n, 12) at 250 Hz, z-score x 1000, leads I II III aVR aVL aVF
V1-V6). Records have no millivolts (each lead z-scored), so they are drawn at a fixed gain of
`MV_PER_SD` mV per sd: a model that scales each panel to its own amplitude (the "signals" form)
reads them as it reads any page.

Labels: PTB-XL superclasses map onto two of the four Khan classes: `normal` (NORM and nothing
else) -> normal; `mi_any` (any MI statement, which in PTB-XL describes an established infarct's
territory, not an acute event) -> history_of_mi. `other` (ST-T changes, conduction disturbances,
hypertrophy) matches no Khan class and is left out.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ecgvit.synth import distort as _distort
from ecgvit.synth import styles as _styles
from ecgvit.synth.jobs import run_jobs
from ecgvit.synth.page import random_meta, render
from ecgvit.synth.signals import FS

__all__ = ["LABEL_OF_HINT", "MV_PER_SD", "Record", "load_records", "write_record_pages"]

MV_PER_SD = 0.3  # the drawing gain of z-scored leads (a typical limb lead's sd is 0.1-0.4 mV)
LABEL_OF_HINT = {"normal": "normal", "mi_any": "history_of_mi"}
_RECORD_FS = 250


@dataclass(frozen=True)
class Record:
    name: str
    label: str  # a Khan class name
    signals: np.ndarray  # (12, 5000) float32 mV at 500 Hz


def load_records(folder: str | os.PathLike[str], split: str = "train", limit: int = 0) -> list[Record]:
    """The records of `split` whose label maps to a Khan class (`LABEL_OF_HINT`), in file order."""
    root = Path(folder)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise ValueError(f"{root}: no labels.csv (expected the ptbxl_z layout: labels.csv + records/<id>.npy)")
    out: list[Record] = []
    with open(labels, newline="") as f:
        for row in csv.DictReader(f):
            label = LABEL_OF_HINT.get(row.get("label_hint", ""))
            if row.get("split") != split or label is None:
                continue
            z = np.load(root / "records" / f"{row['ecg_id']}.npy").astype(np.float32) / 1000.0  # (n, 12)
            t_in = np.arange(z.shape[0]) / _RECORD_FS
            t_out = np.arange(int(round(z.shape[0] * FS / _RECORD_FS))) / FS
            mv = np.stack([np.interp(t_out, t_in, z[:, k]) for k in range(12)]) * MV_PER_SD
            out.append(Record(f"ptbxl_{row['ecg_id']}", label, mv.astype(np.float32)))
            if limit and len(out) >= limit:
                break
    return out


def _write(out: str, rec: Record, seed: int, index: int, distort: str) -> str:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 28]))
    st, layout = _styles.sample_style(rng)
    meta = random_meta(rng, 70.0)
    if st.family != "khan":
        meta.update(_styles.extra_meta(rng, {}))
    a = render(rec.signals, st, meta, FS, layout)
    a, dp = _distort.apply(a, rng, distort)
    d = Path(out) / rec.label
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(d / f"{rec.name}.jpg", quality=int(dp.get("jpeg_quality", st.jpeg_quality)))
    return rec.label


def write_record_pages(
    out: str | os.PathLike[str],
    records: list[Record],
    seed: int = 0,
    distort: str = "none",
    workers: int = 1,
    progress: bool = False,
) -> str:
    """Draw each record as one page in a random style and layout (`sample_style`), `distort`ed,
    under out/<class>/; returns a one-line summary."""
    if distort not in _distort.LEVELS:
        raise ValueError(f"distort={distort!r}: expected one of {', '.join(_distort.LEVELS)}")
    jobs = [(str(out), r, int(seed), i, distort) for i, r in enumerate(records)]
    keys = sorted({r.label for r in records})
    counts, dt = run_jobs(_write, jobs, keys, int(workers), progress, desc="records", unit="page")
    per = ", ".join(f"{n} {c}" for c, n in counts.items())
    return f"Wrote {len(jobs)} record pages ({per}) to {out} in {dt:.1f} s."
