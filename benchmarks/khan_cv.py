"""5-fold grouped CV on the real Khan pages: the CPU ViT, its variants, CNN baselines, and
vit-seed (forward cost only). One table: params, GFLOPs, train time per fold, peak memory,
macro-F1 mean ± sd, accuracy mean ± sd.

    python benchmarks/khan_cv.py --data ../shared/data/khan [--models ecgvit-tiny,mobilenetv4_conv_small,vit-seed] [--folds 5] [--out runs/khan_cv]

A model written NAME@TEACHER (teachers joined by "+") is distilled from TEACHER, e.g.
`ecgvit-tiny@mobilenetv4_conv_small`: each fold learns from the teacher's run on the same fold,
taken from OUT/TEACHER when that CV is finished (list the teacher first; its time is then not
in the student's "train s/fold", which says so), else trained inside the fold.

Each model runs in its own process (so its peak resident memory is its own) and its row is
appended to OUT/table.md as soon as it is done; re-running skips finished folds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, torch
from ecgvit.engine.cv import cross_validate
from ecgvit.models import get_spec
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
over = {"epochs": a["epochs"]} if a["epochs"] else {}
over["teacher"] = a["teacher"] or None  # NAME alone is trained alone, whatever its default teacher
s = cross_validate(a["data"], a["out"], model=a["model"], folds=a["folds"], repeats=a["repeats"], train_overrides=over,
                   preprocess=get_spec(a["model"]).preprocess(), progress=False)
s["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({k: s[k] for k in ("accuracy", "macro_f1", "per_fold", "peak_rss_mib", "seconds")}))
"""


def forward_speed(name: str, threads: int, batch: int = 8, reps: int = 3) -> float:
    import torch

    from ecgvit.models import create_model, get_spec

    torch.set_num_threads(threads)
    spec = get_spec(name)
    m = create_model(name).eval()
    x = torch.zeros(batch, spec.in_chans, *spec.img_size)
    with torch.no_grad():
        m(x)
        t = time.perf_counter()
        for _ in range(reps):
            m(x)
    return batch * reps / (time.perf_counter() - t)


def main() -> None:
    from ecgvit.config import DEFAULT_MODEL
    from ecgvit.models import count_gflops, count_params, create_model, get_spec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/khan")
    # mobilenetv4_conv_small: the CNN that trains at the default ViT's cost here (~4-7 min per
    # fold); resnet18 (~20 min per fold) and convnext_atto are registered too (see MODEL_CARD.md).
    ap.add_argument("--models", default=f"{DEFAULT_MODEL},mobilenetv4_conv_small,vit-seed")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=0, help="0: each recipe's default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/khan_cv")
    a = ap.parse_args()
    if not Path(a.data).exists():
        sys.exit(f"{a.data}: not found (run ../shared/data/khan.sh first)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "table.md"
    header = "| model | params | GFLOPs | fwd img/s | train s/fold | peak MiB | macro-F1 | accuracy | per-fold macro-F1 |\n|---|---|---|---|---|---|---|---|---|\n"
    if not table.exists():
        table.write_text(header)
    for entry in a.models.split(","):
        name, _, teacher_names = entry.partition("@")
        teachers = []
        for t in filter(None, teacher_names.split("+")):
            done = (out / t / "cv.json").exists()
            teachers.append(str(out / t) if done else t)
        spec = get_spec(name)
        m = create_model(name)
        params, gflops = count_params(m) / 1e6, count_gflops(m, spec.img_size, spec.in_chans)
        speed = forward_speed(name, a.threads)
        if not spec.trainable_here:
            row = f"| {entry} | {params:.2f} M | {gflops:.2f} | {speed:.1f} | (forward only) | | | | |\n"
        else:
            args = {
                "data": a.data,
                "out": str(out / entry),
                "model": name,
                "teacher": ",".join(teachers),
                "folds": a.folds,
                "repeats": a.repeats,
                "epochs": a.epochs,
                "threads": a.threads,
            }
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-3000:], file=sys.stderr)
                row = f"| {entry} | {params:.2f} M | {gflops:.2f} | {speed:.1f} | failed (see stderr) | | | | |\n"
            else:
                s = json.loads(r.stdout.split("RESULT ", 1)[1])
                secs = sum(f["train_seconds"] for f in s["per_fold"]) / len(s["per_fold"])
                reused = [Path(t).name for t in teachers if Path(t).is_dir()]
                if reused:  # the teachers' own training is in their rows
                    secs = f"{secs:.0f} + {' + '.join(reused)}'s"
                else:
                    secs = f"{secs:.0f}"
                folds = " ".join(f"{f['macro_f1']:.2f}" for f in s["per_fold"])
                row = (
                    f"| {entry} | {params:.2f} M | {gflops:.2f} | {speed:.1f} | {secs} | {s['peak_rss_mib']:.0f} | "
                    f"{s['macro_f1']['mean']:.3f} ± {s['macro_f1']['sd']:.3f} | {s['accuracy']['mean']:.3f} ± {s['accuracy']['sd']:.3f} | {folds} |\n"
                )
        with open(table, "a") as f:
            f.write(row)
        print(row, end="", flush=True)
    print(f"\n{table}:\n{table.read_text()}")


if __name__ == "__main__":
    main()
