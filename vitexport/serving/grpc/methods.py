"""The gRPC methods of the Ray Serve deployment: Ray's gRPC proxy routes each call of the registered service
(`vitexport.serving.http.config.GRPC_SERVICER`) to the deployment's method of the same name, with the call's
context as ``grpc_context``.

A failed call sets the status code and details on that context (Ray's proxy sends them) and returns an empty
response of the RPC's type.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

with contextlib.suppress(ImportError):  # without tritonclient[grpc] the deployment serves HTTP only
    import vitexport.serving.grpc.service  # noqa: F401 - makes the request messages picklable by name here

HOST_VARIABLE = "VITEXPORT_GRPC_HOST"


class GrpcMethods:
    """Mixed into the deployment class, whose ``service`` is the replica's `ModelService`."""

    service: Any

    async def _grpc(self, method: str, request: Any, grpc_context: Any) -> Any:
        import grpc

        from vitexport.serving.grpc.service import RESPONSES, GrpcError, GrpcService  # tritonclient[grpc]

        handler = getattr(self, "_grpc_service", None)
        if handler is None:
            handler = self._grpc_service = GrpcService(self.service)
        metadata = dict(grpc_context.invocation_metadata()) if grpc_context is not None else {}
        try:
            return await handler.call(method, request, metadata)
        except GrpcError as exc:
            if grpc_context is not None:
                grpc_context.set_code(grpc.StatusCode[exc.code])
                grpc_context.set_details(exc.message)
            return RESPONSES[method]()

    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:  # the RPC's name
        return await self._grpc("ServerLive", request, grpc_context)

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:
        return await self._grpc("ServerReady", request, grpc_context)

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:
        return await self._grpc("ServerMetadata", request, grpc_context)

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:
        return await self._grpc("ModelReady", request, grpc_context)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:
        return await self._grpc("ModelMetadata", request, grpc_context)

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:
        return await self._grpc("ModelInfer", request, grpc_context)


def bind_grpc_host() -> None:
    """Ray worker setup hook (local `vitexport serve --grpc-port`): Ray Serve 2.60's gRPC proxy listens on
    ``[::]:PORT`` (every interface; it has no host option); in a worker where ``VITEXPORT_GRPC_HOST`` is set, the
    proxy's address is that host's instead, as HTTP's is. tests/e2e/test_serve_grpc.py checks where it listens."""
    host = os.environ.get(HOST_VARIABLE)
    if not host:
        return
    from ray.serve._private import default_impl

    add = getattr(default_impl, "add_grpc_address", None)
    if add is None or getattr(add, "vitexport_host", None) == host:
        return

    def add_grpc_address(server: Any, address: str) -> Any:
        shown = f"[{host}]" if ":" in host else host
        return add(server, f"{shown}:{address.rsplit(':', 1)[1]}")

    add_grpc_address.vitexport_host = host  # type: ignore[attr-defined]
    default_impl.add_grpc_address = add_grpc_address


__all__ = ["HOST_VARIABLE", "GrpcMethods", "bind_grpc_host"]
