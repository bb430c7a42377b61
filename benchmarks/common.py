"""What the benchmark scripts share: the ONNX Runtime session they time, interleaved timing with parity, outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from vitexport.engines.ort import create_session, session_options


def cpu_session(path: str, profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU session whose idle threads do not spin (engines run interleaved); profiling when a prefix is given."""
    if profile_prefix is None:
        return create_session(path, "cpu", spin=False)[0]
    opts = session_options(profile_prefix=profile_prefix, spin=False)
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def interleave(runners: dict, warmup: int, iters: int, gap_s: float = 0.0) -> dict[str, list[float]]:
    """``warmup + iters`` rounds; each round runs every runner once, the order rotating by one every round.

    Before every run the process sleeps ``gap_s`` (not timed), so a runtime whose idle threads spin for a
    while after a run (ONNX Runtime's default) does not steal the cores from the runner that follows.
    Returns the timed runs in milliseconds per runner.
    """
    import time

    times: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    for i in range(warmup + iters):
        order = order[1:] + order[:1]
        for key in order:
            if gap_s:
                time.sleep(gap_s)
            t0 = time.perf_counter()
            runners[key]()
            if i >= warmup:
                times[key].append((time.perf_counter() - t0) * 1e3)
    return times


def time_case(runners: dict[str, Any], x: np.ndarray, warmup: int, iters: int, gap_s: float,
              max_case_s: float = 0.0, ref: str = "eager") -> dict[str, Any]:
    """Parity of every engine against ``ref`` (or the first engine; this run is also every engine's first run at
    this shape), then the interleaved medians. With ``max_case_s``, slow cases get fewer timed rounds (at least
    3): as many as fit in that time, judged by the parity run."""
    import statistics
    import time

    from vitexport.verify.parity import TOLERANCES, compare

    outputs, first_s = {}, 0.0
    for k, fn in runners.items():
        t0 = time.perf_counter()
        outputs[k] = fn(x)
        first_s += time.perf_counter() - t0
    if max_case_s:
        iters = min(iters, max(3, int(max_case_s / max(first_s, 1e-9))))
    expected = outputs[ref if ref in outputs else next(iter(outputs))]
    atol, rtol = TOLERANCES["float32"]
    result: dict[str, Any] = {}
    for key, out in outputs.items():
        comp = compare(out, expected, atol, rtol, top1=True)
        result[key] = {"max_abs": comp.max_abs, "ok": comp.within_tolerance}
    times = interleave({k: (lambda fn=fn: fn(x)) for k, fn in runners.items()}, warmup, iters, gap_s)
    for key, runs in times.items():
        result[key].update(median_ms=statistics.median(runs), runs_ms=runs)
    return result


def machine_line() -> str:
    """Architecture, cores, torch/onnxruntime/openvino versions and torch's thread count."""
    import os
    import platform

    import torch

    try:
        import openvino

        ov = f", openvino {openvino.get_version().split('-')[0]}"
    except ImportError:
        ov = ""
    return (f"{platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__}{ov}")


def write_results(out_dir: str, stem: str, report: dict, lines: list[str]) -> None:
    """``<stem>.json`` (the report) and ``<stem>.md`` (the lines) into ``out_dir``; the lines are printed too."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def base_parser(doc: str, quick: str):
    """An argument parser with the options every benchmark script shares: --quick (what it does) and --out-dir."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    return parser


def start_report(args) -> dict[str, Any]:
    """A report's opening: the machine, the arguments, the load average now, and the fp32 peak measured now
    (with --quick, a short measurement at one size)."""
    from benchmarks.peak import load_average, measure_peak

    report: dict[str, Any] = {"machine": machine_line(), "args": vars(args), "load_start": load_average() or 0.0}
    report["peak"] = measure_peak((1024,), 0.3, mlas_n=1024) if args.quick else measure_peak()
    return report


def run_footer(report: dict) -> str:
    """The machine, the load average before and after, and the run time of a benchmark report."""
    busy = (" (over ~1.3 on 2 cores before the run: something else ran in the last minute, perhaps the previous "
            "benchmark)") if report["load_start"] > 1.3 else ""
    return (f"Machine: {report['machine']}; load average {report['load_start']:.2f} before, "
            f"{report['load_end']:.2f} after (the run's own threads count in it){busy}. "
            f"Run time {report['elapsed_s']:.0f} s.")
