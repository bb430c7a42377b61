"""Focused A/B: ORT on the dynamic export vs a static export of the same size, many interleaved runs.

    python -m benchmarks.dynamic_vs_static [--model vit_base_patch16_224] [--size 224x224] [--batch 1] [--iters 30]

Also profiles both with ONNX Runtime's profiler and prints the op types whose total time differs most,
to show where the dynamic graph spends extra time (if any).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import cpu_session
from vitexport.export.onnx_export import export_onnx
from vitexport.model.vit import create_model


def op_times(path: str, x: np.ndarray, runs: int, folder: str) -> dict[str, float]:
    s = cpu_session(path, os.path.join(folder, "prof"))
    for _ in range(runs):
        s.run(None, {"pixel_values": x})
    with open(s.end_profiling()) as fh:
        events = json.load(fh)
    out: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            out[op] = out.get(op, 0.0) + e["dur"] / 1e3 / runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--size", default="224x224")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    model = create_model(args.model)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, h, w)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        dyn, st = os.path.join(folder, "dyn.onnx"), os.path.join(folder, "static.onnx")
        export_onnx(model, dyn)
        export_onnx(model, st, static_size=(h, w))
        sessions = {"dynamic": cpu_session(dyn), "static": cpu_session(st)}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for i in range(args.iters + 3):
            for name in (list(sessions) if i % 2 else list(sessions)[::-1]):
                t0 = time.perf_counter()
                sessions[name].run(None, {"pixel_values": x})
                if i >= 3:
                    times[name].append((time.perf_counter() - t0) * 1e3)
        med = {k: statistics.median(v) for k, v in times.items()}
        spread = {k: (min(v), max(v)) for k, v in times.items()}
        print(f"{args.model} {h}x{w} batch {args.batch}, {args.iters} interleaved runs each:")
        for k in sessions:
            print(f"  {k:8s} median {med[k]:8.1f} ms  (min {spread[k][0]:.1f}, max {spread[k][1]:.1f})")
        print(f"  dynamic vs static: {(med['dynamic'] / med['static'] - 1) * 100:+.1f}%")
        a, b = op_times(dyn, x, 5, folder), op_times(st, x, 5, folder)
        print("  op type            dynamic ms   static ms")
        for op in sorted(set(a) | set(b), key=lambda o: -abs(a.get(o, 0) - b.get(o, 0)))[:8]:
            print(f"  {op:18s} {a.get(op, 0):10.2f} {b.get(op, 0):11.2f}")


if __name__ == "__main__":
    main()
