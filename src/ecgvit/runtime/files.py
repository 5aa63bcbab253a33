"""The `ecgvit predict` and `ecgvit explain` pipelines over files: name the model, expand the
inputs, predict in batches, write as it goes."""

from __future__ import annotations

import glob
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ecgvit.data.io import INPUT_SUFFIXES, BadImageError, split_page
from ecgvit.run import RunError, bundled_names, bundled_run, is_run_dir
from ecgvit.runtime.inputs import expand_inputs
from ecgvit.runtime.prediction import Prediction
from ecgvit.runtime.predictor import NO_MODEL, Predictor
from ecgvit.runtime.writers import ResultWriter, input_md5, summarize

__all__ = ["explain_file", "predict_files", "split_model_and_paths"]

log = logging.getLogger("ecgvit")


def split_model_and_paths(inputs: Sequence[str], onnx: str | None = None) -> tuple[str | None, list[str]]:
    """`ecgvit predict [RUN|MODEL.onnx|BUNDLED_NAME] PATH...`: the first argument is the model when it
    is a run folder (has config.json), an .onnx file or the name of a bundled model; otherwise every argument is an input and the
    model is the bundled one. A first argument that exists nowhere and is not named like a page
    (an image or PDF suffix, a glob, `file#page=N`) is taken for a mistyped run folder: an error,
    never a silent fall-back to the bundled model."""
    inputs = list(inputs)
    if inputs and not Path(inputs[0]).exists() and inputs[0] in bundled_names():
        return str(bundled_run(inputs[0])), inputs[1:]  # a bundled model by name
    if inputs and (is_run_dir(inputs[0]) or (inputs[0].lower().endswith(".onnx") and Path(inputs[0]).is_file())):
        return inputs[0], inputs[1:]
    if inputs:
        first = inputs[0]
        p = Path(split_page(first)[0])
        looks_like_input = p.suffix.lower() in INPUT_SUFFIXES or glob.has_magic(first)
        if not p.exists() and not looks_like_input:
            what = "ONNX model" if first.lower().endswith(".onnx") else "run folder"
            raise RunError(f"{first}: no such {what} or input (a run folder holds config.json + model.safetensors)")
        if p.is_dir() and (p / "model.safetensors").exists() and not is_run_dir(p):
            raise RunError(f"{first}: looks like a run folder but has no config.json")
    if onnx is None:
        # No model named: the one shipped inside the package, when this install has it.
        bundled = bundled_run()
        if bundled is None:
            raise ValueError(NO_MODEL)
        return str(bundled), inputs
    return None, inputs


def predict_files(
    model: str | Path | None,
    paths: Sequence[str],
    *,
    out: str | Path | None = None,
    explain_dir: str | Path | None = None,
    onnx: str | Path | None = None,
    backend: str = "auto",
    batch_size: int = 16,
    threads: int = 0,
    workers: int = 0,
    processes: int = 1,
    progress: bool = True,
    predictor: Predictor | None = None,
    mode: str = "auto",
) -> tuple[list[Prediction], dict[str, Any]]:
    """The `ecgvit predict` pipeline: expand inputs, predict in batches, write as it goes.

    processes: see `Predictor` (the CLI passes 0, auto). mode: what to do with an `out` that
    exists (see `ResultWriter`): "auto" goes on after the inputs it already answers with the
    same model; "resume" insists; "overwrite" starts afresh. The summary's "skipped" counts
    the inputs answered by an earlier run."""
    if not paths:
        raise ValueError("no images given: ecgvit predict RUN PATH... (files, folders or globs)")
    pred = predictor or Predictor(
        model, onnx=onnx, backend=backend, threads=threads, batch_size=batch_size, workers=workers, processes=processes
    )
    files, bad = expand_inputs(paths)
    writer = ResultWriter(out, pred.classes, pred.model_name, pred.model_digest, mode=mode) if out else None
    skipped = 0
    if writer is not None and writer.resumed:
        n = len(files) + len(bad)
        files = [f for f in files if not writer.answered(f, input_md5(f))]
        bad = [b for b in bad if not writer.answered(b.path, "")]
        writer.forget({*files, *(b.path for b in bad)})  # answered again: their old rows go
        skipped = n - len(files) - len(bad)
        log.info(
            f"{out}: {skipped} input(s) already answered by this model there, skipped; {len(files) + len(bad)} to go"
        )
    rows: list[Prediction] = []
    t0 = time.perf_counter()
    complete = False
    used_names: set[str] = set()
    try:
        if bad:
            bad_rows = [Prediction.bad(b.path, b.reason) for b in bad]
            rows.extend(bad_rows)
            if writer:
                writer.write(bad_rows)

        bar = tqdm(
            total=len(files), unit="page", desc="predict", disable=not progress or len(files) < 2, file=sys.stderr
        )
        for batch in pred.iter_batches(files, batch_size=batch_size):
            if explain_dir is not None:
                for r in batch:
                    if r.answered:
                        name = _unique_name(Path(r.path).stem, used_names)
                        try:
                            _, info = pred.explain(r.path, out=Path(explain_dir) / f"{name}.png")
                            r.heatmap = info["heatmap"]
                            if "leads" in info:  # a model on the reader's leads: the per-lead bars
                                r.extra["lead_importance"] = info["leads"]
                        except Exception as exc:  # an explanation failing must not lose the prediction
                            r.reason = (
                                r.reason + "; " if r.reason else ""
                            ) + f"no heatmap ({type(exc).__name__}: {exc})"
            rows.extend(batch)
            if writer:
                writer.write(batch)
            bar.update(len(batch))
        bar.close()
        complete = True
    finally:
        secs = time.perf_counter() - t0
        summary = summarize(rows, secs)
        summary["backend"] = pred.backend
        summary["complete"] = complete
        summary["skipped"] = skipped
        if writer:
            writer.close(summary, complete=complete)
        if predictor is None:
            pred.close()
    return rows, summary


def _unique_name(stem: str, used: set[str]) -> str:
    name, i = stem, 2
    while name in used:
        name = f"{stem}_{i}"
        i += 1
    used.add(name)
    return name


def explain_file(
    run: str | Path | None, image: str | Path, out: str | Path, method: str = "auto", max_side: int = 1600
) -> dict[str, Any]:
    """`ecgvit explain [RUN] IMAGE --out heat.png`."""
    pred = Predictor(run)
    try:
        _, info = pred.explain(image, out=out, method=method, max_side=max_side)
    except BadImageError as exc:
        raise ValueError(f"{image}: {exc.reason}") from None
    return info
