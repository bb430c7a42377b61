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

from vitexport._util.errors import EngineError, EngineUnavailable, EnvironmentProblem

# engine name -> (module, class, keyword arguments). The ONNX Runtime providers come first; with
# several engines, verify compares every engine's outputs with the first usable one's.
ENGINES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cuda": ("vitexport.engines.ort", "OrtEngine", {"provider": "cuda"}),
    "tensorrt": ("vitexport.engines.ort", "OrtEngine", {"provider": "tensorrt"}),
    "cpu": ("vitexport.engines.ort", "OrtEngine", {"provider": "cpu"}),
    "openvino": ("vitexport.engines.openvino", "OpenVinoEngine", {}),
    "reference": ("vitexport.engines.reference", "ReferenceEngine", {}),
}
# what a provider request may name: an engine, "auto" (ONNX Runtime's CUDA when usable, else its CPU)
# or "all" (every engine usable here)
PROVIDER_CHOICES: tuple[str, ...] = ("auto", *ENGINES, "all")
DEFAULT_PROVIDER = "auto"  # verify, predict, bench, serve and the Predictor


class Engine(ABC):
    """One runtime on one device. Create, check `available`, `load` a model, then `run` it.

    Engines take the keyword options ``threads`` (intra-op threads; None: the runtime's default),
    ``spin`` (whether idle worker threads may busy-wait between runs; bench turns it off while it
    interleaves engines) and ``debug``, plus their own.
    """

    name: str = ""
    # False for engines meant for checking, not serving (`bench --provider all` leaves them out)
    serving: bool = True
    # non-empty: verify gives this engine a reduced default sweep, and this is why
    reduced_sweep: str = ""
    # what `load` read from the model (engines that ask their runtime each time override the properties)
    _metadata: dict[str, Any] = {}  # noqa: RUF012 - replaced by load, never mutated
    _input_dtype: str = "float32"

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(usable, reason): can this engine really run here? ``reason`` is empty when usable."""

    @abstractmethod
    def load(self, path: str) -> Engine:
        """Load the model file; returns the engine. Raises `EngineUnavailable` (exit 2) when it cannot run
        here, `EngineError` when it cannot load this model."""

    @abstractmethod
    def run(self, x: Any) -> Any:
        """Run one (N, C, H, W) float batch through the loaded model; its first output as float32 numpy.
        Safe to call from several threads at once."""

    @property
    def metadata(self) -> dict[str, Any]:
        """The loaded model's vitexport metadata (decoded), empty when it has none."""
        return self._metadata

    @property
    def input_dtype(self) -> str:
        """The dtype the model's input expects ("float32" or "float16")."""
        return self._input_dtype

    @property
    def input_shape(self) -> list[Any] | None:
        """The graph input's declared shape (names for dynamic axes) where the runtime exposes it, else None."""
        return None

    @property
    def devices(self) -> list[str]:
        """What really runs the model (for ONNX Runtime: the session's providers)."""
        return [self.name]

    @property
    def version(self) -> str:
        """The runtime and its version, e.g. ``onnxruntime-gpu 1.31.1``."""
        return ""

    def known_issues(self, metadata: dict[str, Any]) -> list[str]:
        """Known problems of this runtime (at its installed version) with a model of this ``metadata``."""
        return []

    def diagnose(self, x: Any) -> None:  # noqa: B027 - optional hook, a no-op for most engines
        """Optional: record how the model runs on ``x`` (e.g. node placement) in `describe`'s warnings."""

    def describe(self) -> dict[str, Any]:
        """The report entry of this engine (verify's ``sessions``)."""
        return {"name": self.name, "providers": self.devices, "version": self.version, "notes": [], "warnings": []}


def engine_names() -> list[str]:
    return list(ENGINES)


def engine_class(name: str) -> type[Engine]:
    """The `Engine` subclass behind a name (imports its module, not its runtime)."""
    if name not in ENGINES:
        raise EnvironmentProblem(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    module, cls, _ = ENGINES[name]
    return getattr(importlib.import_module(module), cls)


def create_engine(name: str, **options: Any) -> Engine:
    """A new, unloaded engine by name (a key of `ENGINES`), with engine-specific options."""
    factory = engine_class(name)
    try:
        return factory(**{**ENGINES[name][2], **options})
    except TypeError as exc:  # an option this engine does not take
        raise EnvironmentProblem(f"engine {name!r} does not take these options: {exc}") from exc


def resolve_request(request: str, debug: bool = False) -> list[tuple[str, list[str]]]:
    """Engine names a provider request stands for, each with notes on how it was chosen.

    ``auto`` is ONNX Runtime's CUDA when a session really runs on it, else its CPU (and says why);
    ``all`` is every engine (the caller skips those that cannot run here).
    """
    if request not in PROVIDER_CHOICES:
        raise EnvironmentProblem(f"unknown provider {request!r}; use one of {', '.join(PROVIDER_CHOICES)}")
    if request == "all":
        return [(name, []) for name in ENGINES]
    if request == "auto":
        from vitexport.engines.ort import resolve_auto_provider

        choice = resolve_auto_provider(debug=debug)
        return [(choice.provider, [choice.note] if choice.fell_back else [])]
    return [(request, [])]


def load_engines(path: str, request: str, *, debug: bool = False, serving_only: bool = False,
                 **options: Any) -> tuple[list[tuple[Engine, list[str]]], list[str]]:
    """Loaded engines for a provider request, each with its notes; and, for ``all``, those skipped and why.

    With ``all`` an engine that cannot run here or cannot load this model is skipped with the reason;
    a named engine raises instead (`EngineUnavailable`: exit 2, `EngineError`: exit 1).
    ``serving_only`` leaves checking engines (`Engine.serving` false) out of ``all``.
    """
    loaded: list[tuple[Engine, list[str]]] = []
    skipped: list[str] = []
    for name, notes in resolve_request(request, debug=debug):
        if request == "all" and serving_only and not engine_class(name).serving:
            continue
        try:
            loaded.append((create_engine(name, debug=debug, **options).load(path), notes))
        except (EngineUnavailable, EngineError) as exc:
            if request != "all":
                raise
            skipped.append(f"{name}: {exc}")
    if not loaded:
        raise EngineUnavailable("no engine can run this model here: " + "; ".join(skipped))
    return loaded, skipped


__all__ = [
    "DEFAULT_PROVIDER",
    "ENGINES",
    "PROVIDER_CHOICES",
    "Engine",
    "create_engine",
    "engine_class",
    "engine_names",
    "load_engines",
    "resolve_request",
]
