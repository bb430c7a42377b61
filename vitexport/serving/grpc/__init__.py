"""`vitexport serve --grpc-port`: the Open Inference Protocol over gRPC (KServe v2's ``inference.GRPCInferenceService``,
the service Triton and tritonclient.grpc speak), next to HTTP on the same replicas.

- `service`: the RPCs on a `ModelService` (no Ray): ServerLive/Ready, ServerMetadata, ModelReady, ModelMetadata,
  ModelInfer; the same bearer token (``authorization`` metadata), limits, batching and results as HTTP.
- `methods`: those RPCs as methods of the Ray Serve deployment, whose gRPC proxy routes each call by its name.

The messages are the protocol's own, from tritonclient's ``service_pb2`` (``tritonclient[grpc]``, in the
``serve`` extra).
"""

from __future__ import annotations
