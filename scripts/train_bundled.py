"""Reproduce the model shipped inside the package (src/ecgvit/weights/<name>/).

    ../shared/data/ptbxl_z.sh /tmp/ptbxl_z
    python scripts/train_bundled.py --data ../shared/data/khan [--seed 0] [--epochs N] [--model NAME] [--teacher NAME|none]

Trains the shipped recipe (ecgvit-tiny-leads: see BUNDLED_* below; `--teacher NAME` distils from
a CNN trained first with the same recipe on the same pages, for --teacher-epochs) on every
distinct page of the data folder (no validation part: the epoch count comes from
grouped CV, see MODEL_CARD.md), copies model.safetensors and a config.json (with
machine-specific paths removed) into the package, then fits the out-of-scope gate there
(`ecgvit calibrate`) and exports model.onnx beside it (`ecgvit export`): thresholds from the
training pages, the temperature from the out-of-fold predictions of a 5-fold CV of the same
recipe (--oof; `ecgvit cv` writes oof.csv), since a model trained on every page has no
held-out pages of its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from ecgvit.config import TrainConfig, save_json

# The ViT alone at its spec's 288x320 input for 90 epochs (`ecgvit train`'s default): 5-fold CV
from ecgvit.engine.train import train, train_teacher
from ecgvit.models import get_spec
from ecgvit.run import BUNDLED_NAME, bundled_dir

# The shipped recipe: ecgvit-tiny on the page reader's leads (canonical 3x4+1 redraw of the read
# signals), synthetic pretraining in every generator style and layout plus PTB-XL's normal and MI
# training records drawn as pages, then 60 epochs on the Khan pages with half of each batch
# restyled (the page's own signals redrawn by another cart) and a quarter of each batch taken from
# those PTB-XL records drawn again in other styles (co-training). Its 5-fold CV is in MODEL_CARD.md;
# the Khan-template page model shipped before it (ecgvit-tiny, 90 epochs) stays bundled as
# ecgvit-tiny-khan.
BUNDLED_EPOCHS = 60  # what the shipped model was trained with (its config.json records it)
BUNDLED_MODEL = "ecgvit-tiny-leads"
BUNDLED_RESTYLE = 0.5
BUNDLED_RECORDS = "/tmp/ptbxl_z"
BUNDLED_COTRAIN_SHARE = 0.25
# A teacher's own epochs when one is named: the CV that measured distillation (at 192x320)
# distilled from CNN folds trained for 40 (runs/khan_cv/mobilenetv4_conv_small).
TEACHER_EPOCHS = 40
# The out-of-fold predictions of the CV of the shipped recipe, for the gate's temperature.
BUNDLED_OOF = "runs/cv_leads_co/oof.csv"
BUNDLED_OOF_COMMAND = (
    "ecgvit cv --data ../shared/data/khan --folds 5 --epochs 60 --model ecgvit-tiny-leads --restyle 0.5 "
    "--pretrain-records /tmp/ptbxl_z --cotrain-records /tmp/ptbxl_z --out runs/cv_leads_co"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/khan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--epochs",
        type=int,
        default=BUNDLED_EPOCHS,
        help=f"default {BUNDLED_EPOCHS}: the shipped model's, as in the CV of the recipe (MODEL_CARD.md)",
    )
    ap.add_argument("--model", default=BUNDLED_MODEL, help=f"model to train (default {BUNDLED_MODEL}: the shipped one)")
    ap.add_argument("--out", default="runs/bundled")
    ap.add_argument(
        "--teacher",
        default="none",
        help="model distilled into the ViT, trained first on the same pages (default none: the ViT alone, as shipped)",
    )
    ap.add_argument(
        "--teacher-epochs",
        type=int,
        default=TEACHER_EPOCHS,
        help=f"epochs of the teacher (default {TEACHER_EPOCHS}, as in the CV that measured distillation); trained once into OUT-teacher-eE-sS/teacher-NAME and reused while its settings match",
    )
    ap.add_argument(
        "--oof",
        default=None,
        help=f"out-of-fold predictions of the same recipe, for the temperature (default: {BUNDLED_OOF} without a teacher, else benchmarks/khan_cv.py's for that recipe)",
    )
    ap.add_argument(
        "--restyle", type=float, default=BUNDLED_RESTYLE, help=f"TrainConfig.restyle (default {BUNDLED_RESTYLE})"
    )
    ap.add_argument(
        "--pretrain-records",
        default=BUNDLED_RECORDS,
        help=f"TrainConfig.pretrain_records (default {BUNDLED_RECORDS}: ../shared/data/ptbxl_z.sh {BUNDLED_RECORDS}; 'none': off)",
    )
    ap.add_argument(
        "--cotrain-share",
        type=float,
        default=BUNDLED_COTRAIN_SHARE,
        help=f"TrainConfig.cotrain_share: the share of each batch from --pretrain-records' records (default {BUNDLED_COTRAIN_SHARE}; 0: off)",
    )
    ap.add_argument("--no-install", action="store_true", help="train only; do not copy into the package")
    a = ap.parse_args()
    if not Path(a.data).exists():
        sys.exit(f"{a.data}: not found (run ../shared/data/khan.sh first)")
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    t = time.time()
    teacher = None if a.teacher in ("", "none") else a.teacher
    a.oof = a.oof or (f"runs/khan_cv/ecgvit-tiny@{teacher}/oof.csv" if teacher else BUNDLED_OOF)
    # No weight averaging: the CV that measured this recipe had none.
    records = None if a.pretrain_records in ("", "none") else a.pretrain_records
    if records is not None and not Path(records, "labels.csv").exists():
        sys.exit(f"{records}: no labels.csv (unpack the records first: ../shared/data/ptbxl_z.sh {records})")
    cfg = TrainConfig(
        model=a.model,
        restyle=a.restyle,
        pretrain_records=records,
        cotrain_records=records if a.cotrain_share > 0 else None,
        cotrain_share=a.cotrain_share if records is not None else 0.0,
        epochs=a.epochs,
        seed=a.seed,
        val_fraction=0.0,
        patience=0,
        gate=False,
        teacher=teacher,
        teacher_epochs=a.teacher_epochs,
        average_last=0.0,
    )
    if teacher:
        # Trained (or reused) beside OUT rather than inside it: OUT is cleared on every run, the
        # teacher (~9 min) need not be.
        keep = Path(f"{a.out}-teacher-e{a.teacher_epochs}-s{a.seed}")
        cfg = replace(
            cfg, teacher=train_teacher(teacher, a.data, keep, cfg, get_spec(cfg.model).preprocess(), True, None, None)
        )
    train(a.data, out, cfg, preprocess=get_spec(a.model).preprocess())
    print(f"trained in {time.time() - t:.0f} s")
    if a.no_install:
        return
    dest = bundled_dir()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "model.safetensors", dest / "model.safetensors")
    meta = json.loads((out / "config.json").read_text())
    meta["data"]["source"] = "Khan & Hussain (2021), Mendeley Data V2, doi:10.17632/gwbz3fsgp8.2, CC BY 4.0"
    t = meta["train"]
    # The cache path of the pretrained weights means nothing on another machine: say what it was.
    meta["initial_weights"] = (
        f"synthetic pretraining: {t['pretrain_per_class']} pages/class, seed {t['pretrain_seed']}, {t['pretrain_epochs']} epochs"
    )
    if t.get("pretrain_records"):  # a local path too
        t["pretrain_records"] = "PTB-XL z-scored records (ptbxl_z: train split, normal and MI), drawn as pages"
    if t.get("cotrain_records"):
        t["cotrain_records"] = (
            "PTB-XL z-scored records (ptbxl_z: train split, normal and MI), drawn again in other styles"
        )
    if teacher:  # the teacher's run folder is a local path: say what it was instead
        t["teacher"] = f"{teacher} (trained first with the same recipe on the same pages, {a.teacher_epochs} epochs)"
    meta["bundled"] = {
        "name": BUNDLED_NAME,
        "seed": a.seed,
        "epochs": a.epochs,
        "teacher": teacher,
        "teacher_epochs": a.teacher_epochs if teacher else None,
        "script": "scripts/train_bundled.py",
    }
    save_json(dest / "config.json", meta)
    size = (dest / "model.safetensors").stat().st_size / 1e6
    print(f"installed {BUNDLED_NAME} into {dest} ({size:.1f} MB)")
    from ecgvit.engine.calibrate import calibrate, format_calibration

    oof = a.oof if Path(a.oof).exists() else None
    if oof is None:
        print(
            f"warning: {a.oof} not found: the gate's temperature stays 1 (make it first: `{BUNDLED_OOF_COMMAND if not teacher else 'python benchmarks/khan_cv.py'}`)"
        )
    print(format_calibration(calibrate(dest, data=a.data, oof=oof)))
    # Shipped beside the weights, so `ecgvit predict` runs ONNX Runtime out of the box (it checks
    # the file was exported from these very weights, else it falls back to PyTorch and says so).
    from ecgvit.export import export_onnx

    rep = export_onnx(dest)
    onnx_mb = (dest / "model.onnx").stat().st_size / 1e6
    print(
        f"exported {dest / 'model.onnx'} ({onnx_mb:.1f} MB, opset {rep['opset']}, parity {rep['max_abs_logit_diff']:.1e})"
    )


if __name__ == "__main__":
    main()
