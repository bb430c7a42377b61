"""Inference engines: one small interface in front of every runtime that runs an exported model.

An `Engine` has a ``name``, says whether it can run here (``available() -> (usable, reason)``),
``load``s a model file and ``run``s one input batch. `verify`, `Predictor` and `bench` hold
engines, not runtime-specific sessions, so adding a runtime is adding a module here (a
subclass of `Engine`) and a line in `ENGINES`; none of them grows a branch per runtime.

Engines import no torch; this module imports no runtime either (engines are looked up lazily), and holds
only the registry: the `Engine` interface is in `base` (``vitexport.engines.Engine`` resolves to it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vitexport._util.errors import EngineError, EngineUnavailable, EnvironmentProblem
from vitexport._util.lazy import lazy_attributes
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB

if TYPE_CHECKING:
    from vitexport.engines.base import Engine

# the Engine base class is resolved on first use: the CLI reads this registry's names at startup
__getattr__, __dir__ = lazy_attributes(__name__, {"Engine": "vitexport.engines.base"})

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


def graph_budget(path: str, max_memory_gb: float | None) -> Any:
    """The run-time memory check of the ONNX file at ``path`` (`vitexport.onnx.budget.GraphBudget`), its native
    size checked now: a graph over the limit there, or whose shapes cannot be inferred, is refused before any
    runtime parses the file. The metadata that gives the native size is checked first (`CheckpointError` naming
    the bad field, as every reader of it does): its values are the file's, not ours."""
    from vitexport.onnx.budget import GraphBudget
    from vitexport.onnx.metadata import check_metadata
    from vitexport.onnx.spec import decode_metadata

    budget = GraphBudget.from_path(path, max_memory_gb)
    metadata = check_metadata(decode_metadata(budget.model.metadata_props), repr(str(path)))
    native = budget.native_shape(metadata)
    if native is not None:
        budget.check(native)
    return budget


def load_engines(path: str, request: str, *, debug: bool = False, serving_only: bool = False,
                 max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
                 **options: Any) -> tuple[list[tuple[Engine, list[str]]], list[str]]:
    """Loaded engines for a provider request, each with its notes; and, for ``all``, those skipped and why.

    With ``all`` an engine that cannot run here or cannot load this model is skipped with the reason;
    a named engine raises instead (`EngineUnavailable`: exit 2, `EngineError`: exit 1).
    ``serving_only`` leaves checking engines (`Engine.serving` false) out of ``all``.
    ``max_memory_gb`` bounds every run's tensors (`graph_budget`: checked at the native size first, then for
    each input shape before it runs; `LimitError`, or `CheckpointError` for a graph whose shapes cannot be
    inferred).
    """
    budget = graph_budget(path, max_memory_gb)
    loaded: list[tuple[Engine, list[str]]] = []
    skipped: list[str] = []
    for name, notes in resolve_request(request, debug=debug):
        if request == "all" and serving_only and not engine_class(name).serving:
            continue
        try:
            engine = create_engine(name, debug=debug, **options)
            engine.budget = budget
            loaded.append((engine.load(path), notes))
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
    "graph_budget",
    "load_engines",
    "resolve_request",
]
