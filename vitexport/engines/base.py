"""The interface every engine implements (see `vitexport.engines` for the registry)."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Any


class Engine(ABC):
    """One runtime on one device. Create, check `available`, `load` a model, then `run` it.

    Engines take the keyword options ``threads`` (intra-op threads; None: the runtime's default),
    ``spin`` (whether idle worker threads may busy-wait between runs; bench turns it off while it
    interleaves engines) and ``debug``, plus their own.

    ``budget`` (a `vitexport.onnx.budget.GraphBudget`, set by `vitexport.engines.load_engines` before `load`)
    bounds the run-time memory of the graph: every subclass's `run` is wrapped so that an input whose
    inferred tensors would pass ``--max-memory-gb`` is refused before the runtime sees it, the same check
    for every runtime (and for runs an engine makes while loading). None: no check (an engine loaded by hand).
    """

    budget: Any = None
    path: str = ""  # the file `load` read

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_guarded", False):
            @functools.wraps(run)
            def guarded(self: Engine, x: Any) -> Any:
                if self.budget is not None:
                    self.budget.check(tuple(getattr(x, "shape", ())))
                return run(self, x)

            guarded._guarded = True  # type: ignore[attr-defined]
            cls.run = guarded  # type: ignore[method-assign]

    name: str = ""
    # False for engines meant for checking, not serving (`bench --provider all` leaves them out)
    serving: bool = True
    # non-empty: verify gives this engine a reduced default sweep, and this is why
    reduced_sweep: str = ""
    # non-empty: what a compiled model's first inference can spoil in this runtime; verify then also runs a fresh
    # compile whose first request is the sweep's smallest size (then the native and the largest), and this is why
    cold_start: str = ""
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

    def fresh(self) -> Engine:
        """A new engine with this one's options, loaded (compiled) anew from the same file: what a process that
        starts now would get (`cold_start`)."""
        import copy

        return copy.copy(self).load(self.path)

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
    def on_cpu(self) -> bool:
        """Whether the model runs on the CPU (what `devices` names first is no GPU provider or device)."""
        first = (self.devices or [self.name])[0].upper()
        return not any(gpu in first for gpu in ("CUDA", "TENSORRT", "GPU", "ROCM", "DML"))

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


__all__ = ["Engine"]
