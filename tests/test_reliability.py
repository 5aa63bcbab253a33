"""Reliability fixes of issue 26 (items 1-7, 10's telemetry, 11's CLI parts): no code runs from a
planted file, concurrent runs refused instead of interleaved, no orphaned workers, one-line errors,
resumed training and prediction indistinguishable from uninterrupted ones, no silent skips.

Everything is generated here (synthetic pages, random or seconds-long trained weights)."""

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

import pytest

from ecgvit.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Training flags that keep a run to seconds on 2 cores (see tests/test_train_eval.py).
def train_args(pretrain: int = 0) -> list[str]:
    return [
        *("--model", "ecgvit-tiny", "--batch-size", "8", "--height", "64", "--width", "128"),
        *("--val-fraction", "0.34", "--patience", "0", "--threads", "1", "--quiet"),
        *("--pretrain-per-class", str(pretrain), "--pretrain-epochs", "1"),
    ]


TRAIN_ARGS = train_args()


def cli(capsys, *args) -> tuple[int, str, str]:
    """`ecgvit ARGS...` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(err: str, *needles: str) -> str:
    """The single `ecgvit: error: ...` line of `err` (no traceback), containing every needle."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ecgvit: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def cli_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "ecgvit.cli", *map(str, args)]


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    return lines[0], lines[1:]


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """ECGVIT_CACHE in a temp folder (page and pretraining caches), here and in subprocesses."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECGVIT_CACHE", str(cache))
        yield {**os.environ, "ECGVIT_CACHE": str(cache)}


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    from ecgvit.synth import generate

    d = tmp_path_factory.mktemp("train_data")
    generate(d, per_class=3, seed=3, progress=False)
    return d


@pytest.fixture(scope="module")
def many_pages(tmp_path_factory, synth_pages) -> Path:
    """80 page files (copies of the four synthetic pages): enough batches to kill a run midway."""
    d = tmp_path_factory.mktemp("many")
    for i in range(80):
        shutil.copy(synth_pages[i % len(synth_pages)], d / f"page{i:03d}.jpg")
    return d


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- 1. no code runs from a planted resume.pt --------------------------------------------


class _Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_in_resume_pt_is_refused_not_run(tmp_path, train_data, cache_env, capsys):
    import torch

    run, marker = tmp_path / "run", tmp_path / "MARKER"
    run.mkdir()
    torch.save({"model": _Planted(marker)}, run / "resume.pt")
    rc, _, err = cli(capsys, "train", "--data", train_data, "--out", run, "--resume", "--quiet")
    assert rc == 2
    one_line_error(err, "resume.pt")
    assert not marker.exists()


def test_planted_pickle_in_the_pretraining_cache_is_refused_not_run(
    tmp_path, train_data, cache_env, capsys, monkeypatch
):
    """The synthetic pretraining cache (ECGVIT_CACHE/pretrain/KEY/run/resume.pt) is resumed as
    data only too."""
    import torch

    from ecgvit.config import TrainConfig
    from ecgvit.engine.train import pretrain_key
    from ecgvit.models import get_spec

    cfg = TrainConfig(  # as `train_args(pretrain=1)` sets it
        model="ecgvit-tiny",
        batch_size=8,
        val_fraction=0.34,
        patience=0,
        threads=1,
        pretrain_per_class=1,
        pretrain_epochs=1,
    )
    key = pretrain_key(cfg, get_spec("ecgvit-tiny").preprocess(height=64, width=128))
    monkeypatch.setenv("ECGVIT_CACHE", str(tmp_path / "cache"))  # its own: the planted file stays here
    cached = tmp_path / "cache" / "pretrain" / key / "run"
    cached.mkdir(parents=True)
    (cached.parent / "pages").mkdir()
    (cached.parent / "pages" / "complete").write_text("ok\n")  # its pages generated already: straight to the resume
    marker = tmp_path / "MARKER"
    torch.save({"model": _Planted(marker)}, cached / "resume.pt")
    rc, _, err = cli(capsys, "train", "--data", train_data, "--out", tmp_path / "run", *train_args(pretrain=1))
    assert rc == 2
    one_line_error(err, str(cached / "resume.pt"))
    assert not marker.exists()


# --- 2. a run's output in use by another is refused -------------------------------------


def test_second_predict_into_the_same_out_is_refused_while_the_first_runs(
    tmp_path, tiny_run, many_pages, synth_pages, cache_env, capsys
):
    out = tmp_path / "preds.csv"
    pages = sorted(many_pages.glob("*.jpg"))[:30]
    first = subprocess.Popen(
        cli_cmd("predict", tiny_run, *pages, "--out", out, "--batch-size", "1", "--processes", "1", "--quiet"),
        env=cache_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while not (out.exists() and len(out.read_text().splitlines()) >= 2):  # the first rows written
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline
            time.sleep(0.05)
        rc, _, err = cli(capsys, "predict", tiny_run, synth_pages[0], "--out", out, "--quiet")
        assert first.poll() is None, "the first run ended before the second started: no overlap tested"
        assert rc == 2
        one_line_error(err, "in use", str(out))
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode in (0, 1), err
    header, rows = read_rows(out)
    assert [r[0] for r in rows] == [str(p) for p in pages]  # all of them, in order, each once
    assert all(len(r) == len(header) for r in rows)


def test_out_of_another_model_is_refused_without_overwrite(tmp_path, tiny_run, make_run, synth_pages, capsys):
    other = make_run(tmp_path / "other", seed=1)
    out = tmp_path / "preds.csv"
    assert cli(capsys, "predict", tiny_run, *synth_pages[:2], "--out", out, "--quiet")[0] in (0, 1)
    before = out.read_bytes()
    rc, _, err = cli(capsys, "predict", other, *synth_pages[:2], "--out", out, "--quiet")
    assert rc == 2
    one_line_error(err, "another model", "--overwrite")
    assert out.read_bytes() == before  # refused: nothing changed
    rc, stdout, _ = cli(capsys, "predict", other, *synth_pages[:2], "--out", out, "--overwrite", "--quiet")
    assert rc in (0, 1) and "skipped" not in stdout
    header, rows = read_rows(out)
    from ecgvit.run import weights_digest

    assert len(rows) == 2 and {r[header.index("model_sha256")] for r in rows} == {
        weights_digest(other / "model.safetensors")
    }


# --- 2 (training), 5, 11 (permissions): one training killed after its first epoch ----------


@pytest.fixture(scope="module")
def provenance(tmp_path_factory, train_data, cache_env):
    """An uninterrupted run and one killed by SIGKILL after its first epoch, then resumed (same
    seed, data and synthetic pretraining, so both record `initial_weights`); while the killed
    one was training, a second `ecgvit train` into its folder was tried (its exit code and
    stderr are returned)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("provenance")
    args = [*train_args(pretrain=1), "--epochs", "3", "--no-gate"]  # the gate is no provenance (and slow)
    whole, killed = root / "whole", root / "killed"
    assert main(["train", "--data", str(train_data), "--out", str(whole), *args]) == 0
    proc = subprocess.Popen(
        cli_cmd("train", "--data", train_data, "--out", killed, *args),
        env=cache_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    second: tuple[int, str] | None = None
    metrics, lock, killed_resume = killed / "metrics.csv", killed / ".ecgvit.lock", killed / "resume.pt"
    deadline = time.time() + 90
    try:
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2 and killed_resume.exists()):
            if second is None and lock.exists() and proc.poll() is None:
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    rc = main(["train", "--data", str(train_data), "--out", str(killed), *args])
                second = (rc, err.getvalue())
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    done = len(metrics.read_text().splitlines()) - 1
    assert 1 <= done < 3
    assert main(["train", "--data", str(train_data), "--out", str(killed), "--resume", "--quiet"]) == 0
    return {"whole": whole, "killed": killed, "second": second, "done_before_kill": done}


def test_second_training_into_a_running_folder_is_refused(provenance):
    assert provenance["second"] is not None, "the lock file never appeared while training"
    rc, err = provenance["second"]
    assert rc == 2
    one_line_error(err, "in use", ".ecgvit.lock")
    epochs = [r["epoch"] for r in csv.DictReader(open(provenance["killed"] / "metrics.csv"))]
    assert epochs == ["1", "2", "3"]  # the refused run wrote nothing: no duplicate epoch


def test_training_lock_is_held_while_training(tmp_path, train_data, cache_env, capsys):
    from ecgvit.run import exclusive

    run = tmp_path / "run"
    run.mkdir()
    with exclusive(run / ".ecgvit.lock", "test"):
        rc, _, err = cli(capsys, "train", "--data", train_data, "--out", run, *TRAIN_ARGS, "--epochs", "1")
    assert rc == 2
    one_line_error(err, "in use")
    assert not (run / "metrics.csv").exists()


def test_resumed_run_keeps_best_and_initial_weights(provenance):
    whole = json.loads((provenance["whole"] / "config.json").read_text())
    resumed = json.loads((provenance["killed"] / "config.json").read_text())
    assert whole["initial_weights"] and "pretrain" in whole["initial_weights"]
    assert resumed["finished"] is True
    assert resumed.get("initial_weights") == whole["initial_weights"]
    assert resumed.get("best") == whole["best"]
    assert [r["epoch"] for r in csv.DictReader(open(provenance["killed"] / "metrics.csv"))] == ["1", "2", "3"]


def test_safetensors_written_as_readable_as_the_rest_of_the_run(provenance, tmp_path, capsys):
    umask = os.umask(0o022)
    os.umask(umask)
    want = 0o666 & ~umask
    run = provenance["whole"]  # written by `ecgvit train`
    assert (run / "config.json").stat().st_mode & 0o777 == want
    assert (run / "model.safetensors").stat().st_mode & 0o777 == want
    # The gate's statistics, written by `ecgvit calibrate RUN` (on its own pages only: fast).
    again = copy_run(run, tmp_path / "again")
    rc, _, err = cli(capsys, "calibrate", again, "--synthetic-per-class", "0", "--quiet")
    assert rc == 0, err
    assert (again / "gate.json").stat().st_mode & 0o777 == want
    assert (again / "gate.safetensors").stat().st_mode & 0o777 == want


# --- 3. killing predict leaves no worker behind --------------------------------------------


def _start_predict_with_workers(onnx_run, many_pages, out: Path, env: dict):
    import psutil

    run, _ = onnx_run
    proc = subprocess.Popen(
        cli_cmd("predict", run, many_pages, "--out", out, "--processes", "2", "--batch-size", "4", "--quiet"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while True:  # the workers started and the first rows were written
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no worker processes and rows within 60 s"
        kids = psutil.Process(proc.pid).children(recursive=True)
        if len(kids) >= 2 and out.exists() and len(out.read_text().splitlines()) >= 2:
            return proc, kids
        time.sleep(0.05)


def _gone_within(procs, seconds: float) -> list:
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=seconds)
    for p in alive:  # do not leave them to the rest of the suite
        p.kill()
    return alive


@pytest.mark.slow
def test_sigkill_of_predict_leaves_no_worker(tmp_path, onnx_run, many_pages, cache_env):
    proc, kids = _start_predict_with_workers(onnx_run, many_pages, tmp_path / "p.csv", cache_env)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    alive = _gone_within(kids, 5)
    proc.communicate(timeout=30)  # (workers left alive would have held its pipes open)
    assert alive == []


@pytest.mark.slow
def test_sigterm_of_predict_stops_like_ctrl_c(tmp_path, onnx_run, many_pages, cache_env):
    out = tmp_path / "p.csv"
    proc, kids = _start_predict_with_workers(onnx_run, many_pages, out, cache_env)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    alive = _gone_within(kids, 5)
    _, err = proc.communicate(timeout=30)
    assert alive == []
    assert proc.returncode == 130, err
    assert "interrupted; finished outputs were kept" in err and "Traceback" not in err
    header, rows = read_rows(out)
    assert 1 <= len(rows) < 80 and all(len(r) == len(header) for r in rows)
    assert all(r[header.index("status")] in ("ok", "low_confidence", "out_of_scope") for r in rows)


# --- 4. one-line errors naming the file --------------------------------------------------


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_unreadable_resume_pt_is_one_line(kind, tmp_path, train_data, cache_env, capsys):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    f = run / "resume.pt"
    if kind == "empty":
        f.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 1}, f)
        truncate(f)
    else:
        f.write_bytes(os.urandom(4096))
    rc, _, err = cli(capsys, "train", "--data", train_data, "--out", run, "--resume", "--quiet")
    assert rc == 2
    one_line_error(err, str(f))


@pytest.fixture
def broken_weights(tmp_path, tiny_run) -> Path:
    run = copy_run(tiny_run, tmp_path / "broken")
    truncate(run / "model.safetensors")
    return run


def test_truncated_weights_in_predict_is_one_line(broken_weights, synth_pages, tmp_path, capsys):
    out = tmp_path / "p.csv"
    rc, _, err = cli(capsys, "predict", broken_weights, synth_pages[0], "--backend", "torch", "--out", out, "--quiet")
    assert rc == 2
    one_line_error(err, str(broken_weights / "model.safetensors"))


def test_truncated_weights_in_explain_is_one_line(broken_weights, synth_pages, tmp_path, capsys):
    rc, _, err = cli(capsys, "explain", broken_weights, synth_pages[0], "--out", tmp_path / "heat.png")
    assert rc == 2
    one_line_error(err, str(broken_weights / "model.safetensors"))
    assert not (tmp_path / "heat.png").exists()


def test_truncated_weights_in_serve_is_one_line(broken_weights, cache_env):
    from ecgvit.run import RunError
    from ecgvit.runtime.predictor import Predictor

    with pytest.raises(RunError, match="model.safetensors"):
        Predictor(broken_weights)
    r = subprocess.run(
        cli_cmd("serve", broken_weights, "--port", "0"), env=cache_env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    one_line_error(r.stderr, str(broken_weights / "model.safetensors"))


@pytest.mark.parametrize("name", ["config.json", "gate.json"])
def test_malformed_run_file_names_it(name, tmp_path, tiny_run, synth_pages, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / name).write_text('{"classes": ["a", "b"')  # cut short
    rc, _, err = cli(capsys, "predict", run, synth_pages[0], "--quiet")
    assert rc == 2
    one_line_error(err, str(run / name))


# --- 6. predict goes on where it stopped --------------------------------------------------


@pytest.fixture
def four_pages(tmp_path, synth_pages) -> list[Path]:
    d = tmp_path / "pages"
    d.mkdir()
    return [Path(shutil.copy(p, d / f"p{i}.jpg")) for i, p in enumerate(synth_pages)]


def _skipped(stdout: str) -> int | None:
    for line in stdout.splitlines():
        if "already answered" in line:
            return int(line.split()[0])
    return None


def test_predict_resume_skips_answered_inputs_csv(tmp_path, tiny_run, four_pages, capsys):
    out = tmp_path / "p.csv"
    assert cli(capsys, "predict", tiny_run, *four_pages[:2], "--out", out, "--quiet")[0] in (0, 1)
    first = read_rows(out)[1]
    rc, stdout, _ = cli(capsys, "predict", tiny_run, four_pages[0].parent, "--out", out, "--quiet")  # the folder
    assert rc == 0 and _skipped(stdout) == 2
    assert "2 inputs" in stdout  # only the two new ones were predicted
    header, rows = read_rows(out)
    assert rows[:2] == first  # kept as they were
    assert [r[0] for r in rows] == [str(p) for p in four_pages]
    # Nothing new: everything skipped, nothing redone.
    rc, stdout, _ = cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--quiet")
    assert rc == 0 and _skipped(stdout) == 4 and read_rows(out)[1] == rows
    # --overwrite redoes everything.
    rc, stdout, _ = cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--overwrite", "--quiet")
    assert _skipped(stdout) is None and len(read_rows(out)[1]) == 4


def test_predict_resume_redoes_a_page_whose_content_changed(tmp_path, tiny_run, four_pages, capsys):
    from ecgvit.runtime.writers import input_md5

    out = tmp_path / "p.csv"
    assert cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--quiet")[0] in (0, 1)
    shutil.copy(four_pages[3], four_pages[1])  # p1.jpg now holds another page
    rc, stdout, _ = cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--quiet")
    assert rc in (0, 1) and _skipped(stdout) == 3
    header, rows = read_rows(out)
    md5 = header.index("md5")
    p1 = [r for r in rows if r[0] == str(four_pages[1])]
    assert p1[-1][md5] == input_md5(str(four_pages[1]))  # answered again, for its new content
    assert p1[-1][2:-2] == [r for r in rows if r[0] == str(four_pages[3])][0][2:-2]  # same answer as p3's


def test_predict_resume_after_another_content_keeps_one_row_per_input(tmp_path, tiny_run, four_pages, capsys):
    """The stale row of a changed page is replaced, not kept beside the new one."""
    out = tmp_path / "p.csv"
    assert cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--quiet")[0] in (0, 1)
    shutil.copy(four_pages[3], four_pages[1])
    cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--quiet")
    paths = [r[0] for r in read_rows(out)[1]]
    assert sorted(paths) == sorted(str(p) for p in four_pages)


@pytest.mark.parametrize(
    "tear",
    ["mid_row", "in_last_field"],
)
def test_predict_resume_drops_a_torn_last_csv_line(tear, tmp_path, tiny_run, four_pages, capsys):
    out = tmp_path / "p.csv"
    assert cli(capsys, "predict", tiny_run, *four_pages[:3], "--out", out, "--quiet")[0] in (0, 1)
    text = out.read_text()
    last = text.splitlines()[-1]
    # A kill between two writes of a flush tears the last line anywhere: here mid-row (fewer
    # fields) or inside its last field (the model digest cut short, same field count).
    cut = len(last) // 2 if tear == "mid_row" else len(last) - 10
    out.write_text(text[: len(text) - len(last) - 1] + last[:cut])
    rc, stdout, _ = cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--quiet")
    assert rc == 0 and _skipped(stdout) == 2
    header, rows = read_rows(out)
    assert [r[0] for r in rows] == [str(four_pages[i]) for i in (0, 1, 2, 3)]
    assert all(len(r) == len(header) for r in rows)


def test_predict_resume_json(tmp_path, tiny_run, four_pages, capsys):
    out = tmp_path / "p.json"
    assert cli(capsys, "predict", tiny_run, *four_pages[:2], "--out", out, "--quiet")[0] in (0, 1)
    doc = json.loads(out.read_text())
    rc, stdout, _ = cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--quiet")
    assert rc == 0 and _skipped(stdout) == 2
    again = json.loads(out.read_text())
    assert [p["path"] for p in again["predictions"]] == [str(p) for p in four_pages]
    assert again["predictions"][:2] == doc["predictions"] and again["complete"] is True
    # Interrupted: only the partial JSON lines are left, the last one torn.
    lines = [json.dumps({**r, "model_sha256": again["model_sha256"]}) for r in again["predictions"][:3]]
    out.unlink()
    partial = out.with_name(out.name + ".partial.jsonl")
    partial.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    rc, stdout, _ = cli(capsys, "predict", tiny_run, *four_pages, "--out", out, "--quiet")
    assert rc == 0 and _skipped(stdout) == 2
    assert [p["path"] for p in json.loads(out.read_text())["predictions"]] == [str(p) for p in four_pages]
    assert not partial.exists()


# --- 7. a mistyped run folder is an error, a folder of pages an input ----------------------


def test_missing_run_folder_is_an_error_not_the_bundled_model(tmp_path, synth_pages, capsys):
    out = tmp_path / "p.csv"
    rc, _, err = cli(capsys, "predict", "/nonexistent_run", synth_pages[0], "--out", out, "--quiet")
    assert rc == 2
    one_line_error(err, "/nonexistent_run")
    assert not out.exists()


def test_folder_of_pages_as_first_argument_is_an_input(tmp_path, tiny_run, four_pages, capsys, monkeypatch):
    import ecgvit.runtime.files as files_mod

    monkeypatch.setattr(files_mod, "bundled_run", lambda: tiny_run)  # the "bundled" model: fast
    out = tmp_path / "p.csv"
    rc, stdout, _ = cli(capsys, "predict", four_pages[0].parent, "--out", out, "--quiet")
    assert rc in (0, 1) and "4 inputs" in stdout
    assert [r[0] for r in read_rows(out)[1]] == [str(p) for p in four_pages]


# --- 10. no telemetry queued by ONNX Runtime -----------------------------------------------

_ORT_PROBE = """
import importlib.abc, os, sys
seen = []
class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime":
            seen.append(os.environ.get("ORT_DISABLE_TELEMETRY"))
        return None
sys.meta_path.insert(0, Probe())
import ecgvit.runtime.predictor
print(os.environ.get("ORT_DISABLE_TELEMETRY"))
import onnxruntime
print(seen[0])
"""


@pytest.mark.parametrize("user", [None, "0"])
def test_ort_telemetry_is_off_before_onnxruntime_is_imported(user):
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    if user is not None:
        env["ORT_DISABLE_TELEMETRY"] = user  # the user's own choice is kept
    r = subprocess.run([sys.executable, "-c", _ORT_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [user or "1"] * 2


# --- 11. no silent skips, bounds refused ------------------------------------------------


def test_folder_scan_names_links_fifos_and_svgs(tmp_path, tiny_run, synth_pages, capsys):
    d = tmp_path / "scan"
    d.mkdir()
    shutil.copy(synth_pages[0], d / "good.jpg")
    (d / "broken.jpg").symlink_to(d / "gone.jpg")
    (d / "loop.jpg").symlink_to(d / "loop.jpg")
    os.mkfifo(d / "fifo.jpg")
    (d / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    out = tmp_path / "p.csv"
    cli(capsys, "predict", tiny_run, d, "--out", out, "--quiet")
    header, rows = read_rows(out)
    by_name = {Path(r[0]).name: (r[header.index("status")], r[header.index("reason")]) for r in rows}
    assert set(by_name) == {"good.jpg", "broken.jpg", "loop.jpg", "fifo.jpg", "drawing.svg"}
    assert by_name["good.jpg"][0] != "bad"
    assert {n: s for n, (s, _) in by_name.items() if n != "good.jpg"} == dict.fromkeys(
        ["broken.jpg", "loop.jpg", "fifo.jpg", "drawing.svg"], "bad"
    )
    assert "broken symbolic link" in by_name["broken.jpg"][1]
    assert "symbolic link loop" in by_name["loop.jpg"][1]
    assert "FIFO" in by_name["fifo.jpg"][1]
    assert "SVG" in by_name["drawing.svg"][1]


def test_looping_link_named_explicitly_says_so(tmp_path, tiny_run, capsys):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    out = tmp_path / "p.csv"
    cli(capsys, "predict", tiny_run, loop, "--out", out, "--quiet")
    header, rows = read_rows(out)
    reason = rows[0][header.index("reason")]
    assert rows[0][header.index("status")] == "bad"
    assert "symbolic link loop" in reason and "no such file" not in reason


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--batch-size", "-3"), ("--threads", "-5")])
def test_out_of_range_predict_flags_are_refused(flag, value, tiny_run, synth_pages, tmp_path, capsys):
    out = tmp_path / "p.csv"
    rc, _, err = cli(capsys, "predict", tiny_run, synth_pages[0], flag, value, "--out", out, "--quiet")
    assert rc == 2
    one_line_error(err, flag.lstrip("-").replace("-", "_"))
    assert not out.exists()
