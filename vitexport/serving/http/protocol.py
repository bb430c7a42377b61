"""The Open Inference Protocol (KServe v2) wire format as pure functions. numpy only: no Ray, no runtime.

- Requests: a JSON object, or (Triton's binary tensor data extension, which ``tritonclient.http``
  uses) a JSON header of ``Inference-Header-Content-Length`` bytes followed by the tensors'
  bytes, in input order, each input announcing its ``binary_data_size``. Binary data is
  little-endian, row-major; a BYTES element is a 4-byte little-endian length and the bytes.
  In JSON, BYTES elements are strings; encoded images travel as base64 strings.
- Responses: JSON, or binary when an output asks for ``binary_data`` (or the request for
  ``binary_data_output``). Triton's classification extension (``classification: K`` on a
  requested output) returns BYTES ``[B, K]`` of ``"<value>:<index>[:<label>]"``, best first,
  ``value`` being the output's own value (a logit), as Triton does.
- Every bad request is a `RequestError` carrying its 4xx status; `error_response` is the body
  ``{"error": "..."}`` that ``tritonclient`` shows to its user.
- Work stays bounded before any limit can be checked: the JSON header goes through `safejson.parse_json`
  (deep nesting or a 5,000-digit number is a 400, not a RecursionError or ValueError); an ``admit(name,
  datatype, shape)`` callback (the server's per-request budget) sees each input's shape before its data is
  decoded; a value taken from the request appears in a message only through `shown` (a few dozen characters).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from vitexport._util.safejson import parse_json

HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
_INPUT_KEYS = {"name", "datatype", "shape", "data", "parameters"}
SHOWN_CHARS = 40  # the most of a request value that a message repeats
MAX_RANK = 8  # dimensions of an input shape (ours have 1 or 4)
Admit = Callable[[str, str, list[int]], None]  # (input name, datatype, shape): raises to refuse before decoding


class RequestError(Exception):
    """A bad request: its HTTP status (4xx) and a one-line message naming the problem and the fix."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body (the JSON header of a binary response) as an object."""
        size = self.headers.get("Inference-Header-Content-Length")
        return json.loads(self.body[: int(size)] if size else self.body)


@dataclass
class Tensor:
    """One request input: FP32 data as a numpy array of ``shape``, BYTES data as a list of bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: Any


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool = False
    classification: int = 0


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput]  # empty: every output, binary when ``binary_output``
    binary_output: bool = False
    id: str | None = None


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters: an error never repeats unbounded input."""
    if isinstance(value, (str, bytes)):
        text = repr(value[:limit])
    elif isinstance(value, int) and value.bit_length() > 64:  # repr of a 5,000-digit int is itself refused
        text = f"an integer of {value.bit_length():,} bits"
    elif isinstance(value, (list, dict, tuple)) and len(value) > limit:
        text = f"a {type(value).__name__} of {len(value):,} items"
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):
            text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_response(obj: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, json.dumps(obj).encode(), {"Content-Type": JSON_TYPE})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    response = json_response({"error": message}, status)
    response.headers.update(headers or {})
    return response


# ---------------------------------------------------------------------------
# request bodies
# ---------------------------------------------------------------------------
def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate; what tritonclient sends), refusing output over ``limit`` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise RequestError(415, f"Content-Encoding {shown(encoding)} is not supported; send gzip, deflate or identity")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)  # at most limit + 1 bytes: a compression bomb stops here
        if len(out) > limit:
            raise RequestError(413, f"the {encoding} body inflates to more than {limit:,} bytes; send less per request")
        if not inflater.eof or inflater.unused_data:
            raise RequestError(400, f"the {encoding} body is truncated or has trailing bytes; compress it whole")
    except zlib.error as exc:
        raise RequestError(400, f"the body is not valid {encoding} data ({exc}); compress it with {encoding}") from None
    return out


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    size = len(body)
    if header_length is not None:
        text = header_length.strip()
        if not (text.isdigit() and text.isascii() and len(text) <= 19):  # int() of 5,000 digits is a ValueError
            raise RequestError(400, f"Inference-Header-Content-Length {shown(header_length)} is not a number; "
                                    "send the JSON header's length in bytes")
        size = int(text)
        if not 0 < size <= len(body):
            raise RequestError(400, f"Inference-Header-Content-Length {size} does not fit a body of {len(body)} bytes")
    try:  # bounded: no RecursionError at any depth, no ValueError from a 5,000-digit number
        header = parse_json(bytes(body[:size]), limit=size)
    except ValueError as exc:
        raise RequestError(400, f"malformed JSON in the request (the header is {exc}); send a JSON inference "
                                "request") from None
    if not isinstance(header, dict):
        raise RequestError(400, f"the request is a JSON {type(header).__name__}, not an object with 'inputs'")
    return header, memoryview(body)[size:]


def _shape(raw: Any, where: str) -> list[int]:
    if not isinstance(raw, list) or len(raw) > MAX_RANK or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in raw):
        raise RequestError(400, f"{where}: shape must be a list of at most {MAX_RANK} non-negative integers, "
                                f"got {shown(raw)}")
    return raw


def _numbers(data: Any, count: int, where: str) -> np.ndarray:
    """JSON numbers (flat or nested lists, row-major) -> float32 array of ``count`` elements."""
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        raise RequestError(400, f"{where}: data is ragged; send a flat list of numbers in row-major order") from None
    if values.dtype.kind not in "iuf" or values.ndim == 0:
        raise RequestError(400, f"{where}: data must be a list of numbers, got {values.dtype.name} values")
    if values.size != count:
        raise RequestError(400, f"{where}: data holds {values.size} values, its shape needs {count}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused later as not finite
        return values.astype(np.float32).reshape(-1)


def _json_bytes(data: Any, count: int, where: str) -> list[bytes]:
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise RequestError(400, f"{where}: BYTES data in JSON must be a flat list of base64 strings")
    if len(data) != count:
        raise RequestError(400, f"{where}: data holds {len(data)} elements, its shape needs {count}")
    try:
        return [base64.b64decode(v, validate=True) for v in data]
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where}: an element is not valid base64; encode each image with base64") from None


def _binary_bytes(raw: memoryview, count: int, where: str) -> list[bytes]:
    """Triton's BYTES serialisation: per element a uint32 little-endian length, then the bytes."""
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise RequestError(400, f"{where}: binary BYTES data ends before element {len(items)} of {count}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise RequestError(400, f"{where}: element {len(items)} claims {length} bytes, "
                                    f"only {len(raw) - offset} are left")
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    if offset != len(raw):
        raise RequestError(400, f"{where}: binary data has {len(raw) - offset} bytes after its {count} elements")
    return items


def _tensor_data(spec: dict[str, Any], shape: list[int], raw: memoryview | None, where: str) -> Any:
    datatype, count = spec["datatype"], prod(shape)
    if datatype == "FP32":
        if raw is None:
            return _numbers(spec["data"], count, where).reshape(shape)
        if len(raw) != 4 * count:
            raise RequestError(400, f"{where}: {len(raw)} bytes of binary data, FP32 {shape} needs {4 * count}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
    if datatype == "BYTES":
        return _json_bytes(spec["data"], count, where) if raw is None else _binary_bytes(raw, count, where)
    raise _datatype_error(datatype, where)


def _datatype_error(datatype: str, where: str) -> RequestError:
    return RequestError(400, f"{where}: datatype {shown(datatype)} is not accepted; send FP32 pixels or BYTES images")


def _where(name: str) -> str:
    return f"input {shown(name)}"


def wire_tensor(name: str, datatype: str, shape: Any, raw: bytes | None = None, values: Any = None,
                admit: Admit | None = None) -> Tensor:
    """One input from another wire form (gRPC): ``raw`` bytes as the binary extension lays them out, or ``values``
    (numbers, or a list of bytes for BYTES); the same checks and messages as an HTTP input, ``admit`` called
    before the data is read."""
    where = _where(name)
    shape = _shape(list(shape), where)
    if admit is not None:
        admit(name, datatype, shape)
    if raw is not None:
        return Tensor(name, datatype, shape, _tensor_data({"datatype": datatype}, shape, memoryview(raw), where))
    if datatype == "BYTES":
        if len(values) != prod(shape):
            raise RequestError(400, f"{where}: data holds {len(values)} elements, its shape needs {prod(shape)}")
        return Tensor(name, datatype, shape, [bytes(v) for v in values])
    if datatype != "FP32":
        raise _datatype_error(datatype, where)
    if len(values) != prod(shape):
        raise RequestError(400, f"{where}: data holds {len(values)} values, its shape needs {prod(shape)}")
    return Tensor(name, datatype, shape, _numbers(list(values), prod(shape), where).reshape(shape))


def _parse_input(spec: Any, binary: memoryview, offset: int, admit: Admit | None) -> tuple[Tensor, int]:
    """One ``$request_input`` -> (Tensor, offset after its binary data); ``admit`` sees its shape first."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise RequestError(400, "each input must be an object with a 'name', 'datatype', 'shape' and data")
    where = _where(spec["name"])
    if unknown := set(spec) - _INPUT_KEYS:
        raise RequestError(400, f"{where}: unknown field(s) {shown(', '.join(sorted(unknown)))}")
    if not isinstance(spec.get("datatype"), str):
        raise RequestError(400, f"{where}: 'datatype' is missing (FP32 or BYTES)")
    shape = _shape(spec.get("shape"), where)
    if admit is not None:
        admit(spec["name"], spec["datatype"], shape)
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is None:
        if "data" not in spec:
            raise RequestError(400, f"{where}: no 'data' and no binary_data_size parameter")
        return Tensor(spec["name"], spec["datatype"], shape, _tensor_data(spec, shape, None, where)), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
        raise RequestError(400, f"{where}: binary_data_size {shown(size)} does not fit the {len(binary) - offset} "
                                "bytes after the JSON header")
    raw = binary[offset : offset + size]
    return Tensor(spec["name"], spec["datatype"], shape, _tensor_data(spec, shape, raw, where)), offset + size


def _parse_output(spec: Any) -> RequestedOutput:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise RequestError(400, "each requested output must be an object with a 'name'")
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(400, f"output {shown(spec['name'])}: parameters must be an object")
    k = params.get("classification", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise RequestError(400, f"output {shown(spec['name'])}: classification must be a positive integer, "
                                f"got {shown(k)}")
    return RequestedOutput(spec["name"], bool(params.get("binary_data", False)), k)


def parse_infer_request(body: bytes, header_length: str | None = None, admit: Admit | None = None) -> InferRequest:
    """A request body (JSON, or JSON header + binary tensors) -> `InferRequest`; `RequestError` when malformed.
    ``admit(name, datatype, shape)`` sees each input's shape before its data is decoded, and may refuse it."""
    header, binary = _split_body(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(400, "the request has no 'inputs' list; send at least one input tensor")
    tensors, offset = [], 0
    for spec in inputs:
        tensor, offset = _parse_input(spec, binary, offset, admit)
        tensors.append(tensor)
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset} bytes after the JSON header belong to no input "
                                "(binary_data_size too small?)")
    outputs = header.get("outputs") or []
    if not isinstance(outputs, list):
        raise RequestError(400, "'outputs' must be a list of requested outputs")
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(400, "'parameters' must be an object")
    request_id = header.get("id")
    return InferRequest(tensors, [_parse_output(o) for o in outputs], bool(params.get("binary_data_output", False)),
                        str(request_id) if request_id is not None else None)


# ---------------------------------------------------------------------------
# responses
# ---------------------------------------------------------------------------
def classify(values: np.ndarray, k: int, labels: list[str] | None) -> np.ndarray:
    """(B, N) output -> (B, min(k, N)) object array of b"<value>:<index>[:<label>]", highest value first."""
    if values.ndim != 2:
        raise RequestError(400, f"classification needs a [batch, classes] output, this one is {list(values.shape)}")
    k = min(k, values.shape[1])
    out = np.empty((values.shape[0], k), dtype=object)
    for b, row in enumerate(values):
        for j, c in enumerate(np.argsort(-row, kind="stable")[:k]):
            text = f"{row[c]!s}:{c}" + (f":{labels[c]}" if labels and c < len(labels) else "")
            out[b, j] = text.encode()
    return out


def serialize_bytes(items: Any) -> bytes:
    """BYTES elements (row-major) in Triton's binary form: uint32 little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(v)) + v for v in np.asarray(items, dtype=object).reshape(-1))


def _output_entry(name: str, value: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    is_bytes = value.dtype == object
    entry: dict[str, Any] = {"name": name, "datatype": "BYTES" if is_bytes else "FP32", "shape": list(value.shape)}
    if binary:
        raw = serialize_bytes(value) if is_bytes else np.ascontiguousarray(value, dtype="<f4").tobytes()
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    entry["data"] = [v.decode() for v in value.reshape(-1)] if is_bytes else value.reshape(-1).tolist()
    return entry, b""


def select_outputs(request: InferRequest, outputs: dict[str, np.ndarray],
                   labels: list[str] | None = None) -> list[tuple[RequestedOutput, np.ndarray]]:
    """(requested output, value) for each output the request asks for (every output when it names none), the
    classification extension applied."""
    wanted = request.outputs or [RequestedOutput(name, request.binary_output) for name in outputs]
    selected = []
    for out in wanted:
        if out.name not in outputs:
            raise RequestError(400, f"unknown output {shown(out.name)}; this model has {', '.join(map(repr, outputs))}")
        value = outputs[out.name]
        selected.append((out, classify(value, out.classification, labels) if out.classification else value))
    return selected


def encode_infer_response(model_name: str, request: InferRequest, outputs: dict[str, np.ndarray],
                          labels: list[str] | None = None, version: str = "1") -> HttpResponse:
    """The response to ``request`` from the model's ``outputs`` (name -> float32 array), in the requested form."""
    selected = select_outputs(request, outputs, labels)
    wanted = [out for out, _ in selected]
    entries, blobs = [], []
    for out, value in selected:
        entry, raw = _output_entry(out.name, value, out.binary)
        entries.append(entry)
        blobs.append(raw)
    header: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": entries}
    if request.id is not None:
        header["id"] = request.id
    head = json.dumps(header).encode()
    if not any(out.binary for out in wanted):
        return HttpResponse(200, head, {"Content-Type": JSON_TYPE})
    return HttpResponse(200, head + b"".join(blobs),
                        {"Content-Type": BINARY_TYPE, "Inference-Header-Content-Length": str(len(head))})


__all__ = [
    "HEADER_LENGTH", "SHOWN_CHARS", "Admit", "HttpResponse", "InferRequest", "RequestError", "RequestedOutput",
    "Tensor", "classify",
    "decode_content", "encode_infer_response", "error_response", "json_response", "parse_infer_request",
    "select_outputs", "serialize_bytes", "shown", "wire_tensor",
]
