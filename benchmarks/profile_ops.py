"""Where the time goes: ONNX Runtime's profiler and OpenVINO's performance counters, time per operator type.

    python -m benchmarks.profile_ops [--quick] [--model vit_base_patch16_224] [--size 224x224] [--batch 1]
                                     [--runs 5] [--out-dir benchmarks/results]

Both engines load the default export (ORT: the library's session with profiling on; OpenVINO: f32 with
``PERF_COUNT``). After one warm-up, ``runs`` runs are profiled; each operator type's kernel time is summed
and shown as a share of the engine's total kernel time. "GEMM GFLOP/s" is the model's analytic FLOP count
(`perf.vit_flops`, almost all of it matrix products) divided by the time in matrix-product kernels: how
fast the GEMMs themselves run, to set against the measured peak (`peak.py`, measured here too).
Writes ``profile.json`` and ``profile.md`` into ``--out-dir``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from typing import Any

import numpy as np
import torch

from benchmarks.common import base_parser, cpu_session, machine_line, write_results
from benchmarks.peak import load_average, measure_peak
from benchmarks.perf import vit_flops
from vitexport.export.onnx_export import export_onnx
from vitexport.model.vit import create_model

GEMM_TYPES = {"MatMul", "Gemm", "FusedMatMul", "MatMulNBits", "FullyConnected", "MultiHeadAttention", "Attention",
              "Convolution", "Conv", "MatMul_Add"}


def ort_profile(path: str, x: np.ndarray, runs: int, folder: str) -> Counter:
    """Microseconds per operator type over ``runs`` profiled runs of ONNX Runtime's CPU session."""
    sess = cpu_session(path, os.path.join(folder, "ort"))
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)
    for _ in range(runs):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    per_type: Counter = Counter()
    kernel = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    for e in kernel[len(kernel) // (runs + 1):]:  # drop the warm-up run's events
        per_type[e["args"].get("op_name", "?")] += e["dur"]
    return per_type


def openvino_profile(path: str, x: np.ndarray, runs: int) -> Counter:
    """Microseconds per layer type over ``runs`` runs with OpenVINO's performance counters."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer({0: x})
    per_type: Counter = Counter()
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            per_type[info.node_type] += info.real_time.total_seconds() * 1e6
    return per_type


def table(name: str, per_type: Counter, runs: int, flop: float, peak: float) -> list[str]:
    total = sum(per_type.values())
    gemm = sum(v for k, v in per_type.items() if k in GEMM_TYPES)
    lines = [f"### {name}: {total / runs / 1e3:.1f} ms of kernel time per run", "",
             "| operator type | ms per run | share |", "| --- | ---: | ---: |"]
    for op, us in per_type.most_common(12):
        lines.append(f"| {op} | {us / runs / 1e3:.2f} | {us / total:.0%} |")
    if gemm:
        rate = flop / (gemm / runs / 1e6) / 1e9
        lines += ["", f"Matrix-product kernels ({', '.join(sorted(k for k in per_type if k in GEMM_TYPES))}): "
                  f"{gemm / total:.0%} of the time, {rate:.0f} GFLOP/s on the model's FLOPs = {100 * rate / peak:.0f}% "
                  f"of the measured peak; the other {1 - gemm / total:.0%} is everything else."]
    return [*lines, ""]


def main() -> None:
    parser = base_parser(__doc__, "ViT-S/16 at 97x513, 1 run: a smoke test")
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--size", default="224x224")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.model, args.size, args.runs = "vit_small_patch16_224", "97x513", 1
    h, w = (int(v) for v in args.size.split("x"))
    load_start = load_average() or 0.0
    peak = measure_peak((1024,), 0.3, mlas_n=None) if args.quick else measure_peak(mlas_n=None)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = np.random.default_rng(0).standard_normal((args.batch, 3, h, w)).astype(np.float32)
    flop = vit_flops(model.config, h, w, args.batch)
    report: dict[str, Any] = {"machine": machine_line(), "args": vars(args), "peak_gflops": peak["measured_gflops"],
                              "flop": flop}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        export_onnx(model, path)
        report["ort_us"] = dict(ort_profile(path, x, args.runs, folder))
        try:
            report["openvino_us"] = dict(openvino_profile(path, x, args.runs))
        except ImportError:
            report["openvino_us"] = {}
    report.update(load_start=load_start, load_end=load_average() or 0.0)
    lines = [f"## Profiles (benchmarks/profile_ops.py): {args.model}, {args.size}, batch {args.batch}", ""]
    lines += table("ONNX Runtime (CPU, default export)", Counter(report["ort_us"]), args.runs, flop,
                   peak["measured_gflops"])
    if report["openvino_us"]:
        lines += table("OpenVINO (CPU, f32)", Counter(report["openvino_us"]), args.runs, flop,
                       peak["measured_gflops"])
    lines += [f"{args.runs} profiled runs after 1 warm-up; measured peak {peak['measured_gflops']:.1f} GFLOP/s. "
              f"Machine: {report['machine']}; load average {load_start:.2f} before, {report['load_end']:.2f} after.",
              ""]
    write_results(args.out_dir, "profile", report, lines)


if __name__ == "__main__":
    main()
