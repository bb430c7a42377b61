"""Hostile ONNX protobufs built byte by byte: large skeletons of tiny messages (no onnx package, seconds to build).

Each kind repeats one cheap wire construct until the file reaches a size: what costs a reader objects, not bytes.
"""

from __future__ import annotations

from pathlib import Path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _repeat(unit: bytes, size: int) -> bytes:
    return unit * max(1, size // len(unit))


def _graph_with(nodes: bytes = b"", extra: bytes = b"") -> bytes:
    x = field(1, b"x")  # ValueInfoProto name
    return field(7, nodes + field(11, x) + field(12, field(1, b"y")) + extra)


def hostile_skeleton(kind: str, size: int) -> bytes:
    """A ModelProto of about ``size`` bytes whose skeleton is all ``kind``:

    - ``empty_nodes``: empty NodeProtos (2 bytes each);
    - ``node_inputs``: one node with empty input names (2 bytes each);
    - ``packed_ints``: one node with an INTS attribute of packed one-byte varints;
    - ``attributes``: one node with empty attributes;
    - ``dims``: one graph input whose shape has empty dims;
    - ``unknown_fields``: one node with unknown zero-length fields (skipped by length).
    """
    opset = field(8, b"\x10\x12")  # OperatorSetIdProto: version 18
    if kind == "empty_nodes":
        graph = _graph_with(_repeat(field(1, b""), size))
    elif kind == "node_inputs":
        graph = _graph_with(field(1, _repeat(field(1, b""), size) + field(4, b"Add")))
    elif kind == "packed_ints":
        attr = field(1, b"perm") + b"\xa0\x01\x07" + field(8, b"\x01" * size)  # type INTS (20 = 7), ints (8)
        graph = _graph_with(field(1, field(4, b"Transpose") + field(5, attr)))
    elif kind == "attributes":
        graph = _graph_with(field(1, _repeat(field(5, b""), size) + field(4, b"Add")))
    elif kind == "dims":
        shape = field(2, _repeat(field(1, b""), size))  # TensorShapeProto.dim
        tensor_type = field(1, b"\x08\x01" + shape)  # elem_type FLOAT, shape
        graph = _graph_with(extra=field(11, field(1, b"z") + field(2, tensor_type)))
    elif kind == "unknown_fields":
        graph = _graph_with(field(1, _repeat(field(99, b""), size) + field(4, b"Add")))
    else:
        raise ValueError(kind)
    return b"\x08\x08" + opset + graph  # ir_version 8


KINDS = ("empty_nodes", "node_inputs", "packed_ints", "attributes", "dims", "unknown_fields")


def write_hostile_skeleton(path: Path, kind: str, size: int) -> Path:
    path.write_bytes(hostile_skeleton(kind, size))
    return path


__all__ = ["KINDS", "field", "hostile_skeleton", "write_hostile_skeleton"]
