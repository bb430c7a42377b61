"""Latency and throughput of an exported model with ONNX Runtime, optionally against PyTorch.

With ``compare_torch`` the PyTorch model (rebuilt from the artifact's config and weights)
runs interleaved with ONNX Runtime in the same loop, so both see the same machine state.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vitexport.errors import ServingError
from vitexport.runtime import Predictor


@dataclass
class BenchReport:
    """Every case of one `bench` run, with the providers that really ran."""

    model: str
    providers: list[str]
    warmup: int
    iters: int
    threads: int | None
    cases: list[BenchCase] = field(default_factory=list)
    provider_note: str = ""  # why ``auto`` runs on the CPU, as `Predictor.provider_note`

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchCase:
    """Timings of one (size, batch): ONNX Runtime, and PyTorch when compared."""

    height: int
    width: int
    batch: int
    runtime_median_ms: float
    runtime_p90_ms: float
    runtime_images_per_s: float
    speedup_vs_torch: float | None = None  # torch median / ORT median
    torch_median_ms: float | None = None
    torch_p90_ms: float | None = None
    torch_images_per_s: float | None = None


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def default_bench_sizes(metadata: dict[str, Any]) -> list[tuple[int, int]]:
    """Sizes to time when none are given: a static export's one size; else native and two odd sizes
    (neither square nor multiples of the patch). Reads only the model's metadata."""
    if metadata.get("static_size"):
        h, w = metadata["static_size"]
        return [(int(h), int(w))]
    img = (metadata.get("config") or {}).get("img_size")
    if img is None:
        raise ServingError("the model has no vitexport metadata to derive sizes from; pass --sizes")
    h, w = (img, img) if isinstance(img, int) else (int(img[0]), int(img[1]))
    ph = int((metadata.get("patch_size") or [16])[0])
    return [(h, w), (h + ph // 2 + 1, 2 * w - 3), (max(1, h // 2) + 1, w + 7)]


def _time_case(predictor: Predictor, x: np.ndarray, warmup: int, iters: int, torch_model: Any) -> BenchCase:
    """``warmup + iters`` rounds of ONNX Runtime (then PyTorch, interleaved, when given); medians and p90."""
    runs: list[float] = []
    truns: list[float] = []
    if torch_model is not None:
        import torch

        tx = torch.from_numpy(x)
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        predictor.run_batch(x)
        t1 = time.perf_counter()
        if i >= warmup:
            runs.append((t1 - t0) * 1e3)
        if torch_model is not None:
            with torch.inference_mode():
                t2 = time.perf_counter()
                torch_model(tx)
                t3 = time.perf_counter()
            if i >= warmup:
                truns.append((t3 - t2) * 1e3)
    b, (h, w) = x.shape[0], x.shape[2:]
    med = statistics.median(runs)
    case = BenchCase(h, w, b, med, _p90(runs), b / med * 1e3)
    if truns:
        tmed = statistics.median(truns)
        case.torch_median_ms, case.torch_p90_ms = tmed, _p90(truns)
        case.torch_images_per_s = b / tmed * 1e3
        case.speedup_vs_torch = tmed / med
    return case


def bench(
    model_path: str,
    sizes: list[tuple[int, int]] | None = None,
    batch_sizes: tuple[int, ...] = (1, 8),
    provider: str = "auto",
    warmup: int = 3,
    iters: int = 20,
    compare_torch: bool = False,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Time ``iters`` runs per (size, batch) after ``warmup`` runs; medians and p90 in milliseconds.

    ``sizes`` defaults to `default_bench_sizes` of the model's metadata.
    """
    if compare_torch:  # before any work: the base install has no torch
        from vitexport.extras import require_extra

        require_extra("export", "`vitexport bench --compare-torch`")
    # Interleaved with PyTorch, ORT's spinning worker threads would steal the cores from the torch run that
    # follows (measured: torch 30% slower); without the comparison ORT keeps its default spinning.
    predictor = Predictor(model_path, provider=provider, threads=threads, max_tokens=10**9, spin=not compare_torch)
    report = BenchReport(model_path, predictor.providers, warmup, iters, threads,
                         provider_note=predictor.provider_note)
    torch_model = None
    if compare_torch:
        import torch

        from vitexport.verify import reference_from_onnx

        if threads:
            torch.set_num_threads(threads)
        torch_model = reference_from_onnx(model_path, predictor.metadata)
    rng = np.random.default_rng(0)
    for h, w in sizes if sizes is not None else default_bench_sizes(predictor.metadata):
        for b in batch_sizes:
            x = rng.standard_normal((b, predictor.channels, h, w)).astype(np.float32)
            report.cases.append(_time_case(predictor, x, warmup, iters, torch_model))
            if progress is not None:
                progress(f"{h}x{w} batch {b} done")
    return report
