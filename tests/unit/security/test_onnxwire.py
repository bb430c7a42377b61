"""The wire-format reader against the onnx package: the same skeleton, the same graph report, truncations refused."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tests.helpers.models import CONFIGS, make_model
from tests.helpers.wire import KINDS, hostile_skeleton
from vitexport._util.errors import CheckpointError
from vitexport.export.onnx_export import export_onnx
from vitexport.onnx.graph import inspect_graph, read_structure
from vitexport.security import onnxwire


def _same_skeleton(path: Path) -> onnxwire.Model:
    wire = onnxwire.read_model(path)
    assert wire == onnxwire.from_proto(onnx.load(str(path), load_external_data=False))
    return wire


def test_every_config_reads_like_onnx(exported) -> None:
    """Nodes, attributes, dims, initializers and metadata as onnx.load sees them; the graph report is identical."""
    for name, (_, path, _) in exported.items():
        wire = _same_skeleton(path)
        assert inspect_graph(wire, str(path)) == inspect_graph(onnx.load(str(path)), str(path)), name
        assert wire.opset == 18 and wire.metadata_props["vitexport.resample"] == '"portable"'
        assert any(d == "height" for d in wire.graph.input[0].dims)


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(resample="resize"), dict(attention="mha"), dict(dtype="float16"),
                                     dict(attention="onnx"), dict(static_size=(24, 40), batch_size=2)])
def test_variants_read_like_onnx(tmp_path: Path, options: dict) -> None:
    """Resize attributes (strings, a float, ints), contrib-domain nodes, fp16, opset 23, fixed dims."""
    path = tmp_path / "m.onnx"
    export_onnx(make_model(CONFIGS["reg_noembed"], seed=3), path, **options)
    wire = _same_skeleton(path)
    report = inspect_graph(wire)
    assert report == inspect_graph(onnx.load(str(path)))
    if options.get("resample") == "resize":
        assert report.resize and report.resize[0]["cubic_coeff_a"] == -0.5 and report.resize[0]["mode"] == "cubic"
    if options.get("attention") == "mha":
        assert any(n.domain == "com.microsoft" for n in wire.graph.node)
    if "static_size" in options:
        assert wire.graph.input[0].dims == [2, 3, 24, 40]


def test_external_data_and_negative_ints(tmp_path: Path) -> None:
    """External-data entries are read, payload-free; negative int64 attributes and dims decode as onnx does."""
    weight = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    node = helper.make_node("Flatten", ["x"], ["f"], axis=-1)
    mm = helper.make_node("MatMul", ["f", "w"], ["y"], name="mm")
    graph = helper.make_graph([node, mm], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    wire = _same_skeleton(path)
    assert wire.graph.initializer[0].external["location"] == "ext.onnx.data"
    assert wire.graph.node[0].attributes["axis"] == -1
    assert wire.graph.output[0].dims == [None, 64]
    assert read_structure(path).graph.initializer[0].dims == [64, 64]
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(CheckpointError, match=r"needs its external data file 'ext\.onnx\.data'"):
        read_structure(path)


def test_external_data_inside_a_subgraph_is_reported_for_both_readers(tmp_path: Path) -> None:
    """A Constant with external data inside an If branch: the graph report of the ModelProto names it too (it used
    to look at top-level tensors only once the proto was converted), as the wire reader's walk does."""
    weight = numpy_helper.from_array(np.ones((2,), np.float32), "w")
    hidden = numpy_helper.from_array(np.ones((2,), np.float32), "c")
    for tensor, location in ((weight, "w.bin"), (hidden, "c.bin")):
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=location)
        (tmp_path / location).write_bytes(np.ones((2,), np.float32).tobytes())
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    branch = helper.make_graph([helper.make_node("Constant", [], ["y"], value=hidden)], "then", [], [out])
    other = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "else", [], [out])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [out],
                              [weight])
    path = tmp_path / "sub.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    proto = onnx.load(str(path), load_external_data=False)
    assert sorted(inspect_graph(proto).external_data) == ["c.bin", "w.bin"]
    assert sorted(inspect_graph(onnxwire.read_model(path)).external_data) == ["c.bin", "w.bin"]


@pytest.mark.slow
def test_large_file_is_memory_mapped_and_weights_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above MMAP_ABOVE the file is mapped; the result is the same as reading it."""
    path = tmp_path / "big.onnx"
    export_onnx(make_model(CONFIGS["token_fcnorm"], seed=1), path)
    small = onnxwire.read_model(path)
    monkeypatch.setattr(onnxwire, "MMAP_ABOVE", 0)
    seen = []
    real = onnxwire._Reader.__init__
    monkeypatch.setattr(onnxwire._Reader, "__init__",
                        lambda self, buf, budget: seen.append(type(buf).__name__) or real(self, buf, budget))
    assert onnxwire.read_model(path) == small and seen == ["mmap"]


def test_every_truncation_that_protobuf_refuses_is_refused(sample_onnx: Path) -> None:
    """Cut the sample at 300 places: whenever protobuf cannot parse the prefix, neither do we (WireError only)."""
    data = sample_onnx.read_bytes()
    refused = 0
    for cut in np.linspace(1, len(data) - 1, 300).astype(int):
        prefix = data[:cut]
        try:
            onnx.ModelProto.FromString(prefix)
            protobuf_ok = True
        except Exception:
            protobuf_ok = False
        try:
            onnxwire.parse_model(prefix)
        except onnxwire.WireError:
            refused += 1
            continue
        assert protobuf_ok, cut
    assert refused >= 250  # nearly every cut lands inside the graph, whose length then exceeds the file


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_end_in_wire_error_or_a_model(data: bytes) -> None:
    try:
        onnxwire.parse_model(data)
    except onnxwire.WireError:
        pass


def test_the_byte_budget_bounds_the_work(sample_onnx: Path) -> None:
    """A budget below what the sample's skeleton costs stops the read, in the first pass or the second."""
    with pytest.raises(onnxwire.WireError, match="would take more than"):
        onnxwire.read_model(sample_onnx, budget=10_000)
    model = onnxwire.read_model(sample_onnx)
    assert model.graph.node and sample_onnx.stat().st_size < onnxwire.BASE_BUDGET


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_skeletons_stop_within_the_byte_budget(kind: str) -> None:
    """Every construct that costs a Python object is charged before it is built, whatever holds it: nodes,
    input names, packed ints, attributes, dims, and unknown fields skipped by length (time). 1 MB of each, read
    with a 4 MB budget, is refused within it (the old reader counted only nodes, tensors and value infos, up to 5
    million). The default budget on 40 MB files: `test_40_mb_hostile_skeleton_costs_under_300_mb` (e2e)."""
    data, budget = hostile_skeleton(kind, 1_000_000), 4_000_000
    tracemalloc.start()
    try:
        with pytest.raises(onnxwire.WireError, match="would take more than 4 MB to read"):
            onnxwire.parse_model(data, budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * budget, peak


def test_small_hostile_skeletons_parse_like_onnx() -> None:
    """The hostile constructs are valid protobuf: at 2 KB each reads as onnx reads it (the budget is what stops
    the large ones, not a parse error)."""
    for kind in KINDS:
        data = hostile_skeleton(kind, 2_000)
        assert onnxwire.parse_model(data) == onnxwire.from_proto(onnx.ModelProto.FromString(data)), kind


class _Watched:
    """A buffer that records every byte index and slice the reader touches."""

    def __init__(self, data: bytes) -> None:
        self.data, self.touched = data, []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key):
        self.touched.append(key if isinstance(key, slice) else slice(key, key + 1))
        return self.data[key]


def test_weight_payloads_are_skipped_not_read() -> None:
    """raw_data and float_data are jumped over by their length: no byte of a payload is touched."""
    raw = numpy_helper.from_array(np.full((256, 256), 7.0, dtype=np.float32), "raw")
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [3000], [1.5] * 3000)  # float_data, packed
    node = helper.make_node("Add", ["raw", "typed"], ["y"])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 3000])],
                              [raw, typed])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    payloads = [(data.find(raw.raw_data), len(raw.raw_data)),
                (data.find(np.full(3000, 1.5, dtype="<f4").tobytes()), 3000 * 4)]
    assert all(start > 0 for start, _ in payloads)
    buf = _Watched(data)
    model = onnxwire.parse_model(buf)
    assert [(t.name, t.dims) for t in model.graph.initializer] == [("raw", [256, 256]), ("typed", [3000])]
    for start, size in payloads:
        hits = [s for s in buf.touched if s.start < start + size and s.stop > start]
        assert not hits, (start, size, hits[:3])
    assert sum(s.stop - s.start for s in buf.touched) < len(data) // 50


def _key(number: int, wire: int) -> bytes:
    return bytes([number << 3 | wire])


@pytest.mark.parametrize("data, message", [
    (_key(7, 2) + b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "needs .* bytes"),  # a graph claiming 2**63 bytes
    (_key(1, 0) + b"\xff" * 11, "varint longer than 10 bytes"),
    (_key(1, 0) + b"\x80\x80", "truncated varint"),
    (_key(7, 3) + b"\x00", "wire type 3"),  # a group: not used by onnx.proto
    (b"\x00\x01", "field number 0"),
    (_key(1, 0) + b"\x08", "no graph"),  # ir_version only
    (b"", "no graph"),
])
def test_hostile_headers_fail_at_once(data: bytes, message: str) -> None:
    """A length that exceeds the file, an overlong varint, a group, field 0 or no graph: WireError, no allocation."""
    with pytest.raises(onnxwire.WireError, match=message):
        onnxwire.parse_model(data)


def test_subgraphs_are_read_to_a_fixed_depth() -> None:
    """An If node's branches (attribute graphs) are read MAX_SUBGRAPH_DEPTH levels deep and recorded as '<graph>'
    below: nesting depth is fixed, whatever the file."""
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "leaf", [],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    inner = leaf
    for _ in range(25):  # nested 25 deep (protobuf itself stops near 30): a recursive reader follows each
        node = helper.make_node("If", ["c"], ["z"], then_branch=inner, else_branch=leaf)
        inner = helper.make_graph([node], "inner", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    outer = helper.make_graph(inner.node, "outer", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    data = helper.make_model(outer, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    buf = _Watched(data)
    model = onnxwire.parse_model(buf)
    assert [n.op_type for n in model.graph.node] == ["If"]
    level = model.graph
    for _ in range(onnxwire.MAX_SUBGRAPH_DEPTH):
        assert level.node[0].attributes["else_branch"].name == "leaf"
        level = level.node[0].attributes["then_branch"]
    assert level.node[0].attributes == {"then_branch": "<graph>", "else_branch": "<graph>"}
    assert model == onnxwire.from_proto(onnx.ModelProto.FromString(data))
    assert sum(s.stop - s.start for s in buf.touched) < 2000  # the deeper levels were skipped, not read
