"""Training-step and forward time of a model, against its own baseline set-up in the same run.

    python benchmarks/train_step_bench.py [--model ecgvit-tiny] [--batch 32] [--rounds 8] [--threads 2]
    python benchmarks/train_step_bench.py --compare ecgvit-tiny,ecgvit-tiny-p4

Times one optimiser step (prepare_batch + ECG augmentation + forward + backward + AdamW, as
`ecgvit train` runs it) and one eval forward on a batch of generated pages, for variants of
the same model and augmentation. `ecgvit train` uses all of: channels-last layout (when the
ModelSpec says so), `ecgvit.models.ecg_vit.Dropout` (two 15-bit mask lanes per int32 draw)
and `ecgvit.train.affine_grid` (two broadcast adds). The baseline has none of them: contiguous
layout, `torch.nn.Dropout` (masks drawn with `bernoulli_`) and `F.affine_grid` (a batched
matmul). "float-rand dropout" is the dropout `ecgvit train` used before, one `torch.rand` float
per element. Variants run in interleaved rounds and the median is reported, so a slow spell of
the machine hits every variant alike; the ratio column is against the baseline.

`--compare A,B,...` times registered models instead, each with the set-up `ecgvit train` gives
it, in interleaved rounds; the ratio column is against the first (e.g. `ecgvit-tiny-p4`'s
patchify stem against `ecgvit-tiny`'s 3x3 one).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class FloatRandDropout(nn.Dropout):
    """The dropout `ecgvit train` used before the 15-bit lanes: one `torch.rand` per element."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return torch.where(torch.rand_like(x) >= self.p, x * (1.0 / (1.0 - self.p)), 0.0)


def torch_affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.affine_grid(theta, [theta.shape[0], 1, height, width], align_corners=False)


def build(model: str, channels_last: bool, dropout: str, seed: int = 0) -> nn.Module:
    """dropout: "torch" (nn.Dropout), "float-rand" (FloatRandDropout) or "lanes" (ecg_vit.Dropout)."""
    from ecgvit.models import create_model, get_spec
    from ecgvit.models.ecg_vit import Dropout

    spec = get_spec(model)
    torch.manual_seed(seed)
    m = create_model(model, num_classes=4, img_size=spec.img_size, in_chans=spec.in_chans, **spec.kwargs)
    kind = {"torch": nn.Dropout, "float-rand": FloatRandDropout, "lanes": Dropout}[dropout]
    for mod in list(m.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(mod, name, kind(child.p))
    return m.to(memory_format=torch.channels_last) if channels_last else m


def pages(model: str, n: int, seed: int = 0) -> np.ndarray:
    """Generated pages, preprocessed as training sees them (uint8 crops)."""
    import tempfile
    from pathlib import Path

    from ecgvit.data.preprocess import load_page_array
    from ecgvit.models import get_spec
    from ecgvit.synth import generate

    spec = get_spec(model)
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, per_class=max(1, n // 4), seed=seed, progress=False)
        files = sorted(Path(tmp).rglob("*.jpg"))
        arrays = np.stack([load_page_array(f, spec.preprocess()).array for f in files])
    reps = int(np.ceil(n / len(arrays)))
    return np.concatenate([arrays] * reps)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ecgvit-tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--compare",
        default="",
        help="comma-separated registered models to time against the first, instead of --model's variants",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import ecgvit.engine.train as train_mod
    from ecgvit.models import get_spec, prepare_batch

    y = torch.arange(args.batch) % 4
    gen = torch.Generator().manual_seed(0)
    ours_grid = train_mod.affine_grid
    # name: (model, channels-last, dropout, affine grid)
    if args.compare:
        names = [n.strip() for n in args.compare.split(",") if n.strip()]
        variants = {n: (n, get_spec(n).channels_last, "lanes", ours_grid) for n in names}
    else:
        default_cl = get_spec(args.model).channels_last
        variants = {
            "baseline": (args.model, False, "torch", torch_affine_grid),
            "channels-last only": (args.model, True, "torch", torch_affine_grid),
            "float-rand dropout only": (args.model, False, "float-rand", torch_affine_grid),
            "lane dropout only": (args.model, False, "lanes", torch_affine_grid),
            "broadcast affine grid only": (args.model, False, "torch", ours_grid),
            "ecgvit train before (cl, float-rand)": (args.model, default_cl, "float-rand", torch_affine_grid),
            "all three (ecgvit train)": (args.model, default_cl, "lanes", ours_grid),
        }
    inputs = {name: pages(name, args.batch) for name in {v[0] for v in variants.values()}}
    models = {k: build(name, cl, drop) for k, (name, cl, drop, _) in variants.items()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}

    def step(k: str) -> None:
        m = models[k].train()
        train_mod.affine_grid = variants[k][3]  # augment_batch looks it up at call time
        xb = train_mod.augment_batch(prepare_batch(inputs[variants[k][0]]), gen)
        loss = nn.functional.cross_entropy(m(xb), y)
        opts[k].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opts[k].step()

    @torch.no_grad()
    def forward(k: str) -> None:
        models[k].eval()(prepare_batch(inputs[variants[k][0]]))

    times: dict[str, dict[str, list[float]]] = {k: {"step": [], "forward": []} for k in variants}
    for k in variants:  # warm-up
        step(k)
        forward(k)
    for _ in range(args.rounds):
        for k in variants:
            for what, fn in (("step", step), ("forward", forward)):
                t = time.perf_counter()
                for _ in range(args.steps):
                    fn(k)
                times[k][what].append((time.perf_counter() - t) / args.steps * 1000)

    first = next(iter(variants))  # "baseline", or the first model of --compare
    base = {w: float(np.median(times[first][w])) for w in ("step", "forward")}
    what = (
        f"models against {first}"
        if args.compare
        else f"{args.model} (channels-last in `ecgvit train`: {'yes' if default_cl else 'no'})"
    )
    print(f"{what}, batch {args.batch}, {args.threads} threads, median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'variant':38s} {'train step ms':>14s} {'ratio':>6s} {'forward ms':>11s} {'ratio':>6s}")
    for k in variants:
        s, f = float(np.median(times[k]["step"])), float(np.median(times[k]["forward"]))
        print(f"{k:38s} {s:14.1f} {s / base['step']:6.2f} {f:11.1f} {f / base['forward']:6.2f}")
    if args.compare:
        for k in list(variants)[1:]:
            paired = np.median(np.array(times[k]["step"]) / np.array(times[first]["step"]))
            print(f"{k} / {first}: train step {paired:.3f} (median of per-round ratios)")
        return
    before = float(np.median(times["ecgvit train before (cl, float-rand)"]["step"]))
    now = float(np.median(times["all three (ecgvit train)"]["step"]))
    paired = np.median(
        np.array(times["all three (ecgvit train)"]["step"])
        / np.array(times["ecgvit train before (cl, float-rand)"]["step"])
    )
    print(f"ecgvit train now / before: {now / before:.3f} (median of per-round ratios {paired:.3f})")


if __name__ == "__main__":
    main()
