"""How much accuracy the CV models lose when the generator's distortions (rotation, perspective,
blur, tone, colour cast, shadow, creases, noise, JPEG) are applied to their held-out real pages.

    python benchmarks/distortion_drop.py runs/khan_cv/ecgvit-tiny [--levels light,heavy] [--seed 0]

For every fold run of a `ecgvit cv` folder: its validation pages (never trained on), clean and
distorted, each distinct page scored once; pooled over folds. Writes OUT/distortion_drop.json.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ecgvit.config import save_json
from ecgvit.data.preprocess import draft_size, load_page_array, preprocess_image
from ecgvit.metrics import compute_metrics
from ecgvit.models.inference import predict_proba
from ecgvit.run import load_run
from ecgvit.synth.distort import apply


def page_arrays(paths: list[str], run, level: str, seed: int) -> np.ndarray:
    # Every page goes through the decoder exactly as predict does (JPEG draft mode): the model
    # is sensitive to the decode path, so the clean baseline must take the same one.
    cfg = run.preprocess
    out = []
    for i, p in enumerate(paths):
        if level == "none":
            out.append(load_page_array(p, cfg).array)
            continue
        a, params = apply(np.asarray(Image.open(p).convert("RGB")), np.random.default_rng([seed, i]), level)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=int(params.get("jpeg_quality", 90)))
        img = Image.open(io.BytesIO(buf.getvalue()))
        img.draft("RGB", draft_size(cfg))
        out.append(preprocess_image(img.convert("RGB"), cfg).array)
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cv_dir")
    ap.add_argument("--levels", default="none,light,heavy")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    folds = sorted(Path(a.cv_dir).glob("r0_fold*"))
    if not folds:
        raise SystemExit(f"{a.cv_dir}: no r0_fold* runs (make them with `ecgvit cv`)")
    levels = a.levels.split(",")
    ys: list[int] = []
    probs: dict[str, list[np.ndarray]] = {lv: [] for lv in levels}
    classes: list[str] = []
    for fd in folds:
        run = load_run(fd)
        classes = run.classes
        pages = [r for r in csv.DictReader(open(fd / "pages.csv")) if r["part"] == "val"]
        paths = [p["path"] for p in pages]
        ys.extend(classes.index(p["label"]) for p in pages)
        for lv in levels:
            probs[lv].append(predict_proba(run.model, page_arrays(paths, run, lv, a.seed)))
        print(f"{fd.name}: {len(paths)} pages", flush=True)
    y = np.array(ys)
    result = {}
    print(f"{'distortion':<12}{'n':>5}{'accuracy':>10}{'macro-F1':>10}   macro-F1 95% CI")
    for lv in levels:
        m = compute_metrics(y, np.concatenate(probs[lv]), classes)
        result[lv] = {k: m[k] for k in ("n", "accuracy", "macro_f1", "balanced_accuracy", "ci95", "per_class")}
        lo, hi = m["ci95"]["macro_f1"]
        print(f"{lv:<12}{m['n']:>5}{m['accuracy']:>10.3f}{m['macro_f1']:>10.3f}   [{lo:.3f}, {hi:.3f}]")
    save_json(Path(a.cv_dir) / "distortion_drop.json", result)


if __name__ == "__main__":
    main()
