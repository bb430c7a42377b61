"""Every export variant still passes verify on the default sweep: fused attention, ORT-optimized, fp16, int8."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from conftest import CONFIGS, SAMPLES, make_model

from vitexport import save_checkpoint
from vitexport.cli import cli
from vitexport.errors import EnvironmentProblem, ExportError, VerificationError
from vitexport.export import export_onnx
from vitexport.graph import inspect_graph
from vitexport.optimize import optimize_onnx, quantize_onnx
from vitexport.runtime import probe_provider
from vitexport.verify import verify


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("variants")
    model = make_model(CONFIGS["reg_noembed"], seed=13)  # registers, no pos rows for them, 3x5 native grid
    ckpt = folder / "model.pt"
    save_checkpoint(model, ckpt)
    return model, ckpt, folder


@pytest.mark.parametrize("attention, opset, op", [("mha", 18, "MultiHeadAttention"), ("onnx", 23, "Attention")])
def test_fused_attention_passes_verify(model_and_ckpt, attention: str, opset: int, op: str) -> None:
    model, _, folder = model_and_ckpt
    path = folder / f"{attention}.onnx"
    result = export_onnx(model, path, attention=attention, opset=opset)
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count(op) == model.config.depth and "Softmax" not in ops
    assert result.metadata["attention"] == attention
    assert [o.version for o in proto.opset_import if o.domain == ""] == [opset]
    report = verify(path, provider="cpu")
    assert report, [(c.height, c.width, c.max_abs) for c in report.failures]


def test_onnx_attention_needs_opset_23(model_and_ckpt) -> None:
    model, _, folder = model_and_ckpt
    with pytest.raises(ExportError, match="needs opset >= 23"):
        export_onnx(model, folder / "x.onnx", attention="onnx", opset=18)


@pytest.mark.parametrize("attention, resample", [("sdpa", "portable"), ("mha", "portable"), ("sdpa", "resize")])
def test_optimized_graph_passes_verify_with_checkpoint(model_and_ckpt, attention: str, resample: str) -> None:
    model, ckpt, folder = model_and_ckpt
    plain = folder / f"plain-{attention}-{resample}.onnx"
    export_onnx(model, plain, attention=attention, resample=resample)
    out = folder / f"opt-{attention}-{resample}.onnx"
    result = optimize_onnx(plain, out)
    assert result.details["nodes_after"] < result.details["nodes_before"]
    graph = inspect_graph(onnx.load(str(out)))
    # ORT's optimizer folds and fuses around the resampling; the checks still find it, with the native grid
    assert graph.resample_form == resample and bool(graph.resize) == (resample == "resize")
    if resample == "portable":
        assert [m["constant_shape"][-2:] for m in graph.resample_matmuls if m["constant_shape"]] == [[3, 5]]
    report = verify(out, checkpoint=ckpt, provider="cpu")
    assert report and not report.static_problems
    with pytest.raises(VerificationError, match="verify it against the original with --checkpoint"):
        verify(out, provider="cpu")


def test_int8_passes_verify_with_its_tolerance(model_and_ckpt) -> None:
    model, ckpt, folder = model_and_ckpt
    plain = folder / "plain32.onnx"
    export_onnx(model, plain)
    out = folder / "int8.onnx"
    result = quantize_onnx(plain, out)
    assert result.details["matmuls_quantized"] == 4 * model.config.depth + 1  # qkv, proj, fc1, fc2 per block; head
    assert "Pad" in result.details["kept_float"]
    report = verify(out, checkpoint=ckpt, provider="cpu")
    assert report.dtype == "int8-dynamic" and report, [(c.height, c.width, c.max_abs) for c in report.failures]
    assert max(c.max_abs for c in report.cases) > 1e-4  # really quantized
    # the embedding resampling stays float: its MatMuls have no constant right operand, so none is quantized
    proto = onnx.load(str(out))
    resampling = {m["name"] for m in inspect_graph(proto).resample_matmuls}
    assert len(resampling) == 2
    for node in (n for n in proto.graph.node if n.name in resampling):
        assert node.op_type in ("MatMul", "FusedMatMul") and all("quant" not in i.lower() for i in node.input)


def test_int8_refuses_fp16_source(model_and_ckpt) -> None:
    model, _, folder = model_and_ckpt
    half = folder / "half.onnx"
    export_onnx(model, half, dtype="float16")
    with pytest.raises(ExportError, match="starts from a float32 export"):
        quantize_onnx(half, folder / "q16.onnx")


def test_optimize_for_cuda_without_gpu_is_an_environment_error(model_and_ckpt) -> None:
    if probe_provider("cuda")[0]:
        pytest.skip("this machine has CUDA")
    _, _, folder = model_and_ckpt
    with pytest.raises(EnvironmentProblem, match="needs it to run here"):
        optimize_onnx(folder / "plain32.onnx", folder / "cuda.onnx", provider="cuda")


def test_cli_optimize_quantize_and_verify(tmp_path: Path) -> None:
    runner = CliRunner()
    sample = str(SAMPLES / "digits-vit.pt")
    opt = tmp_path / "opt.onnx"
    result = runner.invoke(cli, ["onnx", sample, "-o", str(opt), "--optimize", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "ONNX Runtime cpu optimization (extended)" in result.stdout and "attention      mha" in result.stdout
    result = runner.invoke(cli, ["verify", str(opt), "--checkpoint", sample, "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["verify", str(opt), "--provider", "cpu"])
    assert result.exit_code == 1 and "--checkpoint" in result.stderr

    plain = tmp_path / "plain.onnx"
    assert runner.invoke(cli, ["onnx", sample, "-o", str(plain)]).exit_code == 0
    result = runner.invoke(cli, ["quantize", str(plain)])
    assert result.exit_code == 0, result.stderr
    assert "quantized      17 MatMul" in result.stdout and "embedding resampling" in result.stdout
    q = tmp_path / "plain.int8.onnx"
    result = runner.invoke(cli, ["verify", str(q), "--checkpoint", sample, "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["quantize", str(plain)])
    assert result.exit_code == 2 and "pass --force" in result.stderr
    result = runner.invoke(cli, ["onnx", sample, "-o", str(tmp_path / "c.onnx"), "--optimize", "cuda"])
    if not probe_provider("cuda")[0]:
        assert result.exit_code == 2 and "needs it to run here" in result.stderr
