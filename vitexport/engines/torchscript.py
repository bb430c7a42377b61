"""TorchScript archives run by torch on the CPU, for verify (serving engines import no torch).

The archive must be admitted by `vitexport.security.torchscript_policy` (its code exactly what vitexport's
exporter writes for the config in its metadata, with this torch) and is loaded and run in a confined child process
with a memory limit and timeouts (`vitexport.security.torchscript_worker`); this process imports torch
only to report its version (and to regenerate the code it compares with, in a child).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitexport.engines.base import Engine


def _torch_version() -> str:
    import torch

    return torch.__version__


class TorchScriptEngine(Engine):
    """A TorchScript archive run by torch on the CPU (verify only: serving engines import no torch).

    The archive must be admitted by `vitexport.security.torchscript_policy` (positive match) and is loaded and
    run in a confined child process with a memory limit and timeouts (`vitexport.security.torchscript_worker`)."""

    name = "torchscript-cpu"

    def __init__(self, requested: str = "auto", memory_bytes: int = 4 * 1024**3) -> None:
        self.requested = requested
        self.memory_bytes = memory_bytes
        self.runner: Any = None

    def available(self) -> tuple[bool, str]:
        return True, ""

    def load(self, path: str) -> TorchScriptEngine:
        from vitexport.security.torchscript_worker import TorchScriptRunner

        self.runner = TorchScriptRunner(path, self.memory_bytes)
        return self

    @property
    def metadata(self) -> dict[str, Any]:
        return self.runner.metadata

    def state_dict(self) -> dict[str, Any]:
        return self.runner.state_dict()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.runner.run(x)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    @property
    def devices(self) -> list[str]:
        return ["torch (CPU)"]

    def describe(self) -> dict[str, Any]:
        warnings = [] if self.requested in ("auto", "cpu") else [
            f"TorchScript is verified on the CPU; --provider {self.requested} applies to ONNX only"]
        return {"name": self.name, "requested": self.requested, "providers": self.devices,
                "version": f"torch {_torch_version()}", "notes": [], "warnings": warnings}
