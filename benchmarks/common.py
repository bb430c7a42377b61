"""What the benchmark scripts share: the ONNX Runtime session they time."""

from __future__ import annotations

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
