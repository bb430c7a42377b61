"""One exported model behind the Open Inference Protocol: routes, bearer-token auth, limits, batching by size.

No Ray: `ModelService.handle` takes a plain `HttpRequest` and returns an `HttpResponse`, so the
whole request path runs (and is tested) in-process. The Ray Serve deployment (`vitexport.serving.http.app`)
only adapts Starlette requests and puts a `SizeBatcher` (`batching`) in front of `ModelService.run_chunks`.

- Inputs: the model's own input (``pixel_values``, FP32 ``[B, C, H, W]``, preprocessed) or
  ``image`` (BYTES ``[B]``, encoded images preprocessed here from the model's metadata), both
  through `Predictor.prepare`, so they are validated and preprocessed exactly as `Predictor.predict`.
- Batching: a request is cut into chunks of one image size and at most ``max_batch`` images;
  the runner (direct here, a `SizeBatcher` in the deployment) gathers chunks of concurrent
  requests, and `run_chunks` runs equal sizes together through `Predictor.run_prepared`.
- Limits: the body (``max_body_mb``, also after gzip/deflate); then one `RequestBudget` per request, for
  pixels and encoded images alike, charged from shapes and image headers before anything is decoded: images
  per request (``max_images``), pixels per image (the most that ``max_tokens`` patches can hold), patches
  and decoded values per request.
- Messages never repeat unbounded input (`protocol.shown`, and at most `MAX_ERROR_CHARS` in all).
- Every bad request is a 4xx ``{"error": ...}``; a bad input in a shared batch fails only its own request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from vitexport import __version__
from vitexport._util.errors import InputError, ServingError, ServingPathError, VitexportError, one_line
from vitexport.onnx.spec import IOSpec
from vitexport.security.images import decode_bytes
from vitexport.serving.batching import size_chunks
from vitexport.serving.http.config import AppArgs
from vitexport.serving.http.protocol import (
    HEADER_LENGTH,
    HttpResponse,
    InferRequest,
    RequestError,
    Tensor,
    decode_content,
    encode_infer_response,
    error_response,
    json_response,
    parse_infer_request,
    shown,
)

logger = logging.getLogger(__name__)

IMAGE_INPUT = "image"
VERSION = "1"
EXTENSIONS = ["binary_tensor_data", "classification"]
PLATFORMS = {"openvino": "openvino", "reference": "onnx_reference"}  # engine -> metadata platform (else ORT's)
MAX_ERROR_CHARS = 500  # an error message, whatever went into it
Runner = Callable[[np.ndarray], Awaitable[Any]]


@dataclass
class HttpRequest:
    """What the service needs of an HTTP request; ``read(limit)`` returns the body or raises `RequestError` 413."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    read: Callable[[int], Awaitable[bytes]] | None = None

    @classmethod
    def of(cls, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> HttpRequest:
        """A request with its whole body in memory (tests, in-process use)."""

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        heads = {k.lower(): v for k, v in (headers or {}).items()}
        return cls(method, path, heads, lambda limit: read_limited(chunks(), heads.get("content-length"), limit))


async def read_limited(chunks: AsyncIterator[bytes], content_length: str | None, limit: int) -> bytes:
    """The body, refused with 413 as soon as it (or its announced length) passes ``limit`` bytes."""
    too_big = RequestError(413, f"the request body is over this server's limit of {limit:,} bytes "
                                "(--max-body-mb); send fewer or smaller images per request")
    announced = (content_length or "").strip()
    if announced.isascii() and announced.isdigit() and (len(announced) > 18 or int(announced) > limit):
        raise too_big
    parts, total = [], 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise too_big
        parts.append(chunk)
    return b"".join(parts)


def read_token(path: str) -> bytes:
    """The bearer token in ``path`` (surrounding whitespace stripped); `ServingError` when unusable."""
    try:
        with open(path, "rb") as f:
            token = f.read(4097).strip()
    except OSError as exc:
        raise ServingPathError(f"cannot read the token file {path!r} ({exc.strerror}); check --token-file") from None
    if not token or len(token) > 4096 or not all(33 <= b < 127 for b in token):
        raise ServingError(f"the token file {path!r} must hold one token of 1-4096 printable ASCII characters "
                           "without spaces; e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE")
    return token


def largest_size_group(stacks: list[np.ndarray]) -> int:
    """Images of the most common size among queued chunks: what one engine run would take (the batch size)."""
    counts: dict[tuple[int, ...], int] = {}
    for s in stacks:
        counts[s.shape[1:]] = counts.get(s.shape[1:], 0) + len(s)
    return max(counts.values(), default=0)


class RequestBudget:
    """What one request may cost, in one account for both inputs (FP32 pixels and BYTES images), HTTP and gRPC alike,
    charged from shapes and image headers before anything is decoded or run:

    - images: at most ``max_images`` per request (`admit`, from the shape: a request of a million 1x1 images
      would otherwise cost a million preparations and engine runs while other requests wait);
    - each image: at most ``max_pixels`` (the pixels of ``max_tokens`` patches; `charge`);
    - the request: decoded float32 values at most what a ``pixel_values`` body of the body limit carries, and
      patches at most ``max_tokens`` x ``max_batch`` (one full engine batch at the token limit).

    Every refusal is an `InputError` (400) naming the limit and the fix."""

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.values = service.max_body // 4
        self.patches = service.args.max_tokens * service.args.max_batch
        self.images = 0

    def admit(self, name: str, datatype: str, shape: list[int]) -> None:
        """Refuse an input from its shape, before its data is read: too many images (the first axis; every BYTES
        element is an image) or, for pixels [B, C, H, W], too large images or too many values in all."""
        images = prod(shape) if datatype == "BYTES" else shape[0] if shape else 0
        self.count(images)
        if datatype == "FP32" and len(shape) == 4 and 0 not in shape:
            self.charge(shape[2], shape[3], images, shape[1])
        elif datatype == "FP32":
            self.charge_values(prod(shape))

    def count(self, images: int) -> None:
        """``images`` more images in the request (every input counts: a request of a million inputs is refused too)."""
        self.images += images
        limit = self.service.args.max_images
        if self.images > limit:
            raise InputError(f"the request holds {self.images:,} images, over this server's limit of {limit:,} per "
                             "request (--max-images); send fewer images per request")

    def charge(self, height: int, width: int, count: int = 1, channels: int | None = None) -> None:
        """``count`` images of ``height`` x ``width``: each within the pixel limit, all within the request's."""
        service = self.service
        ph, pw = service.predictor.patch
        if height * width > service.max_pixels:
            raise InputError(f"a {height}x{width} image has {height * width:,} pixels, over this server's limit of "
                             f"{service.max_pixels:,} (--max-tokens {service.args.max_tokens} patches of {ph}x{pw}); "
                             "downscale it")
        self.patches -= count * -(-height // ph) * -(-width // pw)
        if self.patches < 0:
            limit = service.args.max_tokens * service.args.max_batch
            raise InputError(f"the images hold more than {limit:,} patches in all, over this server's limit per "
                             "request (max_tokens x max_batch); send fewer or smaller images per request")
        self.charge_values(count * height * width * (channels or service.predictor.channels))

    def charge_values(self, values: int) -> None:
        self.values -= values
        if self.values < 0:
            raise InputError(f"the images decode to more than {self.service.max_body // 4:,} values, over this "
                             "server's limit per request; send fewer or smaller images per request")


class ModelService:
    """The protocol for one model on a `Predictor`. ``runner`` turns one chunk into its outputs (or an error)."""

    def __init__(self, args: AppArgs) -> None:
        from vitexport.serving.predictor import Predictor

        self.args = args
        self.name = args.name
        self.predictor = Predictor(args.model, provider=args.provider, threads=args.threads, max_batch=args.max_batch,
                                   max_tokens=args.max_tokens, spin=False)
        self.token = read_token(args.token_file) if args.token_file else None
        self.spec = IOSpec.from_metadata(self.predictor.metadata)
        self.input_name = self.spec.input_name
        self.max_body = args.max_body_bytes
        self.max_pixels = args.max_tokens * self.predictor.patch[0] * self.predictor.patch[1]
        self.output_tail = self._probe_output()
        self.runner: Runner = self.run_direct

    # -- model description ----------------------------------------------------------------------
    def _probe_output(self) -> list[int]:
        """One warm-up run at the native size: the output's shape after the batch axis, -1 where dynamic."""
        p = self.predictor
        h, w = p.static_size or p.vit_config.img_hw
        out = p.run_prepared([np.zeros((p.channels, int(h), int(w)), np.float32)])[0]
        return [-1 if axis + 1 in self.spec.output_axes else int(d) for axis, d in enumerate(out.shape)]

    def model_metadata(self) -> dict[str, Any]:
        p, axes = self.predictor, self.spec.input_axes
        fixed = [p.fixed_batch or 1, p.channels, *(p.static_size or (0, 0))]
        pixels = [-1 if i in axes else int(fixed[i]) for i in range(4)]
        batch = -1 if 0 in axes else int(fixed[0])
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": PLATFORMS.get(self.predictor.provider, "onnxruntime_onnx"),
            "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": pixels},
                       {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": self.spec.output_name, "datatype": "FP32", "shape": [batch, *self.output_tail]}],
        }

    # -- requests -----------------------------------------------------------------------------
    async def handle(self, request: HttpRequest) -> HttpResponse:
        """One HTTP request -> its response; never raises."""
        try:
            return await self._dispatch(request)
        except Exception as exc:
            return error_response(*error_status(exc, f"{shown(request.method)} {shown(request.path)}"))

    async def _dispatch(self, request: HttpRequest) -> HttpResponse:
        parts = [p for p in request.path.split("/") if p]
        if len(parts) == 3 and parts[:2] == ["v2", "health"] and parts[2] in ("live", "ready"):
            _allow(request, "GET")
            return json_response({parts[2]: True})
        self._authorize(request)
        if parts == ["v2"]:
            _allow(request, "GET")
            return json_response({"name": "vitexport", "version": __version__, "extensions": EXTENSIONS})
        if len(parts) < 3 or parts[:2] != ["v2", "models"]:
            raise RequestError(404, f"no endpoint {shown(request.path)}; see /v2/models/{self.name}")
        if parts[2] != self.name:
            raise RequestError(404, f"unknown model {shown(parts[2])}; this server serves {self.name!r}")
        rest = parts[3:]
        if rest[:1] == ["versions"]:
            if len(rest) < 2 or rest[1] != VERSION:
                raise RequestError(404, f"model {self.name!r} has only version {VERSION}")
            rest = rest[2:]
        if not rest:
            _allow(request, "GET")
            return json_response(self.model_metadata())
        if rest == ["ready"]:
            _allow(request, "GET")
            return json_response({"name": self.name, "ready": True})
        if rest == ["infer"]:
            _allow(request, "POST")
            return await self._infer(request)
        raise RequestError(404, f"no endpoint {shown(request.path)}; see /v2/models/{self.name}")

    def _authorize(self, request: HttpRequest) -> None:
        self.authorize(request.headers.get("authorization"))

    def authorize(self, authorization: str | None) -> None:
        """Refuse (401) a request whose ``Authorization`` value (HTTP header, gRPC metadata) lacks the token."""
        if self.token is None:
            return
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token):
            raise RequestError(401, "missing or wrong bearer token; send the header 'Authorization: Bearer <token>'",
                               {"WWW-Authenticate": "Bearer"})

    async def _infer(self, request: HttpRequest) -> HttpResponse:
        assert request.read is not None
        body = await request.read(self.max_body)
        parsed, prepared = await asyncio.to_thread(self.decode, body, request.headers)
        outputs = await self.infer_prepared(prepared)
        return encode_infer_response(self.name, parsed, {self.spec.output_name: np.stack(outputs)},
                                     self.predictor.labels, VERSION)

    # -- inputs -----------------------------------------------------------------------------------
    def decode(self, body: bytes, headers: dict[str, str]) -> tuple[InferRequest, list[np.ndarray]]:
        """Body -> (request, prepared (C, H, W) inputs); 4xx errors for anything the model cannot take."""
        body = decode_content(body, headers.get("content-encoding"), self.max_body)
        budget = RequestBudget(self)
        parsed = parse_infer_request(body, headers.get(HEADER_LENGTH), admit=budget.admit)
        return parsed, self.prepare_request(parsed, budget)

    def prepare_request(self, parsed: InferRequest, budget: RequestBudget | None = None) -> list[np.ndarray]:
        """A parsed request (HTTP, gRPC or Triton's Python backend) -> prepared (C, H, W) inputs; 4xx errors for
        anything the model cannot take. ``budget``: the request's `RequestBudget` when the parser already admitted
        its inputs (a new one admits them here)."""
        if budget is None:
            budget = RequestBudget(self)
            for tensor in parsed.inputs:
                budget.admit(tensor.name, tensor.datatype, tensor.shape)
        for out in parsed.outputs:
            if out.name != self.spec.output_name:
                raise RequestError(400, f"unknown output {shown(out.name)}; this model has "
                                        f"{self.spec.output_name!r}")
            if out.classification and len(self.output_tail) != 1:
                raise RequestError(400, f"classification needs a [batch, classes] output; {out.name!r} is "
                                        f"[batch, {', '.join(map(str, self.output_tail))}]")
        if len(parsed.inputs) != 1:
            raise RequestError(400, f"send exactly one input, {self.input_name!r} or {IMAGE_INPUT!r}; "
                                    f"got {len(parsed.inputs)}")
        tensor = parsed.inputs[0]
        if tensor.name == self.input_name:
            prepared = self._prepare_pixels(tensor)
        elif tensor.name == IMAGE_INPUT:
            prepared = self._prepare_images(tensor, budget)
        else:
            raise RequestError(400, f"unknown input {shown(tensor.name)}; send {self.input_name!r} (FP32 [B, C, H, "
                                    f"W], preprocessed) or {IMAGE_INPUT!r} (BYTES [B], encoded images)")
        if -1 in self.output_tail and len({x.shape for x in prepared}) > 1:
            raise RequestError(400, "this model's output follows the image size; send one image size per request")
        return prepared

    def _prepare_pixels(self, tensor: Tensor) -> list[np.ndarray]:
        """Pixels [B, C, H, W], already charged to the request's budget from their shape."""
        c = self.predictor.channels
        if tensor.datatype != "FP32":
            raise RequestError(400, f"input {tensor.name!r} must be FP32, got {shown(tensor.datatype)}")
        if len(tensor.shape) != 4 or tensor.shape[1] != c or 0 in tensor.shape:
            raise RequestError(400, f"input {tensor.name!r} must be [B, {c}, H, W] with B, H, W >= 1, "
                                    f"got {tensor.shape}")
        return [self.predictor.prepare(x) for x in tensor.data]

    def _prepare_images(self, tensor: Tensor, budget: RequestBudget) -> list[np.ndarray]:
        """Encoded images, each charged to the request's budget from its header before its pixels are decoded."""
        if tensor.datatype != "BYTES":
            raise RequestError(400, f"input {IMAGE_INPUT!r} must be BYTES (one encoded image per element), "
                                    f"got {shown(tensor.datatype)}")
        if len(tensor.shape) != 1 or tensor.shape[0] < 1:
            raise RequestError(400, f"input {IMAGE_INPUT!r} must have shape [B] with B >= 1, got {tensor.shape}")
        prepared = []
        for i, data in enumerate(tensor.data):
            try:
                prepared.append(self.predictor.prepare(decode_bytes(data, budget.charge)))
            except InputError as exc:
                raise InputError(f"image {i}: {exc}") from None
        return prepared

    # -- running ------------------------------------------------------------------------------------
    async def infer_prepared(self, prepared: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs of prepared inputs, in order, through the runner (one call per size chunk)."""
        chunks = size_chunks(prepared, self.args.max_batch)
        results = await asyncio.gather(*(self.runner(stack) for _, stack in chunks))
        outputs: list[Any] = [None] * len(prepared)
        for (idx, _), result in zip(chunks, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            for j, i in enumerate(idx):
                outputs[i] = result[j]
        return outputs

    async def run_direct(self, stack: np.ndarray) -> Any:
        """The runner without batching across requests."""
        return (await asyncio.to_thread(self.run_chunks, [stack]))[0]

    def run_chunks(self, stacks: list[np.ndarray]) -> list[Any]:
        """Outputs per chunk of concurrent requests, equal sizes run together; a chunk whose input the model
        refuses gets its error (the others their outputs)."""
        try:
            flat = self.predictor.run_prepared([x for s in stacks for x in s])
        except VitexportError as exc:
            if len(stacks) == 1:
                return [exc]
            return [self.run_chunks([s])[0] for s in stacks]
        results, start = [], 0
        for s in stacks:
            results.append(np.stack(flat[start : start + len(s)]))
            start += len(s)
        return results


async def starlette_response(service: ModelService, request: Any) -> Any:
    """A Starlette request (Ray Serve's, or any ASGI server's) answered by ``service``, as a Starlette response."""
    from starlette.responses import Response

    headers = {k.lower(): v for k, v in request.headers.items()}

    def read(limit: int) -> Any:
        return read_limited(request.stream(), headers.get("content-length"), limit)

    response = await service.handle(HttpRequest(request.method, request.url.path, headers, read))
    return Response(response.body, status_code=response.status, headers=response.headers)


def error_status(exc: Exception, where: str) -> tuple[int, str, dict[str, str]]:
    """(HTTP status, one-line message, headers) for an exception raised while serving ``where``; what is the
    server's fault is logged. One mapping for HTTP, gRPC and Triton's Python backend."""
    if isinstance(exc, RequestError):
        return exc.status, one_line(exc.message, MAX_ERROR_CHARS), exc.headers
    if isinstance(exc, InputError):
        return 400, one_line(exc, MAX_ERROR_CHARS), {}
    if isinstance(exc, MemoryError):
        logger.error("out of memory on %s", where)
        return 503, "the server ran out of memory on this request; send fewer or smaller images", {}
    if isinstance(exc, VitexportError):
        logger.error("%s failed: %s", where, one_line(exc))
        return 500, one_line(exc), {}
    logger.error("%s failed", where, exc_info=exc)
    return 500, f"internal error ({type(exc).__name__}); see the server log", {}


def _allow(request: HttpRequest, method: str) -> None:
    if request.method != method:
        raise RequestError(405, f"{shown(request.path)} takes {method}, not {shown(request.method)}",
                           {"Allow": method})


__all__ = ["IMAGE_INPUT", "MAX_ERROR_CHARS", "HttpRequest", "ModelService", "RequestBudget", "error_status",
           "largest_size_group", "read_limited", "read_token", "starlette_response"]
