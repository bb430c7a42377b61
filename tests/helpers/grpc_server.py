"""A `ModelService` behind an in-process ``grpc.aio`` server (the deployment's gRPC methods, no Ray), run as its own
process by the gRPC unit tests: ``python -m tests.helpers.grpc_server MODEL PORT TOKEN_FILE [HTTP_PORT [OPTIONS]]``.
A grpc.aio server in a thread of the test process could not always be stopped (its completion queue binds to the
first event loop grpc.aio saw in the process), so the tests start and kill this one instead.

With ``HTTP_PORT`` the same service also answers HTTP there (uvicorn, through `starlette_response` as the
deployment does), and a `SizeBatcher` is in front of its engine as in a replica: one process that serves both
protocols like one Ray Serve replica, without Ray. ``OPTIONS`` (JSON) replaces `SERVICE_OPTIONS`' values."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc

from vitexport.serving.grpc.methods import GrpcMethods
from vitexport.serving.grpc.service import add_servicer
from vitexport.serving.http.config import AppArgs
from vitexport.serving.http.service import ModelService

# what the tests configure: a token, batches of 4, a 0.25 MB body limit, 64 tokens
SERVICE_OPTIONS = dict(max_batch=4, max_tokens=64, max_body_mb=0.25)


def model_service(model: str, token_file: str, **options) -> ModelService:
    return ModelService(AppArgs(model, "digits", "cpu", token_file=token_file, **{**SERVICE_OPTIONS, **options}))


class Servicer(GrpcMethods):
    def __init__(self, service: ModelService) -> None:
        self.service = service


async def _http(service: ModelService, port: int) -> None:
    import uvicorn
    from starlette.requests import Request

    from vitexport.serving.http.service import starlette_response

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        response = await starlette_response(service, Request(scope, receive))
        await response(scope, receive, send)

    await uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).serve()


async def serve(model: str, port: int, token_file: str, http_port: int | None = None, **options) -> None:
    service = model_service(model, token_file, **options)
    server = grpc.aio.server()
    add_servicer(Servicer(service), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    waits = [server.wait_for_termination()]
    if http_port is not None:
        from vitexport.serving.http.batcher import batch_service

        batch_service(service)
        waits.append(_http(service, http_port))
    print("serving", flush=True)
    await asyncio.gather(*waits)


if __name__ == "__main__":
    http = int(sys.argv[4]) if len(sys.argv) > 4 else None
    extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), sys.argv[3], http, **extra))
