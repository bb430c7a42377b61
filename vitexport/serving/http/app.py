"""The Ray Serve deployment: `ModelService` behind Ray Serve's HTTP proxy, ``@serve.batch`` in front of the engine.

``build_app`` is the application builder that the config file names (``import_path``), so
``serve deploy`` and a KubeRay RayService build exactly what `vitexport serve` runs.

Batching: every request is cut into chunks of one image size (`vitexport.serving.batching.size_chunks`); the
chunks of concurrent requests queue here, and a batch closes when one image size reaches
``max_batch`` images (`service.largest_size_group`) or ``batch_wait_ms`` after its first
chunk. `ModelService.run_chunks` then runs each size once (in a worker thread, so the event
loop keeps reading requests), and each request gets its own outputs back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from vitexport.serving.defaults import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH
from vitexport.serving.http.config import DEPLOYMENT_NAME, AppArgs, Scaling, deployment_options
from vitexport.serving.http.service import HttpRequest, ModelService, largest_size_group, read_limited


@serve.deployment(name=DEPLOYMENT_NAME)
class VitexportModel:
    """One replica: a `ModelService` (a `Predictor` on the model) answering the Open Inference Protocol."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.service = ModelService(AppArgs.from_args(args))
        self.service.runner = self.run_batch
        self.run_batch.set_max_batch_size(self.service.args.max_batch)
        self.run_batch.set_batch_wait_timeout_s(self.service.args.batch_wait_ms / 1000)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_MS / 1000,
                 batch_size_fn=largest_size_group)  # both set from the replica's arguments in __init__
    async def run_batch(self, stacks: list[Any]) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(None, self.service.run_chunks, stacks)

    async def __call__(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}

        def read(limit: int) -> Any:
            return read_limited(request.stream(), headers.get("content-length"), limit)

        response = await self.service.handle(HttpRequest(request.method, request.url.path, headers, read))
        return Response(response.body, status_code=response.status, headers=response.headers)


def make_app(args: AppArgs, scaling: Scaling) -> Any:
    """The application for ``serve.run``: the deployment with `deployment_options` bound to ``args``."""
    return VitexportModel.options(**deployment_options(args, scaling)).bind(args.to_args())


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for config files (``import_path: vitexport.serving.http.app:build_app``); the config's
    ``deployments`` entry sets replicas and autoscaling."""
    return make_app(AppArgs.from_args(args), Scaling())


__all__ = ["VitexportModel", "build_app", "make_app"]
