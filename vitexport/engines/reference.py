"""ONNX's own reference evaluator (`onnx.reference.ReferenceEvaluator`): the specification's semantics,
run in numpy. Imports numpy and onnx, never torch.

It is an oracle, not a server: slow (ViT-S/16 at 224x224 takes seconds per image), so verify gives
it a reduced default sweep (`Engine.reduced_sweep`) and `bench --provider all` leaves it out.
It runs standard ONNX ops only: exports with ONNX Runtime's contrib ops (``--attention mha``,
``--optimize``, ``quantize``) cannot load on it.

The evaluator's own ``run`` keeps every intermediate result until the end of the run (all blocks'
activations at once: ~4 GB for ViT-S/16 at 4k tokens); `run` here executes the same nodes but drops
each result after its last reader (a subgraph's reads of the outer scope count), so memory follows one
block, as on the other runtimes (docs/numerics.md).
"""

from __future__ import annotations

import threading
from typing import Any

from vitexport._util.errors import EngineError, EnvironmentProblem, one_line
from vitexport.engines.base import Engine

SLOW = "the ONNX reference evaluator runs every op in numpy (seconds per image for ViT-S/16)"


class ReferenceEngine(Engine):
    """`onnx.reference.ReferenceEvaluator` on the CPU; `run` is serialised with a lock (the evaluator keeps
    per-run state)."""

    name = "reference"
    serving = False
    reduced_sweep = SLOW

    def __init__(self, *, threads: int | None = None, spin: bool = True, debug: bool = False) -> None:
        if threads is not None:
            raise EnvironmentProblem("the ONNX reference evaluator has no thread setting (it runs in numpy); "
                                     "leave threads unset")
        self.path = ""
        self.evaluator: Any = None
        self._release: list[list[str]] | None = None
        self._input = ""
        self._lock = threading.Lock()

    def available(self) -> tuple[bool, str]:
        try:
            from onnx.reference import ReferenceEvaluator  # noqa: F401
        except ImportError as exc:  # pragma: no cover - onnx is a dependency of the package
            return False, f"onnx.reference is not importable: {one_line(exc)}"
        return True, ""

    def load(self, path: str) -> ReferenceEngine:
        from onnx import TensorProto
        from onnx.reference import ReferenceEvaluator

        from vitexport.onnx.graph import load_onnx
        from vitexport.onnx.spec import decode_metadata

        self.path = str(path)
        proto = load_onnx(self.path, load_external_data=True)  # external data: only from the model's folder
        contrib = sorted({f"{n.domain}.{n.op_type}" for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
        if contrib:
            raise EngineError(f"the ONNX reference evaluator runs standard ONNX ops only; {self.path!r} holds "
                              f"{', '.join(contrib)} (an ONNX Runtime export: --attention mha, --optimize, quantize)")
        try:
            self.evaluator = ReferenceEvaluator(proto)
        except Exception as exc:
            raise EngineError(f"the ONNX reference evaluator could not load {self.path!r}: {one_line(exc)}") from exc
        self._release = _release_plan(self.evaluator)
        self._metadata = decode_metadata({p.key: p.value for p in proto.metadata_props})
        graph_input = proto.graph.input[0]
        self._input = graph_input.name
        fp16 = graph_input.type.tensor_type.elem_type == TensorProto.FLOAT16
        self._input_dtype = "float16" if fp16 else "float32"
        return self

    @property
    def devices(self) -> list[str]:
        return ["ONNX reference evaluator (numpy)"]

    @property
    def version(self) -> str:
        import onnx

        return f"onnx {onnx.__version__}"

    def run(self, x: Any) -> Any:
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float16 if self._input_dtype == "float16" else np.float32)
        with self._lock:
            if self._release is None:
                out = self.evaluator.run(None, {self._input: x})[0]
            else:
                out = _run_releasing(self.evaluator, self._release, {self._input: x})[0]
        return np.asarray(out).astype(np.float32, copy=False)


def _names_read(graph: Any) -> set[str]:
    """Every value name a graph's nodes read, their subgraphs' included (a superset of its outer-scope reads)."""
    from onnx import AttributeProto

    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                names |= _names_read(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    names |= _names_read(g)
    return names


def _release_plan(evaluator: Any) -> list[list[str]] | None:
    """Per top-level node, the results no later node reads; None when the evaluator's internals differ from
    what `_run_releasing` knows (then the evaluator's own ``run`` is used)."""
    nodes = getattr(evaluator, "rt_nodes_", None)
    if nodes is None or not hasattr(evaluator, "rt_inits_") or not all(
            hasattr(n, "onnx_node") and hasattr(n, "need_context") for n in nodes):
        return None
    last: dict[str, int] = {}
    for k, node in enumerate(nodes):
        proto = node.onnx_node
        reads = set(proto.input) | set().union(*(_names_read(a.g) for a in proto.attribute if a.HasField("g")))
        for name in reads:
            last[name] = k
        for name in proto.output:  # never read: released at once
            last.setdefault(name, k)
    keep = set(evaluator.output_names) | set(evaluator.input_names) | set(evaluator.rt_inits_) | {""}
    plan: list[list[str]] = [[] for _ in nodes]
    for name, k in last.items():
        if name not in keep:
            plan[k].append(name)
    return plan


def _run_releasing(evaluator: Any, release: list[list[str]], feeds: dict[str, Any]) -> list[Any]:
    """``evaluator.run(None, feeds)`` without shape-annotation checks, dropping each result after its last
    reader (``release``, from `_release_plan`)."""
    results: dict[str, Any] = {"": None, **evaluator.rt_inits_, **feeds}
    for node, done in zip(evaluator.rt_nodes_, release, strict=True):
        inputs = [results[name] for name in node.input]
        outputs = node.run(*inputs, context=results) if node.need_context() else node.run(*inputs)
        results.update(zip(node.output, outputs, strict=False))
        for name in done:
            results.pop(name, None)
    return [results[name] for name in evaluator.output_names]


__all__ = ["ReferenceEngine"]
