"""`vitexport predict` on the command line: the table, --json (exactly the library's typed result), errors as
one line with their exit code, and engines chosen with --provider."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner

from tests.helpers.models import ROOT, SAMPLES, needs_openvino
from vitexport.cli import cli
from vitexport.serving.predictor import predict_files

IMAGES = sorted(str(p) for p in (SAMPLES / "images").glob("*.png"))


def test_predict_json_is_the_library_result(sample_onnx: Path) -> None:
    result = CliRunner().invoke(cli, ["predict", str(sample_onnx), *IMAGES, "--json", "--top-k", "3",
                                      "--provider", "cpu"])
    assert result.exit_code == 0, result.stderr
    expected = predict_files(str(sample_onnx), IMAGES, top_k=3, provider="cpu").to_json()
    assert json.loads(result.stdout) == json.loads(json.dumps(expected))  # exactly one JSON array on stdout
    assert [d["path"] for d in json.loads(result.stdout)] == IMAGES


def test_predict_cli_table_and_errors(sample_onnx: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert len(IMAGES) >= 5
    result = runner.invoke(cli, ["predict", str(sample_onnx), *IMAGES, "--provider", "cpu"])
    assert result.exit_code == 0, result.stderr
    for path in IMAGES:  # the shipped images are named after their label
        label = Path(path).name.split("-")[1]
        line = next(x for x in result.stdout.splitlines() if x.startswith(path))
        assert line.split()[2] == label, line
    (tmp_path / "bad.png").write_bytes(b"not a png")
    result = runner.invoke(cli, ["predict", str(sample_onnx), str(tmp_path / "bad.png"), "--provider", "cpu"])
    assert result.exit_code == 1 and "cannot read image" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout.startswith(f"{tmp_path / 'bad.png'}  error: cannot read image")
    result = runner.invoke(cli, ["predict", str(sample_onnx), str(tmp_path / "missing.png")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(cli, ["predict", str(tmp_path / "nope.onnx"), IMAGES[0]])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(cli, ["predict", str(sample_onnx), IMAGES[0], "--max-tokens", "4", "--provider", "cpu"])
    assert result.exit_code == 1 and "(--max-tokens)" in result.stderr and result.stderr.count("\n") == 1
    result = runner.invoke(cli, ["predict", str(sample_onnx), IMAGES[0], "--provider", "all"])
    assert result.exit_code == 2 and "'all' is not one of" in result.stderr  # predict runs one engine


def test_predict_on_a_folder_tree_runs_the_good_images_and_reports_the_bad_ones(sample_onnx: Path,
                                                                                tmp_path: Path) -> None:
    """A folder (recursively) or a glob: one row per image, bad ones with their error (--json: an "error" field);
    exit 0 while any image gave a result, 1 when none did, and 1 with --strict when any failed."""
    import shutil

    (tmp_path / "data" / "deep" / "er").mkdir(parents=True)
    good = [tmp_path / "data" / "a.png", tmp_path / "data" / "deep" / "er" / "b.png"]
    for src, dst in zip(IMAGES, good, strict=False):
        shutil.copy(src, dst)
    (tmp_path / "data" / "deep" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    runner = CliRunner()
    for source in (str(tmp_path / "data"), str(tmp_path / "data" / "**" / "*.png")):
        result = runner.invoke(cli, ["predict", str(sample_onnx), source, "--json", "--provider", "cpu"])
        assert result.exit_code == 0, result.output
        rows = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
        assert set(rows) == {"a.png", "b.png", "bad.png"}
        assert rows["bad.png"]["error"] and rows["bad.png"]["top_k"] is None
        assert rows["a.png"]["error"] is None and rows["a.png"]["top_k"][0]["label"] == Path(IMAGES[0]).name[6]
        assert "1 of 3 images failed" in result.stderr
    result = runner.invoke(cli, ["predict", str(sample_onnx), str(tmp_path / "data"), "--strict", "--provider", "cpu"])
    assert result.exit_code == 1 and "--strict" in result.stderr and result.stderr.count("\n") == 1
    assert len(result.stdout.splitlines()) == 3  # every row printed before the verdict
    result = runner.invoke(cli, ["predict", str(sample_onnx), str(tmp_path / "data" / "deep" / "*.png"),
                                 "--provider", "cpu"])
    assert result.exit_code == 1 and "gave a result: 1 of 1 failed" in result.stderr
    result = runner.invoke(cli, ["predict", str(sample_onnx), str(tmp_path / "data" / "*.gif")])
    assert result.exit_code == 2 and "no files match" in result.stderr


def test_commands_name_a_model_without_metadata_in_one_line(sample_onnx: Path, tmp_path: Path) -> None:
    import onnx

    proto = onnx.load(str(sample_onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    for args in (["predict", str(bare), IMAGES[0]], ["bench", str(bare)], ["quantize", str(bare)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, (args, result.output)
        assert "vitexport metadata" in result.stderr or "not exported by vitexport" in result.stderr, result.stderr
    result = CliRunner().invoke(cli, ["info", str(bare)])
    assert result.exit_code == 0 and "metadata       none (not exported by vitexport)" in result.stdout


@pytest.mark.skipif("TensorrtExecutionProvider" not in onnxruntime.get_available_providers(),
                    reason="this onnxruntime build has no TensorRT provider to fail")
def test_unusable_tensorrt_is_one_line_on_stderr_and_nothing_on_stdout(sample_onnx: Path) -> None:
    from vitexport.engines.ort import probe_provider

    if probe_provider("tensorrt")[0]:
        pytest.skip("TensorRT works here")
    result = CliRunner().invoke(cli, ["predict", str(sample_onnx), str(ROOT / "samples/images/digit-1-28px.png"),
                                      "--provider", "tensorrt", "--json"])
    assert result.exit_code == 2 and result.stdout == "", result.stdout  # onnxruntime's own print is captured
    assert "TensorrtExecutionProvider could not be initialised here (" in result.stderr
    assert "EP Error" not in result.stderr and result.stderr.count("\n") == 1


def test_predict_cli_on_openvino_gives_onnx_runtimes_classes(sample_onnx: Path) -> None:
    needs_openvino()
    outs = {}
    for provider in ("cpu", "openvino"):
        result = CliRunner().invoke(cli, ["predict", str(sample_onnx), *IMAGES, "--json", "--provider", provider])
        assert result.exit_code == 0, result.stderr
        outs[provider] = json.loads(result.stdout)
    for a, b in zip(outs["cpu"], outs["openvino"], strict=True):
        assert a["size"] == b["size"] and [t["index"] for t in a["top_k"]] == [t["index"] for t in b["top_k"]]
        np.testing.assert_allclose([t["score"] for t in a["top_k"]], [t["score"] for t in b["top_k"]], atol=1e-5)
