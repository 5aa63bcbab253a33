"""`ecgvit` command line: a thin layer over the Python API.

One grammar, ultralytics-style: `ecgvit <verb> [args]`, `ecgvit data <verb> [args]`.
Each handler imports its stage lazily so `ecgvit --help` stays instant.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from ecgvit.config import PREPROCESS_FORMS


class Parser(argparse.ArgumentParser):
    """ArgumentParser that answers a mistyped option or command with the closest valid ones."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = ""
        bad: list[str] = []
        if "unrecognized arguments:" in message:
            bad = message.split("unrecognized arguments:", 1)[1].split()
        elif "invalid choice:" in message:
            bad = [message.split("invalid choice:", 1)[1].split("'")[1]]
        valid: list[str] = []
        for action in self._actions:
            valid.extend(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                valid.extend(action.choices)
        for b in bad:
            flag = b.split("=", 1)[0]
            close = difflib.get_close_matches(flag, valid, n=3, cutoff=0.5)
            if close:
                hint += f"\n  {flag!r}: did you mean {' or '.join(close)}?"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index", help="scan a dataset folder or CSV into a manifest (md5, size, duplicate groups, bad files)"
    )
    p.add_argument(
        "source", help="dataset folder (Khan layout or one folder per class) or a CSV with path,label[,group]"
    )
    p.add_argument("--out", default="manifest.csv", help="manifest CSV to write (default: manifest.csv)")
    p.add_argument(
        "--near-dup-bits",
        type=int,
        default=None,
        help="pHash Hamming threshold for near duplicates; 0 disables (default 8)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(_parser=p, func=_cmd_index)


def _cmd_index(a: argparse.Namespace) -> int:
    from ecgvit.config import IndexConfig
    from ecgvit.data.index import index_dataset, summary_text

    cfg = IndexConfig() if a.near_dup_bits is None else IndexConfig(near_dup_bits=a.near_dup_bits)
    rows = index_dataset(a.source, cfg=cfg, out=a.out, progress=not a.quiet)
    print(summary_text(rows))
    print(f"manifest: {a.out}")
    return 0


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="grouped, stratified K-fold split of a manifest (no duplicate group on two sides)")
    p.add_argument("manifest")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.0, help="hold out this fraction of groups as fold 'test'")
    p.add_argument("--out", default="splits.csv")
    p.set_defaults(_parser=p, func=_cmd_split)


def _cmd_split(a: argparse.Namespace) -> int:
    from ecgvit.config import SplitConfig
    from ecgvit.data.split import make_splits, split_summary_text

    cfg = SplitConfig(folds=a.folds, seed=a.seed, test_fraction=a.test_fraction)
    rows = make_splits(a.manifest, cfg=cfg, out=a.out)
    print(split_summary_text(rows))
    print(f"splits: {a.out}")
    return 0


def _add_crops(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crops", help="contact sheet of detected trace areas (green: detected, red: fallback box)")
    p.add_argument("manifest", help="manifest CSV, or a folder of images")
    p.add_argument("--out", default="crops.png")
    p.add_argument("--limit", type=int, default=0, help="at most this many distinct pages (0: all)")
    p.add_argument("--columns", type=int, default=12)
    p.set_defaults(_parser=p, func=_cmd_crops)


def _cmd_crops(a: argparse.Namespace) -> int:
    from ecgvit.data.crop import contact_sheet

    stats = contact_sheet(a.manifest, a.out, limit=a.limit, columns=a.columns)
    print(f"{stats['pages']} pages: {stats['detected']} grid detected, {stats['fallback']} fallback box")
    print(f"contact sheet: {a.out}")
    return 0


# ecgvit.synth.page.LAYOUTS (kept here so --help stays instant; tests/test_synth_cli.py checks they agree)
_SYNTH_LAYOUTS = ("3x4+1", "3x4", "6x2", "12x1", "3x4+3", "6x2+1")
_NEGATIVE_KINDS = "single_lead, layout_6x2, layout_12x1, blank_grid, text_only, texture, gradient, shapes, photo"


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write synthetic 12-lead ECG report pages with known labels (or, with --negatives, out-of-scope images)",
    )
    p.add_argument(
        "--out", required=True, help="output folder (one sub-folder per class, or per kind with --negatives)"
    )
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    # ecgvit.synth.styles.STYLES and ecgvit.synth.distort.LEVELS (checked by tests/test_synth_cli.py)
    styles = ("khan", "ge_mac", "philips", "schiller", "nihon_kohden", "bionet", "textbook")
    levels = ("none", "light", "heavy", "photo")
    p.add_argument(
        "--distort",
        default="none",
        help=f"capture distortion: {', '.join(levels)} (photo: a hand-held phone photo; default none)",
    )
    p.add_argument("--format", choices=["jpg", "png"], default="jpg")
    p.add_argument(
        "--layout",
        default=None,
        help="panel layout: 3x4+1 (with lead II rhythm strip; default), 3x4, 6x2 (5 s panels), 12x1 (10 s rows), "
        "3x4+3 (V1, II, V5 rhythm strips), 6x2+1, or random (one per page)",
    )
    p.add_argument(
        "--style",
        default=None,
        help=f"page style (machine family): {', '.join(styles)} (default khan), or random "
        "(family, paper, dpi, speed, gain, colours and, unless --layout is given, layout drawn per page)",
    )
    p.add_argument(
        "--negatives",
        action="store_true",
        help="write images that are NOT a supported report page (for an out-of-scope gate) instead of class pages",
    )
    p.add_argument(
        "--kinds", default=None, help=f"with --negatives: comma-separated kinds (default: all of {_NEGATIVE_KINDS})"
    )
    p.add_argument("--per-kind", type=int, default=None, help="with --negatives: images per kind (default 10)")
    p.add_argument(
        "--trace-masks",
        action="store_true",
        help="also store each page's trace mask (the traces alone, warped like the page) in its .npz",
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(_parser=p, func=_cmd_synth, _synth_styles=styles, _synth_levels=levels)


def _cmd_synth(a: argparse.Namespace) -> int:
    for flag, v, valid in (
        ("--layout", a.layout, (*_SYNTH_LAYOUTS, "random")),
        ("--style", a.style, (*a._synth_styles, "random")),
        ("--distort", a.distort, a._synth_levels),
    ):
        if v is not None and v not in valid:
            raise ValueError(f"{flag} {v!r}: expected one of {', '.join(valid)}")
    if a.negatives:
        if a.style is not None or a.trace_masks:
            raise ValueError("--style and --trace-masks apply to class pages, not to --negatives")
        if a.layout is not None:
            raise ValueError(
                "--layout applies to class pages; --negatives already includes the layout_6x2 and layout_12x1 kinds"
            )
        from ecgvit.synth.negatives import NEGATIVE_KINDS, generate_negatives

        kinds = NEGATIVE_KINDS if a.kinds is None else a.kinds
        per_kind = 10 if a.per_kind is None else a.per_kind
        print(
            generate_negatives(
                a.out,
                per_kind=per_kind,
                seed=a.seed,
                kinds=kinds,
                fmt=a.format,
                workers=a.workers,
                progress=not a.quiet,
            )
        )
        return 0
    for flag, v in (("--kinds", a.kinds), ("--per-kind", a.per_kind)):
        if v is not None:
            raise ValueError(f"{flag} needs --negatives")
    from ecgvit.synth import generate

    style = a.style or "khan"
    layout = a.layout or ("random" if style == "random" else _SYNTH_LAYOUTS[0])
    summary = generate(
        a.out,
        per_class=a.per_class,
        seed=a.seed,
        distort=a.distort,
        fmt=a.format,
        workers=a.workers,
        progress=not a.quiet,
        layout=layout,
        style=None if style == "khan" else style,
        trace_masks=a.trace_masks,
    )
    print(summary)
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models: parameters, GFLOPs per image, input size")
    p.set_defaults(_parser=p, func=_cmd_models)


def _cmd_models(a: argparse.Namespace) -> int:
    from ecgvit.config import DEFAULT_MODEL
    from ecgvit.models import count_gflops, count_params, create_model, get_spec, list_models

    nw = max(len(n) for n in list_models()) + 2
    print(f"{'name':<{nw}}{'params':>10}{'GFLOPs':>9}{'input (HxWxC)':>16}  description")
    for name in list_models():
        spec = get_spec(name)
        m = create_model(name)
        g = count_gflops(m, spec.img_size, spec.in_chans)
        size = f"{spec.img_size[0]}x{spec.img_size[1]}x{spec.in_chans}"
        star = " (default)" if name == DEFAULT_MODEL else ""
        taught = f"; --teacher auto: {spec.default_teacher}" if spec.default_teacher else ""
        print(f"{name:<{nw}}{count_params(m) / 1e6:>9.2f}M{g:>9.2f}{size:>16}  {spec.description}{taught}{star}")
    from ecgvit.run import bundled_names, bundled_run, bundled_version

    b, version = bundled_run(), bundled_version()
    shown = f"{version} at {b}" if b else "none in this install (scripts/train_bundled.py makes it)"
    print(f"\nbundled model: {shown}")
    others = bundled_names()[1:]
    if others:
        print(f"also bundled (name it first: `ecgvit predict NAME page.jpg`): {', '.join(others)}")
    return 0


# TrainConfig fields `ecgvit cv` sets itself for every fold (fixed epochs, last epoch kept, no gate).
_CV_FIXED = ("split", "fold", "keep", "patience", "gate", "val_fraction")


def _config_flags(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> list[str]:
    """One flag per field of a config dataclass, help text from the field's metadata; returns
    the field names added (the handler builds the config from exactly these)."""
    import dataclasses

    types = {"int": int, "float": float, "str": str}
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        base = str(f.type).replace(" | None", "")
        default = f.default
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        help_ = f.metadata.get("help", "")
        if base == "bool":
            p.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"{help_} (default: %(default)s)",
            )
        elif base in types:
            shown = "none" if default is None else default
            p.add_argument(
                flag,
                dest=f.name,
                type=types[base],
                default=default,
                choices=f.metadata.get("choices"),
                help=f"{help_} (default: {shown})",
            )
        else:
            continue
        added.append(f.name)
    return added


def _add_size_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=int, default=None, help="input height (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="input width (default: the model's)")
    p.add_argument(
        "--form",
        choices=PREPROCESS_FORMS,
        default=None,
        help="what the model reads: page (the grid area's pixels), signals or traces (the page reader's leads "
        "in one canonical layout); default: the model's",
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ecgvit.config import TrainConfig

    p = sub.add_parser("train", help="train a model (grouped validation, early stopping, resumable, torchrun-ready)")
    p.add_argument("--data", required=True, help="dataset folder or manifest CSV")
    p.add_argument("--out", default=None, help="run folder (default: runs/train, runs/train2, ...)")
    fields = _config_flags(p, TrainConfig)
    _add_size_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out after an interruption")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(_parser=p, func=_cmd_train, _config_fields=fields)


def _cmd_train(a: argparse.Namespace) -> int:
    from ecgvit.config import TrainConfig
    from ecgvit.engine.train import train
    from ecgvit.models import get_spec

    if a.resume:
        if not a.out:
            raise ValueError("--resume needs --out RUN: the run to continue")
        # A resumed run goes on with the settings it was started with (saved in RUN/resume.pt).
        result = train(a.data, a.out, resume=True, progress=not a.quiet)
        print(f"run: {result['run']}")
        return 0
    cfg = TrainConfig(**{k: getattr(a, k) for k in a._config_fields})
    over = {k: v for k, v in (("height", a.height), ("width", a.width), ("form", a.form)) if v is not None}
    pre = get_spec(cfg.model).preprocess(**over)
    result = train(a.data, a.out, cfg, preprocess=pre, resume=a.resume, progress=not a.quiet)
    if result.get("val_macro_f1") is not None:
        print(
            f"best epoch {result['epoch']}: validation macro-F1 {result['val_macro_f1']:.3f}, accuracy {result['val_accuracy']:.3f}"
        )
    elif "epoch" in result:
        print(f"trained {result['epoch']} epochs on every page (no validation part)")
    print(f"run: {result['run']}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        aliases=["val"],
        help="score a trained run on labelled pages (distinct pages, intervals, calibration)",
    )
    p.add_argument("run", help="run folder (config.json + model.safetensors)")
    p.add_argument("--data", required=True, help="dataset folder or manifest CSV")
    p.add_argument("--report", default=None, help="write an HTML report (plots, worst mistakes) into this folder")
    p.add_argument("--json", default=None, help="write the metrics as JSON")
    p.add_argument(
        "--all-files", action="store_true", help="count duplicate files too (default: each distinct image once)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(_parser=p, func=_cmd_evaluate)


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from ecgvit.engine.evaluate import evaluate, format_metrics

    m = evaluate(a.run, a.data, report=a.report, json_out=a.json, all_files=a.all_files, progress=not a.quiet)
    if m["duplicates_dropped"]:
        print(
            f"{m['files']} files, {m['duplicates_dropped']} exact duplicates dropped: each distinct page counted once"
        )
    print(format_metrics(m))
    if a.report:
        print(f"report: {Path(a.report) / 'index.html'}")
    if a.json:
        print(f"metrics: {a.json}")
    return 0


def _add_cv(sub: argparse._SubParsersAction) -> None:
    from ecgvit.config import TrainConfig

    p = sub.add_parser("cv", help="repeated grouped stratified k-fold cross-validation")
    p.add_argument("--data", required=True, help="dataset folder or manifest CSV")
    p.add_argument("--out", required=True, help="CV folder: a run per fold, folds.csv, oof.csv, cv.json")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument(
        "--repeats", type=int, default=1, help="repeat r assigns folds with split seed + r, trains with seed + r"
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the fold assignment (default: --seed); keep it and change --seed to retrain on the same folds with other random draws",
    )
    fields = _config_flags(p, TrainConfig, skip=_CV_FIXED)
    _add_size_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(_parser=p, func=_cmd_cv, _config_fields=fields)


def _cmd_cv(a: argparse.Namespace) -> int:
    from ecgvit.engine.cv import cross_validate, format_cv
    from ecgvit.models import get_spec

    over = {k: v for k, v in (("height", a.height), ("width", a.width), ("form", a.form)) if v is not None}
    s = cross_validate(
        a.data,
        a.out,
        model=a.model,
        folds=a.folds,
        repeats=a.repeats,
        train_overrides={k: getattr(a, k) for k in a._config_fields if k != "model"},
        preprocess=get_spec(a.model).preprocess(**over),
        progress=not a.quiet,
        split_seed=a.split_seed,
    )
    print(format_cv(s))
    print(f"cv: {Path(a.out) / 'cv.json'}")
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a run's out-of-scope gate and temperature (RUN/gate.json), used by predict/serve/explain",
        usage="ecgvit calibrate RUN [--data DIR|MANIFEST] [--oof cv/oof.csv]",
    )
    p.add_argument("run", help="a training run folder (config.json + model.safetensors)")
    p.add_argument("--data", default=None, help="the pages it was trained on, when RUN has no pages.csv")
    p.add_argument(
        "--oof",
        default=None,
        help="out-of-fold predictions of the same recipe (`ecgvit cv` writes OUT/oof.csv): fit the temperature on them when RUN has no validation part",
    )
    p.add_argument(
        "--synthetic-per-class",
        type=int,
        default=25,
        help="synthetic pages per class added to the training pages when RUN was pretrained on synthetic pages (default 25)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(_parser=p, func=_cmd_calibrate)


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from ecgvit.engine.calibrate import calibrate, format_calibration

    if a.synthetic_per_class < 0:
        raise ValueError(f"--synthetic-per-class {a.synthetic_per_class}: must be >= 0")
    s = calibrate(a.run, data=a.data, oof=a.oof, synthetic_per_class=a.synthetic_per_class, progress=not a.quiet)
    print(format_calibration(s))
    print(f"gate: {Path(a.run) / 'gate.json'}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="label ECG pages: files, folders, globs (CSV/JSON out, heatmaps, ONNX Runtime)",
        usage="ecgvit predict RUN|MODEL.onnx PATH... [--out preds.csv|preds.json] [--explain DIR] [options]",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="PATH",
        help="first a run folder (has config.json) or an exported .onnx, then images, folders (recursive) or globs",
    )
    p.add_argument("--out", default=None, help="write results to a .csv (rows appended per batch) or .json file")
    p.add_argument("--explain", default=None, metavar="DIR", help="also write a heatmap PNG per page into DIR")
    p.add_argument(
        "--onnx",
        default=None,
        help="run this exported model with ONNX Runtime (default: RUN/model.onnx when it matches the weights)",
    )
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="inference threads of the thread path (0: half the cores, the rest decode; measured best on 2 cores); each worker process uses one",
    )
    p.add_argument(
        "--workers", type=int, default=0, help="decoding threads running ahead of inference (0: min(4, cores))"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        help="worker processes, each decoding and inferring whole batches (0: one per core from 8 batches of files up, with an ONNX model; 1: threads only)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="go on with an --out that an interrupted run left (the default when it holds rows of this model)",
    )
    again.add_argument("--overwrite", action="store_true", help="replace an existing --out instead of going on with it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (default): this machine; ray: Ray Data actors (the ray extra), --out is a folder of Parquet + CSV shards",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --engine ray: the cluster to join (auto, ray://HOST:10001; default: start a local Ray)",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=1000,
        help="with --engine ray: inputs per shard file; a restart with the same --out skips the shards written",
    )
    p.set_defaults(_parser=p, func=_cmd_predict)


def _cmd_predict(a: argparse.Namespace) -> int:
    from ecgvit.runtime.files import predict_files, split_model_and_paths
    from ecgvit.runtime.writers import format_table

    model, paths = split_model_and_paths(a.inputs, onnx=a.onnx)
    if a.engine == "ray":  # Ray Data actors into a folder of shards (see ecgvit.runtime.ray_engine)
        from ecgvit.runtime.ray_engine import predict_ray

        if not a.out:
            raise ValueError("--engine ray needs --out DIR (a folder: Parquet and CSV shards)")
        if a.explain:
            raise ValueError("--explain is not available with --engine ray")
        if a.backend == "torch":
            raise ValueError("--engine ray runs ONNX Runtime: drop --backend torch")
        s = predict_ray(
            model,
            paths,
            out=a.out,
            onnx=a.onnx,
            address=a.address,
            shard_size=a.shard_size,
            batch_size=a.batch_size,
            concurrency=a.processes,
            overwrite=a.overwrite,
            progress=not a.quiet,
        )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items()))
        speed = f", {s['images_per_s']:.1f} images/s" if s["images_per_s"] else ""
        print(
            f"{s['images']} inputs: {s['ok'] + s['low_confidence']} labelled ({counts or 'none'}; {s['low_confidence']} "
            f"low confidence), {s['out_of_scope']} out of scope, {s['bad']} bad{speed}"
        )
        if s["shards_skipped"]:
            print(
                f"{s['shards_skipped']} of {s['shards']} shard(s) already written in {a.out}: skipped (--overwrite redoes them)"
            )
        print(f"predictions: {a.out}/parquet/shard-*.parquet and {a.out}/csv/shard-*.csv")
        return 0 if s["ok"] or s["shards_skipped"] else 1
    if a.address is not None:
        raise ValueError("--address needs --engine ray")
    import os

    # Decoding runs in `workers` threads beside inference (or in worker processes, one inference
    # thread each): one inference thread leaves the other core to decoding. Once the ONNX input
    # stopped going through torch, one and two threads measured the same pages/s on 2 cores.
    threads = a.threads or max(1, (os.cpu_count() or 2) // 2)
    rows, summary = predict_files(
        model,
        paths,
        out=a.out,
        explain_dir=a.explain,
        onnx=a.onnx,
        backend=a.backend,
        batch_size=a.batch_size,
        threads=threads,
        workers=a.workers,
        processes=a.processes,
        progress=not a.quiet,
        mode="resume" if a.resume else "overwrite" if a.overwrite else "auto",
    )
    print(format_table(rows, summary))
    if summary["skipped"]:
        print(
            f"{summary['skipped']} input(s) already answered in {a.out} by this model: skipped (--overwrite redoes them)"
        )
    if a.out:
        print(f"predictions: {a.out}")
    if a.explain:
        print(f"heatmaps: {a.explain}")
    return 0 if summary["ok"] or summary["skipped"] else 1


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="heatmap of what drove a prediction, drawn on the page (PNG)")
    p.add_argument(
        "inputs", nargs="+", metavar="[RUN] IMAGE", help="run folder (default: the bundled model) and the page image"
    )
    p.add_argument("--out", default="heat.png", help="PNG to write (default: heat.png)")
    p.add_argument(
        "--method",
        choices=["auto", "rollout", "gradcam", "gradxinput", "occlusion", "leads"],
        default="auto",
        help="auto: per-lead occlusion for a model on the reader's leads (leads), else attention rollout for ViTs, "
        "Grad-CAM for CNNs (PyTorch); occlusion without PyTorch or its weights",
    )
    p.add_argument(
        "--max-side", type=int, default=1600, help="longer side of the PNG in pixels (0: the page's own size)"
    )
    p.set_defaults(_parser=p, func=_cmd_explain)


def _cmd_explain(a: argparse.Namespace) -> int:
    from ecgvit.runtime.files import explain_file, split_model_and_paths

    if len(a.inputs) > 2:
        raise ValueError(f"explain takes [RUN] IMAGE, got {len(a.inputs)} arguments: {' '.join(a.inputs)}")
    run, images = split_model_and_paths(a.inputs)
    if len(images) != 1:
        raise ValueError("explain needs exactly one IMAGE after the optional RUN")
    info = explain_file(run, images[0], a.out, method=a.method, max_side=a.max_side)
    if info.get("status") == "out_of_scope":
        print(f"out of scope: {info['reason']} (no label); heatmap of what the model looked at: {a.out}")
    else:
        low = f"  LOW CONFIDENCE: {info['reason']}" if info.get("status") == "low_confidence" else ""
        print(f"{info['label']} p={info['probability']:.3f} ({info['method']}){low}; heatmap: {a.out}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    from ecgvit.config import DEFAULT_OPSET

    p = sub.add_parser("export", help="export a run to ONNX (dynamic batch, checked against PyTorch)")
    p.add_argument("run", help="run folder (config.json + model.safetensors)")
    p.add_argument("--onnx", default=None, help="output file (default: RUN/model.onnx, used by predict automatically)")
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset (default {DEFAULT_OPSET}: GELU as one fused operator)",
    )
    p.add_argument("--tol", type=float, default=1e-4, help="largest allowed |logit difference| to PyTorch")
    p.add_argument(
        "--exporter",
        choices=["auto", "dynamo", "torchscript"],
        default="auto",
        help="auto: torch.export (dynamo), TorchScript if that fails",
    )
    p.set_defaults(_parser=p, func=_cmd_export)


def _cmd_export(a: argparse.Namespace) -> int:
    from ecgvit.export import export_onnx

    r = export_onnx(a.run, a.onnx, opset=a.opset, tol=a.tol, exporter=a.exporter)
    print(
        f"onnx: {r['onnx']} ({r['bytes'] / 1e6:.1f} MB, {r['exporter']} exporter, opset {r['opset']}); "
        f"parity max |logit diff| {r['max_abs_logit_diff']:.1e} <= {r['tolerance']:.0e}; config: {r['config']}"
    )
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page + JSON API for predictions and heatmaps (FastAPI, loopback by default)")
    p.add_argument("run", nargs="?", default=None, help="run folder or exported .onnx")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=2, help="requests processed at once (inference threads)")
    p.add_argument(
        "--queue",
        type=int,
        default=16,
        help="requests admitted beyond --workers (uploading or waiting); more get 503 before their upload is read",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=0, help="inference threads per request (0: library default)")
    p.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds for a request's headers to arrive (default 10)"
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="seconds for an upload to arrive after its headers (default 60)",
    )
    p.add_argument("--keep-alive", type=int, default=5, help="seconds an idle connection stays open (default 5)")
    p.add_argument("--max-connections", type=int, default=100, help="connections served at once; more get 503")
    p.set_defaults(_parser=p, func=_cmd_serve)


def _cmd_serve(a: argparse.Namespace) -> int:
    from ecgvit.run import bundled_run
    from ecgvit.runtime.predictor import NO_MODEL
    from ecgvit.serve import serve

    if a.run is None:
        a.run = bundled_run()
        if a.run is None:
            raise ValueError(NO_MODEL)
    serve(
        a.run,
        host=a.host,
        port=a.port,
        workers=a.workers,
        queue=a.queue,
        max_upload_bytes=int(a.max_upload_mb * 1e6),
        threads=a.threads,
        header_timeout=a.header_timeout,
        body_timeout=a.body_timeout,
        keep_alive=a.keep_alive,
        max_connections=a.max_connections,
    )
    return 0


def _add_digitize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "digitize",
        help="read ECG pages into signals: WFDB, CSV, JSON and an overlay PNG per page",
        usage="ecgvit digitize PATH... --out DIR [--format wfdb,csv,json] [--no-overlay]",
    )
    p.add_argument("inputs", nargs="+", metavar="PATH", help="images, PDFs, folders (recursive) or globs")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (digitize.csv indexes it)")
    p.add_argument("--format", default="wfdb,csv,json", help="comma-separated: wfdb, csv, json (default: all)")
    p.add_argument("--no-overlay", action="store_true", help="no overlay PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(_parser=p, func=_cmd_digitize)


def _cmd_digitize(a: argparse.Namespace) -> int:
    from ecgvit.reader.digitize import check_formats, digitize_files, format_table

    formats = check_formats(a.format.split(","))
    summary = digitize_files(a.inputs, a.out, formats=formats, overlay=not a.no_overlay, progress=not a.quiet)
    print(format_table(summary))
    return 0 if summary["ok"] else 1


def build_parser() -> Parser:
    from ecgvit._version import __version__

    parser = Parser(prog="ecgvit", description="Classify 12-lead ECG report pages with a Vision Transformer.")
    parser.add_argument("--version", action="version", version=f"ecgvit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    data = sub.add_parser("data", help="dataset index, splits, crop contact sheet")
    data_sub = data.add_subparsers(dest="data_command", metavar="VERB", parser_class=Parser)
    _add_index(data_sub)
    _add_split(data_sub)
    _add_crops(data_sub)
    _add_synth(sub)
    _add_models(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_cv(sub)
    _add_calibrate(sub)
    _add_predict(sub)
    _add_digitize(sub)
    _add_explain(sub)
    _add_export(sub)
    _add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # Report unknown options from the sub-command that was chosen, so hints name its options.
        leaf = getattr(args, "_parser", parser)
        leaf.error(f"unrecognized arguments: {' '.join(extras)}")
    if not getattr(args, "func", None):
        # `ecgvit` or `ecgvit data` alone: show the relevant help.
        target = parser
        if args.command == "data":
            target = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["data"]
        target.print_help()
        return 0 if args.command is None else 2
    _configure_logging(verbose=args.verbose, quiet=bool(getattr(args, "quiet", False)))
    previous = signal.signal(signal.SIGTERM, _terminate) if _in_main_thread() else None
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError, PermissionError, IsADirectoryError) as exc:
        # Expected user errors: one clear line, no traceback.
        print(f"ecgvit: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"ecgvit: error: {_missing_extra(args.command, exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ecgvit: interrupted; finished outputs were kept", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# Packages of the optional extras, and the extra that brings each.
_EXTRAS = {
    **dict.fromkeys(("torch", "torchvision", "timm", "pytorch_grad_cam", "onnx", "onnxscript", "matplotlib"), "train"),
    **dict.fromkeys(("ray",), "ray"),
    **dict.fromkeys(("pyarrow", "pandas"), "parquet"),
}
_EXTRA_NAMES = {"train": "the training extra", "ray": "the ray extra", "parquet": "the parquet extra"}


def _missing_extra(command: str, exc: ImportError) -> str:
    """`ecgvit train needs the training extra: pip install "ecgvit[train]"`, or what is missing."""
    top = (exc.name or "").split(".")[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return f"{command} needs a package that is not installed ({exc.name or exc})"
    return f'ecgvit {command} needs {_EXTRA_NAMES[extra]} ({top} is not installed): pip install "ecgvit[{extra}]"'


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM stops like Ctrl-C: queued work cancelled, worker processes stopped, outputs kept.
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record (a redirected or captured stderr included)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _configure_logging(verbose: bool, quiet: bool) -> None:
    """The library logs to the "ecgvit" logger; the command line shows it on stderr."""
    log = logging.getLogger("ecgvit")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    log.setLevel(level)
    if not any(getattr(h, "_ecgvit_cli", False) for h in log.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h._ecgvit_cli = True  # type: ignore[attr-defined]  # marks the handler this function owns
        log.addHandler(h)
        log.propagate = False


if __name__ == "__main__":
    sys.exit(main())
