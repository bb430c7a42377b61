"""`vitexport batch` from the command line, locally: equal to `vitexport predict --json` image by image on held-out
digits at several sizes, bad files as error rows, resuming without recomputing, Ctrl-C, usage errors, progress only
on a terminal. Ray runs: tests/e2e/test_batch_ray.py."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers.batch import (
    BAD_FILES,
    assert_rows_equal_predict,
    batch,
    digit_folder,
    parts,
    predict_json,
    rows,
    staging,
    wait_for,
)
from tests.helpers.serving import VITEXPORT, env

pytest.importorskip("pyarrow", reason="vitexport batch needs pyarrow (pip install 'vitexport[batch]')")


def check_against_predict(model: Path, folder: Path, good: list[str], output: Path, *extra: str) -> dict:
    """Run batch on ``folder``; its rows equal predict's on the good files, the bad files are error rows."""
    done = batch(str(model), str(folder), "-o", str(output), "--provider", "cpu", "--json", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # one JSON object on stdout
    got = rows(output)
    errors = {os.path.relpath(r["path"], folder): r["error"] for r in got if r["error"] is not None}
    assert set(errors) == set(BAD_FILES) and all(errors.values()), errors
    assert_rows_equal_predict([r for r in got if r["error"] is None], predict_json(model, good))
    assert (summary["images"], summary["failed"], summary["ignored_files"]) == (len(good) + 3, 3, 1)
    return summary


@pytest.mark.slow  # `vitexport batch` and `predict` in fresh processes, twice
def test_batch_equals_predict_and_resumes_without_recomputing(sample_onnx: Path, tmp_path: Path) -> None:
    good = digit_folder(tmp_path / "digits", {20: 30, 28: 30, 33: 25, 40: 20})
    out = tmp_path / "out"
    first = check_against_predict(sample_onnx, tmp_path / "digits", good, out, "--shard-size", "16")
    assert first["processed"] == len(good) + 3 and first["shards"] == -(-(len(good) + 3) // 16)
    stamps = {p: (out / p).stat().st_mtime_ns for p in parts(out)}
    again = batch(str(sample_onnx), str(tmp_path / "digits"), "-o", str(out), "--shard-size", "16", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["processed"], summary["skipped_shards"], summary["images"]) == (0, first["shards"],
                                                                                    first["images"])
    assert {p: (out / p).stat().st_mtime_ns for p in parts(out)} == stamps  # no shard written again
    human = batch(str(sample_onnx), str(tmp_path / "digits"), "-o", str(out), "--shard-size", "16")
    assert human.returncode == 0 and "already done, skipped" in human.stdout and "failed    3" in human.stdout
    assert "\r" not in human.stderr  # no progress line when stderr is not a terminal


@pytest.mark.slow
def test_two_thousand_held_out_digits_equal_predict(sample_onnx: Path, tmp_path: Path) -> None:
    """The issue's check: 2,000 held-out digits (450 each at 20, 24, 28 and 36 px, 200 at 32 px) and bad files."""
    good = digit_folder(tmp_path / "digits", {20: 450, 24: 450, 28: 450, 32: 200, 36: 450})
    assert len(good) == 2000
    check_against_predict(sample_onnx, tmp_path / "digits", good, tmp_path / "out", "--shard-size", "256")


@pytest.mark.slow  # a real SIGINT to a running `vitexport batch`, then a rerun
def test_ctrl_c_leaves_whole_shards_and_the_rerun_finishes_the_job(sample_onnx: Path, tmp_path: Path) -> None:
    good = digit_folder(tmp_path / "digits", {28: 450, 36: 300})
    out = tmp_path / "out"
    args = [*VITEXPORT, "batch", str(sample_onnx), str(tmp_path / "digits"), "-o", str(out), "--shard-size", "8",
            "--provider", "cpu", "--workers", "1"]
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: parts(out), 120), "no shard was written"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    written = parts(out)
    assert proc.returncode == 130 and "stopped by SIGINT" in err, err[-2000:]
    assert 0 < len(written) < -(-(len(good) + 3) // 8), "the run ended before the signal: nothing was tested"
    assert staging(out) == []  # no partial shard left behind
    assert [len(rows_of) for rows_of in map(lambda p: rows(out / p), written)] == [8] * len(written)
    done = batch(str(sample_onnx), str(tmp_path / "digits"), "-o", str(out), "--shard-size", "8", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["skipped_shards"] == len(written) and summary["images"] == len(good) + 3
    paths = [r["path"] for r in rows(out)]
    assert len(paths) == len(set(paths)) and set(good) <= set(paths)  # every image once


@pytest.mark.parametrize(("args", "message"), [
    (["{model}", "{tmp}/none", "-o", "{tmp}/o"], "does not exist; pass a folder"),
    (["{model}", "{model}", "-o", "{tmp}/o"], "is an ONNX model, not an image"),
    (["{model}", "{tmp}", "-o", "{tmp}/o", "--replicas", "2"], "add --ray or --address"),
    (["{model}", "{tmp}", "-o", "{tmp}/o", "--ray", "--address", "auto"], "not both"),
    (["{model}", "{tmp}", "-o", "{model}"], "is a file; -o takes a folder"),
    (["{tmp}/x.onnx", "{tmp}", "-o", "{tmp}/o"], "model '{tmp}/x.onnx' does not exist"),
])
def test_usage_errors_are_one_line_and_exit_2(sample_onnx: Path, tmp_path: Path, args: list[str],
                                              message: str) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    fill = {"model": str(sample_onnx), "tmp": str(tmp_path)}
    result = batch(*(a.format(**fill) for a in args))
    assert result.returncode == 2 and message.format(**fill) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # `vitexport batch` in a fresh process on a pseudo-terminal
def test_progress_line_on_a_terminal_only(sample_onnx: Path, tmp_path: Path) -> None:
    digit_folder(tmp_path / "digits", {28: 60})
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([*VITEXPORT, "batch", str(sample_onnx), str(tmp_path / "digits"), "-o",
                               str(tmp_path / "out"), "--shard-size", "10", "--provider", "cpu"], env=env(),
                              stdout=subprocess.PIPE, stderr=follower, timeout=300)
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    text = seen.decode()
    assert "\r" in text and "63/63 images (100%)" in text and "images/s" in text and "3 failed" in text, text
    quiet = batch(str(sample_onnx), str(tmp_path / "digits"), "-o", str(tmp_path / "out2"), "--json", "--provider",
                  "cpu")
    assert quiet.returncode == 0 and quiet.stderr == ""  # not a terminal: no progress at all
