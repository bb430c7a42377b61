"""Load and run a TorchScript archive in a confined child process, after the policy admitted it.

`vitexport.security.torchscript_policy` admits only archives whose code is exactly what vitexport's exporter
writes for their config (the weights are data). The archive is still loaded and run in a forked child
(`vitexport.security.isolate.Worker`) with an address-space limit and a timeout per call, so a hang, a crash
or an allocation that does not fit ends as one line, and the parent process keeps nothing of the archive but
numpy arrays (read with ``allow_pickle=False``). The child is confined before it loads anything
(`vitexport.security.isolate.confine`): no file descriptors but its two pipes, ``RLIMIT_FSIZE`` 0, a working
directory that no longer exists, a seccomp filter that refuses opening files for writing (Linux x86-64, arm64)
and Landlock where the kernel has it; what that does not stop is said there. The child runs torch
single-threaded: an OpenMP pool does not survive ``fork``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitexport.security import isolate
from vitexport.security.torchscript_policy import check_archive

LOAD_SECONDS = 120.0
RUN_SECONDS = 600.0


def _handler(path: str) -> Any:
    """The child's request handler: load once, then give the state dict or run inputs."""
    state: dict[str, Any] = {}

    def handle(header: dict[str, Any], arrays: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        import warnings

        import torch

        op = header.get("op")
        if op == "load":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                state["module"] = torch.jit.load(path, map_location="cpu").eval()
            return {}, {}
        module = state["module"]
        if op == "state_dict":
            return {}, {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
        if op == "run":
            with torch.no_grad():
                out = module(torch.from_numpy(arrays["x"]))
            return {}, {"y": out.detach().cpu().numpy()}
        raise ValueError(f"unknown request {op!r}")

    return handle


class TorchScriptRunner:
    """A checked TorchScript archive, loaded in a child (in-process where `isolate.enabled` is false)."""

    def __init__(self, path: str | os.PathLike[str], memory_bytes: int) -> None:
        self.path = str(path)
        self.metadata = check_archive(self.path)  # refuses before torch.jit.load sees the file (positive match)
        self.memory_bytes = memory_bytes + 3 * Path(self.path).stat().st_size
        self.what = f"TorchScript archive {self.path!r}"
        self.handle = _handler(os.path.abspath(self.path))  # the confined child's working directory is gone
        self.worker = isolate.Worker(self.handle, self.what, self.memory_bytes, confined=True) \
            if isolate.enabled() else None
        self._call("load", {}, LOAD_SECONDS)

    def _call(self, op: str, arrays: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.worker is None:
            return self.handle({"op": op}, arrays)[1]
        return self.worker.request({"op": op}, arrays, timeout_s=timeout_s)[1]

    def state_dict(self) -> dict[str, Any]:
        """The archive's parameters and buffers as numpy arrays."""
        return self._call("state_dict", {}, LOAD_SECONDS)

    def run(self, x: Any) -> Any:
        """The module's output for one (N, C, H, W) float32 batch."""
        return self._call("run", {"x": x}, RUN_SECONDS)["y"]

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close(kill=True)
            self.worker = None


__all__ = ["TorchScriptRunner"]
