"""The Open Inference Protocol's gRPC methods on a `ModelService`: no Ray, so they run (and are tested) in-process.

Each RPC takes the request message and the call's metadata and returns the response message, or raises
`GrpcError` (a status code and a one-line message naming the problem and the fix). What HTTP does, this does
the same way, through the same service:

- auth: ``authorization: Bearer <token>`` metadata on every RPC except ServerLive and ServerReady;
- inputs: ``pixel_values`` FP32 or ``image`` BYTES, in ``raw_input_contents`` (what tritonclient sends) or
  typed ``contents``, through `ModelService.prepare_request`; the message may hold at most ``--max-body-mb``, and
  each input's shape is charged to the request's `RequestBudget` (images, pixels, values) before its data is read;
- outputs: in ``raw_output_contents``; ``classification`` (an int64 parameter on a requested output, what
  tritonclient's ``class_count`` sends) returns BYTES ``"logit:index:label"``, best first;
- batching: `ModelService.infer_prepared`, the replica's `SizeBatcher` shared with HTTP requests.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from vitexport import __version__
from vitexport.serving.http.protocol import (
    Admit,
    InferRequest,
    RequestedOutput,
    RequestError,
    select_outputs,
    serialize_bytes,
    shown,
    wire_tensor,
)
from vitexport.serving.http.service import EXTENSIONS, VERSION, ModelService, RequestBudget, error_status

logger = logging.getLogger(__name__)
# tritonclient's generated messages name their module 'grpc_service_pb2' (the .proto's), not where they live; Ray
# pickles each request from its proxy to a replica, which needs that name importable in both processes
sys.modules.setdefault(pb.ModelInferRequest.__module__, pb)

SERVICE = "inference.GRPCInferenceService"
METHODS = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelInfer")
REQUESTS = {m: getattr(pb, f"{m}Request") for m in METHODS}
STATUS_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 405: "UNIMPLEMENTED",
                413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}
RESPONSES = {"ServerLive": pb.ServerLiveResponse, "ServerReady": pb.ServerReadyResponse,
             "ServerMetadata": pb.ServerMetadataResponse, "ModelReady": pb.ModelReadyResponse,
             "ModelMetadata": pb.ModelMetadataResponse, "ModelInfer": pb.ModelInferResponse}


class GrpcError(Exception):
    """A failed RPC: ``code`` (a ``grpc.StatusCode`` name) and a one-line message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GrpcService:
    """The protocol's RPCs for the model of ``service``."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    async def call(self, method: str, request: Any, metadata: dict[str, str]) -> Any:
        """Run RPC ``method``; every failure is a `GrpcError` with the status HTTP would give."""
        if method not in METHODS:
            raise GrpcError("UNIMPLEMENTED", f"{method} is not served here; this server implements "
                                             f"{', '.join(METHODS)}")
        try:
            if method not in ("ServerLive", "ServerReady"):
                self.service.authorize(metadata.get("authorization"))
            return await getattr(self, f"_{method}")(request)
        except Exception as exc:
            status, message, _ = error_status(exc, f"gRPC {method}")
            raise GrpcError(STATUS_CODES.get(status, "INTERNAL"), message) from None

    async def _ServerLive(self, request: Any) -> Any:  # the RPC's name
        return pb.ServerLiveResponse(live=True)

    async def _ServerReady(self, request: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def _ServerMetadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(name="vitexport", version=__version__, extensions=EXTENSIONS)

    def _check_model(self, name: str, version: str) -> None:
        if name != self.service.name:
            raise RequestError(404, f"unknown model {shown(name)}; this server serves {self.service.name!r}")
        if version not in ("", VERSION):
            raise RequestError(404, f"model {shown(name)} has only version {VERSION}")

    async def _ModelReady(self, request: Any) -> Any:
        self._check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    async def _ModelMetadata(self, request: Any) -> Any:
        self._check_model(request.name, request.version)
        meta = self.service.model_metadata()
        tensors = {key: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta[key]]
                   for key in ("inputs", "outputs")}
        return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                        **tensors)

    async def _ModelInfer(self, request: Any) -> Any:
        self._check_model(request.model_name, request.model_version)
        size, limit = request.ByteSize(), self.service.max_body
        if size > limit:
            raise RequestError(413, f"the request message holds {size:,} bytes, over this server's limit of "
                                    f"{limit:,} bytes (--max-body-mb); send fewer or smaller images per request")
        budget = RequestBudget(self.service)  # each input's shape is charged before its data is read
        parsed = infer_request(request, budget.admit)
        prepared = await asyncio.to_thread(self.service.prepare_request, parsed, budget)
        outputs = await self.service.infer_prepared(prepared)
        return infer_response(self.service, parsed, np.stack(outputs))


def add_servicer(servicer: Any, server: Any) -> None:
    """Register the `METHODS` of ``inference.GRPCInferenceService`` with a gRPC server (any other RPC of the service
    gets UNIMPLEMENTED from gRPC itself). Ray Serve's ``grpc_servicer_functions`` entry
    (`vitexport.serving.http.config.GRPC_SERVICER`): the proxy imports this module, so it can pickle the messages."""
    import grpc

    handlers = {m: grpc.unary_unary_rpc_method_handler(getattr(servicer, m),
                                                       request_deserializer=REQUESTS[m].FromString,
                                                       response_serializer=RESPONSES[m].SerializeToString)
                for m in METHODS}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if hasattr(server, "add_registered_method_handlers"):  # grpcio >= 1.63 registers methods by name too
        server.add_registered_method_handlers(SERVICE, handlers)


def infer_request(request: Any, admit: Admit | None = None) -> InferRequest:
    """A ``ModelInferRequest`` -> the protocol's `InferRequest`; `RequestError` when malformed. ``admit(name, datatype,
    shape)`` sees each input's shape before its data is read, as for HTTP."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(400, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input")
    tensors = []
    for i, spec in enumerate(request.inputs):
        if raw:
            tensors.append(wire_tensor(spec.name, spec.datatype, spec.shape, raw=raw[i], admit=admit))
        else:
            values = spec.contents.bytes_contents if spec.datatype == "BYTES" else spec.contents.fp32_contents
            tensors.append(wire_tensor(spec.name, spec.datatype, spec.shape, values=values, admit=admit))
    outputs = []
    for out in request.outputs:
        param = out.parameters.get("classification")
        k = 0 if param is None else param.int64_param or param.uint64_param
        if k < 0:
            raise RequestError(400, f"output {shown(out.name)}: classification must be a positive integer, got {k}")
        outputs.append(RequestedOutput(out.name, True, int(k)))
    return InferRequest(tensors, outputs, True, request.id or None)


def infer_response(service: ModelService, request: InferRequest, logits: np.ndarray) -> Any:
    """The ``ModelInferResponse`` to ``request``: every output in ``raw_output_contents``."""
    response = pb.ModelInferResponse(model_name=service.name, model_version=VERSION, id=request.id or "")
    for out, value in select_outputs(request, {service.spec.output_name: logits}, service.predictor.labels):
        is_bytes = value.dtype == object
        response.outputs.add(name=out.name, datatype="BYTES" if is_bytes else "FP32", shape=list(value.shape))
        response.raw_output_contents.append(serialize_bytes(value) if is_bytes else
                                            np.ascontiguousarray(value, dtype="<f4").tobytes())
    return response


__all__ = ["METHODS", "REQUESTS", "RESPONSES", "SERVICE", "GrpcError", "GrpcService", "add_servicer", "infer_request",
           "infer_response"]
