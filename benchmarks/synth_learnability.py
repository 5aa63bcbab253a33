"""Are the synthetic classes learnable from the page image? Train a small CNN, test on fresh pages.

    python benchmarks/synth_learnability.py [--train 200] [--test 100] [--epochs 12] [--distort none]

Train: `--train` pages per class from seed 1000; test: `--test` pages per class from seed 2000
(disjoint RNG streams). Pages are made in memory (`make_page`), JPEG round-tripped like the
files `ecgvit synth` writes, cropped to the printed grid box, turned grayscale and shrunk to
128x192 (INTER_AREA). Torch runs on 1 thread. Prints macro-F1, per-class F1 and the confusion matrix.
"""

from __future__ import annotations

import argparse
import io
import time

import cv2
import numpy as np
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix, f1_score

from ecgvit.synth import CLASSES, KHAN_STYLE, encode, make_page, page_rng


def pages(n_per_class: int, seed: int, distort: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    l, t, r, b = KHAN_STYLE.grid_box
    X = np.empty((n_per_class * len(CLASSES), 1, h, w), np.float32)
    y = np.empty(n_per_class * len(CLASSES), np.int64)
    k = 0
    for i in range(n_per_class):
        for c, cls in enumerate(CLASSES):
            img, _, p = make_page(cls, page_rng(seed, cls, i), distort=distort, as_array=True)
            im = Image.open(io.BytesIO(encode(img, "jpg", p["jpeg_quality"]))).convert("L")
            g = np.asarray(im)[t:b, l:r]
            X[k, 0] = 1.0 - cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            y[k] = c
            k += 1
    return X, y


def net(n_classes: int) -> torch.nn.Module:
    def blk(i: int, o: int) -> list[torch.nn.Module]:
        return [
            torch.nn.Conv2d(i, o, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(o),
            torch.nn.ReLU(inplace=True),
            torch.nn.MaxPool2d(2),
        ]

    return torch.nn.Sequential(
        *blk(1, 16),
        *blk(16, 32),
        *blk(32, 64),
        *blk(64, 96),
        *blk(96, 128),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(128, n_classes),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--distort", default="none", choices=["none", "light", "heavy"])
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=192)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    Xtr, ytr = pages(a.train, 1000, a.distort, (a.height, a.width))
    Xte, yte = pages(a.test, 2000, a.distort, (a.height, a.width))
    t_gen = time.perf_counter() - t0
    mu, sd = float(Xtr.mean()), float(Xtr.std()) + 1e-6
    Xtr, Xte = torch.from_numpy((Xtr - mu) / sd), torch.from_numpy((Xte - mu) / sd)
    ytr_t = torch.from_numpy(ytr)
    model = net(len(CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = a.epochs * ((len(ytr) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    t1 = time.perf_counter()
    for ep in range(a.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        tot = 0.0
        for s in range(0, len(perm), 32):
            idx = perm[s : s + 32]
            xb = Xtr[idx]
            # small random shifts so the net cannot key on exact pixel positions
            dx, dy = int(torch.randint(-4, 5, (1,), generator=g)), int(torch.randint(-3, 4, (1,), generator=g))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        print(f"epoch {ep + 1}/{a.epochs} loss {tot / len(ytr):.3f}", flush=True)
    t_train = time.perf_counter() - t1
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(Xte[s : s + 64]).argmax(1) for s in range(0, len(Xte), 64)]).numpy()
    f1 = f1_score(yte, pred, average="macro")
    print(
        f"\nsynthetic learnability: {a.train}/class train (seed 1000), {a.test}/class test (seed 2000), distort={a.distort}, {a.height}x{a.width} gray"
    )
    print(f"macro-F1 {f1:.3f}   accuracy {(pred == yte).mean():.3f}")
    for c, v in zip(CLASSES, f1_score(yte, pred, average=None), strict=False):
        print(f"  F1 {c:<22} {v:.3f}")
    print("confusion (rows true, cols predicted, order " + ", ".join(CLASSES) + "):")
    print(confusion_matrix(yte, pred))
    print(f"time: pages {t_gen:.0f} s, training {t_train:.0f} s")


if __name__ == "__main__":
    main()
