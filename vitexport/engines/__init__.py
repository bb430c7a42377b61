"""Inference engines: one small interface in front of every runtime that runs an exported model.

An `Engine` has a ``name``, says whether it can run here (``available() -> (usable, reason)``),
``load``s a model file and ``run``s one input batch. `verify`, `Predictor` and `bench` hold
engines, not runtime-specific sessions, so adding a runtime is adding a module here (a
subclass of `Engine`) and a line in `ENGINES`; none of them grows a branch per runtime.

Engines import no torch; this module imports no runtime either (engines are looked up lazily).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any

from vitexport.errors import EnvironmentProblem

# engine name -> (module, class, keyword arguments). The ONNX Runtime providers come first.
ENGINES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cpu": ("vitexport.engines.ort", "OrtEngine", {"provider": "cpu"}),
    "cuda": ("vitexport.engines.ort", "OrtEngine", {"provider": "cuda"}),
    "tensorrt": ("vitexport.engines.ort", "OrtEngine", {"provider": "tensorrt"}),
}


class Engine(ABC):
    """One runtime on one device. Create, check `available`, `load` a model, then `run` it."""

    name: str = ""

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(usable, reason): can this engine really run here? ``reason`` is empty when usable."""

    @abstractmethod
    def load(self, path: str) -> Engine:
        """Load the model file; returns the engine. Raises `EngineUnavailable` (exit 2) when it cannot run
        here, `EngineError` when it cannot load this model."""

    @abstractmethod
    def run(self, x: Any) -> Any:
        """Run one (N, C, H, W) float batch through the loaded model; its first output as float32 numpy."""

    @property
    def metadata(self) -> dict[str, Any]:
        """The loaded model's vitexport metadata (decoded), empty when it has none."""
        return {}

    @property
    def input_dtype(self) -> str:
        """The dtype the model's input expects ("float32" or "float16")."""
        return "float32"

    @property
    def devices(self) -> list[str]:
        """What really runs the model (for ONNX Runtime: the session's providers)."""
        return [self.name]

    def diagnose(self, x: Any) -> None:  # noqa: B027 - optional hook, a no-op for most engines
        """Optional: record how the model runs on ``x`` (e.g. node placement) in `describe`'s warnings."""

    def describe(self) -> dict[str, Any]:
        """The report entry of this engine (verify's ``sessions``)."""
        return {"name": self.name, "providers": self.devices, "warnings": []}


def engine_names() -> list[str]:
    return list(ENGINES)


def create_engine(name: str, **options: Any) -> Engine:
    """A new, unloaded engine by name (``cpu``, ``cuda``, ``tensorrt``), with engine-specific options."""
    if name not in ENGINES:
        raise EnvironmentProblem(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    module, cls, defaults = ENGINES[name]
    factory = getattr(importlib.import_module(module), cls)
    return factory(**{**defaults, **options})


__all__ = ["ENGINES", "Engine", "create_engine", "engine_names"]
