"""Where ONNX Runtime really runs each node of an exported ViT, and where it copies data between devices.

    python -m scripts.ort_placement [--provider cuda] [--json OUT.json] MODEL.onnx ...

For each model: one profiled run on the provider (which provider ran every node, with the
input types and shapes ONNX Runtime recorded, so a CPU node can be told apart as shape
arithmetic or real work), and the graph ONNX Runtime actually executes (saved through
``SessionOptions.optimized_model_filepath``, which holds the MemcpyFromHost/MemcpyToHost
nodes it inserted) to tell a copy at the graph's input or output from one inside the graph.

Needs numpy, onnx and onnxruntime (no torch, no vitexport internals). Used by
scripts/gpu_check.py and tests/e2e/test_cuda.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from typing import Any

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
MEMCPY_OPS = ("MemcpyFromHost", "MemcpyToHost")
PROFILE_SUFFIXES = ("_kernel_time", "_fence_before", "_fence_after")


def classify_memcpy(model: Any) -> dict[str, Any]:
    """Memcpy nodes of an executed graph (onnx.ModelProto): how many, and which sit inside the graph.

    A copy is "at the graph's input/output" when it reads a graph input or writes a graph
    output; any other copy moves an intermediate tensor between devices.
    """
    graph = model.graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    at_io, inside = [], []
    for node in graph.node:
        if node.op_type not in MEMCPY_OPS:
            continue
        src = node.input[0] if node.input else ""
        site = {
            "op": node.op_type,
            "tensor": src,
            "from": "graph input" if src in inputs else getattr(producer.get(src), "op_type", "initializer"),
            "to": sorted({op for out in node.output for op in consumers.get(out, [])}
                         | ({"graph output"} if any(o in outputs for o in node.output) else set())),
        }
        (at_io if src in inputs or any(o in outputs for o in node.output) else inside).append(site)
    return {"memcpy_nodes": len(at_io) + len(inside), "memcpy_at_io": len(at_io), "memcpy_inside": inside,
            "memcpy_at_io_sites": at_io}


def nodes_from_profile(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """node name -> {provider, op, inputs}: one entry per node that ran, from ONNX Runtime's profile events."""
    nodes: dict[str, dict[str, Any]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "provider" not in args:
            continue
        name = event["name"]
        for suffix in PROFILE_SUFFIXES:
            name = name.removesuffix(suffix)
        entry = nodes.setdefault(name, {"provider": args["provider"], "op": args.get("op_name", "")})
        if "input_type_shape" in args:
            entry["inputs"] = args["input_type_shape"]
    return nodes


def _is_shape_work(node: dict[str, Any]) -> bool:
    """Integer-only inputs (shape arithmetic) rather than activations."""
    types = [t for item in node.get("inputs") or [] for t in item]
    return bool(types) and all(t in ("int64", "int32", "bool") for t in types)


def summarize_nodes(nodes: dict[str, dict[str, Any]], provider: str) -> dict[str, Any]:
    """Counts per provider and the nodes a GPU session left on the CPU (Memcpy nodes counted apart)."""
    per_provider = Counter(n["provider"] for n in nodes.values())
    cpu = {name: n for name, n in nodes.items()
           if n["provider"] == PROVIDERS["cpu"] and n["op"] not in MEMCPY_OPS}
    if provider == "cpu":
        cpu = {}
    return {
        "placement": dict(sorted(per_provider.items())),
        "cpu_nodes": len(cpu),
        "cpu_ops": dict(sorted(Counter(n["op"] for n in cpu.values()).items())),
        "cpu_shape_only": sum(1 for n in cpu.values() if _is_shape_work(n)),
        "cpu_node_detail": [{"name": name, "op": n["op"], "inputs": n.get("inputs")}
                            for name, n in sorted(cpu.items())],
    }


def _example_input(session: Any, model: Any) -> dict[str, Any]:
    """A feed at a size that is not a multiple of the patch and not square (so padding and resampling run)."""
    import numpy as np

    meta = {p.key: p.value for p in model.metadata_props}
    patch = json.loads(meta.get("vitexport.patch_size", "[16, 16]"))
    inp = session.get_inputs()[0]
    channels = inp.shape[1] if isinstance(inp.shape[1], int) else 3
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else 2
    height, width = (inp.shape[2], inp.shape[3]) if isinstance(inp.shape[2], int) else (
        patch[0] * 5 + 3, patch[1] * 3 + 1)
    dtype = np.float16 if "float16" in inp.type else np.float32
    x = np.random.default_rng(0).standard_normal((batch, channels, height, width)).astype(dtype)
    return {inp.name: x}


def placement(path: str, provider: str = "cuda") -> dict[str, Any]:
    """Profile one run of ``path`` on ``provider`` and read the graph ONNX Runtime executes."""
    import onnx
    import onnxruntime as ort

    chain = [PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider != "cpu" else [])
    if provider != "cpu" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* packages, as vitexport's runtime does
    model = onnx.load(path, load_external_data=False)
    with tempfile.TemporaryDirectory() as folder:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(folder, "profile")
        opts.optimized_model_filepath = os.path.join(folder, "executed.onnx")
        session = ort.InferenceSession(path, sess_options=opts, providers=chain)
        used = session.get_providers()
        if PROVIDERS[provider] not in used:
            raise RuntimeError(f"{PROVIDERS[provider]} could not be initialised (ONNX Runtime fell back to {used})")
        session.run(None, _example_input(session, model))
        with open(session.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
        executed = onnx.load(opts.optimized_model_filepath, load_external_data=False)
    result = {"model": path, "provider": provider, "session_providers": used}
    result.update(summarize_nodes(nodes_from_profile(events), provider))
    result.update(classify_memcpy(executed))
    result["target_met"] = result["cpu_nodes"] == 0 and not result["memcpy_inside"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cuda")
    parser.add_argument("--json", dest="json_path", help="write all results as one JSON object")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for path in args.models:
        try:
            results[path] = placement(path, args.provider)
        except Exception as exc:  # one model's failure is recorded, the others still run
            results[path] = {"model": path, "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:600]}
        r = results[path]
        print(f"{os.path.basename(path)}: " + (r["error"] if "error" in r else
              f"{r['placement']} cpu_nodes={r['cpu_nodes']} (shape-only {r['cpu_shape_only']}) "
              f"memcpy={r['memcpy_nodes']} inside={len(r['memcpy_inside'])}"), flush=True)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
