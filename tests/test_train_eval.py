"""Training, resuming after kill -9, torchrun DDP, evaluation metrics and grouped CV on tiny
synthetic page sets (generated here; nothing real)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ecgvit.config import DEFAULT_MODEL, PreprocessConfig, TrainConfig
from ecgvit.engine.cv import cross_validate
from ecgvit.engine.evaluate import evaluate

# Tiny inputs keep every training in these tests to seconds on 2 cores.
from ecgvit.engine.train import train, train_teacher
from ecgvit.metrics import compute_metrics
from ecgvit.metrics import confusion as _confusion
from ecgvit.metrics import scores_from_confusion as _scores_from_confusion
from ecgvit.models.inference import predict_proba
from ecgvit.run import load_run

# Tiny inputs keep every training in these tests to seconds on 2 cores.
TINY = PreprocessConfig(height=64, width=128)
MODEL = DEFAULT_MODEL


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    from ecgvit.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, per_class=6, seed=3, progress=False)
    return out


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def quick_cfg(**kw) -> TrainConfig:
    base = dict(
        model=MODEL,
        epochs=2,
        batch_size=8,
        warmup_epochs=1,
        val_fraction=0.34,
        patience=0,
        threads=2,
        pretrain_per_class=0,
        teacher=None,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def trained_run(synth_dir, cache_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    train(synth_dir, run, quick_cfg(), preprocess=TINY, progress=False, cache_root=cache_root)
    return run


def test_run_folder_holds_everything_to_trace_the_model(trained_run):
    meta = json.loads((trained_run / "config.json").read_text())
    assert meta["classes"] == ["normal", "myocardial_infarction", "abnormal_heartbeat", "history_of_mi"]
    assert meta["preprocess"]["height"] == 64 and meta["preprocess"]["width"] == 128
    assert meta["train"]["model"] == MODEL and meta["finished"] is True
    rows = list(csv.DictReader(open(trained_run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert (trained_run / "model.safetensors").stat().st_size > 0
    pages = list(csv.DictReader(open(trained_run / "pages.csv")))
    train_groups = {p["group"] for p in pages if p["part"] == "train"}
    val_groups = {p["group"] for p in pages if p["part"] == "val"}
    assert val_groups and train_groups and not (train_groups & val_groups)
    assert {p["label"] for p in pages if p["part"] == "val"} == set(meta["classes"])  # stratified


def test_loaded_model_is_deterministic(trained_run, synth_dir, cache_root):
    from ecgvit.data.preprocess import load_arrays

    run = load_run(trained_run)
    paths = sorted(str(p) for p in synth_dir.rglob("*.jpg"))[:4]
    x = load_arrays(paths, cfg=run.preprocess, cache_root=cache_root, workers=1)
    a, b = predict_proba(run.model, x), predict_proba(load_run(trained_run).model, x)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)


def test_evaluate_counts_each_distinct_page_once(trained_run, synth_dir, cache_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    first = sorted((data / "normal").glob("*.jpg"))[0]
    shutil.copy(first, first.with_name("copy_of_first.jpg"))  # an exact duplicate
    m = evaluate(
        trained_run,
        data,
        report=tmp_path / "rep",
        json_out=tmp_path / "m.json",
        cache_root=cache_root,
        n_boot=200,
        progress=False,
    )
    assert m["n"] == 24 and m["files"] == 25 and m["duplicates_dropped"] == 1
    j = json.loads((tmp_path / "m.json").read_text())
    for key in ("n", "accuracy", "macro_f1", "balanced_accuracy", "per_class", "ci95"):
        assert key in j
    assert set(j["per_class"]["normal"]) >= {"precision", "recall", "f1", "support"}
    lo, hi = j["ci95"]["accuracy"]
    assert 0 <= lo <= j["accuracy"] <= hi <= 1
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Most confident mistakes" in html and "data:image/png;base64" in html


def test_bootstrap_scores_agree_with_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))
    acc, bal, mf1, _ = _scores_from_confusion(_confusion(y, p, 4))
    assert acc == pytest.approx(accuracy_score(y, p))
    assert bal == pytest.approx(balanced_accuracy_score(y, p))
    assert mf1 == pytest.approx(f1_score(y, p, average="macro"))


def test_metrics_of_a_perfect_and_a_useless_classifier():
    y = np.repeat(np.arange(4), 10)
    perfect = np.eye(4)[y] * 0.97 + 0.01
    m = compute_metrics(y, perfect, ["a", "b", "c", "d"], n_boot=100)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["roc_auc_ovr"]["macro"] == 1.0
    constant = np.tile([0.7, 0.1, 0.1, 0.1], (40, 1))
    m = compute_metrics(y, constant, ["a", "b", "c", "d"], n_boot=100)
    assert m["accuracy"] == 0.25 and m["per_class"]["b"]["recall"] == 0.0
    assert m["ece"] == pytest.approx(0.45, abs=1e-6)  # confidence 0.7, accuracy 0.25


def test_bad_training_inputs_name_the_problem(synth_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'vit-tinny'.*did you mean"):
        train(synth_dir, tmp_path / "r", quick_cfg(model="vit-tinny"), progress=False)
    with pytest.raises(ValueError, match="--split and --fold"):
        quick_cfg(split="s.csv")
    with pytest.raises(ValueError, match="balance='often'"):
        quick_cfg(balance="often")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train(tmp_path / "nowhere", tmp_path / "r", quick_cfg(), progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(synth_dir, tmp_path / "fresh", quick_cfg(), resume=True, progress=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ecgvit.cli", *args]


@pytest.mark.slow
def test_resume_after_kill_9_loses_nothing(synth_dir, cache_root, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "ECGVIT_CACHE": str(cache_root)}
    args = _cli(
        "train",
        "--data",
        str(synth_dir),
        "--out",
        str(run),
        "--model",
        MODEL,
        "--epochs",
        "8",
        "--batch-size",
        "8",
        "--height",
        "64",
        "--width",
        "128",
        "--val-fraction",
        "0.34",
        "--patience",
        "0",
        "--threads",
        "1",
        "--pretrain-per-class",
        "0",
        "--average-last",
        "0.5",
        "--quiet",
    )  # the weight average is part of what a resume restores
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    metrics = run / "metrics.csv"
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(metrics.read_text().splitlines()) - 1
    assert 2 <= done_before < 8
    r = subprocess.run(
        _cli("train", "--data", str(synth_dir), "--out", str(run), "--resume", "--quiet"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    epochs = [int(row["epoch"]) for row in csv.DictReader(open(metrics))]
    # Every epoch once, in order: the killed epoch (if any) was redone, none was lost or doubled.
    assert epochs[:done_before] == list(range(1, done_before + 1))
    assert epochs == list(range(1, 9))
    assert json.loads((run / "config.json").read_text())["finished"] is True


@pytest.mark.slow
def test_torchrun_two_cpu_processes(synth_dir, cache_root, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "ECGVIT_CACHE": str(cache_root), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "ecgvit.cli",
        "train",
        "--data",
        str(synth_dir),
        "--out",
        str(run),
        "--model",
        MODEL,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--height",
        "64",
        "--width",
        "128",
        "--val-fraction",
        "0.34",
        "--threads",
        "1",
        "--pretrain-per-class",
        "0",
        "--quiet",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((run / "config.json").read_text())
    assert meta["world_size"] == 2 and meta["finished"]
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 2  # rank 0 alone wrote


@pytest.mark.slow
def test_grouped_cross_validation(synth_dir, cache_root, tmp_path):
    s = cross_validate(
        synth_dir,
        tmp_path / "cv",
        model=MODEL,
        folds=2,
        repeats=1,
        train_overrides={
            "epochs": 1,
            "batch_size": 8,
            "warmup_epochs": 1,
            "threads": 2,
            "pretrain_per_class": 0,
            "teacher": None,
        },
        preprocess=TINY,
        cache_root=cache_root,
        progress=False,
    )
    assert len(s["per_fold"]) == 2
    assert s["pooled_repeat0"]["n"] == 24  # every page scored exactly once out of fold
    oof = list(csv.DictReader(open(tmp_path / "cv" / "oof.csv")))
    assert len({r["path"] for r in oof}) == 24
    assert (tmp_path / "cv" / "cv.json").exists() and (tmp_path / "cv" / "folds.csv").exists()
    over = {"epochs": 1, "batch_size": 8, "warmup_epochs": 1, "threads": 2, "pretrain_per_class": 0, "teacher": None}
    # Rerun into the same folder: finished folds are reused only when trained the same way.
    again = cross_validate(
        synth_dir,
        tmp_path / "cv",
        model=MODEL,
        folds=2,
        train_overrides=over,
        preprocess=TINY,
        cache_root=cache_root,
        progress=False,
    )
    assert [f["macro_f1"] for f in again["per_fold"]] == [f["macro_f1"] for f in s["per_fold"]]
    split_before = (tmp_path / "cv" / "splits_r0.csv").read_bytes()
    with pytest.raises(ValueError, match="another split"):  # seed 1 would also assign other folds
        cross_validate(
            synth_dir,
            tmp_path / "cv",
            model=MODEL,
            folds=2,
            train_overrides={**over, "seed": 1},
            preprocess=TINY,
            cache_root=cache_root,
            progress=False,
        )
    with pytest.raises(ValueError, match="other settings.*seed=0, asked 1"):  # same folds, other training seed
        cross_validate(
            synth_dir,
            tmp_path / "cv",
            model=MODEL,
            folds=2,
            train_overrides={**over, "seed": 1},
            preprocess=TINY,
            cache_root=cache_root,
            progress=False,
            split_seed=0,
        )
    assert (tmp_path / "cv" / "splits_r0.csv").read_bytes() == split_before  # refused calls change nothing
    # Another training seed on the same folds (split_seed kept): identical fold assignment.
    other = cross_validate(
        synth_dir,
        tmp_path / "cv_s1",
        model=MODEL,
        folds=2,
        train_overrides={**over, "seed": 1},
        preprocess=TINY,
        cache_root=cache_root,
        progress=False,
        split_seed=0,
    )
    assert other["split_seed"] == 0 and other["train"]["seed"] == 1
    assert (tmp_path / "cv_s1" / "splits_r0.csv").read_bytes() == (tmp_path / "cv" / "splits_r0.csv").read_bytes()


def test_training_on_every_page_keeps_the_last_epoch(synth_dir, cache_root, tmp_path):
    r = train(
        synth_dir,
        tmp_path / "all",
        quick_cfg(val_fraction=0.0, epochs=2),
        preprocess=TINY,
        progress=False,
        cache_root=cache_root,
    )
    assert r["epoch"] == 2 and r["val_macro_f1"] is None
    meta = json.loads((tmp_path / "all" / "config.json").read_text())
    assert meta["data"]["val_pages"] == 0 and meta["data"]["train_pages"] == 24


def test_vit_dropout_drops_like_torch_dropout():
    import torch

    from ecgvit.models.ecg_vit import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.25)
    x = torch.ones(400_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005  # each element kept with p 1 - 0.25
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))  # and scaled up
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient flows only through the kept elements
    assert torch.equal(drop.eval()(x), x)  # identity in eval: exports are unchanged
    assert not Dropout(1.0)(torch.ones(5)).any() and torch.equal(Dropout(0.0)(x), x)
    # Each int32 draw feeds two neighbouring elements: both lanes must drop at p (the high
    # lane of a draw in [0, 2**31) has its sign bit clear, which a plain int16 view would keep).
    kept = Dropout(0.1)(torch.ones(2, 300_001)) != 0
    for lane in (kept.flatten()[0::2], kept.flatten()[1::2]):
        assert abs(lane.float().mean().item() - 0.9) < 0.005


def test_affine_grid_equals_torchs():
    import torch
    import torch.nn.functional as F

    from ecgvit.engine.train import affine_grid

    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    for h, w in ((288, 320), (7, 5), (1, 1)):
        ref = F.affine_grid(theta, [5, 1, h, w], align_corners=False)
        assert torch.allclose(affine_grid(theta, h, w), ref, atol=1e-5)


def test_weight_averager_is_the_plain_mean_of_the_last_steps():
    import torch

    from ecgvit.engine.train import weight_averager

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    avg = weight_averager(model, total_steps=10, last_fraction=0.4)  # steps 7..10 averaged
    for step in range(1, 11):
        with torch.no_grad():
            for t in [*model.parameters(), model[1].running_mean]:
                t.fill_(float(step))
        avg.update(model, step=step)
    for t in [*avg.module.parameters(), avg.module[1].running_mean]:
        assert torch.allclose(t, torch.full_like(t, 8.5))  # mean of 7, 8, 9, 10
    assert avg.update_after_step == 6


def test_average_last_keeps_the_averaged_weights(synth_dir, cache_root, tmp_path):
    import torch
    from safetensors.torch import load_file

    with pytest.raises(ValueError, match="average_last=1.0"):
        quick_cfg(average_last=1.0)
    run = tmp_path / "avg"
    train(
        synth_dir,
        run,
        quick_cfg(epochs=3, average_last=0.5, keep="last"),
        preprocess=TINY,
        progress=False,
        cache_root=cache_root,
    )
    kept = load_file(run / "model.safetensors")
    state = torch.load(run / "resume.pt", map_location="cpu", weights_only=False)
    averaged = {k.removeprefix("module."): v for k, v in state["averager"].items()}
    assert all(torch.equal(kept[k], averaged[k]) for k in kept)  # the average is what was kept...
    assert any(not torch.equal(kept[k], state["model"][k]) for k in kept)  # ...not the last step's weights
    assert json.loads((run / "config.json").read_text())["train"]["average_last"] == 0.5


def test_a_run_saved_before_weight_averaging_existed_resumes_without_it(synth_dir, cache_root, tmp_path):
    import torch

    run = tmp_path / "old"
    train(synth_dir, run, quick_cfg(epochs=1, average_last=0.0), preprocess=TINY, progress=False, cache_root=cache_root)
    state = torch.load(run / "resume.pt", map_location="cpu", weights_only=False)
    del state["train"]["average_last"], state["averager"]  # as written before the setting existed
    torch.save(state, run / "resume.pt")
    train(synth_dir, run, resume=True, progress=False, cache_root=cache_root)
    assert json.loads((run / "config.json").read_text())["train"]["average_last"] == 0.0


@pytest.mark.slow
def test_synthetic_pretraining_runs_once_and_is_reused(synth_dir, cache_root, tmp_path):
    cfg = quick_cfg(epochs=1, pretrain_per_class=2, pretrain_epochs=1)
    train(synth_dir, tmp_path / "a", cfg, preprocess=TINY, progress=False, cache_root=cache_root)
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    init = Path(meta["initial_weights"])
    assert init.exists() and "pretrain" in str(init)
    stamp = init.stat().st_mtime_ns
    train(synth_dir, tmp_path / "b", cfg, preprocess=TINY, progress=False, cache_root=cache_root)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["initial_weights"] == str(init)
    assert init.stat().st_mtime_ns == stamp  # reused, not retrained


def test_distillation_from_a_teacher_run(trained_run, synth_dir, cache_root, tmp_path):
    # The teacher (trained_run) held out the same grouped pages the student validates on (same
    # seed and fraction), so it may teach; its soft labels change what the student learns.
    cfg = quick_cfg(teacher=str(trained_run), distill_weight=0.7, distill_temperature=2.0)
    train(synth_dir, tmp_path / "student", cfg, preprocess=TINY, progress=False, cache_root=cache_root)
    meta = json.loads((tmp_path / "student" / "config.json").read_text())
    assert meta["train"]["teacher"] == str(trained_run) and meta["train"]["distill_weight"] == 0.7
    plain = [r["train_loss"] for r in csv.DictReader(open(trained_run / "metrics.csv"))]
    taught = [r["train_loss"] for r in csv.DictReader(open(tmp_path / "student" / "metrics.csv"))]
    assert plain != taught  # same seed, data and batches: only the teacher's term differs
    # Two teachers are averaged: the same run twice teaches exactly what it teaches alone.
    cfg2 = quick_cfg(teacher=f"{trained_run},{trained_run}", distill_weight=0.7, distill_temperature=2.0)
    train(synth_dir, tmp_path / "student2", cfg2, preprocess=TINY, progress=False, cache_root=cache_root)
    twice = [r["train_loss"] for r in csv.DictReader(open(tmp_path / "student2" / "metrics.csv"))]
    assert twice == taught


def test_cached_distillation_targets_are_the_teachers_view_of_the_clean_page(
    trained_run, synth_dir, cache_root, tmp_path
):
    # Without augmentation the batch the teacher would score online is the clean page itself, so
    # cached targets must train the student exactly as online ones; with it, they differ.
    losses = {}
    for targets in ("online", "cached"):
        for aug in ("none", "ecg"):
            cfg = quick_cfg(teacher=str(trained_run), distill_weight=0.7, distill_targets=targets, augment=aug)
            run = tmp_path / f"{targets}-{aug}"
            train(synth_dir, run, cfg, preprocess=TINY, progress=False, cache_root=cache_root)
            losses[targets, aug] = [float(r["train_loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert losses["cached", "none"] == pytest.approx(losses["online", "none"], rel=1e-4)
    assert losses["cached", "ecg"] != pytest.approx(losses["online", "ecg"], rel=1e-4)
    with pytest.raises(ValueError, match="distill_targets"):
        quick_cfg(distill_targets="offline")


def test_a_teacher_that_saw_the_validation_pages_is_refused(synth_dir, cache_root, tmp_path):
    everything = tmp_path / "teacher_all"
    train(
        synth_dir,
        everything,
        quick_cfg(val_fraction=0.0, epochs=1),
        preprocess=TINY,
        progress=False,
        cache_root=cache_root,
    )
    with pytest.raises(ValueError, match="leak"):
        train(
            synth_dir,
            tmp_path / "s1",
            quick_cfg(teacher=str(everything)),
            preprocess=TINY,
            progress=False,
            cache_root=cache_root,
        )
    with pytest.raises(ValueError, match="preprocessing"):
        train(
            synth_dir,
            tmp_path / "s2",
            quick_cfg(teacher=str(everything), val_fraction=0.0),
            preprocess=PreprocessConfig(height=64, width=160),
            progress=False,
            cache_root=cache_root,
        )
    with pytest.raises(ValueError, match="distill_weight"):
        quick_cfg(distill_weight=1.5)


def test_a_teacher_named_by_model_is_trained_first_on_the_same_pages(synth_dir, cache_root, tmp_path):
    run = tmp_path / "student"
    train(
        synth_dir,
        run,
        quick_cfg(epochs=2, teacher="mobilenetv4_conv_small", teacher_epochs=1),
        preprocess=TINY,
        progress=False,
        cache_root=cache_root,
    )
    teacher = run / "teacher-mobilenetv4_conv_small"
    t_meta = json.loads((teacher / "config.json").read_text())
    assert t_meta["finished"] and t_meta["train"]["model"] == "mobilenetv4_conv_small"
    # The teacher trains for its own epoch count (the shipped recipe: 40 for the CNN, 60 for the ViT).
    assert t_meta["train"]["epochs"] == 1 and json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    with pytest.raises(ValueError, match="teacher_epochs=0"):
        quick_cfg(teacher="mobilenetv4_conv_small", teacher_epochs=0)
    # Kept and reused while it was trained the same way; refused, not silently reused, otherwise.
    same = quick_cfg(epochs=2, teacher="mobilenetv4_conv_small", teacher_epochs=1)
    assert train_teacher("mobilenetv4_conv_small", synth_dir, run, same, TINY, False, cache_root, None) == str(teacher)
    with pytest.raises(ValueError, match="other settings"):
        train_teacher(
            "mobilenetv4_conv_small",
            synth_dir,
            run,
            quick_cfg(epochs=2, teacher="mobilenetv4_conv_small", teacher_epochs=3),
            TINY,
            False,
            cache_root,
            None,
        )
    parts = lambda r: sorted((row["md5"], row["part"]) for row in csv.DictReader(open(r / "pages.csv")))  # noqa: E731
    assert parts(teacher) == parts(run)  # same pages, same validation part
    with pytest.raises(ValueError, match="did you mean"):
        train(
            synth_dir,
            tmp_path / "s2",
            quick_cfg(teacher="mobilenetv4_conv_smal"),
            preprocess=TINY,
            progress=False,
            cache_root=cache_root,
        )


def test_pretrain_key_ignores_settings_that_do_not_shape_pretraining():
    """Every CV fold, the final model and a distilled run share one cached synthetic pretraining;
    what does shape it (the model, the pretraining size) gives another key."""
    from dataclasses import replace

    from ecgvit.config import TrainConfig
    from ecgvit.engine.train import pretrain_key
    from ecgvit.models import get_spec

    base = TrainConfig()
    pre = get_spec(base.model).preprocess()
    same = [
        replace(
            base,
            epochs=7,
            teacher="mobilenetv4_conv_small",
            teacher_epochs=3,
            gate=False,
            seed=5,
            fold=1,
            split="s.csv",
            distill_weight=0.3,
            average_last=0.5,
        )
    ]
    assert {pretrain_key(c, pre) for c in same} == {pretrain_key(base, pre)}
    assert pretrain_key(replace(base, pretrain_per_class=10), pre) != pretrain_key(base, pre)
    other = replace(base, model="mobilenetv4_conv_small")
    assert pretrain_key(other, get_spec(other.model).preprocess()) != pretrain_key(base, pre)


def test_the_default_teacher_is_the_models_own():
    """`--teacher auto` (with --epochs 60 --average-last 0: the bundled recipe): the ViT distilled from its CNN, the teacher
    trained for two thirds of the student's epochs; a CNN has none; the default is none."""
    from ecgvit.engine.teachers import resolve_teacher, teacher_epochs

    assert resolve_teacher(TrainConfig()).teacher is None
    assert resolve_teacher(TrainConfig(model="ecgvit-tiny", teacher="auto")).teacher == "mobilenetv4_conv_small"
    assert resolve_teacher(TrainConfig(model="resnet18", teacher="auto")).teacher is None
    assert resolve_teacher(TrainConfig(teacher="none")).teacher is None
    assert resolve_teacher(TrainConfig(teacher="resnet18")).teacher == "resnet18"
    assert teacher_epochs(TrainConfig(epochs=60)) == 40 and teacher_epochs(TrainConfig(epochs=1)) == 1
    assert teacher_epochs(TrainConfig(epochs=60, teacher_epochs=7)) == 7


def test_patchify_variant_keeps_ecgvit_tinys_token_grid():
    # ecgvit-tiny-p4 swaps the first 3x3 stride-2 stage for a 4x4 patchify conv and drops the
    # 16-channel stage: the same stride 8, so the same 4 x 40 (row, time) tokens per page.
    import torch

    from ecgvit.models import create_model, get_spec

    tokens = {}
    for name in ("ecgvit-tiny", "ecgvit-tiny-p4"):
        spec = get_spec(name)
        m = create_model(name, num_classes=4).eval()  # the spec's own size and stem
        x = torch.rand(2, 1, *spec.img_size)
        with torch.no_grad():
            tokens[name] = m.tokens(x).shape
            assert m(x).shape == (2, 4)
            assert m.attention_rollout(x).shape == (2, 4, 40)
    assert tokens["ecgvit-tiny-p4"] == tokens["ecgvit-tiny"] == (2, 160, 128)
    assert get_spec("ecgvit-tiny-p4").img_size == get_spec("ecgvit-tiny").img_size
    with pytest.raises(ValueError, match="img_size"):
        create_model("ecgvit-tiny-p4", num_classes=4, img_size=(288, 324))  # 324 % 8 != 0
