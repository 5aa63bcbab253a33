"""`ecgvit predict ... --engine ray`: prediction over an archive on Ray Data (the `ecgvit[ray]` extra).

    from ecgvit.runtime.ray_engine import predict_ray, read_rows

    summary = predict_ray(None, ["scans/", "s3://bucket/ecg/"], out="preds/", address="auto")
    rows = read_rows("preds/")                 # the rows, in input order

The inputs (files, folders, globs; `file://` and other pyarrow filesystem URIs) are listed on the
driver and cut into deterministic shards of `shard_size` inputs. The inputs of the shards not
yet written go through `Dataset.map_batches` on an actor pool: each actor holds one `Predictor`
(ONNX Runtime, one thread, no worker processes) and answers a batch at a time, bad files as
"bad" rows (a job never fails on an input). The driver writes each shard once all its rows are
in, as OUT/parquet/shard-00007.parquet and OUT/csv/shard-00007.csv (temp name + rename, CSV
first, so a Parquet shard that exists is complete). A restarted job with the same OUT skips the
shards already written; OUT/_manifest.json records the model and the input list, so a restart
over other inputs or another model is refused instead of mixing them.

The rows are those of the local path (`Predictor.predict` + the CSV writer): `Prediction.to_dict()`
fields, probabilities flattened to p_<class> columns (float64 in Parquet: identical; 6 decimals
in CSV, as `ecgvit predict --out x.csv`), md5 of the input and the model's sha256.
Ray is imported inside the functions: the base install never needs it.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgvit.data.io import INPUT_SUFFIXES, split_page
from ecgvit.runtime.inputs import expand_inputs
from ecgvit.runtime.prediction import Prediction
from ecgvit.runtime.predictor import Predictor, one_thread_predictor
from ecgvit.runtime.writers import csv_row, flat_row, input_md5, table_columns, table_schema

__all__ = ["NEEDS_RAY", "list_inputs", "predict_ray", "read_rows"]

log = logging.getLogger("ecgvit")

NEEDS_RAY = '--engine ray needs the ray extra: pip install "ecgvit[ray]"'
MANIFEST = "_manifest.json"
SUMMARY = "_summary.json"
SHARD_SIZE = 1000


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ValueError(NEEDS_RAY) from None
    return ray


# -- inputs


def _is_uri(s: str) -> bool:
    return "://" in s and s.split("://", 1)[0].isidentifier()


def list_inputs(paths: Sequence[str | Path]) -> list[dict[str, str]]:
    """What to predict, in order: one {"path": as named, "read": where a worker reads it, "uri":
    "1" when "read" is a pyarrow filesystem URI, "reason": why it is bad, else ""}.

    Local paths, folders and globs are expanded as `ecgvit predict` does (bad entries first,
    then the files, PDF and TIFF pages one by one); `file://` URIs are local paths. Other URIs
    (s3://, gs://, hdfs://, ...) are listed with pyarrow: a file, or a folder / prefix
    (recursive, image and PDF suffixes), or a glob in the last parts; a URI whose scheme pyarrow
    cannot open is a ValueError naming it."""
    local: list[str] = []
    remote: list[dict[str, str]] = []
    for raw in paths:
        s = str(raw)
        if s.startswith("file://"):
            local.append(s[len("file://") :])
        elif _is_uri(s):
            remote.extend(_list_uri(s))
        else:
            local.append(s)
    items: list[dict[str, str]] = []
    if local:
        files, bad = expand_inputs(local)
        items += [{"path": b.path, "read": os.path.abspath(b.path), "uri": "", "reason": b.reason} for b in bad]
        items += [{"path": f, "read": os.path.abspath(f), "uri": "", "reason": ""} for f in files]
    return items + remote


def _filesystem(uri: str) -> tuple[Any, str]:
    try:
        from pyarrow import fs
    except ImportError:
        raise ValueError(NEEDS_RAY) from None
    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # unknown scheme, no credentials, no such bucket, ...
        scheme = uri.split("://", 1)[0]
        raise ValueError(
            f"{uri}: cannot list {scheme}:// with pyarrow ({type(exc).__name__}: {exc}); give local paths, file:// or a URI pyarrow can open"
        ) from None


def _list_uri(uri: str) -> list[dict[str, str]]:
    from pyarrow import fs

    scheme = uri.split("://", 1)[0]
    magic = glob.has_magic(uri)
    base = uri
    if magic:  # list from the last part without a wildcard, then match
        parts = uri.split("/")
        k = next(i for i, p in enumerate(parts) if glob.has_magic(p))
        base = "/".join(parts[:k])
    filesystem, root = _filesystem(base)
    prefix = base[: len(base) - len(root)] if base.endswith(root) else f"{scheme}://"

    def named(p: str) -> str:
        return prefix + p if prefix.endswith("/") or p.startswith("/") else f"{prefix}/{p}"

    try:
        info = filesystem.get_file_info(root)
        if info.type == fs.FileType.NotFound:
            return [{"path": uri, "read": uri, "uri": "1", "reason": "no such file or folder"}]
        if info.type == fs.FileType.File and not magic:
            return [{"path": uri, "read": uri, "uri": "1", "reason": ""}]
        found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    except Exception as exc:
        raise ValueError(f"{uri}: cannot list it ({type(exc).__name__}: {exc})") from None
    names = sorted(named(f.path) for f in found if f.type == fs.FileType.File)
    if magic:
        import fnmatch

        names = [n for n in names if fnmatch.fnmatchcase(n, uri)]
        if not names:
            return [{"path": uri, "read": uri, "uri": "1", "reason": "no files match this pattern"}]
    names = [n for n in names if Path(n).suffix.lower() in INPUT_SUFFIXES]
    if not names:
        reason = f"folder has no image files ({', '.join(sorted(INPUT_SUFFIXES))})"
        return [{"path": uri, "read": uri, "uri": "1", "reason": reason}]
    return [{"path": n, "read": n, "uri": "1", "reason": ""} for n in names]


# -- the actors


class PageActor:
    """One Ray actor: one `Predictor` (ONNX Runtime, one thread), answering batches of inputs."""

    def __init__(
        self,
        run: str | None,
        onnx: str,
        batch_size: int,
        max_pixels: int = 100_000_000,
        min_side: int | None = None,
        model_sha256: str | None = None,
    ):
        kw: dict[str, Any] = {} if min_side is None else {"min_side": min_side}
        model_run: str | None = run
        model_onnx: str | None = onnx
        if run is None and not Path(onnx).is_file() or run is not None and not Path(run).is_dir():
            if model_sha256 is None:
                raise FileNotFoundError(
                    f"{run or onnx}: not on this node (the model must be at the same path on every node)"
                )
            model_run, model_onnx = None, None  # the bundled model, where this node's ecgvit has it (checked below)
        # As the local worker processes: one thread everywhere, the actors are the parallelism.
        self.predictor = one_thread_predictor(model_run, model_onnx, batch_size, max_pixels=max_pixels, **kw)
        if model_sha256 is not None and self.predictor.model_digest != model_sha256:
            raise ValueError(
                f"{os.uname().nodename}: its model is not the driver's (sha256 {self.predictor.model_digest[:12]}, "
                f"not {model_sha256[:12]}): install the same ecgvit, or give the model at a path every node reads"
            )

    @staticmethod
    def _read_uri(uri: str) -> bytes:
        filesystem, path = _filesystem(uri)
        with filesystem.open_input_file(path) as f:
            return bytes(f.read())

    def rows(self, items: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Each item's row (`Prediction.to_dict()` + md5), in order; never raises for an input."""
        out: list[dict[str, Any] | None] = [None] * len(items)
        todo: list[tuple[int, Any]] = []
        md5: dict[int, str] = {}
        for i, it in enumerate(items):
            if it["reason"]:
                out[i] = self._row(Prediction.bad(it["path"], it["reason"]), it, None)
            elif it["uri"]:
                try:
                    data = self._read_uri(it["read"])
                except Exception as exc:
                    out[i] = self._row(Prediction.bad(it["path"], f"cannot read ({type(exc).__name__}: {exc})"), it, "")
                    continue
                md5[i] = hashlib.md5(data).hexdigest()
                todo.append((i, data))
            else:
                todo.append((i, it["read"]))
        if todo:
            try:
                preds = self.predictor.predict([x for _, x in todo])
            except Exception as exc:  # never a failed job: the batch's rows say what happened
                reason = f"prediction failed ({type(exc).__name__}: {exc})"
                preds = [Prediction.bad("", reason) for _ in todo]
            for (i, _), p in zip(todo, preds, strict=True):
                p.path = items[i]["path"]
                out[i] = self._row(p, items[i], md5.get(i))
        return [r for r in out if r is not None]

    @staticmethod
    def _row(p: Prediction, it: dict[str, str], md5: str | None) -> dict[str, Any]:
        r = p.to_dict()
        if md5 is None:  # as the local CSV writer: a bad row has the md5 of a file that exists
            read = it["read"]
            md5 = input_md5(read) if p.status != "bad" or Path(split_page(read)[0]).is_file() else ""
        r["md5"] = md5
        return r

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = ("path", "read", "uri", "reason")
        items = [{k: str(batch[k][j]) for k in keys} for j in range(len(batch["path"]))]
        rows = self.rows(items)
        return {
            "shard": np.asarray(batch["shard"], dtype=np.int64),
            "idx": np.asarray(batch["idx"], dtype=np.int64),
            "row": np.array([json.dumps(r) for r in rows], dtype=object),
        }


# -- shards


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _write_shard(out: Path, k: int, rows: list[dict[str, Any]], classes: list[str], digest: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name, tag = _shard_name(k), f"{os.getpid()}.tmp"
    csv_path, pq_path = out / "csv" / f"{name}.csv", out / "parquet" / f"{name}.parquet"
    csv_tmp, pq_tmp = csv_path.with_name(f".{name}.csv.{tag}"), pq_path.with_name(f".{name}.parquet.{tag}")
    with open(csv_tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(table_columns(classes))
        for r in rows:
            w.writerow(csv_row(r, classes, digest))
    table = pa.Table.from_pylist([flat_row(r, classes, digest) for r in rows], schema=table_schema(classes))
    pq.write_table(table, pq_tmp)
    os.replace(csv_tmp, csv_path)
    os.replace(pq_tmp, pq_path)  # last: a Parquet shard that exists is complete


def _shard_done(out: Path, k: int) -> bool:
    name = _shard_name(k)
    return (out / "parquet" / f"{name}.parquet").is_file() and (out / "csv" / f"{name}.csv").is_file()


def read_rows(out: str | Path) -> list[dict[str, Any]]:
    """The rows of a `predict_ray` OUT folder in input order, as `Prediction.to_dict()` + md5 (the
    fields the local path writes; probabilities as written, float64)."""
    import pyarrow.parquet as pq

    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text())
    classes = list(manifest["classes"])
    rows: list[dict[str, Any]] = []
    for f in sorted((out / "parquet").glob("shard-*.parquet")):
        for d in pq.read_table(f).to_pylist():
            probs = {c: d[f"p_{c}"] for c in classes if d[f"p_{c}"] is not None}
            r: dict[str, Any] = {
                "path": d["path"],
                "status": d["status"],
                "label": d["label"],
                "probability": d["probability"],
                "probabilities": probs or None,
                "reason": d["reason"],
            }
            r.update(
                {k: d[k] for k in ("crop_box", "feature_distance", "trace_rows", "layout") if d.get(k) is not None}
            )
            r["md5"] = d["md5"]
            rows.append(r)
    return rows


def _prepare_out(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Make OUT ready: a fresh folder, or one a restart of this same job goes on with."""
    mpath = out / MANIFEST
    if overwrite:
        for sub in ("parquet", "csv"):
            for f in (out / sub).glob("*shard-*"):
                f.unlink()
        mpath.unlink(missing_ok=True)
        (out / SUMMARY).unlink(missing_ok=True)
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except json.JSONDecodeError:
            old = None
        if not isinstance(old, dict) or old.get("format") != 1:
            raise ValueError(
                f"--out {out} is not a Ray output folder of ecgvit: pass --overwrite, or give another --out"
            )
        what = {"model_sha256": "another model", "inputs_sha256": "other inputs", "shard_size": "another --shard-size"}
        for key, words in what.items():
            if old.get(key) != manifest[key]:
                raise ValueError(
                    f"--out {out} holds shards of {words}: pass --overwrite to redo them, or give another --out"
                )
    elif any((out / "parquet").glob("shard-*.parquet")):
        raise ValueError(f"--out {out} holds shards but no {MANIFEST}: pass --overwrite, or give another --out")
    for sub in ("parquet", "csv"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for f in (out / sub).glob(".shard-*.tmp"):  # left by a killed run
            f.unlink(missing_ok=True)
    tmp = mpath.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(mpath)


def _connect(ray: Any, address: str | None) -> bool:
    """Start (no address: a local Ray) or join a cluster; True when this call started Ray."""
    if ray.is_initialized():
        return False
    if address and address not in ("auto", "local"):
        _reachable(address)
    try:
        ray.init(
            address=address or None,
            include_dashboard=False if not address else None,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError) as exc:  # no cluster there, refused, another token
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--engine ray: cannot start or join {where} ({first})") from None
    return True


def _reachable(address: str) -> None:
    """A one-line error for a head that nothing answers at (Ray itself retries for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ValueError(
            f"--address {address}: no Ray head answers there ({exc}); is `ray start --head` running?"
        ) from None


def predict_ray(
    model: str | Path | None,
    paths: Sequence[str | Path],
    *,
    out: str | Path,
    onnx: str | Path | None = None,
    address: str | None = None,
    shard_size: int = SHARD_SIZE,
    batch_size: int = 16,
    concurrency: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict `paths` on Ray Data into the folder `out` (see the module doc); returns the summary
    (also written to OUT/_summary.json): counts of the whole folder, "shards", "shards_skipped"
    (already written by an earlier run of this job), "seconds" and "images_per_s" of this run.

    model: a run folder or .onnx (None: the bundled model); it and the inputs must be readable
    at the same paths on every node (a shared file system, or URIs). address: None starts a
    local Ray (or joins the one RAY_ADDRESS names); "auto", "ray://host:10001", ... join a
    cluster. concurrency: actors (0: one per CPU of the cluster). A Ray that is already
    initialised is used as it is."""
    ray = _import_ray()
    if shard_size < 1 or batch_size < 1 or concurrency < 0:
        raise ValueError("shard_size and batch_size must be >= 1, concurrency >= 0")
    if not paths:
        raise ValueError("no images given: ecgvit predict [MODEL] PATH... --engine ray --out DIR")
    from filelock import FileLock, Timeout

    pred = Predictor(model, onnx=onnx, backend="onnx", threads=1, processes=1)
    assert pred.onnx_path is not None
    classes, digest = pred.classes, pred.model_digest
    actor_args = {
        "run": None if pred.run is None else str(Path(pred.run).resolve()),
        "onnx": str(Path(pred.onnx_path).resolve()),
        "batch_size": batch_size,
        "max_pixels": pred.max_pixels,
        "min_side": pred.min_side,
        "model_sha256": digest,
    }
    pred.close()
    items = list_inputs(paths)
    shards = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    manifest = {
        "format": 1,
        "model": pred.model_name,
        "model_sha256": digest,
        "classes": classes,
        "shard_size": shard_size,
        "inputs": len(items),
        "shards": len(shards),
        "inputs_sha256": hashlib.sha256("\n".join(it["path"] for it in items).encode()).hexdigest(),
    }
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise ValueError(f"--out {out}: with --engine ray, --out is a folder")
    outp.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(outp / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(f"--out {out} is in use by another ecgvit run; wait for it or give another --out") from None
    t0 = time.perf_counter()
    try:
        _prepare_out(outp, manifest, overwrite)
        todo = [k for k in range(len(shards)) if not _shard_done(outp, k)]
        skipped = len(shards) - len(todo)
        if skipped:
            log.info(f"{out}: {skipped} of {len(shards)} shard(s) already written by this job, skipped")
        n_todo = sum(len(shards[k]) for k in todo)
        if todo:
            started = _connect(ray, address)
            try:
                _run(ray, shards, todo, actor_args, outp, classes, digest, batch_size, concurrency, progress)
            finally:
                if started:
                    ray.shutdown()
        secs = time.perf_counter() - t0
        summary = _summary(outp, len(shards), skipped, n_todo, secs)
        tmp = outp / f".{SUMMARY}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        tmp.replace(outp / SUMMARY)
        return summary
    finally:
        Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()


def _run(
    ray: Any,
    shards: list[list[dict[str, str]]],
    todo: list[int],
    actor_args: dict[str, Any],
    out: Path,
    classes: list[str],
    digest: str,
    batch_size: int,
    concurrency: int,
    progress: bool,
) -> None:
    import pyarrow as pa

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    if not log.isEnabledFor(logging.DEBUG):  # Ray Data's plan and timing lines: with -v only
        logging.getLogger("ray.data").setLevel(logging.WARNING if progress else logging.ERROR)
    rows_in = [(k, j, it) for k in todo for j, it in enumerate(shards[k])]
    # One actor per CPU of the cluster, never more than there are batches to give them.
    n_actors = min(concurrency or max(1, int(ray.cluster_resources().get("CPU", 1))), -(-len(rows_in) // batch_size))
    # Blocks of a few batches: enough of them that every actor has work, few enough to be cheap.
    per_block = max(1, min(SHARD_SIZE, math.ceil(len(rows_in) / (4 * n_actors))))
    blocks = []
    for i in range(0, len(rows_in), per_block):
        part = rows_in[i : i + per_block]
        cols: dict[str, list[Any]] = {"shard": [k for k, _, _ in part], "idx": [j for _, j, _ in part]}
        for key in ("path", "read", "uri", "reason"):
            cols[key] = [it[key] for _, _, it in part]
        blocks.append(pa.table(cols))
    ds = ray.data.from_arrow(blocks).map_batches(
        PageActor,
        fn_constructor_kwargs=actor_args,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=1,
    )
    pending: dict[int, dict[int, dict[str, Any]]] = {}
    written = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k, j, row in zip(batch["shard"], batch["idx"], batch["row"], strict=True):
            got = pending.setdefault(int(k), {})
            got[int(j)] = json.loads(row)
            if len(got) == len(shards[int(k)]):
                _write_shard(out, int(k), [got[i] for i in range(len(got))], classes, digest)
                del pending[int(k)]
                written += 1
                log.debug(f"{out}: {_shard_name(int(k))} written ({written}/{len(todo)})")
    if pending:  # cannot happen unless Ray lost rows: say so rather than leave a gap unnoticed
        raise RuntimeError(f"Ray returned incomplete shards {sorted(pending)}: rerun the same command to redo them")


def _summary(out: Path, shards: int, skipped: int, n_run: int, secs: float) -> dict[str, Any]:
    import pyarrow.parquet as pq

    counts: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    for f in sorted((out / "parquet").glob("shard-*.parquet")):
        t = pq.read_table(f, columns=["status", "label"]).to_pydict()
        counts.update(t["status"])
        labels.update(lbl for s, lbl in zip(t["status"], t["label"], strict=True) if s in ("ok", "low_confidence"))
    return {
        "images": sum(counts.values()),
        "ok": counts.get("ok", 0),
        "low_confidence": counts.get("low_confidence", 0),
        "out_of_scope": counts.get("out_of_scope", 0),
        "bad": counts.get("bad", 0),
        "labels": dict(labels),
        "shards": shards,
        "shards_skipped": skipped,
        "predicted": n_run,
        "seconds": round(secs, 3),
        "images_per_s": round(n_run / secs, 2) if secs > 0 and n_run else None,
        "complete": True,
    }
