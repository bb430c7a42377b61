"""The portable resampling: PyTorch's antialiased-bicubic weights from elementary ops, right on every runtime.

The weights are checked against F.interpolate exhaustively for small grids; the ONNX form against
PyTorch on ONNX Runtime, OpenVINO and ONNX's reference evaluator; the static checks against graphs
whose resampling is frozen, missing or mislabelled; the op set against TensorRT's published support.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.models import CONFIGS, make_model, needs_openvino
from vitexport.export.onnx_export import export_onnx
from vitexport.model.layers import resample_abs_pos_embed
from vitexport.model.names import MODEL_RESAMPLE_FORMS, RESAMPLE_FORMS, default_output, model_resample_form
from vitexport.model.resample import bicubic_aa_weights, resample_bicubic_aa
from vitexport.onnx.graph import PORTABLE_OP_TYPES, check_graph, inspect_graph, is_constant, non_portable_ops
from vitexport.onnx.spec import io_spec
from vitexport.verify.cases import Case, default_cases, make_input
from vitexport.verify.parity import TOLERANCES, compare
from vitexport.verify.sweep import verify

SOURCE_SIZES = (1, 2, 3, 5, 7, 14, 16, 24)
NATIVE_GRIDS = ((3, 5), (7, 2), (4, 1))  # non-square; one a single column
ATOL, RTOL = TOLERANCES["float32"]


def interpolate_weights(n_out: int, n_in: int, axis: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W[i, j] = F.interpolate of the j-th unit vector along ``axis``, read at i.

    The other axis is 2 wide and kept: F.interpolate's antialiased modes are wrong on contiguous
    NCHW inputs when the output width is 1 and the height changes (torch 2.14 CPU; channels-last
    inputs, such as the model's permuted grid, are right: see docs/portable-resampling.md).
    """
    eye = torch.eye(n_in, dtype=dtype)  # channel j holds unit vector j
    if axis == "height":
        x = eye[:, :, None].expand(n_in, n_in, 2)[None].contiguous()  # (1, n_in, n_in, 2)
        return F.interpolate(x, size=(n_out, 2), mode="bicubic", antialias=True, align_corners=False)[0, :, :, 0].T
    x = eye[:, None, :].expand(n_in, 2, n_in)[None].contiguous()  # (1, n_in, 2, n_in)
    return F.interpolate(x, size=(2, n_out), mode="bicubic", antialias=True, align_corners=False)[0, :, 0, :].T


@pytest.mark.parametrize("axis", ["height", "width"])
def test_weights_match_interpolate_for_every_size(axis: str) -> None:
    """Every source size of SOURCE_SIZES, every target from 1 to 4x: up- and downsampling, odd and even."""
    worst = 0.0
    for n_in in SOURCE_SIZES:
        for n_out in range(1, 4 * n_in + 1):
            ref = interpolate_weights(n_out, n_in, axis)
            w = bicubic_aa_weights(n_out, n_in)
            assert w.shape == (n_out, n_in) and w.dtype == torch.float32
            err = ((w - ref).abs().max() / ref.abs().max()).item()
            worst = max(worst, err)
            assert err <= 1e-6, (axis, n_in, n_out, err)
            assert torch.allclose(w.sum(1), torch.ones(n_out), atol=1e-6)
    assert worst > 0  # float32 rounding differs somewhere: the comparison is not vacuous


def test_weights_are_pytorchs_formula_in_float64() -> None:
    """In float64 the weights agree with F.interpolate to rounding: the formula, not just close numbers."""
    for n_in in SOURCE_SIZES:
        for n_out in range(1, 4 * n_in + 1):
            ref = interpolate_weights(n_out, n_in, "height", torch.float64)
            w = bicubic_aa_weights(n_out, n_in, dtype=torch.float64)
            assert (w - ref).abs().max().item() <= 1e-12, (n_in, n_out)


def test_identity_when_the_grid_does_not_change() -> None:
    for n in SOURCE_SIZES:
        assert torch.equal(bicubic_aa_weights(n, n), torch.eye(n))


@pytest.mark.parametrize("native", NATIVE_GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("prefix", [0, 1, 3])
def test_embeddings_match_for_every_target_grid(native: tuple[int, int], prefix: int) -> None:
    """The 2-D resampling of random embeddings, every target grid from 1x1 to 4x native in both axes."""
    gen = torch.Generator().manual_seed(prefix)
    posemb = torch.randn(1, prefix + native[0] * native[1], 16, generator=gen)
    for gh in range(1, 4 * native[0] + 1):
        for gw in range(1, 4 * native[1] + 1):
            ref = resample_abs_pos_embed(posemb, [gh, gw], list(native), prefix)  # F.interpolate, as timm
            out = resample_abs_pos_embed(posemb, [gh, gw], list(native), prefix, portable=True)
            assert out.shape == ref.shape == (1, prefix + gh * gw, 16)
            assert torch.equal(out[:, :prefix], posemb[:, :prefix])  # prefix tokens untouched
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            assert err <= 2e-6, (native, gh, gw, err)  # measured <= 9.2e-7 (two weight matrices)


def test_timm_agrees_and_dtype_is_restored() -> None:
    from timm.layers import resample_abs_pos_embed as timm_resample

    posemb = torch.randn(1, 1 + 15, 8, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = posemb.to(dtype)
        out = resample_abs_pos_embed(x, [7, 2], [3, 5], 1, portable=True)
        ref = timm_resample(x, [7, 2], [3, 5], num_prefix_tokens=1)
        assert out.dtype == dtype
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        assert (out.float() - ref.float()).abs().max().item() <= tol * ref.float().abs().max().item(), dtype


def test_resampling_form_is_the_models_own_and_set_only_inside_the_block() -> None:
    model = make_model(CONFIGS["spec_cls"])
    x = torch.randn(2, 1, 45, 19)
    assert model.resample_form == "interpolate"  # declared by the model: eager PyTorch's F.interpolate
    with torch.no_grad():
        before = model(x)
        with model.resampling("portable") as same:
            assert same is model and model.resample_form == "portable"
            inside = model(x)
            with model.resampling("interpolate"):
                assert model.resample_form == "interpolate"
                assert torch.equal(model(x), before)
            assert model.resample_form == "portable"
        after = model(x)
    assert model.resample_form == "interpolate" and torch.equal(before, after)
    assert not torch.equal(inside, before) and (inside - before).abs().max().item() < 1e-5  # another op, same result
    with pytest.raises(ValueError, match="'bilinear' is not one of interpolate, portable"):
        with model.resampling("bilinear"):
            pass
    with pytest.raises(RuntimeError, match="inside"):  # restored when the block fails too
        with model.resampling("portable"):
            raise RuntimeError("inside")
    assert model.resample_form == "interpolate"


def test_export_forms_map_to_the_models_forms() -> None:
    """The graph's "resize" form is what the model computes with F.interpolate; "portable" is the same name."""
    assert {form: model_resample_form(form) for form in RESAMPLE_FORMS} == {
        "portable": "portable", "resize": "interpolate"}
    assert set(map(model_resample_form, RESAMPLE_FORMS)) == set(MODEL_RESAMPLE_FORMS)


def test_torchscript_keeps_interpolate_even_inside_the_portable_block() -> None:
    model = make_model(CONFIGS["reg_noembed"])
    with model.resampling("portable"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    graph = str(scripted.inlined_graph)
    assert "aten::_upsample_bicubic2d_aa" in graph and "aten::arange" not in graph
    assert not hasattr(loaded, "resample_form")  # Python-side state: not in a saved archive


# ---------------------------------------------------------------------------
# the ONNX form alone, on every runtime
# ---------------------------------------------------------------------------
class _GridResampler(torch.nn.Module):
    """Resamples a constant (1, D, 3, 5) grid to the input's height x width, portable form."""

    def __init__(self) -> None:
        super().__init__()
        self.grid = torch.nn.Parameter(torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(5)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resample_bicubic_aa(self.grid, [x.shape[-2], x.shape[-1]])


@pytest.fixture(scope="module")
def resampler_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[_GridResampler, Path]:
    module = _GridResampler().eval()
    dims = {2: torch.export.Dim("h", min=1), 3: torch.export.Dim("w", min=1)}
    path = tmp_path_factory.mktemp("resampler") / "resampler.onnx"
    program = torch.onnx.export(module, (torch.zeros(1, 1, 7, 9),), dynamo=True, opset_version=18,
                                dynamic_shapes={"x": dims}, optimize=False, verbose=False)
    program.save(str(path))
    return module, path


def _runners(path: Path) -> dict[str, object]:
    runners: dict[str, object] = {}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runners["onnxruntime"] = lambda x: sess.run(None, {sess.get_inputs()[0].name: x})[0]
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(str(path))
    runners["reference"] = lambda x: ref.run(None, {ref.input_names[0]: x})[0]
    try:
        import openvino as ov
    except ImportError:
        return runners
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runners["openvino"] = lambda x: compiled(x)[0]
    return runners


@pytest.mark.slow
def test_onnx_resampling_matches_pytorch_for_every_target_grid_on_every_runtime(resampler_onnx) -> None:
    """One graph, exported from a 7x9 example, right for every target from 1x1 to 12x20 on each runtime."""
    module, path = resampler_onnx
    runners = _runners(path)
    for gh in range(1, 13):
        for gw in range(1, 21):
            x = np.zeros((1, 1, gh, gw), np.float32)
            with torch.no_grad():  # channels-last, as the model's permuted grid: see interpolate_weights
                grid = module.grid.contiguous(memory_format=torch.channels_last)
                ref = F.interpolate(grid, size=(gh, gw), mode="bicubic", antialias=True, align_corners=False).numpy()
            for name, run in runners.items():
                out = run(x)
                assert out.shape == ref.shape, (name, gh, gw)
                err = float(np.abs(out - ref).max() / np.abs(ref).max())
                assert err <= 2e-6, (name, gh, gw, err)


# ---------------------------------------------------------------------------
# whole models on OpenVINO and the ONNX reference evaluator
# ---------------------------------------------------------------------------
def _compile_openvino(path: Path):
    return needs_openvino().Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


@pytest.mark.slow
def test_default_export_runs_right_on_openvino_at_every_size_of_the_sweep(exported, config_name: str) -> None:
    """The issue's "done when", through the real path: `verify --provider openvino`, every default case."""
    needs_openvino()
    model, path, _ = exported[config_name]
    report = verify(path, provider="openvino")
    assert [s["name"] for s in report.sessions] == ["openvino"] and report.sessions[0]["precision"] == "f32"
    swept = [c for c in report.cases if not c.fresh_compile]  # then 3 cases on a fresh compile, smallest first
    assert [Case(c.height, c.width, c.batch, c.input_kind) for c in swept] == default_cases(model.config)
    assert len(report.cases) - len(swept) == 3
    assert report, [(c.height, c.width, c.batch, c.max_abs) for c in report.failures]
    native = model.patch_embed.grid_size
    assert any(c.grid[0] < native[0] for c in report.cases) and any(c.grid[0] > native[0] for c in report.cases)


@pytest.mark.slow
def test_default_export_runs_right_on_the_onnx_reference_evaluator(exported, config_name: str) -> None:
    """Every size of the default sweep, batch 1 and 3, through `verify --provider reference` (sizes given
    explicitly, so the evaluator's reduced default sweep does not apply)."""
    model, path, _ = exported[config_name]
    sizes = list(dict.fromkeys((c.height, c.width) for c in default_cases(model.config)))
    report = verify(path, provider="reference", sizes=sizes, batch_sizes=(1, 3))
    assert sorted({(c.height, c.width) for c in report.cases}) == sorted(sizes) and not report.sessions[0]["notes"]
    assert {c.batch for c in report.cases} == {1, 3}
    assert report, [(c.height, c.width, c.batch, c.max_abs) for c in report.failures]


@pytest.fixture(scope="module")
def spec_resize(tmp_path_factory: pytest.TempPathFactory):
    model = make_model(CONFIGS["spec_cls"], seed=3)
    path = tmp_path_factory.mktemp("resize") / "resize.onnx"
    export_onnx(model, path, resample="resize")
    return model, path


@pytest.mark.slow
def test_resize_form_is_wrong_on_openvino_where_the_grid_changes(spec_resize) -> None:
    """Documents the runtime bug that the portable form exists for; says so plainly when OpenVINO fixes it."""
    ov = needs_openvino()
    model, path = spec_resize
    compiled = _compile_openvino(path)

    def max_diff(h: int, w: int) -> float:
        x = make_input(Case(h, w, 2), 1, seed=0)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        return compare(compiled(x)[0], ref, ATOL, RTOL, top1=False).max_abs

    assert max_diff(24, 24) <= ATOL  # native 3x3 grid: no resampling, OpenVINO is right
    changed = {(h, w): max_diff(h, w) for h, w in [(28, 28), (8, 8), (40, 17)]}  # grids 4x4, 1x1, 5x3
    if all(d <= ATOL for d in changed.values()):
        pytest.fail(
            f"OpenVINO {ov.__version__} now runs the antialiased cubic Resize right (max |d| {changed}): the "
            "runtime bug documented in docs/portable-resampling.md and the README is fixed in this version; "
            "update both, and turn this test into a check that the resize form passes"
        )
    assert max(changed.values()) > 1e-2, changed


@pytest.mark.slow
def test_verify_catches_openvino_running_the_resize_form_wrong_and_names_cause_and_fix(spec_resize) -> None:
    """`verify` on OpenVINO with the resize form: the failures are exactly the resampled grids, and the diagnosis
    says the runtime ignores the Resize attributes and to export with --resample portable (the command line:
    tests/e2e/test_checkpoint_cli.py)."""
    needs_openvino()
    model, path = spec_resize
    report = verify(path, provider="openvino")
    native = list(model.patch_embed.grid_size)
    assert not report and report.failures
    assert {(c.height, c.width, c.batch) for c in report.failures} == {
        (c.height, c.width, c.batch) for c in report.cases if list(c.grid) != native}
    assert len(report.diagnoses) == 1
    assert report.diagnoses[0].startswith(f"openvino: all {len(report.failures)} failing cases resample")
    assert "does not honour the attributes of the graph's Resize" in report.diagnoses[0]
    assert "--resample portable" in report.diagnoses[0]
    same = verify(path, provider="cpu", sizes=[(24, 24), (28, 28), (8, 8)])  # ONNX Runtime runs it right
    assert same and not same.diagnoses


# ---------------------------------------------------------------------------
# static checks and the op set
# ---------------------------------------------------------------------------
def test_good_portable_graphs_pass_the_static_checks(exported, config_name: str) -> None:
    model, path, _ = exported[config_name]
    report = inspect_graph(onnx.load(str(path)))
    cfg = model.config
    assert check_graph(report, io_spec(default_output(cfg.num_classes), cfg.global_pool)) == []


@pytest.mark.slow
@pytest.mark.parametrize("resample", ["portable", "resize"])
def test_weights_frozen_by_a_static_export_fail_as_dynamic(tmp_path: Path, resample: str) -> None:
    """A graph traced at one size (here: a static export) resamples with fixed weights: wrong for a dynamic model."""
    model = make_model(CONFIGS["reg_noembed"])
    path = tmp_path / "static.onnx"
    export_onnx(model, path, static_size=(33, 50), resample=resample)
    report = inspect_graph(onnx.load(str(path)))
    cfg = model.config
    static_spec = io_spec(default_output(cfg.num_classes), cfg.global_pool, dynamic_size=False)
    assert check_graph(report, static_spec, dynamic_size=False) == []  # right for what it declares
    problems = check_graph(report, io_spec(default_output(cfg.num_classes), cfg.global_pool), dynamic_size=True)
    message = "has fixed weights" if resample == "portable" else "has a fixed output size"
    assert any(message in p for p in problems), problems


def test_mislabelled_or_missing_resampling_fails(exported, spec_resize) -> None:
    _, path, _ = exported["spec_cls"]
    spec = io_spec("logits", "token")
    report = inspect_graph(onnx.load(str(path)))
    report.resample_matmuls = []
    assert any("no positional-embedding resampling" in p for p in check_graph(report, spec))
    resize_graph = onnx.load(str(spec_resize[1]))
    report = inspect_graph(resize_graph)
    report.metadata["resample"] = "portable"
    problems = check_graph(report, spec)
    assert any("Resize node(s) in a graph declared portable" in p for p in problems), problems
    report.metadata["resample"] = "resize"
    assert check_graph(report, spec) == []


AXES_INPUT = {"ReduceSum": 1, "ReduceMax": 1, "ReduceMean": 1, "Squeeze": 1, "Unsqueeze": 1, "Slice": 3}


def test_portable_graph_uses_only_ops_every_runtime_supports(exported, config_name: str) -> None:
    """TensorRT's ONNX parser (10.1 table), OpenVINO and ONNX Runtime all run every op; no Resize."""
    _, path, _ = exported[config_name]
    proto = onnx.load(str(path))
    report = inspect_graph(proto)
    assert non_portable_ops(report) == [], non_portable_ops(report)
    assert "Resize" not in PORTABLE_OP_TYPES and {"Range", "Where", "ReduceSum"} <= set(report.op_counts)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    for node in proto.graph.node:  # TensorRT: these axes must be initializers; LayerNormalization: output Y only
        k = AXES_INPUT.get(node.op_type)
        if k is not None and len(node.input) > k and node.input[k]:
            assert is_constant(proto.graph, node.input[k], "pixel_values"), (node.op_type, node.name)
        if node.op_type == "LayerNormalization":
            assert len([o for o in node.output if o]) == 1, node.name
        if node.op_type == "Range" and not all(is_constant(proto.graph, i, "pixel_values") for i in node.input):
            # a Range that follows the input's shape counts in int64 (TensorRT 8: float Range from initializers only)
            assert node.output[0] in {n.input[0] for n in proto.graph.node if n.op_type == "Cast"}, node.name
        if node.op_type == "CastLike":  # ONNX Runtime has no CastLike kernel to fold: it warns at every load
            assert not all(is_constant(proto.graph, i, "pixel_values") for i in node.input), node.name

