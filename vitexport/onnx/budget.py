"""Run-time memory of any ONNX graph, bounded before it runs: one check per distinct input shape.

The memory estimate of `vitexport.security.limits` models vitexport's own ViT from the config in the
metadata; a graph can do anything else at run time (``Expand`` of a sum to 1000 x 1000 x 1000, a
``ConstantOfShape`` or ``Tile`` of a computed size, a Constant's attribute that sets a shape) while its
metadata checks out. `GraphBudget` reads the graph itself: before an input of a new shape runs, every
intermediate's shape is inferred with that input's dims (`vitexport.onnx.shapes`: data propagation for
the shape arithmetic), and the input is refused when the tensors alive at once, or the largest one, would
pass ``max_memory_gb`` (`vitexport.security.limits`'s ``--max-memory-gb``), naming the node. A graph whose
shapes cannot be inferred is refused whatever the limit: vitexport's own exports are inferable in every
form (tested). Results are cached per input shape (`CACHE_SIZE` shapes, least recently used dropped).

`vitexport.engines.load_engines` checks the model's native size before a runtime parses the file, and every
engine checks each input's shape before it runs (`vitexport.engines.base.Engine`); the Predictor also checks
each image's size before decoding it, and sizes its batches by the per-image footprint. Torch-free.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

from vitexport._util.errors import CheckpointError, LimitError
from vitexport.onnx.shapes import Footprint, Uninferable, infer
from vitexport.security import onnxwire

CACHE_SIZE = 512


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def native_shape(dims: Any, metadata: dict[str, Any]) -> tuple[int, ...] | None:
    """The input shape a model runs natively: the fixed dims of its [N, C, H, W] input, else its (checked)
    metadata's batch (1), channels and size; None when neither says."""
    if len(dims) != 4:
        return None
    config = metadata.get("config") or {}
    size = metadata.get("static_size") or config.get("img_size")
    if isinstance(size, int):
        size = [size, size]
    fallback = [metadata.get("batch_size") or 1, config.get("in_chans", 3), *(size or [0, 0])]
    found = [d if isinstance(d, int) and d > 0 else f for d, f in zip(dims, fallback, strict=True)]
    return tuple(int(d) for d in found) if all(isinstance(d, int) and d > 0 for d in found) else None


class GraphBudget:
    """The memory check of one ONNX model against ``max_memory_gb`` (None: inferability only)."""

    def __init__(self, model: onnxwire.Model, path: str, max_memory_gb: float | None) -> None:
        self.model, self.path = model, str(path)
        self.max_memory_gb = max_memory_gb
        self.max_bytes = None if max_memory_gb is None else max_memory_gb * 1e9
        self._cache: OrderedDict[tuple[int, ...], Footprint | Exception] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], max_memory_gb: float | None) -> GraphBudget:
        """The budget of the ONNX file at ``path``, its skeleton read by the bounded wire reader."""
        from vitexport.security.sniff import read_onnx_structure

        return cls(read_onnx_structure(path), str(path), max_memory_gb)

    def footprint(self, shape: tuple[int, ...]) -> Footprint:
        """The footprint of one run at ``shape`` (cached); `CheckpointError` when it cannot be inferred."""
        key = tuple(int(d) for d in shape)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
        if found is None:
            try:
                found = infer(self.model, key)[0]
            except Uninferable as exc:
                found = CheckpointError(
                    f"refused to run {self.path!r}: at an input of {_shape_text(key)} its {exc}; vitexport runs only "
                    "graphs whose every intermediate shape it can infer before running them, as its own exports: "
                    "re-export the model with `vitexport onnx`")
            with self._lock:
                self._cache[key] = found
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        if isinstance(found, Exception):
            raise found
        return found

    def over(self, shape: tuple[int, ...]) -> str:
        """Why one run at ``shape`` is over the limit (empty when it is not)."""
        found = self.footprint(shape)
        if self.max_bytes is None or found.peak_bytes <= self.max_bytes:
            return ""
        largest = ""
        if found.largest_bytes > self.max_bytes / 4:
            largest = (", which alone makes" if found.largest_node == found.peak_node else
                       f"; {found.largest_node} alone makes") + f" {found.largest_bytes / 1e9:,.1f} GB"
        return (f"the graph holds {found.peak_bytes / 1e9:,.1f} GB of tensors at once at {found.peak_node}{largest}, "
                f"over the limit of {self.max_memory_gb:g} GB (--max-memory-gb)")

    def check(self, shape: tuple[int, ...]) -> Footprint:
        """Refuse a run at ``shape`` over the limit (`LimitError`) or not inferable (`CheckpointError`)."""
        reason = self.over(shape)
        if reason:
            raise LimitError(f"{self.path!r} at an input of {_shape_text(tuple(shape))}: {reason}; send smaller "
                             "inputs, or raise the limit if you trust this model")
        return self.footprint(shape)

    def per_item(self, shape: tuple[int, ...]) -> int:
        """Peak bytes of one item (batch 1) of ``shape``'s size: what batches of that size are sized by."""
        return self.footprint((1, *tuple(shape)[1:])).peak_bytes

    def native_shape(self, metadata: dict[str, Any]) -> tuple[int, ...] | None:
        """The model's own input shape (`native_shape` of its one graph input); None when it has not one input."""
        graph = self.model.graph
        weights = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in weights]
        return native_shape(inputs[0].dims, metadata) if len(inputs) == 1 else None


__all__ = ["CACHE_SIZE", "GraphBudget", "native_shape"]
