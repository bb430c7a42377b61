"""verify passes correct exports and catches broken graphs at the sizes where they are wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.helpers.models import CONFIGS, make_model
from tests.helpers.onnx_edits import edited, set_resize_attr
from tests.helpers.shared import verify_exports, verify_resize_export
from vitexport.export.onnx_export import export_onnx
from vitexport.export.torchscript_export import export_torchscript
from vitexport.verify.sweep import verify


def cuda_usable() -> bool:
    from vitexport.serving.predictor import probe_provider

    return probe_provider("cuda")[0]


CUDA = cuda_usable()


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A good export of the spec model (3x3 native grid, 28x28 -> padded 32x32), and its checkpoint."""
    return verify_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def good_resize(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model exported with resample="resize" (one antialiased Resize)."""
    return verify_resize_export(tmp_path_factory)


def pad_left_top(model: onnx.ModelProto) -> None:
    """Move the padding to the left/top: ONNX pads are [begins..., ends...]; swap the halves."""
    (pad,) = [n for n in model.graph.node if n.op_type == "Pad"]
    idx = numpy_helper.from_array(np.array([4, 5, 6, 7, 0, 1, 2, 3], dtype=np.int64), "swap_idx")
    model.graph.initializer.append(idx)
    gather = helper.make_node("Gather", [pad.input[1], "swap_idx"], ["swapped_pads"], axis=0, name="swap")
    position = list(model.graph.node).index(pad)
    model.graph.node.insert(position, gather)
    pad.input[1] = "swapped_pads"


def fixed_size(model: onnx.ModelProto) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = 28
    dims[3].dim_value = 28


def perturb_pos_embed(model: onnx.ModelProto) -> None:
    # random noise: a constant offset would be invisible (LayerNorm removes per-token constant shifts)
    (t,) = [t for t in model.graph.initializer if t.name == "pos_embed"]
    value = numpy_helper.to_array(t)
    noise = np.random.default_rng(0).standard_normal(value.shape).astype(value.dtype) * 0.05
    t.CopyFrom(numpy_helper.from_array(value + noise, "pos_embed"))


def test_good_export_passes(good) -> None:
    path, ckpt = good
    report = verify(path, provider="cpu")
    assert report and not report.static_problems and len(report.cases) >= 12
    assert report.sessions[0]["providers"] == ["CPUExecutionProvider"]
    assert max(c.max_abs for c in report.cases) < 1e-5
    with_ckpt = verify(path, checkpoint=ckpt, provider="cpu")
    assert with_ckpt and not with_ckpt.weight_diff
    spec = next(c for c in report.cases if (c.height, c.width) == (28, 28))
    assert spec.padded_size == [32, 32] and spec.grid == [4, 4] and spec.seq_len == 17


def resamples(c) -> bool:
    return c.grid != [3, 3]


def downsamples(c) -> bool:
    return c.grid[0] < 3 or c.grid[1] < 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, edit, static_message, wrong_where",
    [
        # without antialias ORT's a=-0.5 cubic equals the antialiased one when enlarging: wrong only where it shrinks
        ("antialias0", set_resize_attr("antialias", 0), "antialias=0", downsamples),
        ("keys075", set_resize_attr("cubic_coeff_a", -0.75), "cubic_coeff_a=-0.75", resamples),
        ("exclude0", set_resize_attr("exclude_outside", 0), "exclude_outside=0", resamples),
    ],
)
def test_wrong_resize_kernel_fails_where_it_is_wrong(
    good, good_resize, tmp_path, name, edit, static_message, wrong_where
) -> None:
    path = good_resize
    fine = verify(path, provider="cpu")
    assert fine and any("export with --resample portable" in n for n in fine.static_notes)
    assert not any("--resample" in n for n in verify(good[0], provider="cpu", sizes=[(28, 28)]).static_notes)
    bad = edited(path, tmp_path / f"{name}.onnx", edit)
    report = verify(bad, provider="cpu")
    assert not report
    assert any(static_message in p for p in report.static_problems)
    assert any(c.grid == [3, 3] for c in report.cases)  # the identity case is in the sweep
    for c in report.cases:
        assert c.passed != wrong_where(c), (name, c.height, c.width, c.grid, c.max_abs)
    if wrong_where is resamples:
        assert (28, 28) in {(c.height, c.width) for c in report.failures}  # the spec example: 3x3 -> 4x4
    # the failures are all resampled grids, but the graph's Resize is wrong: the runtime is not blamed
    assert report.diagnoses and not any("does not honour" in d for d in report.diagnoses), report.diagnoses
    assert "goes wrong (in the export or in this runtime)" in report.diagnoses[0]


def freeze_resampling_weights(grid: tuple[int, int], native: tuple[int, int]):
    """Replace the portable form's computed weights by constants for one grid (what a traced-at-one-size graph does)."""
    from vitexport.model.resample import bicubic_aa_weights
    from vitexport.onnx.graph import inspect_graph

    def edit(model: onnx.ModelProto) -> None:
        first, second = (m["name"] for m in inspect_graph(model).resample_matmuls)
        nodes = {n.name: n for n in model.graph.node}
        w_w_t = bicubic_aa_weights(grid[1], native[1]).T.contiguous()  # grid @ W_w^T
        w_h = bicubic_aa_weights(grid[0], native[0])  # W_h @ (...)
        frozen = ((nodes[first], 1, w_w_t, "frozen_w_w_t"), (nodes[second], 0, w_h, "frozen_w_h"))
        for node, index, value, name in frozen:
            model.graph.initializer.append(numpy_helper.from_array(value.numpy(), name))
            node.input[index] = name
    return edit


@pytest.mark.slow
def test_portable_weights_frozen_to_one_grid_fail(good, tmp_path) -> None:
    """The portable form's counterpart of a Resize with a fixed size: right at one grid only, caught statically."""
    path, _ = good
    bad = edited(path, tmp_path / "frozen.onnx", freeze_resampling_weights((4, 4), (3, 3)))
    report = verify(bad, provider="cpu")
    assert not report
    frozen = [p for p in report.static_problems if "has fixed weights" in p]
    assert len(frozen) == 2, report.static_problems
    assert any(c.grid == [4, 4] for c in report.cases) and any(c.grid != [4, 4] for c in report.cases)
    for c in report.cases:
        assert c.passed == (c.grid == [4, 4]), (c.height, c.width, c.grid, c.max_abs, c.error)
    assert report.diagnoses == []  # the native grid fails too: not the resampling pattern


def test_native_grid_of_the_metadata_is_checked_against_the_graph(good, tmp_path) -> None:
    path, _ = good

    def wrong_native(model: onnx.ModelProto) -> None:
        for prop in model.metadata_props:
            if prop.key == "vitexport.native_grid":
                prop.value = "[3, 4]"

    bad = edited(path, tmp_path / "native.onnx", wrong_native)
    report = verify(bad, provider="cpu", sizes=[(28, 28)], batch_sizes=(1,))
    assert not report and all(c.passed for c in report.cases)  # only the static check sees it
    assert report.static_problems == [
        "the graph resamples a 3x3 embedding grid, but the metadata's native grid is 3x4"
    ]


def test_padding_on_the_left_top_fails_only_where_padding_happens(good, tmp_path) -> None:
    path, _ = good
    bad = edited(path, tmp_path / "lefttop.onnx", pad_left_top)
    report = verify(bad, provider="cpu")
    assert not report and not report.static_problems  # the graph looks fine: only running it shows the bug
    for c in report.cases:
        needs_padding = c.height % 8 or c.width % 8
        assert c.passed != bool(needs_padding), (c.height, c.width)


def test_fixed_height_width_graph_is_reported(good, tmp_path) -> None:
    path, _ = good
    bad = edited(path, tmp_path / "fixed.onnx", fixed_size)
    report = verify(bad, provider="cpu")
    assert not report
    assert any("fixed at 28x28" in p for p in report.static_problems)
    assert any("can only run at 28x28" in n for n in report.static_notes)
    for c in report.cases:
        assert c.passed == ((c.height, c.width) == (28, 28)), (c.height, c.width, c.error)
        if not c.passed:
            assert c.error  # ONNX Runtime refused the input: reported per case, no crash


@pytest.mark.slow
def test_perturbed_pos_embed_caught_with_checkpoint(good, tmp_path) -> None:
    path, ckpt = good
    bad = edited(path, tmp_path / "pos.onnx", perturb_pos_embed)
    assert verify(bad, provider="cpu")  # self-consistent: graph and its own weights agree
    report = verify(bad, checkpoint=ckpt, provider="cpu")
    assert not report
    assert set(report.weight_diff) == {"pos_embed"}
    assert len(report.failures) == len(report.cases)  # every size adds the embeddings


@pytest.mark.slow
def test_fp16_export_passes_with_dtype_tolerance(tmp_path) -> None:
    model = make_model(CONFIGS["reg_noembed"], seed=4)
    path = tmp_path / "m16.onnx"
    export_onnx(model, path, dtype="float16")
    report = verify(path, provider="cpu")
    assert report, [(c.height, c.width, c.max_abs) for c in report.failures]
    assert report.dtype == "float16" and report.atol == 5e-3
    assert max(c.max_abs for c in report.cases) > 1e-5  # really fp16, not fp32 in disguise


@pytest.mark.slow
def test_torchscript_verify(tmp_path) -> None:
    model = make_model(CONFIGS["nocls_avgmax"], seed=2)
    path = tmp_path / "m.ts"
    export_torchscript(model, path)
    report = verify(path)
    assert report and report.format == "torchscript" and len(report.cases) >= 12


def test_custom_sizes_and_tolerance(good) -> None:
    path, _ = good
    sizes = [(10, 70), (3, 3), (28, 28), (45, 9)]
    loose = verify(path, provider="cpu", sizes=sizes, batch_sizes=(2,))
    assert loose and [(c.height, c.width, c.batch) for c in loose.cases] == [(h, w, 2) for h, w in sizes]
    assert any(c.max_abs > 0 for c in loose.cases)  # ORT and PyTorch round differently somewhere
    exact = verify(path, provider="cpu", sizes=sizes, batch_sizes=(2,), atol=0.0, rtol=0.0)
    assert (exact.atol, exact.rtol) == (0.0, 0.0) and not exact
    for c in exact.cases:  # zero tolerance passes exactly the bit-identical outputs
        assert c.passed == (c.max_abs == 0.0), (c.height, c.width, c.max_abs)
    # a tolerance just above a case's error passes it, just below fails it
    worst = max(loose.cases, key=lambda c: c.max_abs)
    one = [(worst.height, worst.width)]
    assert verify(path, provider="cpu", sizes=one, batch_sizes=(2,), atol=worst.max_abs * 1.01, rtol=0.0)
    assert not verify(path, provider="cpu", sizes=one, batch_sizes=(2,), atol=worst.max_abs * 0.99, rtol=0.0)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a GPU and onnxruntime-gpu")
def test_cuda_verify_and_placement(good) -> None:
    path, _ = good
    report = verify(path, provider="cuda")
    assert report, report.failures
    session = report.sessions[0]
    assert "CUDAExecutionProvider" in session["providers"]
    assert session["placement"].get("CUDAExecutionProvider", 0) > 0
    all_report = verify(path, provider="all")
    assert {s["name"] for s in all_report.sessions} >= {"cuda", "cpu"} and all_report.cross_provider


def test_heatmap_sweep_reuses_the_reports_engine_and_tolerance(good, monkeypatch) -> None:
    import vitexport.verify.sweep as verify_mod

    path, _ = good
    report = verify(path, provider="cpu", sizes=[(28, 28)], batch_sizes=(1,), atol=3e-4, rtol=2e-3, seed=5)
    heights, widths = verify_mod.heatmap_sizes((28, 28), (8, 8))
    assert 1 in heights and 4 * 28 in widths and any(w % 8 for w in widths)  # 1 to 4x native, odd sizes too
    monkeypatch.setattr(verify_mod, "heatmap_sizes", lambda native, patch: ([1, 28], [7, 30, 112]))
    grid = verify_mod.heatmap_sweep(path, report)
    assert (grid.heights, grid.widths) == ([1, 28], [7, 30, 112])
    expected = [(h, w, 1) for h in [1, 28] for w in [7, 30, 112]]
    assert [(c.height, c.width, c.batch) for c in grid.report.cases] == expected
    assert (grid.report.atol, grid.report.rtol, grid.report.seed) == (3e-4, 2e-3, 5)
    assert [s["name"] for s in grid.report.sessions] == ["cpu"] and grid.report
