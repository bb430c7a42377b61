"""Static checks of an exported ONNX graph (onnx only; no torch, no onnxruntime).

A graph that will be wrong at other input sizes often looks fine at export time:
a Resize that lost its dependency on the input shape, a Pad that was folded
away, the wrong cubic kernel. These checks read the graph, not its outputs.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from vitexport.errors import CheckpointError
from vitexport.spec import RESIZE_ATTRIBUTES, RESIZE_DEFAULTS, IOSpec, decode_metadata, encode_metadata


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
    pad: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    external_data: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_onnx(path: str | os.PathLike[str], load_external_data: bool = False) -> onnx.ModelProto:
    """Load an ONNX model with a clean error; external data must stay inside the model's folder."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise CheckpointError(f"ONNX model {str(p)!r} {what}; pass an exported .onnx file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"ONNX model {str(p)!r} is empty (0 bytes); export it again")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others
        raise CheckpointError(
            f"{str(p)!r} is not a readable ONNX model ({type(exc).__name__}); "
            "it is truncated or not ONNX: export it again"
        ) from exc
    if not model.graph.node:
        raise CheckpointError(f"{str(p)!r} is not a readable ONNX model (empty graph); export it again")
    check_external_data(model, p)
    if load_external_data:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(p.parent))
    return model


def external_locations(model: onnx.ModelProto) -> list[str]:
    out = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in out:
                    out.append(entry.value)
    return out


def check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuse external-data locations that point outside the model's folder (or are missing)."""
    folder = path.resolve().parent
    for location in external_locations(model):
        target = (folder / location).resolve()
        if os.path.isabs(location) or folder not in target.parents:
            raise CheckpointError(
                f"{str(path)!r} points its external data at {location!r}, outside the model's folder; "
                "refused: re-export the model or keep the data file beside it"
            )
        if not target.is_file():
            raise CheckpointError(
                f"{str(path)!r} needs its external data file {location!r} beside it, which is missing; copy it there"
            )


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return RESIZE_DEFAULTS.get(name)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None)
    return dims


def _shape_dependent(graph: onnx.GraphProto, tensor: str, input_name: str) -> bool:
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


def inspect_graph(model: onnx.ModelProto, path: str = "") -> GraphReport:
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = GraphReport(
        path=path,
        opset=opset,
        inputs={i.name: _dims(i) for i in graph.input},
        outputs={o.name: _dims(o) for o in graph.output},
        op_counts=dict(Counter(n.op_type for n in graph.node)),
        metadata=decode_metadata({p.key: p.value for p in model.metadata_props}),
        external_data=external_locations(model),
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
    return report


def check_graph(
    report: GraphReport,
    spec: IOSpec,
    dynamic_size: bool = True,
    expect_resize: bool = True,
    expect_pad: bool = True,
) -> list[str]:
    """Problems of a graph against the declared interface and docs/numerics.md; empty when it passes.

    ``expect_resize``/``expect_pad`` follow the model config (dynamic_img_size / dynamic_img_pad).
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
    if expect_resize and not report.resize:
        problems.append(
            "no Resize node: the positional-embedding resampling is missing, so the graph only works at one size"
        )
    for r in report.resize:
        wrong = [f"{k}={r[k]!r} (expected {v!r})" for k, v in RESIZE_ATTRIBUTES.items() if r[k] != v]
        if wrong:
            problems.append(f"Resize {r['name']!r} is not antialiased bicubic a=-0.5: " + ", ".join(wrong))
        if dynamic_size and not r["size_from_input_shape"]:
            problems.append(
                f"Resize {r['name']!r} has a fixed output size: it does not follow the input's height/width"
            )
    if expect_pad and not report.pad:
        problems.append("no Pad node: inputs that are not multiples of the patch size cannot be padded")
    for p in report.pad:
        if dynamic_size and not p["pads_from_input_shape"]:
            problems.append(f"Pad {p['name']!r} has fixed pads: they do not follow the input's height/width")
    return problems


def check_against_metadata(
    report: GraphReport, meta: dict[str, Any], config: dict[str, Any] | None = None
) -> list[str]:
    """`check_graph` with what an artifact's metadata declares (``config``: the model config, if not in it)."""
    cfg = config if config is not None else meta.get("config") or {}
    dynamic_img_size = cfg.get("dynamic_img_size", True)
    return check_graph(
        report,
        IOSpec.from_metadata(meta),
        dynamic_size=meta.get("static_size") is None and dynamic_img_size,
        expect_resize=dynamic_img_size,
        expect_pad=cfg.get("dynamic_img_pad", True),
    )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The vitexport metadata of an ONNX file (decoded; empty when it has none), without loading external data."""
    model = load_onnx(path)
    return decode_metadata({p.key: p.value for p in model.metadata_props})


def set_metadata(path: str | os.PathLike[str], values: dict[str, Any]) -> None:
    """Add or replace ``vitexport.*`` metadata in an ONNX file in place; external data stays where it is."""
    model = onnx.load(str(path), load_external_data=False)  # references to external data are saved as they are
    props = {p.key: p.value for p in model.metadata_props}
    props.update(encode_metadata(values))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
