"""`vitexport batch` on Ray Data: a new local Ray (``--ray``) and a two-node cluster (``ray start --head`` plus
``ray start --address``, both on 127.0.0.1) give the local run's rows; an actor killed mid-job (SIGKILL) is
replaced and the output holds every row exactly once; SIGTERM stops a run with whole shards and no process left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.batch import (
    actor_pids,
    assert_rows_equal_predict,
    batch,
    digit_folder,
    parts,
    predict_json,
    rows,
    staging,
    wait_for,
)
from tests.helpers.serving import VITEXPORT, ProcessTree, env

if not sys.platform.startswith("linux"):
    pytest.skip("these tests track Ray's processes through /proc (Linux only)", allow_module_level=True)
pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.timeout(600)]  # Ray starts: slow under load


@pytest.fixture(autouse=True, scope="module")
def _ray_data() -> None:
    """Imported when a test runs, not when the quick subset collects this module (every test here is slow)."""
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'vitexport[batch]')")
    pytest.importorskip("pyarrow", reason="vitexport batch needs pyarrow (pip install 'vitexport[batch]')")


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """Ray's rows are the local run's: same keys and sizes, same top-k, scores equal to float32 rounding."""
    assert [(r["path"], r["height"], r["width"], r["error"]) for r in got] == \
        [(r["path"], r["height"], r["width"], r["error"]) for r in want]
    for a, b in zip(got, want, strict=True):
        if a["top_k"] is None:
            assert b["top_k"] is None
            continue
        assert [t["index"] for t in a["top_k"]] == [t["index"] for t in b["top_k"]]
        assert max(abs(s["score"] - t["score"]) for s, t in zip(a["top_k"], b["top_k"], strict=True)) < 1e-6


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    digit_folder(folder, {20: 60, 28: 60, 36: 60})
    return folder


@pytest.fixture(scope="module")
def local_rows(sample_onnx: Path, digits: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("local") / "out"
    done = batch(str(sample_onnx), str(digits), "-o", str(out), "--shard-size", "16", "--provider", "cpu")
    assert done.returncode == 0, done.stderr
    return rows(out)


def test_local_ray_gives_the_local_rows_and_resumes_without_ray(sample_onnx: Path, digits: Path, local_rows,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = batch(str(sample_onnx), str(digits), "-o", str(out), "--shard-size", "16", "--provider", "cpu", "--ray",
                 "--replicas", "2", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["mode"], summary["processed"], summary["failed"]) == ("ray", len(local_rows), 3)
    assert_same_rows(rows(out), local_rows)
    again = batch(str(sample_onnx), str(digits), "-o", str(out), "--shard-size", "16", "--ray", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["processed"] == 0  # all done: Ray is not started
    local = batch(str(sample_onnx), str(digits), "-o", str(out), "--shard-size", "16", "--json")
    assert json.loads(local.stdout)["skipped_shards"] == summary["shards"]  # the same job here and on Ray


def test_sigterm_stops_ray_leaves_whole_shards_and_no_process(sample_onnx: Path, tmp_path: Path) -> None:
    digit_folder(tmp_path / "digits", {28: 450, 40: 300})
    out = tmp_path / "out"
    proc = subprocess.Popen([*VITEXPORT, "batch", str(sample_onnx), str(tmp_path / "digits"), "-o", str(out),
                             "--shard-size", "8", "--provider", "cpu", "--ray", "--replicas", "2"], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    tree = ProcessTree(proc)
    try:
        assert wait_for(lambda: (tree.snapshot(), parts(out))[1], 240), "no shard was written"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        _, code, left = tree.stop(signal.SIGKILL, timeout=10)
    assert code == 143 and "stopped by SIGTERM" in err, err[-3000:]
    assert not left, f"processes left after the run: {left}"
    written = parts(out)
    assert 0 < len(written) < -(-753 // 8), "the run ended before the signal: nothing was tested"
    assert staging(out) == [] and all(len(rows(out / p)) == 8 for p in written)


def test_two_thousand_held_out_digits_on_ray_equal_predict(sample_onnx: Path, tmp_path: Path) -> None:
    good = digit_folder(tmp_path / "digits", {20: 450, 24: 450, 28: 450, 32: 200, 36: 450})
    done = batch(str(sample_onnx), str(tmp_path / "digits"), "-o", str(tmp_path / "out"), "--shard-size", "128",
                 "--provider", "cpu", "--ray")
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(tmp_path / "out")
    assert sorted(os.path.basename(r["path"]) for r in got if r["error"]) == ["cut.png", "empty.jpg", "text.png"]
    assert_rows_equal_predict([r for r in got if r["error"] is None], predict_json(sample_onnx, good))


@pytest.fixture(scope="module")
def cluster():
    """``ray start --head`` and ``ray start --address`` on 127.0.0.1, one CPU each; every process checked at the end."""
    from vitexport.serving.batch.cluster import local_cluster

    if not (Path(sys.executable).parent / "ray").exists():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    with local_cluster(nodes=2, cpus=1, PYTHONPATH=env()["PYTHONPATH"]) as c:
        yield c
    assert not c.left, f"processes left after the nodes stopped: {c.left}"


def test_two_node_cluster_gives_the_local_rows_with_an_actor_on_each_node(cluster, sample_onnx: Path, digits: Path,
                                                                         local_rows, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([*VITEXPORT, "batch", str(sample_onnx), str(digits), "-o", str(out), "--shard-size",
                             "16", "--provider", "cpu", "--address", cluster.address, "--replicas", "2", "--json"],
                            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nodes: set[int] = set()
    wait_for(lambda: (nodes.update(actor_pids(cluster.trees).values()), len(nodes) == 2 or proc.poll() is not None)[1],
             240)
    out_text, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert nodes == {0, 1}  # one actor on the head, one on the second node
    assert json.loads(out_text)["mode"] == "ray"
    assert_same_rows(rows(out), local_rows)


def test_an_actor_killed_mid_job_is_replaced_and_every_row_is_written_once(cluster, sample_onnx: Path,
                                                                           tmp_path: Path) -> None:
    good = digit_folder(tmp_path / "digits", {28: 450, 40: 300})
    out = tmp_path / "out"
    proc = subprocess.Popen([*VITEXPORT, "batch", str(sample_onnx), str(tmp_path / "digits"), "-o", str(out),
                             "--shard-size", "8", "--provider", "cpu", "--address", cluster.address, "--replicas", "2",
                             "--json"], env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        actors: dict[int, int] = {}
        assert wait_for(lambda: (actors.update(actor_pids(cluster.trees)), bool(parts(out)) and bool(actors))[1],
                        240), "no shard was written"
        victim = min(actors)
        os.kill(victim, signal.SIGKILL)
        before = len(parts(out))
        out_text, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    total = -(-(len(good) + 3) // 8)
    assert before < total, "the job ended before the kill: nothing was tested"
    assert proc.returncode == 0, err[-3000:]
    assert not Path(f"/proc/{victim}").exists() or victim not in actor_pids(cluster.trees)
    summary = json.loads(out_text)
    assert (summary["images"], summary["shards"]) == (len(good) + 3, total)
    paths = [r["path"] for r in rows(out)]
    assert len(paths) == len(set(paths)) == len(good) + 3 and set(good) <= set(paths)
