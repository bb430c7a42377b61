"""The Ray Serve deployment: `ModelService` behind Ray Serve's HTTP and gRPC proxies, a `SizeBatcher` in front of
the engine.

``build_app`` is the application builder that the config file names (``import_path``), so
``serve deploy`` and a KubeRay RayService build exactly what `vitexport serve` runs.

Batching: every request (HTTP or gRPC) is cut into chunks of one image size (`serving.batching.size_chunks`); the chunks
of concurrent requests queue in the replica's `SizeBatcher`, which starts a batch when the engine is free with
every queued chunk (each size up to ``max_batch`` images), waiting up to ``batch_wait_ms`` for more only when the
queue is young and no size is full. `ModelService.run_chunks` then runs each size once (in a worker thread, so
the event loop keeps reading requests), and each request gets its own outputs back.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from vitexport.serving.grpc.methods import GrpcMethods
from vitexport.serving.http.batcher import batch_service
from vitexport.serving.http.config import DEPLOYMENT_NAME, AppArgs, Scaling, deployment_options
from vitexport.serving.http.service import ModelService, starlette_response


@serve.deployment(name=DEPLOYMENT_NAME)
class VitexportModel(GrpcMethods):
    """One replica: a `ModelService` (a `Predictor` on the model) answering the Open Inference Protocol over HTTP
    (``__call__``) and gRPC (`GrpcMethods`)."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.service = ModelService(AppArgs.from_args(args))
        self.batcher = batch_service(self.service)

    async def __call__(self, request: Request) -> Response:
        return await starlette_response(self.service, request)


def make_app(args: AppArgs, scaling: Scaling) -> Any:
    """The application for ``serve.run``: the deployment with `deployment_options` bound to ``args``."""
    return VitexportModel.options(**deployment_options(args, scaling)).bind(args.to_args())


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for config files (``import_path: vitexport.serving.http.app:build_app``); the config's
    ``deployments`` entry sets replicas and autoscaling."""
    return make_app(AppArgs.from_args(args), Scaling())


__all__ = ["VitexportModel", "build_app", "make_app"]
