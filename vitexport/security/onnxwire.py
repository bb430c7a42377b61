"""The structure of an ONNX model read straight from the protobuf wire format: no onnx package, no torch.

`vitexport info`, `predict` and `bench` run in the base install (ONNX Runtime, numpy, Pillow,
click), which has no ``onnx`` package. What they need from a model file is its skeleton:
opset, inputs and outputs with their dims, nodes (op type, inputs, outputs, attributes),
initializer names, dims and external-data locations, and the metadata props. This module
reads exactly that from ``onnx.proto`` (ModelProto -> GraphProto -> NodeProto, AttributeProto,
ValueInfoProto, TensorProto) and skips everything else by its length, so weight payloads
(``raw_data``, ``float_data``, ...) are never copied: large files are memory-mapped and their
payload pages are never touched.

Bounded by bytes, not by objects: every length is checked against the bytes that remain (a truncated or
corrupt file raises `WireError`, never reads past the end), and every decoded value (a node, a tensor,
a value info, an attribute, a string, each int and float of a list, each field read or skipped) is
charged what it costs as a Python object before it is built. The reader stops with `WireError` once
the charges pass `budget_for(file size)`: `BASE_BUDGET` plus `BUDGET_PER_BYTE` times the file's size.
A real model's skeleton is a small fraction of its file (weights are skipped, not decoded); 40 MB of
empty ``NodeProto``s (5 million Python objects, ~3.5 GB) stops after ~110 MB. Subgraphs (a Loop's
body, an If's branches) are read to `MAX_SUBGRAPH_DEPTH` levels and recorded as ``"<graph>"`` below
that. Small tensors (at most `SMALL_TENSOR` elements: shapes, axes, scalars) keep their values, which
shape inference (`vitexport.onnx.shapes`) needs; larger payloads are never copied.

`from_proto` builds the same structure from an ``onnx.ModelProto`` (by attribute access, without
importing onnx), so the graph checks in `vitexport.onnx.graph` have one implementation for both.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MMAP_ABOVE = 1 << 20  # files larger than this are memory-mapped instead of read
BASE_BUDGET = 32 * 1024**2  # Python bytes of skeleton any file may cost (a ViT-g skeleton costs ~5 MB)
BUDGET_PER_BYTE = 2  # plus this many per byte of the file
MAX_SUBGRAPH_DEPTH = 3  # attribute graphs inside attribute graphs read this deep ("<graph>" below)
SMALL_TENSOR = 64  # tensors of at most this many elements keep their values (shapes, axes, scalars)
# what a decoded value costs as a Python object (measured with tracemalloc on CPython 3.11, rounded up); a field
# read or skipped is charged 64 for the time it takes (~1 us: 40 MB of 3-byte fields stop after ~1.8 million)
COST = {"field": 64, "node": 320, "tensor": 176, "value_info": 168, "attribute": 120, "str": 64, "int": 40,
        "float": 32, "graph": 400, "message": 96}

# wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# AttributeProto.AttributeType
_FLOAT, _INT, _STRING, _TENSOR, _GRAPH, _FLOATS, _INTS, _STRINGS = 1, 2, 3, 4, 5, 6, 7, 8
_TENSORS, _GRAPHS, _SPARSE_TENSOR, _SPARSE_TENSORS, _TYPE_PROTO, _TYPE_PROTOS = 9, 10, 11, 12, 13, 14
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class WireError(ValueError):
    """The bytes are not a well-formed ONNX ModelProto (truncated, corrupt, or another format)."""


@dataclass
class Tensor:
    """A TensorProto without its payload: name, dims, element type, where its data lives; the values of a
    small tensor (at most `SMALL_TENSOR` elements): ``raw`` (raw_data) or ``values`` (the typed field)."""

    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0
    external: dict[str, str] | None = None  # location/offset/length/... when data_location is EXTERNAL
    raw: bytes | None = None
    values: list[int | float] | None = None


@dataclass
class ValueInfo:
    """A graph input, output or intermediate: name, element type and dims (int, symbolic str, or None)."""

    name: str = ""
    elem_type: int = 0
    dims: list[int | str | None] = field(default_factory=list)


@dataclass
class Node:
    name: str = ""
    op_type: str = ""
    domain: str = ""
    input: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)  # decoded: str, int, float, lists, Tensor, Graph


@dataclass
class Graph:
    name: str = ""
    node: list[Node] = field(default_factory=list)
    input: list[ValueInfo] = field(default_factory=list)
    output: list[ValueInfo] = field(default_factory=list)
    value_info: list[ValueInfo] = field(default_factory=list)
    initializer: list[Tensor] = field(default_factory=list)


@dataclass
class Model:
    ir_version: int = 0
    producer_name: str = ""
    producer_version: str = ""
    opset_import: dict[str, int] = field(default_factory=dict)  # domain ("" for ai.onnx) -> version
    metadata_props: dict[str, str] = field(default_factory=dict)
    graph: Graph = field(default_factory=Graph)
    # every external-data location of any tensor anywhere in the file (subgraphs, functions, sparse tensors,
    # training graphs): filled by `read_model` (`external_locations`); None when not collected
    external_locations: list[str] | None = field(default=None, compare=False)

    @property
    def opset(self) -> int:
        """The default domain's opset version (0 when the model declares none)."""
        return self.opset_import.get("", self.opset_import.get("ai.onnx", 0))


# ---------------------------------------------------------------------------
# the wire format
# ---------------------------------------------------------------------------
def varint(buf: Any, pos: int, end: int) -> tuple[int, int] | None:
    """(value, next position) of the varint at ``pos``; None when ``end`` comes first.
    A varint longer than 10 bytes (no int64 is) raises `WireError`."""
    result = shift = 0
    while pos < end:
        if shift >= 70:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    return None


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    found = varint(buf, pos, end)
    if found is None:
        raise WireError(f"truncated varint at byte {pos}")
    return found


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(buf: Any, a: int, b: int) -> str:
    return bytes(buf[a:b]).decode("utf-8", errors="replace")


def _ints(buf: Any, wire: int, a: int, b: int) -> list[int]:
    """A repeated int64 field's values, packed (one LEN field) or not (one varint)."""
    if wire == _VARINT:
        return [_signed(a)]
    if wire != _LEN:
        return []
    out, pos = [], a
    while pos < b:
        value, pos = _varint(buf, pos, b)
        out.append(_signed(value))
    return out


def _floats(buf: Any, wire: int, a: int, b: int) -> list[float]:
    if wire == _I32:
        return [struct.unpack_from("<f", buf, a)[0]]
    if wire != _LEN or (b - a) % 4:
        return []
    return list(struct.unpack_from(f"<{(b - a) // 4}f", buf, a))


def budget_for(size: int) -> int:
    """The Python bytes a file of ``size`` bytes may cost as a skeleton (`BASE_BUDGET` + `BUDGET_PER_BYTE` per byte)."""
    return BASE_BUDGET + BUDGET_PER_BYTE * size


def _packed_count(buf: Any, wire: int, a: int, b: int, width: int) -> int:
    """How many values a repeated numeric field holds: fixed ``width`` bytes each, or varints (0: one each byte
    below 0x80, counted without decoding)."""
    if wire != _LEN:
        return 1
    if width:
        return (b - a) // width
    return (b - a) - bytes(buf[a:b]).translate(None, _LOW_BYTES).__len__()


_LOW_BYTES = bytes(range(128))  # deleting these leaves the continuation bytes of varints


class _Reader:
    """One parse of one buffer; charges every decoded value against ``budget`` (Python bytes)."""

    def __init__(self, buf: Any, budget: int) -> None:
        self.buf = buf
        self.budget = budget
        self.left = budget

    def charge(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0:
            raise WireError(f"its structure would take more than {self.budget / 1e6:,.0f} MB to read "
                            f"(nodes, names, attributes) for a {len(self.buf) / 1e6:,.1f} MB file; it is crafted "
                            "or corrupt")

    def len_fields(self, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(field number, a, b) of the length-delimited fields (strings, bytes, messages) in ``buf[pos:end]``, their
        payload ``buf[a:b]``; the other fields are skipped (and charged, as `fields` does)."""
        for number, wire, a, b in self.fields(pos, end):
            if wire == _LEN:
                yield number, a, b

    def fields(self, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, a, b) of each field in ``buf[pos:end]``: a varint's value in ``a``; for the
        other wire types the payload's byte range ``[a, b)``. Each field is charged, skipped ones too (time is
        bounded with memory); one-byte keys and lengths, the common case, are read inline."""
        buf, cost = self.buf, COST["field"]
        while pos < end:
            self.left -= cost
            if self.left < 0:
                self.charge(0)
            key = buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = _varint(buf, pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise WireError(f"field number 0 at byte {pos}")
            if wire == _LEN:
                size = buf[pos] if pos < end else 0x80
                if size < 0x80:
                    pos += 1
                else:
                    size, pos = _varint(buf, pos, end)
            elif wire == _VARINT:
                value, pos = _varint(buf, pos, end)
                yield number, wire, value, 0
                continue
            elif wire == _I64:
                size = 8
            elif wire == _I32:
                size = 4
            else:  # 3/4 (groups) are not used by onnx.proto; 6/7 do not exist
                raise WireError(f"wire type {wire} at byte {pos}")
            if size > end - pos:
                raise WireError(f"field {number} needs {size} bytes at byte {pos}, {end - pos} remain (truncated)")
            yield number, wire, pos, pos + size
            pos += size

    def text(self, a: int, b: int) -> str:
        self.charge(COST["str"] + (b - a))
        return _text(self.buf, a, b)

    def ints(self, wire: int, a: int, b: int) -> list[int]:
        self.charge(COST["int"] * ((b - a) // 10))  # at least this many varints, charged before they are counted
        self.charge(COST["int"] * (_packed_count(self.buf, wire, a, b, 0) - (b - a) // 10))
        return _ints(self.buf, wire, a, b)

    def floats(self, wire: int, a: int, b: int) -> list[float]:
        self.charge(COST["float"] * _packed_count(self.buf, wire, a, b, 4))
        return _floats(self.buf, wire, a, b)

    def entry(self, a: int, b: int) -> tuple[str, str]:  # StringStringEntryProto
        key = value = ""
        for number, wire, x, y in self.fields(a, b):
            if wire == _LEN and number == 1:
                key = self.text(x, y)
            elif wire == _LEN and number == 2:
                value = self.text(x, y)
        return key, value

    def tensor(self, a: int, b: int) -> Tensor:
        self.charge(COST["tensor"])
        t, external, location, payload = Tensor(), {}, 0, []
        for number, wire, x, y in self.fields(a, b):
            if number == 1:
                t.dims.extend(self.ints(wire, x, y))
            elif number == 2 and wire == _VARINT:
                t.data_type = x
            elif number == 8 and wire == _LEN:
                t.name = self.text(x, y)
            elif number == 13 and wire == _LEN:
                key, value = self.entry(x, y)
                external[key] = value
            elif number == 14 and wire == _VARINT:
                location = x
            elif number in _PAYLOAD_FIELDS:
                payload.append((number, wire, x, y))
            # other payloads (string_data, ...) are skipped by length, never copied
        if location == EXTERNAL:
            t.external = external
        self._small_values(t, payload)
        return t

    def _small_values(self, t: Tensor, payload: list[tuple[int, int, int, int]]) -> None:
        """The values of a tensor of at most `SMALL_TENSOR` elements (from raw_data or its typed field)."""
        count = 1
        for d in t.dims:
            count *= max(d, 0)
        if count > SMALL_TENSOR or not payload:
            return
        for number, wire, x, y in payload:
            if number == 9 and wire == _LEN and y - x <= 8 * SMALL_TENSOR:
                self.charge(COST["str"] + (y - x))
                t.raw = bytes(self.buf[x:y])
            elif number in (4, 10):  # float_data (packed fixed32), double_data (packed fixed64)
                if y - x <= 8 * SMALL_TENSOR:
                    width = 4 if number == 4 else 8
                    self.charge(COST["float"] * _packed_count(self.buf, wire, x, y, width))
                    t.values = (t.values or []) + _fixed(self.buf, wire, x, y, width)
            elif wire in (_VARINT, _LEN) and y - x <= 10 * SMALL_TENSOR:  # int32_data, int64_data, uint64_data
                t.values = (t.values or []) + self.ints(wire, x, y)

    def value_info(self, a: int, b: int) -> ValueInfo:
        self.charge(COST["value_info"])
        v = ValueInfo()
        for number, wire, x, y in self.fields(a, b):
            if number == 1 and wire == _LEN:
                v.name = self.text(x, y)
            elif number == 2 and wire == _LEN:
                self._type(x, y, v)
        return v

    def _type(self, a: int, b: int, v: ValueInfo) -> None:  # TypeProto -> tensor_type (1)
        for number, wire, x, y in self.fields(a, b):
            if number != 1 or wire != _LEN:
                continue
            for n2, w2, x2, y2 in self.fields(x, y):  # TypeProto.Tensor
                if n2 == 1 and w2 == _VARINT:
                    v.elem_type = x2
                elif n2 == 2 and w2 == _LEN:  # TensorShapeProto: dim (1)
                    v.dims.extend(self._dim(x3, y3) for n3, w3, x3, y3 in self.fields(x2, y2)
                                  if n3 == 1 and w3 == _LEN)

    def _dim(self, a: int, b: int) -> int | str | None:
        self.charge(COST["int"])
        dim: int | str | None = None
        for number, wire, x, y in self.fields(a, b):
            if number == 1 and wire == _VARINT:
                dim = _signed(x)
            elif number == 2 and wire == _LEN:
                dim = self.text(x, y)
        return dim

    def attribute(self, a: int, b: int, depth: int) -> tuple[str, Any]:
        self.charge(COST["attribute"])
        name, kind, found = "", 0, {}
        for number, wire, x, y in self.fields(a, b):
            if number == 1 and wire == _LEN:
                name = self.text(x, y)
            elif number == 20 and wire == _VARINT:
                kind = x
            elif number == 2 and wire == _I32:
                found[_FLOAT] = _floats(self.buf, wire, x, y)[0]
            elif number == 3 and wire == _VARINT:
                found[_INT] = _signed(x)
            elif number == 4 and wire == _LEN:
                found[_STRING] = self.text(x, y)
            elif number == 5 and wire == _LEN:
                found[_TENSOR] = self.tensor(x, y)
            elif number in (6, 11) and wire == _LEN:  # g, graphs
                sub = self.graph(x, y, depth + 1) if depth < MAX_SUBGRAPH_DEPTH else "<graph>"
                if number == 6:
                    found[_GRAPH] = sub
                else:
                    found.setdefault(_GRAPHS, []).append(sub)
            elif number == 7:
                found.setdefault(_FLOATS, []).extend(self.floats(wire, x, y))
            elif number == 8:
                found.setdefault(_INTS, []).extend(self.ints(wire, x, y))
            elif number == 9 and wire == _LEN:
                found.setdefault(_STRINGS, []).append(self.text(x, y))
        if kind in found:
            return name, found[kind]
        return name, next(iter(found.values()), [] if kind in (_FLOATS, _INTS, _STRINGS, _GRAPHS) else None)

    def node(self, a: int, b: int, depth: int) -> Node:
        self.charge(COST["node"])
        n = Node()
        for number, x, y in self.len_fields(a, b):
            if number == 1:
                n.input.append(self.text(x, y))
            elif number == 2:
                n.output.append(self.text(x, y))
            elif number == 3:
                n.name = self.text(x, y)
            elif number == 4:
                n.op_type = self.text(x, y)
            elif number == 7:
                n.domain = self.text(x, y)
            elif number == 5:
                key, value = self.attribute(x, y, depth)
                n.attributes[key] = value
        return n

    def graph(self, a: int, b: int, depth: int = 0) -> Graph:
        self.charge(COST["graph"])
        g = Graph()
        for number, x, y in self.len_fields(a, b):
            if number == 1:
                g.node.append(self.node(x, y, depth))
            elif number == 2:
                g.name = self.text(x, y)
            elif number == 5:
                g.initializer.append(self.tensor(x, y))
            elif number in (11, 12, 13):
                (g.input, g.output, g.value_info)[number - 11].append(self.value_info(x, y))
        return g

    def model(self, a: int, b: int) -> Model:
        m, graphs = Model(), 0
        for number, wire, x, y in self.fields(a, b):
            if number == 1 and wire == _VARINT:
                m.ir_version = x
            elif number == 2 and wire == _LEN:
                m.producer_name = self.text(x, y)
            elif number == 3 and wire == _LEN:
                m.producer_version = self.text(x, y)
            elif number == 7 and wire == _LEN:
                m.graph, graphs = self.graph(x, y), graphs + 1
            elif number == 8 and wire == _LEN:
                domain, version = "", 0
                for n2, w2, x2, y2 in self.fields(x, y):
                    if n2 == 1 and w2 == _LEN:
                        domain = self.text(x2, y2)
                    elif n2 == 2 and w2 == _VARINT:
                        version = _signed(x2)
                m.opset_import[domain] = version
            elif number == 14 and wire == _LEN:
                key, value = self.entry(x, y)
                m.metadata_props[key] = value
        if not graphs:
            raise WireError("no graph in the file")
        return m


_PAYLOAD_FIELDS = (4, 5, 7, 9, 10, 11)  # float_data, int32_data, int64_data, raw_data, double_data, uint64_data


def _fixed(buf: Any, wire: int, a: int, b: int, width: int) -> list[float]:
    """A repeated float (width 4) or double (width 8) field's values, packed or not."""
    code = "f" if width == 4 else "d"
    if wire == (_I32 if width == 4 else _I64):
        return [struct.unpack_from(f"<{code}", buf, a)[0]]
    if wire != _LEN or (b - a) % width:
        return []
    return list(struct.unpack_from(f"<{(b - a) // width}{code}", buf, a))


def parse_model(data: bytes | bytearray | memoryview | mmap.mmap, budget: int | None = None) -> Model:
    """The skeleton of a serialized ONNX ModelProto; `WireError` when the bytes are not one, or when decoding them
    would cost more than ``budget`` Python bytes (default `budget_for` their size)."""
    return _Reader(data, budget_for(len(data)) if budget is None else budget).model(0, len(data))


# Where tensors can sit in onnx.proto, as (message -> {field number: message of that field}); every
# other field is skipped by its length. TensorProto 13 = external_data, 14 = data_location.
_TENSOR_PATHS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function", 20: "training"},
    "training": {1: "graph", 2: "graph"},  # TrainingInfoProto: initialization, algorithm
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},  # node, initializer, sparse_initializer
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},  # values, indices
}
MAX_NESTING = 64  # messages inside messages; protobuf's own parser stops at 100


def external_locations(buf: Any, budget: int | None = None) -> list[str]:
    """Every external-data location named by any tensor of a serialized ModelProto, wherever it sits
    (initializers, sparse initializers, node attributes, subgraphs, functions, training graphs), in file
    order. Reads only field keys and lengths along `_TENSOR_PATHS`: payloads are skipped; nesting is bounded,
    and every message and field visited is charged against ``budget`` (default `budget_for` the size)."""
    return _external_locations(_Reader(buf, budget_for(len(buf)) if budget is None else budget))


def _external_locations(reader: _Reader) -> list[str]:
    found: dict[str, None] = {}  # ordered and unique: a location named by many tensors is listed once
    stack: list[tuple[str, int, int, int]] = [("model", 0, len(reader.buf), 0)]
    while stack:
        kind, a, b, depth = stack.pop()
        if depth > MAX_NESTING:
            raise WireError(f"messages nested more than {MAX_NESTING} deep")
        if kind == "tensor":
            entries, location = {}, 0
            for number, wire, x, y in reader.fields(a, b):
                if number == 13 and wire == _LEN:
                    key, value = reader.entry(x, y)
                    entries[key] = value
                elif number == 14 and wire == _VARINT:
                    location = x
            if location == EXTERNAL and "location" in entries:
                found.setdefault(entries["location"])
            continue
        children = []
        for number, wire, x, y in reader.fields(a, b):
            child = _TENSOR_PATHS[kind].get(number)
            if child is not None and wire == _LEN:
                reader.charge(COST["message"])
                children.append((child, x, y, depth + 1))
        stack.extend(reversed(children))  # depth first, in file order
    return list(found)


def read_model(path: str | os.PathLike[str], budget: int | None = None) -> Model:
    """The skeleton of the ONNX file at ``path`` (external data is not read), with the external-data
    locations of every tensor in it (`external_locations`); `WireError` when it is not one, or when reading it
    would cost more than ``budget`` Python bytes (default `budget_for` its size; both passes share it).

    Files over `MMAP_ABOVE` bytes are memory-mapped, so skipping their weights costs no reads.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        small = size <= MMAP_ABOVE  # (an empty file cannot be mapped)
        with contextlib.nullcontext(fh.read()) if small else mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            reader = _Reader(buf, budget_for(size) if budget is None else budget)
            model = reader.model(0, len(buf))
            model.external_locations = _external_locations(reader)
            return model


# ---------------------------------------------------------------------------
# the same structure from an onnx.ModelProto (attribute access only: onnx is not imported)
# ---------------------------------------------------------------------------
def _proto_value_info(v: Any) -> ValueInfo:
    info = ValueInfo(name=v.name)
    if v.type.HasField("tensor_type"):
        tt = v.type.tensor_type
        info.elem_type = tt.elem_type
        for d in tt.shape.dim:
            info.dims.append(d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value")
                             else None)
    return info


def _proto_tensor(t: Any) -> Tensor:
    external = {e.key: e.value for e in t.external_data} if t.data_location == EXTERNAL else None
    tensor = Tensor(name=t.name, dims=list(t.dims), data_type=t.data_type, external=external)
    count = 1
    for d in t.dims:
        count *= max(d, 0)
    if count <= SMALL_TENSOR:
        if t.raw_data and len(t.raw_data) <= 8 * SMALL_TENSOR:
            tensor.raw = bytes(t.raw_data)
        values = [*t.float_data, *t.int32_data, *t.int64_data, *t.double_data, *t.uint64_data]
        tensor.values = values or None
    return tensor


def _proto_attribute(a: Any, depth: int) -> Any:
    kind = a.type
    if kind == _FLOAT:
        return a.f
    if kind == _INT:
        return a.i
    if kind == _STRING:
        return a.s.decode("utf-8", errors="replace")
    if kind == _TENSOR:
        return _proto_tensor(a.t)
    if kind == _GRAPH:
        return _proto_graph(a.g, depth + 1) if depth < MAX_SUBGRAPH_DEPTH else "<graph>"
    if kind == _GRAPHS:
        return [_proto_graph(g, depth + 1) if depth < MAX_SUBGRAPH_DEPTH else "<graph>" for g in a.graphs]
    if kind == _FLOATS:
        return list(a.floats)
    if kind == _INTS:
        return list(a.ints)
    if kind == _STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    return None


def _proto_graph(g: Any, depth: int = 0) -> Graph:
    return Graph(
        name=g.name,
        node=[Node(name=n.name, op_type=n.op_type, domain=n.domain, input=list(n.input), output=list(n.output),
                   attributes={a.name: _proto_attribute(a, depth) for a in n.attribute}) for n in g.node],
        input=[_proto_value_info(v) for v in g.input],
        output=[_proto_value_info(v) for v in g.output],
        value_info=[_proto_value_info(v) for v in g.value_info],
        initializer=[_proto_tensor(t) for t in g.initializer],
    )


def from_proto(model: Any) -> Model:
    """The `Model` of an in-memory ``onnx.ModelProto`` (no large payload is copied)."""
    graph = _proto_graph(model.graph)
    return Model(
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        opset_import={o.domain: o.version for o in model.opset_import},
        metadata_props={p.key: p.value for p in model.metadata_props},
        graph=graph,
    )


__all__ = ["BASE_BUDGET", "BUDGET_PER_BYTE", "MAX_SUBGRAPH_DEPTH", "SMALL_TENSOR", "Graph", "Model", "Node", "Tensor",
           "ValueInfo", "WireError", "budget_for", "external_locations", "from_proto", "parse_model", "read_model",
           "varint"]
