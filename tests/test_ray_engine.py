"""`ecgvit predict --engine ray`: Ray Data actors give the local path's rows, shards resume.

The tests that start Ray (a local one, 2 CPUs, no dashboard) are marked slow and skip when the
ray extra is not installed; the others (input listing, the actor's rows in this process, the
one-line errors) run without it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from ecgvit.cli import main
from ecgvit.runtime.files import predict_files
from ecgvit.runtime.prediction import Prediction
from ecgvit.runtime.predictor import Predictor
from ecgvit.runtime.ray_engine import NEEDS_RAY, PageActor, list_inputs, predict_ray, read_rows
from ecgvit.runtime.writers import input_md5

# Ray Data's own DataContext deprecations, not this code's.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> tuple[Path, list[str]]:
    """8 generated pages, a broken JPEG among them and a name that does not exist: the inputs."""
    from ecgvit.synth import generate

    root = tmp_path_factory.mktemp("ray_pages")
    generate(root / "pages", per_class=2, seed=3, progress=False)
    (root / "pages" / "normal" / "broken.jpg").write_bytes(b"not a jpeg")
    return root, [str(root / "pages"), str(root / "missing.png")]


@pytest.fixture(scope="module")
def local_rows(pages) -> list[dict]:
    """The local path's rows for the inputs, with the md5 the writers record."""
    _, inputs = pages
    with Predictor(threads=1) as pred:
        preds = pred.predict_paths(inputs)
    return [_with_md5(p) for p in preds]


def _with_md5(p: Prediction) -> dict:
    r = p.to_dict()
    r["md5"] = input_md5(p.path) if p.status != "bad" or Path(p.path).is_file() else ""  # as the CSV writer
    return r


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


def test_inputs_listed_as_the_local_path_does(pages):
    root, inputs = pages
    items = list_inputs(inputs)
    assert items[0] == {
        "path": inputs[1],
        "read": inputs[1],
        "uri": "",
        "reason": "no such file or folder",
    }
    assert len(items) == 10 and all(Path(it["read"]).is_absolute() for it in items)
    # file:// URIs are local paths; a glob under one too
    uri_items = list_inputs([f"file://{root}/pages/normal/*.jpg"])
    assert [Path(it["path"]).name for it in uri_items] == ["broken.jpg", "normal_00000.jpg", "normal_00001.jpg"]


def test_pyarrow_uris_listed(pages):
    """What an s3:// or gs:// input goes through, on pyarrow's local filesystem: folder, glob, missing."""
    pytest.importorskip("pyarrow")
    from ecgvit.runtime.ray_engine import _list_uri

    root, _ = pages
    folder = _list_uri(f"file://{root}/pages")
    assert len(folder) == 9 and all(it["uri"] == "1" and not it["reason"] for it in folder)
    assert folder[0]["path"] == f"file://{root}/pages/abnormal_heartbeat/abnormal_heartbeat_00000.jpg"
    globbed = _list_uri(f"file://{root}/pages/normal/normal_*.jpg")
    assert [Path(it["path"]).name for it in globbed] == ["normal_00000.jpg", "normal_00001.jpg"]
    assert _list_uri(f"file://{root}/nothing")[0]["reason"] == "no such file or folder"
    assert _list_uri(f"file://{root}/pages/*.png")[0]["reason"] == "no files match this pattern"


def test_uri_of_a_scheme_pyarrow_cannot_open_is_one_clear_error():
    pytest.importorskip("pyarrow")
    with pytest.raises(ValueError, match=r"nosuch://bucket/x: cannot list nosuch:// with pyarrow"):
        list_inputs(["nosuch://bucket/x"])


def test_missing_ray_is_one_line(monkeypatch, pages, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ValueError, match="ecgvit\\[ray\\]") as exc:
        predict_ray(None, pages[1], out=tmp_path / "o")
    assert str(exc.value) == NEEDS_RAY == '--engine ray needs the ray extra: pip install "ecgvit[ray]"'
    assert main(["predict", *pages[1], "--engine", "ray", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"ecgvit: error: {NEEDS_RAY}"


def test_cli_refuses_ray_without_a_folder_out(pages, capsys):
    assert main(["predict", *pages[1], "--engine", "ray"]) == 2
    assert "--engine ray needs --out DIR" in capsys.readouterr().err
    assert main(["predict", *pages[1], "--address", "auto"]) == 2
    assert "--address needs --engine ray" in capsys.readouterr().err


def test_actor_rows_equal_the_local_rows(pages, local_rows):
    """The actor's code in this process: the same rows, and the same again read through pyarrow."""
    pytest.importorskip("pyarrow")
    with Predictor(threads=1) as pred:
        actor = PageActor(str(pred.run), str(pred.onnx_path), batch_size=4)
    items = list_inputs(pages[1])
    assert actor.rows(items) == local_rows
    # Read as a pyarrow filesystem URI (what an s3:// input goes through): same answers, same md5.
    ok = [it for it in items if not it["reason"]]
    via_uri = actor.rows([{**it, "read": "file://" + it["read"], "uri": "1"} for it in ok])
    want = [r for r in local_rows if r["reason"] != "no such file or folder"]
    assert via_uri == want


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ray_rows_equal_the_local_path_and_a_restart_skips_written_shards(ray_cluster, pages, local_rows, tmp_path):
    root, inputs = pages
    out = tmp_path / "out"
    s = predict_ray(None, inputs, out=out, shard_size=3, batch_size=2, progress=False)
    assert s["shards"] == 4 and s["shards_skipped"] == 0 and s["images"] == 10 and s["bad"] == 2
    assert read_rows(out) == local_rows  # probabilities identical (float64 in Parquet)
    shards = sorted((out / "parquet").glob("shard-*.parquet"))
    assert [f.name for f in shards] == [f"shard-{k:05d}.parquet" for k in range(4)]
    assert not [f for f in out.rglob("*") if ".tmp" in f.name]

    # CSV shards hold the lines `ecgvit predict --out x.csv` writes for the same inputs.
    predict_files(None, inputs, out=tmp_path / "local.csv", threads=1, progress=False)
    local_lines = (tmp_path / "local.csv").read_text().splitlines()
    csv_shards = sorted((out / "csv").glob("shard-*.csv"))
    lines = [line for f in csv_shards for line in f.read_text().splitlines()[1:]]
    assert csv_shards[0].read_text().splitlines()[0] == local_lines[0]
    assert lines == local_lines[1:]

    # A restart: the shards written are skipped, a missing one is redone the same.
    before = {f.name: f.stat().st_mtime_ns for f in shards}
    (out / "parquet" / "shard-00002.parquet").unlink()
    s2 = predict_ray(None, inputs, out=out, shard_size=3, batch_size=2, progress=False)
    assert s2["shards_skipped"] == 3 and s2["predicted"] == 3 and s2["images"] == 10
    assert read_rows(out) == local_rows
    after = {f.name: f.stat().st_mtime_ns for f in sorted((out / "parquet").glob("shard-*.parquet"))}
    assert {k: v for k, v in after.items() if k != "shard-00002.parquet"} == {
        k: v for k, v in before.items() if k != "shard-00002.parquet"
    }

    # The CLI: nothing left to do (all skipped); other inputs into the same --out are refused.
    assert main(["predict", *inputs, "--engine", "ray", "--out", str(out), "--shard-size", "3", "--quiet"]) == 0
    assert main(["predict", inputs[0], "--engine", "ray", "--out", str(out), "--shard-size", "3", "--quiet"]) == 2


def test_actor_on_a_node_without_the_drivers_model_path(tmp_path):
    """A node where the driver's model path does not exist: its own bundled model, if the same weights."""
    with Predictor(threads=1) as pred:
        digest = pred.model_digest
    gone = str(tmp_path / "elsewhere" / "model.onnx")
    actor = PageActor(None, gone, batch_size=2, model_sha256=digest)
    assert actor.predictor.model_digest == digest
    with pytest.raises(ValueError, match="its model is not the driver's"):
        PageActor(None, gone, batch_size=2, model_sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="not on this node"):
        PageActor(None, gone, batch_size=2)


def test_an_address_nothing_answers_at_is_one_line():
    from ecgvit.runtime.ray_engine import _reachable

    with pytest.raises(ValueError, match=r"--address 127.0.0.1:1: no Ray head answers there"):
        _reachable("127.0.0.1:1")
    with pytest.raises(ValueError, match="no Ray head answers there"):
        _reachable("ray://127.0.0.1:1")
