"""A `ModelService` behind an in-process ``grpc.aio`` server (the deployment's gRPC methods, no Ray), run as its own
process by the gRPC unit tests: ``python -m tests.helpers.grpc_server MODEL PORT TOKEN_FILE``. A grpc.aio server
in a thread of the test process could not always be stopped (its completion queue binds to the first event loop
grpc.aio saw in the process), so the tests start and kill this one instead."""

from __future__ import annotations

import asyncio
import sys

import grpc

from vitexport.serving.grpc.methods import GrpcMethods
from vitexport.serving.grpc.service import add_servicer
from vitexport.serving.http.config import AppArgs
from vitexport.serving.http.service import ModelService

# what the tests configure: a token, batches of 4, a 0.25 MB body limit, 64 tokens
SERVICE_OPTIONS = dict(max_batch=4, max_tokens=64, max_body_mb=0.25)


def model_service(model: str, token_file: str) -> ModelService:
    return ModelService(AppArgs(model, "digits", "cpu", token_file=token_file, **SERVICE_OPTIONS))


class Servicer(GrpcMethods):
    def __init__(self, service: ModelService) -> None:
        self.service = service


async def serve(model: str, port: int, token_file: str) -> None:
    server = grpc.aio.server()
    add_servicer(Servicer(model_service(model, token_file)), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
