"""ONNX and TorchScript exports run at every input size and match timm; graphs are checked; writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.helpers.models import CONFIGS, make_model, sweep_sizes, timm_model
from vitexport._util.errors import CheckpointError, ExportError, OutputExistsError
from vitexport.export.onnx_export import export_onnx
from vitexport.export.torchscript_export import export_torchscript
from vitexport.onnx.graph import inspect_graph, load_onnx
from vitexport.verify.sweep import verify

ATOL = 1e-5  # relative to max(1, |reference|)
FP16_TOL = 1e-2  # fp16 graph vs fp32 PyTorch, relative to max(1, |reference|); measured ~1e-3


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def rel_err(out: np.ndarray, ref: torch.Tensor) -> float:
    ref_np = ref.detach().numpy()
    return float(np.abs(out.astype(np.float32) - ref_np).max() / max(1.0, np.abs(ref_np).max()))


@torch.no_grad()
def test_onnx_matches_timm_at_every_size(exported, config_name: str) -> None:
    model, path, result = exported[config_name]
    args = CONFIGS[config_name]
    ref = timm_model(args, model.state_dict())
    sess = session(path)
    name = result.io.input_name
    gen = torch.Generator().manual_seed(2)
    sizes = sweep_sizes(args)
    assert len(sizes) >= 10
    for h, w in sizes:
        x = torch.randn(3, model.config.in_chans, h, w, generator=gen)
        assert rel_err(sess.run(None, {name: x.numpy()})[0], ref(x)) <= ATOL, (config_name, h, w)
        assert rel_err(sess.run(None, {name: x[:1].numpy()})[0], ref(x[:1])) <= ATOL, (config_name, h, w)


def test_exported_graph_declares_its_interface(exported, config_name: str) -> None:
    model, path, _ = exported[config_name]
    proto = onnx.load(str(path))
    report = inspect_graph(proto)
    assert report.opset == 18
    dims = report.inputs["pixel_values"]
    assert dims[0] == "batch" and dims[1] == model.config.in_chans and dims[2:] == ["height", "width"]
    out_name = "logits" if model.config.num_classes else "features"
    assert list(report.outputs) == [out_name] and report.outputs[out_name][0] == "batch"
    # the default resampling is the portable form: no Resize, two MatMuls with weights from the input's shape
    assert report.resample_form == "portable" and not report.resize and "Resize" not in report.op_counts
    assert len(report.resample_matmuls) == 2 and all(m["weights_from_input_shape"] for m in report.resample_matmuls)
    grids = [m["constant_shape"][-2:] for m in report.resample_matmuls if m["constant_shape"]]
    assert grids == [list(model.config.grid_size)]
    assert report.pad[0]["pads_from_input_shape"]
    meta = report.metadata
    assert meta["resample"] == "portable"
    assert model.resample_form == "interpolate"  # the exporter switched the model and switched it back
    assert meta["config"] == model.config.to_dict()
    assert meta["patch_size"] == list(model.config.patch_hw) and meta["native_grid"] == list(model.config.grid_size)
    assert meta["num_prefix_tokens"] == model.config.num_prefix_tokens
    assert meta["dynamic_axes"]["pixel_values"] == {"0": "batch", "2": "height", "3": "width"}
    assert meta["torch_version"] == torch.__version__ and meta["onnx_version"] == onnx.__version__
    assert {"onnxscript_version", "source_sha256", "preprocess", "labels", "version"} <= set(meta)
    # every weight is carried under its state_dict name
    inits = {t.name for t in proto.graph.initializer}
    assert set(model.state_dict()) <= inits


def test_default_export_passes_verify_on_onnx_runtime(exported, config_name: str) -> None:
    """The default (portable) export within verify's fp32 tolerance at every size of the default sweep."""
    _, path, _ = exported[config_name]
    report = verify(path, provider="cpu")
    assert report, (report.static_problems, [(c.height, c.width, c.max_abs, c.error) for c in report.failures])
    assert report.static_checks[0].startswith("portable resampling: no Resize, 2 MatMul, weights follow")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spec_cls", "reg_noembed"])
@torch.no_grad()
def test_resize_form_is_one_antialiased_resize(tmp_path: Path, name: str) -> None:
    args = CONFIGS[name]
    model = make_model(args, seed=3)
    path = tmp_path / "resize.onnx"
    result = export_onnx(model, path, resample="resize")
    report = inspect_graph(onnx.load(str(path)))
    assert report.resample_form == "resize" and result.metadata["resample"] == "resize"
    assert not report.resample_matmuls
    (resize,) = report.resize
    assert resize["mode"] == "cubic" and resize["cubic_coeff_a"] == -0.5 and resize["antialias"] == 1
    assert resize["exclude_outside"] == 1 and resize["coordinate_transformation_mode"] == "half_pixel"
    assert resize["size_from_input_shape"] and report.pad[0]["pads_from_input_shape"]
    assert any(c.startswith("Resize: antialiased cubic") for c in result.checks)
    ref = timm_model(args, model.state_dict())
    sess = session(path)
    for h, w in sweep_sizes(args)[:6]:
        x = torch.randn(2, model.config.in_chans, h, w)
        assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], ref(x)) <= ATOL, (h, w)


def test_unknown_resample_form_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="resample form 'bilinear' is not supported; use portable or resize"):
        export_onnx(make_model(CONFIGS["spec_cls"]), tmp_path / "m.onnx", resample="bilinear")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "example, resample",
    [((28, 28), "portable"), ((32, 32), "portable"), ((40, 24), "portable"), ((9, 9), "portable"),
     ((32, 32), "resize")],
)
def test_square_native_model_stays_dynamic_from_any_example(tmp_path: Path, example, resample: str) -> None:
    """The trap of docs/numerics.md: an export traced at the native (square) size must not lose the resampling."""
    model = make_model(CONFIGS["spec_cls"])
    path = tmp_path / "m.onnx"
    export_onnx(model, path, example_size=example, resample=resample)
    sess = session(path)
    for h, w in [(28, 28), (16, 64), (33, 17), (5, 5), (90, 41)]:
        x = torch.randn(2, 1, h, w)
        with torch.no_grad():
            assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], model(x)) <= ATOL


@pytest.mark.slow
@pytest.mark.parametrize(
    "resample, message",
    [("resize", "no Resize node"), ("portable", "no positional-embedding resampling")],
)
def test_a_graph_that_lost_its_resampling_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resample: str, message: str
) -> None:
    """A model that short-circuits resampling at trace time (as eager timm does) is caught by the checks."""
    import vitexport.model.base as model_mod  # ModelBase._grid_pos_embed resamples at trace time
    from vitexport.model.layers import resample_abs_pos_embed

    def shortcut(posemb, new_size, old_size, num_prefix_tokens=1, portable=False):
        if list(new_size) == list(old_size):
            return posemb
        return resample_abs_pos_embed(posemb, new_size, old_size, num_prefix_tokens, portable)

    monkeypatch.setattr(model_mod, "resample_abs_pos_embed", shortcut)
    model = make_model(dict(CONFIGS["spec_cls"], img_size=32))
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=message):
        export_onnx(model, path, example_size=(32, 32), resample=resample)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spec_cls", "reg_noembed", "features_nopool"])
@torch.no_grad()
def test_fp16_export_within_documented_tolerance(tmp_path: Path, name: str) -> None:
    args = CONFIGS[name]
    model = make_model(args, seed=1)
    path = tmp_path / "m16.onnx"
    result = export_onnx(model, path, dtype="float16")
    assert result.metadata["dtype"] == "float16"
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    # the resampling runs in float32: its MatMuls take and give float32, not float16
    matmuls = {m["name"] for m in inspect_graph(proto).resample_matmuls}
    assert len(matmuls) == 2
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    for node in (n for n in proto.graph.node if n.name in matmuls):
        assert {types[t] for t in [*node.input, *node.output]} == {onnx.TensorProto.FLOAT}, node.name
    sess = session(path)
    for h, w in sweep_sizes(args):
        x = torch.randn(3, model.config.in_chans, h, w)
        out = sess.run(None, {"pixel_values": x.half().numpy()})[0]
        assert out.dtype == np.float16
        assert rel_err(out, model(x)) <= FP16_TOL, (h, w)
    report = verify(path, provider="cpu")  # fp16 tolerance, every size of the default sweep
    assert report and report.atol == 5e-3, [(c.height, c.width, c.max_abs) for c in report.failures]


@torch.no_grad()
def test_static_and_fixed_batch_export(tmp_path: Path) -> None:
    model = make_model(CONFIGS["spec_cls"])
    path = tmp_path / "static.onnx"
    result = export_onnx(model, path, static_size=(28, 28), batch_size=4)
    report = inspect_graph(onnx.load(str(path)))
    assert report.inputs["pixel_values"] == [4, 1, 28, 28]
    assert result.metadata["static_size"] == [28, 28] and result.metadata["batch_size"] == 4
    assert result.metadata["dynamic_axes"] == {"pixel_values": {}, "logits": {}}
    x = torch.randn(4, 1, 28, 28)
    sess = session(path)
    assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], model(x)) <= ATOL
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        sess.run(None, {"pixel_values": np.zeros((4, 1, 30, 28), np.float32)})


@pytest.mark.slow
@torch.no_grad()
def test_img_size_changes_native_grid(tmp_path: Path) -> None:
    model = make_model(CONFIGS["spec_cls"])
    ref = timm_model(CONFIGS["spec_cls"], model.state_dict())
    ref.set_input_size((48, 64))
    model.set_input_size((48, 64))
    path = tmp_path / "m.onnx"
    result = export_onnx(model, path)
    assert result.metadata["native_grid"] == [6, 8]
    sess = session(path)
    for h, w in [(48, 64), (28, 28), (100, 20)]:
        x = torch.randn(2, 1, h, w)
        assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], ref(x)) <= ATOL


@pytest.mark.slow
@torch.no_grad()
def test_torchscript_matches_timm(tmp_path: Path, config_name: str) -> None:
    args = CONFIGS[config_name]
    model = make_model(args, seed=9)
    ref = timm_model(args, model.state_dict())
    path = tmp_path / "m.ts"
    result = export_torchscript(model, path)
    assert result.metadata["config"] == model.config.to_dict()
    loaded = torch.jit.load(str(path))  # torch alone, no vitexport code involved
    extra = {"vitexport.json": ""}
    torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["vitexport.json"])["native_grid"] == list(model.config.grid_size)
    for h, w in sweep_sizes(args):
        x = torch.randn(3, model.config.in_chans, h, w)
        assert rel_err(loaded(x).numpy(), ref(x)) <= ATOL, (h, w)


def test_opset_below_18_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="needs opset >= 18") as refused:
        export_onnx(make_model(CONFIGS["spec_cls"]), tmp_path / "m.onnx", opset=17)
    assert refused.value.exit_code == 2  # an option out of range: usage


def test_existing_output_is_kept_unless_forced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous export")
    model = make_model(CONFIGS["spec_cls"])
    with pytest.raises(OutputExistsError, match="pass --force"):
        export_onnx(model, path)
    assert path.read_bytes() == b"previous export"

    def broken(*args, **kwargs):
        raise RuntimeError("simulated exporter crash")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match="simulated exporter crash"):
        export_onnx(model, path, force=True)
    assert path.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left behind


def test_failed_graph_check_keeps_old_file(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The traced program is the session's spec_cls export, read back (a trace is the slow part of an export and
    not what this tests): it is staged, checked for real, fails the injected graph check and is never moved in."""
    import onnx_ir as ir

    import vitexport.export.onnx_export as export_mod

    model, done, _ = exported["spec_cls"]
    program = SimpleNamespace(model=ir.load(str(done)))
    program.save = lambda file, external_data: ir.save(program.model, file)
    monkeypatch.setattr(export_mod, "_trace", lambda *args: program)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous export")
    monkeypatch.setattr(export_mod, "check_graph", lambda *a, **k: ["injected failure"])
    with pytest.raises(ExportError, match="failed its checks, nothing written: injected failure"):
        export_onnx(model, path, force=True)
    assert path.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.slow
@torch.no_grad()
def test_external_data_written_beside_and_guarded(tmp_path: Path) -> None:
    model = make_model(CONFIGS["reg_noembed"])
    path = tmp_path / "big.onnx"
    result = export_onnx(model, path, external_data=True)
    assert result.external_data == tmp_path / "big.onnx.data" and result.external_data.is_file()
    x = torch.randn(2, 3, 50, 21)
    assert rel_err(session(path).run(None, {"pixel_values": x.numpy()})[0], model(x)) <= ATOL
    # a model whose external data points outside its folder is refused before anything reads it
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    evil = tmp_path / "evil.onnx"
    onnx.save(proto, str(evil))
    with pytest.raises(CheckpointError, match="outside the model's folder"):
        load_onnx(evil)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [dict(img_size=32, dynamic_img_size=False, dynamic_img_pad=False), dict(dynamic_img_pad=False)],
    ids=["fixed_size_model", "dynamic_without_padding"],
)
@torch.no_grad()
def test_non_dynamic_model_variants_export_and_verify(tmp_path: Path, extra: dict) -> None:
    args = dict(CONFIGS["spec_cls"], **extra)
    model = make_model(args)
    ref = timm_model(args, model.state_dict())
    path = tmp_path / "m.onnx"
    result = export_onnx(model, path)
    sess = session(path)
    dynamic = args.get("dynamic_img_size", True)
    accepted = [(32, 32)] if not dynamic else [(32, 32), (16, 40), (8, 8), (64, 24)]
    for h, w in accepted:
        x = torch.randn(3, 1, h, w)
        assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], ref(x)) <= ATOL
    if not dynamic:
        assert result.metadata["static_size"] == [32, 32] and not result.io.input_axes.get(2)
    else:
        # ONNX has no assert: where PyTorch refuses a non-multiple, the graph's strided conv crops it (documented)
        x = torch.randn(2, 1, 28, 30)
        with pytest.raises(AssertionError, match=r"should be divisible by patch size \(8\)"):
            model(x)
        cropped = model(x[..., :24, :24])
        assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], cropped) <= ATOL
    report = verify(path, provider="cpu")
    assert report, (report.static_problems, [(c.height, c.width, c.error) for c in report.failures])
    rejected = verify(path, provider="cpu", sizes=[(28, 28)], batch_sizes=(1,))
    assert not rejected and "rejects 28x28" in (rejected.cases[0].error or "")
