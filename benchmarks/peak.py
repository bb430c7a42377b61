"""This machine's fp32 peak: measured (best sustained torch.mm sgemm) and, where the CPU can be read, theoretical.

    python -m benchmarks.peak [--quick] [--seconds 2] [--json out.json]

Measured peak: torch.mm (MKL/oneDNN) on square fp32 matrices of 2048, 3072 and 4096, each multiplied
repeatedly for ``seconds``; a size's rate is 2 n^3 / the median run time ("sustained"), the peak is the
best size. Every engine's figure in the other scripts is a % of this number, measured in the same run.

Theoretical peak: cores x clock x fp32 FLOP per cycle per core. The clock is lscpu's "CPU max MHz" when
the kernel reports it, else /proc/cpuinfo's "cpu MHz" (in a VM that is the nominal/TSC clock, not the
boost clock, so a measured peak may exceed it). FLOP per cycle come from the vector flags and a small
table of FMA units per core (`FMA_UNITS`), which is an assumption: flags do not say how many FMA ports
a core has. The table and the clock used are written next to the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from typing import Any

import numpy as np

# (vendor, cpu family) -> (FMA units per core, their width in fp32 lanes): public microarchitecture data.
# AMD family 0x19 (Zen 3/Zen 4: two 256-bit FMA pipes; Zen 4 runs AVX-512 on them in two halves),
# 0x1A (Zen 5 server/desktop: two 512-bit FMA pipes), 0x17 (Zen 2 counted: two 256-bit pipes).
FMA_UNITS: dict[tuple[str, int], tuple[int, int]] = {
    ("AuthenticAMD", 0x17): (2, 8),
    ("AuthenticAMD", 0x19): (2, 8),
    ("AuthenticAMD", 0x1A): (2, 16),
}


def _colon_pairs(text: str) -> dict[str, str]:
    """``key: value`` lines (lscpu, /proc/cpuinfo) as a dict; lines without a value are left out."""
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _sustained(fn: Any, seconds: float) -> list[float]:
    """Seconds per call of ``fn`` for ``seconds`` of calls (at least 3)."""
    runs: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(runs) < 3:
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return _colon_pairs(out)


def _cpuinfo() -> dict[str, str]:
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return _colon_pairs(block)


def cpu_facts() -> dict[str, Any]:
    """Model, vendor, family, flags, clock and the cores this process may use (empty fields when unreadable)."""
    info, ls = _cpuinfo(), _lscpu()
    flags = set((info.get("flags") or ls.get("Flags", "")).split())
    threads_per_core = int(ls.get("Thread(s) per core", "1") or 1)
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    max_mhz = ls.get("CPU max MHz")
    if max_mhz:
        mhz, source = float(max_mhz), "lscpu CPU max MHz"
    elif info.get("cpu MHz"):
        mhz, source = float(info["cpu MHz"]), "/proc/cpuinfo cpu MHz (nominal; boost unknown)"
    else:
        mhz, source = 0.0, ""
    family = info.get("cpu family", ls.get("CPU family", ""))
    return {
        "model": info.get("model name", ls.get("Model name", "")),
        "vendor": info.get("vendor_id", ls.get("Vendor ID", "")),
        "family": int(family) if family.isdigit() else None,
        "cores": max(1, logical // max(1, threads_per_core)),
        "logical_cpus": logical,
        "mhz": mhz,
        "clock_source": source,
        "hypervisor": ls.get("Hypervisor vendor", ""),
        "vector": ("avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else
                   "avx" if "avx" in flags else "sse"),
        "fma": "fma" in flags,
        "amx": any(f.startswith("amx") for f in flags),
    }


def fp32_flops_per_cycle(facts: dict[str, Any]) -> tuple[int, str]:
    """fp32 FLOP per cycle per core and how that was decided (table entry or an assumption from the flags)."""
    known = FMA_UNITS.get((facts.get("vendor", ""), facts.get("family")))
    if known and facts.get("fma"):
        units, lanes = known
        return 2 * units * lanes, f"{units} FMA units x {lanes} fp32 lanes (table for this vendor/family)"
    lanes = {"avx512f": 16, "avx2": 8, "avx": 8, "sse": 4}[facts["vector"]]
    if facts.get("fma"):
        return 2 * 2 * lanes, f"assumed 2 FMA units x {lanes} lanes ({facts['vector']})"
    return 2 * lanes, f"assumed 1 add + 1 mul unit x {lanes} lanes (no FMA)"


def theoretical_peak(facts: dict[str, Any]) -> dict[str, Any] | None:
    """cores x clock x FLOP/cycle in GFLOP/s with its parts, or None when the clock cannot be read."""
    if not facts.get("mhz"):
        return None
    per_cycle, how = fp32_flops_per_cycle(facts)
    gflops = facts["cores"] * facts["mhz"] / 1e3 * per_cycle
    return {"gflops": gflops, "flops_per_cycle": per_cycle, "basis": how, "cores": facts["cores"],
            "ghz": facts["mhz"] / 1e3, "clock_source": facts["clock_source"]}


def sgemm_rate(n: int, seconds: float) -> dict[str, float]:
    """torch.mm of two n x n fp32 matrices run for ``seconds`` (at least 3 runs): median and best GFLOP/s."""
    import torch

    g = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    runs = _sustained(lambda: torch.mm(a, b, out=out), seconds)
    flop = 2.0 * n**3
    return {"n": n, "runs": len(runs), "median_gflops": flop / statistics.median(runs) / 1e9,
            "best_gflops": flop / min(runs) / 1e9}


def mlas_sgemm_rate(n: int, seconds: float) -> float:
    """ONNX Runtime's own MatMul (MLAS) on n x n fp32, median GFLOP/s: a diagnostic, not the peak."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    w = np.random.default_rng(n).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
                              [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(n + 1).standard_normal((n, n)).astype(np.float32)
    sess.run(None, {"x": x})
    runs = _sustained(lambda: sess.run(None, {"x": x}), seconds)
    return 2.0 * n**3 / statistics.median(runs) / 1e9


def measure_peak(sizes: tuple[int, ...] = (2048, 3072, 4096), seconds: float = 2.0,
                 mlas_n: int | None = 2048) -> dict[str, Any]:
    """The measured fp32 peak (best sustained sgemm of torch.mm over ``sizes``), per size, and the CPU facts."""
    import torch

    per_size = [sgemm_rate(n, seconds) for n in sizes]
    best = max(per_size, key=lambda r: r["median_gflops"])
    facts = cpu_facts()
    result = {"measured_gflops": best["median_gflops"], "measured_at_n": best["n"], "per_size": per_size,
              "torch_threads": torch.get_num_threads(), "cpu": facts, "theoretical": theoretical_peak(facts),
              "load_average": load_average()}
    if mlas_n:
        result["ort_mlas_n"], result["ort_mlas_gflops"] = mlas_n, mlas_sgemm_rate(mlas_n, seconds / 2)
    return result


def load_average() -> float | None:
    """The 1-minute load average (above ~1.3 on 2 cores: something else is running)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def describe_peak(peak: dict[str, Any]) -> str:
    """One paragraph for RESULTS.md: measured peak (how), theoretical peak (how) and their ratio."""
    sizes = ", ".join(f"{r['n']}: {r['median_gflops']:.0f}" for r in peak["per_size"])
    text = (f"Measured fp32 peak: {peak['measured_gflops']:.1f} GFLOP/s, the best sustained torch.mm sgemm "
            f"(median per size, GFLOP/s by n: {sizes}; {peak['torch_threads']} threads)")
    if peak.get("ort_mlas_gflops"):
        n = peak["ort_mlas_n"]
        text += f"; ONNX Runtime's own MatMul (MLAS) on {n}x{n}: {peak['ort_mlas_gflops']:.0f} GFLOP/s"
    theo = peak.get("theoretical")
    if theo:
        text += (f". Theoretical: {theo['gflops']:.0f} GFLOP/s = {theo['cores']} cores x {theo['ghz']:.2f} GHz "
                 f"({theo['clock_source']}) x {theo['flops_per_cycle']} FLOP/cycle ({theo['basis']}); "
                 f"measured/theoretical = {peak['measured_gflops'] / theo['gflops']:.0%}")
        if peak["measured_gflops"] > theo["gflops"]:
            text += " (over 100%: the cores run faster than the clock that could be read, e.g. boost)"
    cpu = peak["cpu"]
    text += f". CPU: {cpu['model'] or 'unknown'}, {cpu['vector']}" + (", AMX" if cpu["amx"] else ", no AMX")
    return text + (f", under {cpu['hypervisor']}" if cpu["hypervisor"] else "") + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size, 0.3 s: a smoke test, not a peak")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per matrix size")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    peak = (measure_peak((1024,), 0.3, mlas_n=1024) if args.quick else measure_peak(seconds=args.seconds))
    print(describe_peak(peak))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(peak, f, indent=2)


if __name__ == "__main__":
    main()
