"""Every export variant still passes verify on the default sweep: fused attention, ORT-optimized, fp16, int8."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from tests.helpers.models import CONFIGS, make_model
from vitexport import save_checkpoint
from vitexport._util.errors import EnvironmentProblem, ExportError, UsageError
from vitexport.export.attention import ATTENTION_MIN_OPSET
from vitexport.export.onnx_export import export_onnx
from vitexport.export.optimize import EXTERNAL_MIN_BYTES, optimize_onnx, quantize_onnx
from vitexport.export.pipeline import export_optimized
from vitexport.onnx.graph import inspect_graph, read_metadata, set_metadata
from vitexport.serving.predictor import probe_provider
from vitexport.verify.sweep import verify

CUDA = probe_provider("cuda")[0]


def matmuls_with_weights(model) -> int:
    """qkv, proj, fc1 and fc2 per block, and the head: the MatMuls whose second input is a weight."""
    return 4 * model.config.depth + (1 if model.config.num_classes else 0)


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("variants")
    model = make_model(CONFIGS["reg_noembed"], seed=7)  # registers, no pos rows for them, 3x5 native grid; the
    # weights of the session's reg_noembed export (`plain`)
    ckpt = folder / "model.pt"
    save_checkpoint(model, ckpt)
    return model, ckpt, folder


@pytest.fixture(scope="module")
def plain(exported) -> Path:
    """The float32 export every transformation starts from (read-only for the tests): the session's default
    export of reg_noembed, made once per run for every module that uses it, of `model_and_ckpt`'s weights."""
    return exported["reg_noembed"][1]


@pytest.mark.slow
@pytest.mark.parametrize("attention, op", [("mha", "MultiHeadAttention"), ("onnx", "Attention")])
def test_fused_attention_passes_verify_with_default_opset(model_and_ckpt, tmp_path: Path, attention: str,
                                                          op: str) -> None:
    model, _, _ = model_and_ckpt
    path = tmp_path / f"{attention}.onnx"
    result = export_onnx(model, path, attention=attention)  # the library picks the opset attention needs
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count(op) == model.config.depth and "Softmax" not in ops
    assert result.metadata["attention"] == attention
    assert [o.version for o in proto.opset_import if o.domain == ""] == [max(18, ATTENTION_MIN_OPSET[attention])]
    report = verify(path, provider="cpu")
    assert report, [(c.height, c.width, c.max_abs) for c in report.failures]


def test_onnx_attention_needs_opset_23(model_and_ckpt, tmp_path: Path) -> None:
    model, _, _ = model_and_ckpt
    with pytest.raises(ExportError, match="needs opset >= 23"):
        export_onnx(model, tmp_path / "x.onnx", attention="onnx", opset=18)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("attention, resample", [("sdpa", "portable"), ("mha", "portable"), ("sdpa", "resize")])
def test_optimized_graph_passes_verify_with_checkpoint(model_and_ckpt, tmp_path: Path, attention: str,
                                                       resample: str) -> None:
    model, ckpt, _ = model_and_ckpt
    plain = tmp_path / f"plain-{attention}-{resample}.onnx"
    export_onnx(model, plain, attention=attention, resample=resample)
    out = tmp_path / f"opt-{attention}-{resample}.onnx"
    result = optimize_onnx(plain, out)
    assert result.details["nodes_after"] < result.details["nodes_before"]
    graph = inspect_graph(onnx.load(str(out)))
    # ORT's optimizer folds and fuses around the resampling; the checks still find it, with the native grid
    assert graph.resample_form == resample and bool(graph.resize) == (resample == "resize")
    if resample == "portable":
        assert [m["constant_shape"][-2:] for m in graph.resample_matmuls if m["constant_shape"]] == [[3, 5]]
    report = verify(out, checkpoint=ckpt, provider="cpu")
    assert report and not report.static_problems
    with pytest.raises(UsageError, match="verify it against the original: --checkpoint"):  # exit 2: usage
        verify(out, provider="cpu")


@pytest.mark.slow
def test_export_optimized_is_the_cli_pipeline(model_and_ckpt, tmp_path: Path) -> None:
    """export_optimized(optimize="cpu") is `vitexport onnx --optimize cpu`: fused attention, export, optimize."""
    model, ckpt, _ = model_and_ckpt
    out = tmp_path / "opt.onnx"
    result = export_optimized(model, out, "cpu")
    assert result.optimized == "cpu" and result.metadata["attention"] == "mha"  # the default when optimizing for CPU
    assert any(c.startswith("ONNX Runtime cpu optimization (extended)") for c in result.checks)
    assert read_metadata(out)["optimized"]["provider"] == "cpu"
    assert result.bytes == out.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.onnx"]  # the intermediate export is gone
    assert "MultiHeadAttention" in {n.op_type for n in onnx.load(str(out)).graph.node}
    report = verify(out, checkpoint=ckpt, provider="cpu")
    assert report and not report.static_problems


def test_export_onnx_only_exports() -> None:
    """The exporter opens no ONNX Runtime session: optimizing is the pipeline's step, not an export option."""
    import ast
    import inspect

    import vitexport.export.onnx_export as onnx_export

    imported = {n.module for n in ast.walk(ast.parse(inspect.getsource(onnx_export)))
                if isinstance(n, ast.ImportFrom)}
    assert "vitexport.export.optimize" not in imported and "vitexport.engines.ort" not in imported
    assert "optimize" not in inspect.signature(onnx_export.export_onnx).parameters


@pytest.mark.slow
def test_int8_passes_verify_with_its_tolerance(model_and_ckpt, plain: Path, tmp_path: Path) -> None:
    model, ckpt, _ = model_and_ckpt
    out = tmp_path / "int8.onnx"
    result = quantize_onnx(plain, out)
    assert result.details["matmuls_quantized"] == matmuls_with_weights(model)
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


def test_int8_refuses_fp16_source(plain: Path, tmp_path: Path) -> None:
    half = tmp_path / "half.onnx"
    shutil.copy(plain, half)
    set_metadata(half, {"dtype": "float16"})  # what an fp16 export declares (fp16 exports are tested elsewhere)
    with pytest.raises(ExportError, match=r"starts from a float32 export; .* is float16"):
        quantize_onnx(half, tmp_path / "q16.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.onnx"]


@pytest.fixture(scope="module")
def external_src(model_and_ckpt, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export forced to keep its weights in a data file, as a model over 2 GB does (read-only for the tests)."""
    model, _, _ = model_and_ckpt
    src = tmp_path_factory.mktemp("external") / "big.onnx"
    export_onnx(model, src, external_data=True)
    assert (src.parent / "big.onnx.data").is_file()
    return src


@pytest.mark.slow
@pytest.mark.parametrize("transform", ["optimize", "quantize"])
def test_transforms_keep_external_data_external(model_and_ckpt, external_src: Path, tmp_path: Path,
                                                transform: str) -> None:
    """Optimize and quantize keep a model's weights in a data file beside the result."""
    _, ckpt, _ = model_and_ckpt
    out = tmp_path / f"{transform}.onnx"
    result = optimize_onnx(external_src, out) if transform == "optimize" else quantize_onnx(external_src, out)
    assert result.external_data == tmp_path / f"{transform}.onnx.data" and result.external_data.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, result.external_data.name])
    proto = onnx.load(str(out), load_external_data=False)
    inline = [t.name for t in proto.graph.initializer
              if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) >= EXTERNAL_MIN_BYTES]
    assert not inline, inline  # no weight was pulled into the model file
    assert out.stat().st_size < result.external_data.stat().st_size
    report = verify(out, checkpoint=ckpt, provider="cpu", sizes=[(24, 40), (17, 70), (5, 5)], batch_sizes=(2,))
    assert report, [(c.height, c.width, c.max_abs, c.error) for c in report.failures]
    if transform == "quantize":  # its intermediate (folded) graph must not pull the weights in either (2 GB limit)
        from vitexport.export.optimize import _fold_for_quantization

        folded = tmp_path / "folded.onnx"
        _fold_for_quantization(external_src, folded)
        assert folded.stat().st_size < (tmp_path / "folded.onnx.data").stat().st_size


def test_optimize_for_cuda(model_and_ckpt, plain: Path, tmp_path: Path) -> None:
    _, ckpt, _ = model_and_ckpt
    out = tmp_path / "cuda.onnx"
    if not CUDA:
        with pytest.raises(EnvironmentProblem, match="needs it to run here"):
            optimize_onnx(plain, out, provider="cuda")
        assert not out.exists()
        return
    result = optimize_onnx(plain, out, provider="cuda")
    assert result.details["provider"] == "cuda" and read_metadata(out)["optimized"]["provider"] == "cuda"
    assert verify(out, checkpoint=ckpt, provider="cuda")


