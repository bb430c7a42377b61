"""Static checks of an exported ONNX graph (no torch, no onnxruntime; onnx only to load a full ModelProto).

A graph that will be wrong at other input sizes often looks fine at export time:
a resampling (Resize, or the portable MatMul form) that lost its dependency on the
input shape, a Pad that was folded away, the wrong cubic kernel, rotary tables (Sin, Cos)
computed once for the traced grid. These checks read the graph, not its outputs.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitexport._util.errors import CheckpointError
from vitexport.onnx.spec import (
    RESAMPLE_FORMS,
    RESIZE_ATTRIBUTES,
    RESIZE_DEFAULTS,
    IOSpec,
    decode_metadata,
    encode_metadata,
)
from vitexport.security import onnxwire

# MatMul-like ops that can apply the portable form's resampling weights.
_MATMUL_OPS = ("MatMul", "FusedMatMul", "Einsum", "Gemm")

# Standard-domain op types that ONNX Runtime, OpenVINO and TensorRT all run: the ones a default
# (portable, chunked-attention, opset 18) export may hold at its top level (the chunked attention's Loop body
# is checked in tests/unit/export/test_attention.py). Each is listed as supported in TensorRT's ONNX parser
# table (onnx/onnx-tensorrt docs/operators.md, release 10.1-GA); docs/portable-resampling.md has the table with
# types and restrictions (Loop: TensorRT wants a static scan-output length, the chunked attention's is not).
# Resize is missing on purpose: TensorRT refuses antialiasing.
PORTABLE_OP_TYPES = frozenset({
    "Abs", "Add", "Cast", "CastLike", "Concat", "Constant", "Conv", "Div", "Erf", "Expand", "Gather", "Gemm",
    "GreaterOrEqual", "Identity", "LayerNormalization", "Less", "Loop", "MatMul", "Max", "Min", "Mod", "Mul", "Pad",
    "Range",
    "ReduceMax", "ReduceMean", "ReduceSum", "Reshape", "Shape", "Slice", "Softmax", "Sqrt", "Squeeze", "Sub",
    "Transpose", "Unsqueeze", "Where",
    # activations and norms of the layer families (SiLU, QuickGELU, GELU-tanh, RMSNorm, differential attention)
    "Exp", "Pow", "Reciprocal", "Sigmoid", "Tanh",
    # rotary tables (Eva: sin/cos of the grid's angles, the rotation's negated halves) and NaFlexViT's linear
    # resampling weights (floor, clamp, the two neighbours' masks; Max is above)
    "Clip", "Cos", "Equal", "Floor", "Greater", "Neg", "Sin",
})


@dataclass
class GraphReport:
    """What a graph holds, and the problems found against the declared interface."""

    path: str
    opset: int
    inputs: dict[str, list[int | str | None]]
    outputs: dict[str, list[int | str | None]]
    op_counts: dict[str, int]
    metadata: dict[str, Any]
    resize: list[dict[str, Any]] = field(default_factory=list)
    resample_matmuls: list[dict[str, Any]] = field(default_factory=list)  # the portable form's MatMuls
    pad: list[dict[str, Any]] = field(default_factory=list)
    rope: list[dict[str, Any]] = field(default_factory=list)  # Sin/Cos nodes: the rotary tables
    problems: list[str] = field(default_factory=list)
    external_data: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def resample_form(self) -> str:
        """``"resize"`` or ``"portable"``: as the metadata declares it, else as the graph looks."""
        declared = self.metadata.get("resample")
        if declared in RESAMPLE_FORMS:
            return declared
        return "resize" if self.resize or not self.resample_matmuls else "portable"


def _checked(model: Any, p: Path) -> Any:
    """A parsed model with at least one node whose external data stays inside its folder (and exists)."""
    if not model.graph.node:
        raise CheckpointError(f"{str(p)!r} is not a readable ONNX model (empty graph); export it again")
    check_external_data(model, p)
    return model


def load_onnx(path: str | os.PathLike[str], load_external_data: bool = False) -> Any:
    """Load an ``onnx.ModelProto`` with a clean error; external data must stay inside the model's folder."""
    import onnx

    from vitexport.security.sniff import require, unreadable_onnx

    p = Path(path)
    require(p, "onnx")  # a file, not empty, an ONNX model by its first bytes
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others
        raise unreadable_onnx(p, type(exc).__name__) from exc
    _checked(model, p)
    if load_external_data:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(p.parent))
    return model


def read_structure(path: str | os.PathLike[str]) -> onnxwire.Model:
    """The skeleton of an ONNX file (`vitexport.security.onnxwire`: no onnx package, weights not read), with the same
    checks and messages as `load_onnx`."""
    from vitexport.security.sniff import read_onnx_structure, require

    p = Path(path)
    require(p, "onnx")
    return _checked(read_onnx_structure(p), p)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    """The tensors of a node's attributes (a Constant's value and sparse_value included), subgraphs too."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        for sparse in [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []), *attr.sparse_tensors]:
            yield from (sparse.values, sparse.indices)
        for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
            yield from _graph_tensors(sub)


def all_tensors(model: Any) -> Iterator[Any]:
    """Every tensor an ``onnx.ModelProto`` can carry data in: initializers, sparse initializers, node
    attributes (Constant values, subgraphs), local functions and training graphs; nothing is loaded
    (protobuf bounds the nesting)."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for info in model.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def external_locations(model: Any) -> list[str]:
    """Every external-data location any tensor of an `onnxwire.Model` (as `onnxwire.read_model` collects
    them) or an ``onnx.ModelProto`` (`all_tensors`) names, in order."""
    if isinstance(model, onnxwire.Model):
        if model.external_locations is None:  # `from_proto` does not walk subgraphs: ask the ModelProto instead
            raise ValueError("external-data locations are collected by onnxwire.read_model only")
        return list(model.external_locations)
    out = []
    for tensor in all_tensors(model):
        if tensor.data_location == onnxwire.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in out:
                    out.append(entry.value)
    return out


def model_files(path: str | os.PathLike[str], report: GraphReport) -> tuple[Path, ...]:
    """The model file and its external data files (an output of the same command must be none of them)."""
    return (Path(path), *(Path(path).parent / name for name in report.external_data))


def check_external_data(model: Any, path: Path) -> None:
    """Refuse external-data locations that point outside the model's folder (or are missing)."""
    folder = path.resolve().parent
    for location in external_locations(model):
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or folder not in target.parents:
            raise CheckpointError(
                f"{str(path)!r} points its external data at {location!r}, outside the model's folder; "
                "refused: re-export the model or keep the data file beside it"
            )
        if not target.is_file():
            raise CheckpointError(
                f"{str(path)!r} needs its external data file {location!r} beside it, which is missing; copy it there"
            )


def _attr(node: onnxwire.Node, name: str) -> Any:
    return node.attributes.get(name, RESIZE_DEFAULTS.get(name))


def _shape_dependent(graph: Any, tensor: str, input_name: str) -> bool:
    """Does ``tensor`` come from the shape of something computed from the graph input?"""
    producers = {out: n for n in graph.node for out in n.output}
    derived = {input_name}
    for node in graph.node:  # nodes are topologically sorted in a valid graph
        if any(i in derived for i in node.input):
            derived.update(node.output)
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is None:
            continue
        if node.op_type == "Shape" and node.input and node.input[0] in derived:
            return True
        stack.extend(node.input)
    return False


def inspect_graph(model: Any, path: str = "") -> GraphReport:
    """What a graph holds: an `onnxwire.Model` (`read_structure`) or an ``onnx.ModelProto``."""
    external = external_locations(model)  # of the ModelProto itself: every tensor-bearing field, subgraphs too
    if not isinstance(model, onnxwire.Model):
        model = onnxwire.from_proto(model)
    graph = model.graph
    report = GraphReport(
        path=path,
        opset=model.opset,
        inputs={i.name: list(i.dims) for i in graph.input},
        outputs={o.name: list(o.dims) for o in graph.output},
        op_counts=dict(Counter(n.op_type for n in graph.node)),
        metadata=decode_metadata(model.metadata_props),
        external_data=external,
    )
    input_name = graph.input[0].name if graph.input else ""
    for node in graph.node:
        if node.op_type == "Resize":
            sizes = node.input[3] if len(node.input) > 3 and node.input[3] else ""
            scales = node.input[2] if len(node.input) > 2 and node.input[2] else ""
            report.resize.append(
                {
                    "name": node.name,
                    **{k: _attr(node, k) for k in RESIZE_ATTRIBUTES},
                    "size_from_input_shape": _shape_dependent(graph, sizes or scales, input_name),
                }
            )
        elif node.op_type == "Pad":
            pads = node.input[1] if len(node.input) > 1 else ""
            report.pad.append(
                {"name": node.name, "pads_from_input_shape": _shape_dependent(graph, pads, input_name)}
            )
        elif node.op_type in ("Sin", "Cos"):
            report.rope.append({"name": node.name, "op_type": node.op_type,
                                "angles_from_input_shape": _shape_dependent(graph, node.input[0], input_name)})
    report.resample_matmuls = _resample_matmuls(graph, input_name)
    return report


def _has_subgraph(node: Any) -> bool:
    """Does the node hold a subgraph (Loop, If, Scan)? Its body may read any outer value, unlisted in its inputs."""
    if not isinstance(node, onnxwire.Node):
        return any(a.type in (5, 10) for a in node.attribute)  # GRAPH, GRAPHS

    def is_graph(value: Any) -> bool:  # a decoded subgraph, or the marker of one past the reader's depth
        return isinstance(value, onnxwire.Graph) or (isinstance(value, str) and value == "<graph>")

    return any(is_graph(a) or (isinstance(a, list) and any(map(is_graph, a))) for a in node.attributes.values())


def _value_independent(graph: Any, input_name: str) -> set[str]:
    """Values that do not depend on the input's values (they may depend on its shape). A node with a subgraph
    (the chunked attention's Loop) counts as depending on them: what its body reads is not in its inputs."""
    derived = {input_name}
    for node in graph.node:
        if node.op_type not in ("Shape", "Size") and (any(i in derived for i in node.input) or _has_subgraph(node)):
            derived.update(node.output)
    produced = {out for n in graph.node for out in n.output}
    return (produced | {t.name for t in graph.initializer}) - derived


def is_constant(graph: Any, tensor: str, input_name: str) -> bool:
    """Is ``tensor`` computed from constants only (neither the input's values nor its shape)?

    ``graph``: an `onnxwire.Graph` or an ``onnx.GraphProto`` (both have ``node`` and ``initializer``).

    Such values are what runtimes fold at load time, and what TensorRT's parser needs as
    initializers where it asks for one (reduction and slice axes).
    """
    return tensor in _value_independent(graph, input_name) and not _shape_dependent(graph, tensor, input_name)


def _static_shapes(graph: onnxwire.Graph) -> dict[str, list[int | str | None]]:
    shapes = {v.name: list(v.dims) for v in [*graph.value_info, *graph.input, *graph.output]}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    return shapes


def _resample_matmuls(graph: onnxwire.Graph, input_name: str) -> list[dict[str, Any]]:
    """The portable resampling: MatMuls whose result does not depend on the input's values.

    Every other MatMul of a ViT (attention, MLP, head) works on the input's values; these
    apply weights computed from the input's shape to the constant embedding grid. For each:
    whether an operand follows the input's shape (the weights) and, for the first of the
    chain, the static shape of the grid it resamples (``[1, D, H, W]``: the constant operand of
    rank >= 3; the weights are matrices), whose last two dims are the native grid.
    """
    independent = _value_independent(graph, input_name)
    shapes = _static_shapes(graph)
    found: list[dict[str, Any]] = []
    outputs: set[str] = set()
    for node in graph.node:
        if node.op_type not in _MATMUL_OPS or not node.output or node.output[0] not in independent:
            continue
        follows = [bool(i) and _shape_dependent(graph, i, input_name) for i in node.input]
        grid = None
        if not outputs.intersection(node.input):  # the second stage resamples the first stage's output
            constant = [shapes.get(i) for i, f in zip(node.input, follows, strict=True) if i and not f]
            grid = next((s for s in constant if s and len(s) >= 3 and all(isinstance(d, int) for d in s)), None)
        outputs.update(node.output)
        found.append({"name": node.name, "op_type": node.op_type, "weights_from_input_shape": any(follows),
                      "constant_shape": grid})
    return found


def resize_mismatches(resize: dict[str, Any]) -> list[str]:
    """How a Resize entry of a `GraphReport` differs from PyTorch's antialiased bicubic; empty when it does not."""
    return [f"{k}={resize.get(k)!r} (expected {v!r})" for k, v in RESIZE_ATTRIBUTES.items() if resize.get(k) != v]


def check_graph(
    report: GraphReport,
    spec: IOSpec,
    dynamic_size: bool = True,
    expect_resize: bool = True,
    expect_pad: bool = True,
    expect_rope: bool = False,
) -> list[str]:
    """Problems of a graph against the declared interface and docs/numerics.md; empty when it passes.

    ``expect_resize``/``expect_pad`` follow the model config (an absolute table resampled with dynamic_img_size /
    dynamic_img_pad); ``expect_rope``: rotary embeddings, whose Sin and Cos must follow the input's shape.
    """
    problems: list[str] = []
    if report.opset < 18:
        problems.append(f"opset {report.opset} < 18: antialiased Resize needs opset 18")
    if list(report.inputs) != [spec.input_name]:
        problems.append(f"inputs are {list(report.inputs)}, expected [{spec.input_name!r}]")
    if list(report.outputs) != [spec.output_name]:
        problems.append(f"outputs are {list(report.outputs)}, expected [{spec.output_name!r}]")
    for name, axes in ((spec.input_name, spec.input_axes), (spec.output_name, spec.output_axes)):
        dims = report.inputs.get(name) or report.outputs.get(name) or []
        for axis, symbol in axes.items():
            dim = dims[axis] if axis < len(dims) else None
            if not isinstance(dim, str):
                problems.append(f"{name} axis {axis} should be the symbolic dimension {symbol!r}, found {dim!r}")
            elif dim != symbol:
                problems.append(f"{name} axis {axis} is named {dim!r}, expected {symbol!r}")
    in_dims = report.inputs.get(spec.input_name, [])
    if not dynamic_size and any(isinstance(d, str) for d in in_dims[2:]):
        problems.append("static export has symbolic height/width")
    if report.resample_form == "portable":
        problems.extend(_check_portable(report, dynamic_size, expect_resize))
    elif expect_resize and not report.resize:
        problems.append(
            "no Resize node: the positional-embedding resampling is missing, so the graph only works at one size"
        )
    for r in report.resize:
        wrong = resize_mismatches(r)
        if wrong:
            problems.append(f"Resize {r['name']!r} is not antialiased bicubic a=-0.5: " + ", ".join(wrong))
        if dynamic_size and not r["size_from_input_shape"]:
            problems.append(
                f"Resize {r['name']!r} has a fixed output size: it does not follow the input's height/width"
            )
    problems.extend(_check_rope(report, dynamic_size, expect_rope))
    if expect_pad and not report.pad:
        problems.append("no Pad node: inputs that are not multiples of the patch size cannot be padded")
    for p in report.pad:
        if dynamic_size and not p["pads_from_input_shape"]:
            problems.append(f"Pad {p['name']!r} has fixed pads: they do not follow the input's height/width")
    return problems


def _check_rope(report: GraphReport, dynamic_size: bool, expect_rope: bool) -> list[str]:
    """Rotary embeddings: sin and cos computed in the graph, from the input's grid when the size is dynamic."""
    if not expect_rope:
        return []
    if not report.rope:
        return ["no Sin/Cos: the rotary embeddings are missing (or stored for one grid), so the graph only works at "
                "one size"]
    if dynamic_size:
        return [f"{r['op_type']} {r['name']!r} has fixed angles: the rotary table does not follow the input's "
                "height/width" for r in report.rope if not r["angles_from_input_shape"]]
    return []


def check_against_metadata(
    report: GraphReport, meta: dict[str, Any], config: dict[str, Any] | None = None
) -> list[str]:
    """`check_graph` with what an artifact's metadata declares (``config``: the model config, if not in it)."""
    from vitexport.model.family_config import config_from_dict

    data = config if config is not None else meta.get("config") or {}
    cfg = config_from_dict(data) if data else None
    dynamic_img_size = cfg.dynamic_img_size if cfg else True
    return check_graph(
        report,
        IOSpec.from_metadata(meta),
        dynamic_size=meta.get("static_size") is None and dynamic_img_size,
        expect_resize=dynamic_img_size and (cfg.has_pos_table if cfg else True),
        expect_pad=cfg.dynamic_img_pad if cfg else True,
        expect_rope=cfg.rotary if cfg else False,
    )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The vitexport metadata of an ONNX file (decoded; empty when it has none), without loading external data
    (read by `read_structure`: no onnx package needed)."""
    return decode_metadata(read_structure(path).metadata_props)


def set_metadata(path: str | os.PathLike[str], values: dict[str, Any]) -> None:
    """Add or replace ``vitexport.*`` metadata in an ONNX file in place; external data stays where it is."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # references to external data are saved as they are
    props = {p.key: p.value for p in model.metadata_props}
    props.update(encode_metadata(values))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _check_portable(report: GraphReport, dynamic_size: bool, expect_resample: bool) -> list[str]:
    """The portable form: no Resize; MatMuls whose weights follow the input shape; the native grid."""
    problems = []
    if report.resize:
        problems.append(
            f"{len(report.resize)} Resize node(s) in a graph declared portable: Resize is what the portable form "
            "avoids (OpenVINO and TensorRT do not run antialiased Resize right); export again"
        )
    matmuls = report.resample_matmuls
    if expect_resample and not matmuls:
        problems.append(
            "no positional-embedding resampling (no Resize and no MatMul applying resampling weights): "
            "the graph only works at one size"
        )
    if dynamic_size:
        for m in matmuls:
            if not m["weights_from_input_shape"]:
                problems.append(
                    f"resampling {m['op_type']} {m['name']!r} has fixed weights: they do not follow the input's "
                    "height/width"
                )
    native = report.metadata.get("native_grid")
    tables = [m["constant_shape"] for m in matmuls if m["constant_shape"]]
    if matmuls and native is not None:
        if not tables:
            problems.append("the resampled embedding grid has no static shape in the graph: cannot check the "
                            f"native grid {native} of the metadata")
        for table in tables:
            problem = _table_vs_native(table, list(native))
            if problem:
                problems.append(problem)
    return problems


def _table_vs_native(table: list[Any], native: list[int]) -> str:
    """How a resampled table's static shape disagrees with the native grid: a ``[1, D, H, W]`` grid must be it, a
    factorized ``[1, D, L]`` row or column table one of its sides (NaFlexViT); empty when it agrees."""
    if len(table) == 3:  # one axis of a factorized table
        if table[-1] not in native:
            return (f"the graph resamples a table of length {table[-1]}, but the metadata's native grid is "
                    f"{native[0]}x{native[1]}")
        return ""
    if list(table[-2:]) != native:
        return (f"the graph resamples a {table[-2]}x{table[-1]} embedding grid, but the metadata's native grid is "
                f"{native[0]}x{native[1]}")
    return ""


def check_summary(report: GraphReport, dynamic_size: bool) -> list[str]:
    """What the resampling and padding checks verified on a graph that passed them, one phrase each."""
    follows = ", size follows the input shape" if dynamic_size else ""
    items = []
    if report.resample_form == "portable" and report.resample_matmuls:
        grids = {tuple(m["constant_shape"][-2:]) for m in report.resample_matmuls
                 if m["constant_shape"] and len(m["constant_shape"]) >= 4}
        native = ", ".join(f"{h}x{w}" for h, w in sorted(grids))
        items.append(f"portable resampling: no Resize, {len(report.resample_matmuls)} MatMul"
                     + (", weights follow the input shape" if dynamic_size else "")
                     + (f", native grid {native}" if native else ""))
    elif report.resize:
        items.append("Resize: antialiased cubic a=-0.5, half_pixel, exclude_outside=1" + follows)
    if report.pad:
        items.append("Pad" + (": pads follow the input shape" if dynamic_size else ""))
    if report.rope:
        items.append(f"rotary embeddings: {len(report.rope)} Sin/Cos" + (", angles follow the input shape"
                                                                        if dynamic_size else ""))
    return items


def non_portable_ops(report: GraphReport) -> list[str]:
    """Op types of the graph outside `PORTABLE_OP_TYPES` (contrib ops such as fused attention included)."""
    return sorted(set(report.op_counts) - PORTABLE_OP_TYPES)
