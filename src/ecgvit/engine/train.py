"""Training: one loop you can read top to bottom (nanoGPT-style).

    ecgvit train --data DIR|MANIFEST --out RUN [--model NAME] [--split splits.csv --fold K] [--teacher RUN|NAME] [--resume]

What happens, in order:
  1. the data is indexed (or the manifest read); only distinct, readable pages are used, one per
     duplicate group, so a page and its copies can never sit on both sides of a split;
  2. train/validation: the named fold of a split file, or a grouped, stratified hold-out;
  3. pages are preprocessed through the on-disk cache and kept in memory as uint8;
  4. AdamW, linear warmup + cosine decay, label-smoothed cross-entropy, class-balanced sampling,
     ECG-safe augmentation (no flips: a flipped ECG is another ECG); with --teacher (auto: the
     model's own, `ecgvit models`: a CNN for the ViT), a KL term to the teacher's tempered
     probabilities on the same batch (the teacher trained first when it is named by model);
  5. after every epoch: validation macro-F1, a metrics.csv row, an atomic resume checkpoint, and
     model.safetensors + config.json whenever validation macro-F1 improves; early stopping.
Under `torchrun --nproc_per_node=N` the same code runs DistributedDataParallel (gloo on CPU,
nccl on GPU); rank 0 alone logs and writes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from ecgvit._version import __version__
from ecgvit.config import (
    KHAN_CLASSES,
    IndexConfig,
    PreprocessConfig,
    TrainConfig,
    from_dict,
    saved_train_settings,
    to_dict,
)
from ecgvit.data.pageset import holdout_split, load_pageset, split_from_file
from ecgvit.data.preprocess import default_cache_dir, load_arrays
from ecgvit.engine.calibrate import calibrate, format_calibration
from ecgvit.engine.restyle import restyled_arrays
from ecgvit.engine.teachers import check_teacher, load_teacher, resolve_teacher, teacher_epochs
from ecgvit.models import count_params, create_model, get_spec, prepare_batch
from ecgvit.models.inference import predict_proba
from ecgvit.run import Run, exclusive, publish, read_json
from ecgvit.synth import generate
from ecgvit.synth.records import load_records, write_record_pages

log = logging.getLogger("ecgvit")

# --- augmentation ---------------------------------------------------------------------------


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`F.affine_grid(theta, (N, C, height, width), align_corners=False)`, equal to float rounding.

    torch builds the grid as a batched matmul of every pixel's (x, y, 1) with theta, an inner
    dimension of 3 that ran at ~1/3 of a training step's augmentation here. The map is affine,
    so each output coordinate is a sum of a per-column and a per-row term: one broadcast add each.
    """
    n = theta.shape[0]
    xs = (torch.arange(width, dtype=theta.dtype, device=theta.device) * 2 + 1) / width - 1  # pixel centres in (-1, 1)
    ys = (torch.arange(height, dtype=theta.dtype, device=theta.device) * 2 + 1) / height - 1
    grid = torch.empty(n, height, width, 2, dtype=theta.dtype, device=theta.device)
    for k in range(2):  # output x, then y: theta[:, k] . (x, y, 1)
        per_col = theta[:, k, 0, None] * xs  # (N, W)
        per_row = theta[:, k, 1, None] * ys + theta[:, k, 2, None]  # (N, H)
        torch.add(per_col[:, None, :], per_row[:, :, None], out=grid[..., k])
    return grid


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """ECG-safe augmentation of a batch (ink high, paper 0): the page may sit a little askew,
    scaled, blurred, fainter or noisier — never flipped (a flipped lead is another diagnosis)."""
    b = x.shape[0]

    def u(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = u(-1.5, 1.5) * math.pi / 180
    sx, sy = u(0.94, 1.06), u(0.94, 1.06)
    tx, ty = u(-0.03, 0.03), u(-0.03, 0.03)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos / sx, -sin / sx, tx], 1), torch.stack([sin / sy, cos / sy, ty], 1)], 1)
    grid = affine_grid(theta, x.shape[-2], x.shape[-1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if torch.rand(1, generator=gen).item() < 0.3:  # one blur width per batch keeps it cheap
        sigma = float(u(0.4, 1.0, 1))
        r = 2
        k = torch.exp(-(torch.arange(-r, r + 1).float() ** 2) / (2 * sigma**2))
        k = (k / k.sum()).to(x)
        c = x.shape[1]
        x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, r), groups=c)
        x = F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(r, 0), groups=c)
    gain = u(0.75, 1.25).view(b, 1, 1, 1)
    bias = u(-0.04, 0.04).view(b, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen) * u(0.0, 0.03).view(b, 1, 1, 1)
    return (x * gain + bias + noise).clamp_(-0.1, 1.1)


# --- distributed ----------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owner: bool = False  # this call started the process group (and so ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """DDP when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"), owner=False)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
    owner = not dist.is_initialized()
    if owner:
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), dev, owner)


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


# --- checkpoints ----------------------------------------------------------------------------


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: two writers never share a temp file
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(run_dir: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """model.safetensors + config.json (classes, preprocessing, model and training config)."""
    from safetensors.torch import save_file

    run = Run(run_dir)
    tmp = run.weights_file.with_name(f"{run.weights_file.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": "pt", "ecgvit": __version__})
    publish(tmp, run.weights_file)
    run.write_config(meta)


def load_resume(path: Path) -> dict[str, Any]:
    """A resume checkpoint, loaded as data only (`weights_only`: a pickled object in a planted
    file is refused, never run); a missing, truncated or foreign file is one clear error."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: nothing to resume (no resume checkpoint in {path.parent})")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a readable resume checkpoint ({first[:200]})") from None
    need = ("model", "optimizer", "scheduler", "epoch", "train", "preprocess")
    if not isinstance(saved, dict) or any(k not in saved for k in need):
        raise ValueError(f"{path}: not an ecgvit resume checkpoint (expected the keys {', '.join(need)})")
    return saved


def next_run_dir(base: str | Path = "runs/train") -> Path:
    """runs/train, runs/train2, runs/train3, ... (ultralytics-style auto numbering)."""
    base = Path(base)
    if not base.exists():
        return base
    i = 2
    while Path(f"{base}{i}").exists():
        i += 1
    return Path(f"{base}{i}")


# --- the loop -------------------------------------------------------------------------------


def train(
    data: str | Path,
    out: str | Path | None = None,
    cfg: TrainConfig = TrainConfig(),
    preprocess: PreprocessConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    cache_root: str | Path | None = None,
    index_cfg: Any = None,
    stage: str = "train",
) -> dict[str, Any]:
    """Train a model; returns the summary written to RUN/config.json (best epoch and metrics).

    stage: what the progress bars and log lines call this training ("train", "pretrain",
    "teacher"). The run folder is locked while it trains: a second `train` into it is refused."""
    run_dir = Path(out) if out else next_run_dir()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 alone writes, and locks
        return _train(data, run_dir, cfg, preprocess, resume, progress, cache_root, index_cfg, stage)
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(Run(run_dir).lock_file, f"run folder {run_dir}"):
        return _train(data, run_dir, cfg, preprocess, resume, progress, cache_root, index_cfg, stage)


def _train(
    data: str | Path,
    run_dir: Path,
    cfg: TrainConfig,
    preprocess: PreprocessConfig | None,
    resume: bool,
    progress: bool,
    cache_root: str | Path | None,
    index_cfg: Any,
    stage: str,
) -> dict[str, Any]:
    d = setup_distributed()
    run = Run(run_dir)
    resume_file = run.resume_file
    if resume:
        saved = load_resume(resume_file)
        cfg = from_dict(TrainConfig, saved_train_settings(saved["train"]))  # the run goes on exactly as it started
        preprocess = from_dict(PreprocessConfig, saved["preprocess"])
    elif d.main and run.config_file.exists():
        raise FileExistsError(
            f"{run_dir} already holds a trained model: pass --resume to continue it, or another --out"
        )
    cfg = resolve_teacher(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = get_spec(cfg.model)
    for t in (cfg.teacher or "").split(","):  # a mistyped teacher is said before any work is done
        if t:
            check_teacher(t)
    preprocess = preprocess or spec.preprocess()
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)

    # 1-2. pages and split (every rank computes the same thing from the same seed)
    pages = load_pageset(data, run_dir if d.main else None, progress=progress and d.main, index_cfg=index_cfg)
    if cfg.split is not None:
        tr_idx, va_idx = split_from_file(pages, cfg.split, int(cfg.fold))  # type: ignore[arg-type]
    else:
        tr_idx, va_idx = (
            holdout_split(pages, cfg.val_fraction, cfg.seed)
            if cfg.val_fraction > 0
            else (np.arange(len(pages.labels)), np.arange(0))
        )
    train_set, val_set = pages.subset(tr_idx), pages.subset(va_idx)
    n_cls = len(pages.classes)
    if d.main:
        with open(run.pages_file, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "md5", "label", "group", "part"])
            for part, s in (("train", train_set), ("val", val_set)):
                for p, m, y, g in zip(s.paths, s.md5s, s.labels, s.groups, strict=False):
                    w.writerow([p, m, pages.classes[y], g, part])

    # 3. arrays in memory (rank 0 fills the cache; the others then read it)
    if d.main:
        load_arrays(pages.paths, pages.md5s, cfg=preprocess, cache_root=cache_root, progress=progress)
    _barrier(d)
    x_train = load_arrays(train_set.paths, train_set.md5s, cfg=preprocess, cache_root=cache_root, workers=1)
    x_val = load_arrays(val_set.paths, val_set.md5s, cfg=preprocess, cache_root=cache_root, workers=1)
    y_train = torch.as_tensor(train_set.labels)
    y_val = val_set.labels
    r_train = None
    if cfg.restyle > 0:
        if not preprocess.reads_leads:
            raise ValueError(f"--restyle needs a model on the reader's leads (this one reads {preprocess.form!r})")
        if d.main:
            restyled_arrays(
                train_set.paths, train_set.md5s, preprocess, cfg.restyle_copies, cfg.seed, cache_root, progress=progress
            )
        _barrier(d)
        r_train = restyled_arrays(
            train_set.paths, train_set.md5s, preprocess, cfg.restyle_copies, cfg.seed, cache_root, workers=1
        )

    x_co: np.ndarray | None = None
    y_co: torch.Tensor | None = None
    if cfg.cotrain_records and cfg.cotrain_share > 0:
        if d.main:
            cotrain_arrays(cfg, preprocess, pages.classes, cache_root, progress)
        _barrier(d)
        x_co, y_np = cotrain_arrays(cfg, preprocess, pages.classes, cache_root, False)
        y_co = torch.as_tensor(y_np)

    # 4. model, optimiser, schedule, loss
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    init = cfg.init_weights
    if init is None and cfg.pretrain_per_class > 0 and not resume:
        init = synth_pretrained_weights(cfg, preprocess, pages.classes, d, cache_root, progress)
    model = create_model(
        cfg.model,
        num_classes=n_cls,
        img_size=(preprocess.height, preprocess.width),
        in_chans=preprocess.channels,
        weights=init,
        **cfg.model_kwargs,
    ).to(d.device)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos" not in n and "token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos" not in n and "token" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    steps_per_epoch = max(1, math.ceil(len(y_train) / (cfg.batch_size * d.world)))
    total, warm = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    averager = weight_averager(model, total, cfg.average_last) if cfg.average_last > 0 else None
    counts = np.bincount(train_set.labels, minlength=n_cls).astype(np.float64)
    if (counts == 0).any():
        missing = [pages.classes[i] for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"no training pages for class(es) {missing}")
    class_w = torch.tensor(counts.sum() / (n_cls * counts), dtype=torch.float32) if cfg.balance == "weights" else None
    loss_fn = nn.CrossEntropyLoss(weight=class_w, label_smoothing=cfg.label_smoothing)
    teacher_runs = (
        [
            train_teacher(t, data, run_dir, cfg, preprocess, progress, cache_root, index_cfg)
            for t in cfg.teacher.split(",")
        ]
        if cfg.teacher
        else []
    )
    with torch.random.fork_rng(devices=[]):  # building a teacher must not move the student's random stream
        teachers = [load_teacher(t, pages.classes, preprocess, val_set.md5s, d.device) for t in teacher_runs]
    cached_targets = None
    if teachers and cfg.distill_targets == "cached":  # once, on the clean training pages
        cached_targets = torch.as_tensor(
            np.mean(
                [predict_proba(t, x_train, device=d.device, temperature=cfg.distill_temperature) for t in teachers],
                axis=0,
            )
        )

    start_epoch, best_f1, best_epoch, stale = 0, -1.0, -1, 0
    if resume:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if averager is not None:
            averager.load_state_dict(saved["averager"])
        start_epoch, best_f1, best_epoch, stale = (
            saved["epoch"] + 1,
            saved["best_f1"],
            saved["best_epoch"],
            saved["stale"],
        )
    ddp_model: nn.Module = model
    if d.world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )

    meta: dict[str, Any] = {
        "ecgvit_version": __version__,
        "classes": pages.classes,
        "model": {
            "name": cfg.model,
            "img_size": [preprocess.height, preprocess.width],
            "in_chans": preprocess.channels,
            "kwargs": cfg.model_kwargs,
            "params": count_params(model),
        },
        "preprocess": to_dict(preprocess),
        "train": to_dict(cfg),
        "data": {
            "source": str(data),
            "train_pages": int(len(y_train)),
            "val_pages": int(len(y_val)),
            "per_class_train": {c: int(n) for c, n in zip(pages.classes, counts, strict=False)},
            **(
                {"cotrain_pages": {c: int((y_co == i).sum()) for i, c in enumerate(pages.classes)}}
                if y_co is not None
                else {}
            ),
        },
        "world_size": d.world,
        "initial_weights": str(init) if init else None,
    }
    if resume:
        # What the uninterrupted run would have recorded by now: its best epoch and what it started from.
        meta["initial_weights"] = saved.get("initial_weights", meta["initial_weights"])
        if saved.get("best") is not None:
            meta["best"] = saved["best"]
    metrics_path = run.metrics_file
    if d.main and not resume:
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(
                ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "seconds"]
            )
    elif d.main and metrics_path.exists():
        # A kill between the metrics row and the resume checkpoint leaves a row for an epoch that
        # will be trained again: keep only the epochs the checkpoint holds.
        lines = metrics_path.read_text().splitlines()
        kept = [lines[0]] + [ln for ln in lines[1:] if ln and int(ln.split(",")[0]) <= start_epoch]
        tmp = metrics_path.with_name(f"{metrics_path.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(kept) + "\n")
        os.replace(tmp, metrics_path)

    # 5. epochs
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # same order on every rank
        if cfg.balance == "sampler":
            page_weights = torch.as_tensor(1.0 / counts[train_set.labels])
            order = torch.multinomial(page_weights, len(y_train), replacement=True, generator=gen)
        else:
            order = torch.randperm(len(y_train), generator=gen)
        order = order[d.rank :: d.world]
        ddp_model.train()
        tot_loss, tot_ok, seen = 0.0, 0, 0
        batches = range(0, len(order), cfg.batch_size)
        bar = tqdm(
            batches,
            desc=f"{stage} epoch {epoch + 1}/{cfg.epochs}",
            disable=not (progress and d.main),
            leave=False,
            unit="batch",
        )
        for i in bar:
            idx = order[i : i + cfg.batch_size]
            arr = x_train[idx.numpy()]
            if r_train is not None:
                # this share of the batch drawn by another cart (the same page's signals and label)
                sel = (torch.rand(len(idx), generator=gen) < cfg.restyle).numpy()
                k = torch.randint(0, r_train.shape[1], (len(idx),), generator=gen).numpy()
                arr = arr.copy()
                arr[sel] = r_train[idx.numpy()[sel], k[sel]]
            yb = y_train[idx]
            if x_co is not None and y_co is not None:
                # this share of the batch: recorded ECGs of other carts' pages (their own labels)
                co = (torch.rand(len(idx), generator=gen) < cfg.cotrain_share).numpy()
                j = torch.randint(0, len(y_co), (len(idx),), generator=gen)
                arr[co] = x_co[j.numpy()[co]]
                yb = yb.clone()
                yb[torch.as_tensor(co)] = y_co[j[torch.as_tensor(co)]]
            xb = prepare_batch(arr)
            if cfg.augment == "ecg":
                xb = augment_batch(xb, gen)
            xb, yb = xb.to(d.device), yb.to(d.device)
            logits = ddp_model(xb)
            loss = loss_fn(logits, yb)
            if teachers:
                tau = cfg.distill_temperature
                if cached_targets is not None:
                    t_prob = cached_targets[idx].to(d.device)
                else:
                    with torch.no_grad():  # the teachers' tempered probabilities, averaged
                        t_prob = torch.stack([F.softmax(t(xb) / tau, 1) for t in teachers]).mean(0)
                kd = F.kl_div(F.log_softmax(logits / tau, 1), t_prob, reduction="batchmean") * tau * tau
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if averager is not None:
                averager.update(model, step=sched.last_epoch)
            tot_loss += loss.item() * len(idx)
            tot_ok += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{tot_loss / seen:.3f}")

        stop = False
        # The model scored and kept: the weight average once it holds a step, else the weights now.
        kept_model = (
            averager.module if averager is not None and sched.last_epoch > averager.update_after_step else model
        )
        if d.main:
            if len(y_val):
                probs = predict_proba(kept_model, x_val, device=d.device)
                val_pred = probs.argmax(1)
                val_loss = float(F.nll_loss(torch.log(torch.as_tensor(probs).clamp_min(1e-8)), torch.as_tensor(y_val)))
                val_acc = float((val_pred == y_val).mean())
                val_f1 = float(f1_score(y_val, val_pred, average="macro", labels=list(range(n_cls)), zero_division=0))
            else:  # no validation part: the recipe's epoch count was chosen by CV; keep the last epoch
                val_loss, val_acc, val_f1 = float("nan"), float("nan"), float("nan")
            secs = time.time() - t0
            with open(metrics_path, "a", newline="") as f:
                csv.writer(f).writerow(
                    [
                        epoch + 1,
                        f"{sched.get_last_lr()[0]:.3g}",
                        f"{tot_loss / seen:.4f}",
                        f"{tot_ok / seen:.4f}",
                        f"{val_loss:.4f}",
                        f"{val_acc:.4f}",
                        f"{val_f1:.4f}",
                        f"{secs:.1f}",
                    ]
                )
            improved = val_f1 > best_f1 if (len(y_val) and cfg.keep == "best") else True
            if improved:
                best_f1, best_epoch, stale = (val_f1 if len(y_val) else -1.0), epoch + 1, 0
                meta["best"] = {
                    "epoch": best_epoch,
                    "val_macro_f1": val_f1 if len(y_val) else None,
                    "val_accuracy": val_acc if len(y_val) else None,
                }
                save_model(run_dir, kept_model, meta)
            else:
                stale += 1
            if progress:
                log.info(
                    f"{stage} epoch {epoch + 1:3d}/{cfg.epochs}  loss {tot_loss / seen:.3f}  val acc {val_acc:.3f}  val macro-F1 {val_f1:.3f}{'  *' if improved else ''}  ({secs:.0f}s)"
                )
            _atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "averager": averager.state_dict() if averager is not None else None,
                    "epoch": epoch,
                    "best_f1": best_f1,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "train": to_dict(cfg),
                    "preprocess": to_dict(preprocess),
                    "best": meta.get("best"),
                    "initial_weights": meta["initial_weights"],
                },
                resume_file,
            )
            stop = bool(cfg.patience) and stale >= cfg.patience
        if d.world > 1:
            import torch.distributed as dist

            flag = torch.tensor([int(stop)], device=d.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            if d.main and progress:
                log.info(f"{stage}: early stop, no better validation macro-F1 for {cfg.patience} epochs")
            break

    summary: dict[str, Any] = dict(meta.get("best") or {})
    if d.main:
        meta["finished"] = True
        run.write_config(meta)
        if cfg.gate:
            try:
                fitted = calibrate(run_dir, progress=False)
                if progress:
                    log.info(
                        "out-of-scope gate (ecgvit calibrate):\n  " + format_calibration(fitted).replace("\n", "\n  ")
                    )
            except Exception as exc:  # the trained model is kept whatever happens here
                log.warning(
                    f"no out-of-scope gate fitted ({type(exc).__name__}: {exc}); run `ecgvit calibrate {run_dir}`"
                )
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        if d.owner:
            dist.destroy_process_group()
    return {"run": str(run_dir), **summary}


def weight_averager(model: nn.Module, total_steps: int, last_fraction: float) -> Any:
    """A running plain average of `model`'s weights (and BatchNorm statistics) over the optimiser
    steps of the last `last_fraction` of training: call `.update(model, step=k)` after step k.

    timm's ModelEmaV3 with decay warm-up power 1 is exactly a running mean: at the first step it
    copies the weights, at the (n+1)-th it gives them weight 1/(n+1).
    """
    from timm.utils import ModelEmaV3

    start = int(round(total_steps * (1.0 - last_fraction)))
    return ModelEmaV3(
        model, decay=1.0, update_after_step=start, use_warmup=True, warmup_gamma=1.0, warmup_power=1.0, foreach=False
    )


def train_teacher(
    teacher: str,
    data: str | Path,
    run_dir: Path,
    cfg: TrainConfig,
    preprocess: PreprocessConfig,
    progress: bool,
    cache_root: str | Path | None,
    index_cfg: Any,
) -> str:
    """A teacher's run folder: `teacher` itself when it is one, else (a model name) that model
    trained with this run's recipe (for `teacher_epochs`), pages and split into RUN/teacher-NAME
    (kept and reused while it was trained with the same settings; resumed after an interruption)."""
    if check_teacher(teacher) == "run":
        return teacher
    out = run_dir / f"teacher-{teacher}"
    t_cfg = replace(
        cfg,
        model=teacher,
        teacher=None,
        gate=False,
        model_kwargs={},
        init_weights=None,
        epochs=teacher_epochs(cfg),
        teacher_epochs=None,
        distill_targets="online",
    )
    meta_file = Run(out).config_file
    meta = read_json(meta_file) if meta_file.exists() else {}
    was, want = saved_train_settings(meta["train"]) if "train" in meta else {}, to_dict(t_cfg)
    # Settings a run recorded (one made before a setting existed is compared on the rest); threads change no result.
    differ = sorted(k for k in want if k in was and k != "threads" and was[k] != want[k])
    if differ:
        what = ", ".join(f"{k}={was[k]!r}, asked {want[k]!r}" for k in differ)
        raise ValueError(f"{out} was trained with other settings ({what}): remove it or give another --out")
    if not meta.get("finished"):
        if progress:
            log.info(f"training the teacher {teacher} first ({out})")
        train(
            data,
            out,
            t_cfg,
            preprocess=preprocess,
            resume=Run(out).resume_file.exists(),
            stage="teacher",
            progress=progress,
            cache_root=cache_root,
            index_cfg=index_cfg,
        )
    elif progress:
        log.info(f"teacher {teacher}: reusing {out}")
    return str(out)


# Settings that do not shape the synthetic pretraining (it runs without a split, teacher, gate or
# the real run's epochs), so runs differing only in them share one cached pretraining: every CV
# fold, the final model, with and without a teacher.
_NOT_PRETRAINING = (
    "split",
    "fold",
    "init_weights",
    "epochs",
    "patience",
    "keep",
    "threads",
    "seed",
    "val_fraction",
    "teacher",
    "teacher_epochs",
    "distill_weight",
    "distill_temperature",
    "distill_targets",
    "gate",
    "average_last",
    "restyle",
    "restyle_copies",
    "cotrain_records",
    "cotrain_share",
)


def pretrain_key(cfg: TrainConfig, preprocess: PreprocessConfig) -> str:
    """The cache key of `cfg`'s synthetic pretraining: a digest of the settings that shape it."""
    shaping = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_PRETRAINING}
    if shaping.get("pretrain_records") is None:  # a setting added later: runs without it keep their key
        shaping.pop("pretrain_records", None)
    return (
        hashlib.sha1(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:8] + preprocess.key()[:8]
    )


def _pretraining_parts(cfg: TrainConfig, preprocess: PreprocessConfig) -> list[tuple[str, dict[str, Any]]]:
    """The synthetic pretraining pages: (sub-folder, `generate` arguments) per part.

    A page model learns the Khan template, so it pretrains on Khan-style pages. A model on the
    reader's leads must read every cart, so it pretrains on pages of every style and layout (each
    page drawn at random), 60 % clean and 40 % lightly distorted scans, each read by the reader as
    at prediction time (its misreadings included)."""
    n = cfg.pretrain_per_class
    if not preprocess.reads_leads:
        return [(".", {"per_class": n})]
    clean = max(1, round(0.6 * n))
    parts: list[tuple[str, dict[str, Any]]] = [("clean", {"per_class": clean, "style": "random", "layout": "random"})]
    if n - clean > 0:
        parts.append(
            # another seed: the same seed would draw the clean part's records again
            (
                "light",
                {
                    "per_class": n - clean,
                    "style": "random",
                    "layout": "random",
                    "distort": "light",
                    "seed_offset": 7919,
                },
            )
        )
    return parts


def cotrain_arrays(
    cfg: TrainConfig,
    preprocess: PreprocessConfig,
    classes: list[str],
    cache_root: str | Path | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The model inputs and class indices of `cfg.cotrain_records`' train-split records, each drawn
    once as a page in a random style and layout and read as at prediction time.

    Drawn once per (records folder, seed) under CACHE/cotrain/ and shared by every fold of a CV;
    the inputs go through the preprocessing cache. The drawing seed is not the pretraining's, so
    a record pretrained on is seen here in another style."""
    if not cfg.cotrain_records:
        raise ValueError("cotrain_arrays needs cfg.cotrain_records")
    folder = Path(cfg.cotrain_records)
    recs = load_records(folder, split="train")
    if not recs:
        raise ValueError(f"{folder}: no train-split records with a label this model has")
    missing = sorted({r.label for r in recs} - set(classes))
    if missing:
        raise ValueError(f"--cotrain-records {folder}: labels {missing} are not classes of this run ({classes})")
    seed = cfg.pretrain_seed + 1
    key = hashlib.sha1(f"{folder.resolve()}|{len(recs)}|{seed}".encode()).hexdigest()[:12]
    pages = Path(cache_root or default_cache_dir()) / "cotrain" / key
    if not (pages / "complete").exists():
        with exclusive(pages.with_name(f"{key}.lock"), f"co-training pages {pages}"):
            if not (pages / "complete").exists():
                if pages.exists():
                    shutil.rmtree(pages)
                summary = write_record_pages(pages, recs, seed=seed, workers=os.cpu_count() or 1, progress=progress)
                if progress:
                    log.info(f"co-training: {summary}")
                (pages / "complete").write_text("ok\n")
    paths = [pages / r.label / f"{r.name}.jpg" for r in recs]
    x = load_arrays(paths, cfg=preprocess, cache_root=cache_root, progress=progress)
    y = np.array([classes.index(r.label) for r in recs], np.int64)
    return x, y


def synth_pretrained_weights(
    cfg: TrainConfig,
    preprocess: PreprocessConfig,
    classes: list[str],
    d: Dist,
    cache_root: str | Path | None,
    progress: bool,
) -> str | None:
    """Weights of `cfg.model` pretrained on synthetic pages of the four Khan classes, cached.

    A few hundred real pages are too few for a transformer to find ST segments and Q waves;
    thousands of generated pages with the same layout and the textbook signs of each class
    teach it where to look, and fine-tuning on the real pages does the rest.
    """
    if list(classes) != list(KHAN_CLASSES):
        if d.main and progress:
            log.info(f"note: no synthetic pretraining: the classes {classes} are not the four Khan classes")
        return None
    # Only what shapes the pretrained weights is in the key: every fold of a CV, and the final
    # model trained on all pages, share one pretraining.
    root = Path(cache_root or default_cache_dir()) / "pretrain" / pretrain_key(cfg, preprocess)
    run = Run(root / "run")
    weights = run.weights_file
    done = run.config_file.exists() and read_json(run.config_file).get("finished")
    if not done:
        pages = root / "pages"
        if d.main and not (pages / "complete").exists():
            if progress:
                log.info(
                    f"pretrain: first generating {cfg.pretrain_per_class} synthetic pages per class and pretraining on them "
                    f"for {cfg.pretrain_epochs} epochs (the first time only: roughly 15-20 min on 2 cores; cached in {root}; "
                    "--pretrain-per-class 0 skips it)"
                )
            if pages.exists():
                shutil.rmtree(pages)
            for sub, kw in _pretraining_parts(cfg, preprocess):
                seed = cfg.pretrain_seed + int(kw.pop("seed_offset", 0))
                generate(pages / sub, seed=seed, workers=os.cpu_count() or 1, progress=progress, **kw)
            if cfg.pretrain_records:
                recs = load_records(cfg.pretrain_records, split="train")
                summary = write_record_pages(
                    pages / "records", recs, seed=cfg.pretrain_seed, workers=os.cpu_count() or 1, progress=progress
                )
                if progress:
                    log.info(f"pretrain: {summary}")
            (pages / "complete").write_text("ok\n")
        _barrier(d)
        pre_cfg = replace(
            cfg,
            split=None,
            fold=None,
            init_weights=None,
            pretrain_per_class=0,
            epochs=cfg.pretrain_epochs,
            val_fraction=0.1 if cfg.pretrain_per_class >= 20 else 0.0,
            keep="last",
            patience=0,
            seed=cfg.pretrain_seed,
            teacher=None,
            gate=False,
            average_last=0.0,
            restyle=0.0,  # the pretraining pages are drawn in every style already
            cotrain_records=None,  # the records are in the pretraining's own pages
        )
        train(
            pages,
            run.path,
            pre_cfg,
            preprocess=preprocess,
            resume=run.resume_file.exists(),
            stage="pretrain",
            progress=progress,
            cache_root=cache_root,
            index_cfg=IndexConfig(near_dup_bits=0),
        )
        _barrier(d)
    return str(weights)
