"""Latency and throughput of an exported model on one engine or several, optionally against PyTorch.

Every engine runs through a `Predictor`. With several engines (``provider="all"``: every usable
serving engine) or ``compare_torch`` (the PyTorch model rebuilt from the artifact's config and
weights), the runners are interleaved in the same loop, their order flipping every round, so all
see the same machine state.

With several engines (or ``compare_torch``) every engine's output on each benched input is also
checked against a reference (PyTorch rebuilt from the artifact when torch is installed, else the
first engine) with verify's tolerance for the model's dtype: a wrong engine's speed is marked, and
`recommend` picks the fastest engine that was right at every benched size.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vitexport._util.errors import ServingError
from vitexport.engines import DEFAULT_PROVIDER, load_engines
from vitexport.onnx.metadata import transformed_by_ort
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS, Limits
from vitexport.security.limits import check as check_limits
from vitexport.serving.defaults import BENCH_BATCH_SIZES, BENCH_ITERS, BENCH_WARMUP
from vitexport.serving.predictor import Predictor
from vitexport.verify.parity import compare, tolerance_for


@dataclass
class BenchEngine:
    """One engine that was timed: its name, what really ran it, its runtime's version, notes (e.g. why ``auto``
    fell back)."""

    name: str
    providers: list[str]
    version: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchReport:
    """Every case of one `bench` run, with the engines and the providers that really ran."""

    model: str
    providers: list[str]
    warmup: int
    iters: int
    threads: int | None
    engines: list[BenchEngine] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # with provider "all": engines not usable here, and why
    cases: list[BenchCase] = field(default_factory=list)
    provider_note: str = ""  # why ``auto`` runs on the CPU, as `Predictor.provider_note`
    parity_reference: str = ""  # what each engine's output was compared with; empty: no parity check
    recommendation: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchCase:
    """Timings of one (size, batch) on one engine, and of PyTorch (interleaved) when compared."""

    height: int
    width: int
    batch: int
    engine: str
    runtime_median_ms: float
    runtime_p90_ms: float
    runtime_images_per_s: float
    speedup_vs_torch: float | None = None  # torch median / this engine's median
    torch_median_ms: float | None = None
    torch_p90_ms: float | None = None
    torch_images_per_s: float | None = None
    parity_max_abs: float | None = None  # against `BenchReport.parity_reference`
    parity_ok: bool | None = None  # None: not checked


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


def _timings(name: str, x: np.ndarray, runs: list[float]) -> BenchCase:
    b, (h, w) = x.shape[0], x.shape[2:]
    med = statistics.median(runs)
    return BenchCase(h, w, b, name, med, _p90(runs), b / med * 1e3)


def _time_case(predictors: list[Predictor], x: np.ndarray, warmup: int, iters: int,
               torch_model: Any) -> tuple[list[BenchCase], list[np.ndarray]]:
    """``warmup + iters`` rounds of every engine (order flipped every round), then PyTorch when given;
    one `BenchCase` per engine with medians and p90, and each engine's last output (for the parity check)."""
    runs: list[list[float]] = [[] for _ in predictors]
    outputs: list[np.ndarray] = [np.empty(0) for _ in predictors]
    truns: list[float] = []
    if torch_model is not None:
        import torch

        tx = torch.from_numpy(x)
    for i in range(warmup + iters):
        order = list(enumerate(predictors))
        for k, predictor in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            outputs[k] = predictor.run_batch(x)
            if i >= warmup:
                runs[k].append((time.perf_counter() - t0) * 1e3)
        if torch_model is not None:
            with torch.inference_mode():
                t2 = time.perf_counter()
                torch_model(tx)
                t3 = time.perf_counter()
            if i >= warmup:
                truns.append((t3 - t2) * 1e3)
    cases = [_timings(p.provider, x, r) for p, r in zip(predictors, runs, strict=True)]
    if truns:
        tmed = statistics.median(truns)
        for case in cases:
            case.torch_median_ms, case.torch_p90_ms = tmed, _p90(truns)
            case.torch_images_per_s = case.batch / tmed * 1e3
            case.speedup_vs_torch = tmed / case.runtime_median_ms
    return cases, outputs


def _predictors(model_path: str, provider: str, threads: int | None, interleaved: bool,
                report_skipped: list[str], limits: Limits) -> list[Predictor]:
    """A Predictor per engine of the request (``all``: every usable serving engine)."""
    # Interleaved with other runners, ORT's spinning worker threads would steal the cores from the runner that
    # follows (measured: torch 30% slower); alone, ORT keeps its default spinning.
    loaded, skipped = load_engines(model_path, provider, serving_only=True, threads=threads, spin=not interleaved,
                                   max_memory_gb=limits.max_memory_gb)
    report_skipped.extend(skipped)
    return [Predictor.from_engine(engine, model_path, provider_note="; ".join(notes), max_tokens=limits.max_tokens,
                                  max_memory_gb=limits.max_memory_gb)
            for engine, notes in loaded]


def _parity_reference(model_path: str, metadata: dict[str, Any], first: Predictor,
                      torch_model: Any) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """The function whose output every engine is compared with (None: the first engine's own output), and what
    it is."""
    if torch_model is None:
        transformed = transformed_by_ort(metadata)
        if transformed:
            return None, f"engine {first.provider} (the artifact was {transformed} by ONNX Runtime: " \
                         "PyTorch cannot be rebuilt from it; verify it with --checkpoint)"
        try:
            import torch  # noqa: F401 - only whether it is there
        except ImportError:
            return None, f"engine {first.provider} (torch is not installed)"
        from vitexport.verify.reference import reference_from_onnx

        torch_model = reference_from_onnx(model_path, metadata)

    def run(x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return torch_model(torch.from_numpy(x)).numpy()

    return run, "PyTorch eager, rebuilt from the artifact's config and weights"


def _check_parity(outputs: list[np.ndarray], expected: np.ndarray, tolerance: tuple[float, float],
                  cases: list[BenchCase]) -> None:
    """Fill every case's parity fields: its engine's output against the expected one."""
    for out, case in zip(outputs, cases, strict=True):
        comp = compare(out, expected, *tolerance, top1=False)
        case.parity_max_abs, case.parity_ok = comp.max_abs, comp.within_tolerance


def recommend(report: BenchReport) -> str:
    """One line: the fastest engine that was right at every benched case (geometric mean of its median over the
    others' per case), and which engines were wrong where. Without parity checks: the fastest, said so."""
    names = [e.name for e in report.engines]
    by_case: dict[tuple[int, int, int], dict[str, BenchCase]] = {}
    for c in report.cases:
        by_case.setdefault((c.height, c.width, c.batch), {})[c.engine] = c
    wrong = {n: [k for k, cs in by_case.items() if cs[n].parity_ok is False] for n in names}
    correct = [n for n in names if not wrong[n]]
    where = "; ".join(f"{n} was WRONG at " + ", ".join(f"{h}x{w} batch {b}" for h, w, b in wrong[n])
                      for n in names if wrong[n])
    if not correct:
        return f"recommendation: none - no engine matched the reference at every benched size ({where})"

    def speed(n: str) -> float:  # geometric mean of (fastest correct median / this median) over cases
        ratios = [min(cs[m].runtime_median_ms for m in correct) / cs[n].runtime_median_ms for cs in by_case.values()]
        return float(np.exp(np.mean(np.log(ratios))))

    best = max(correct, key=speed)
    others = [n for n in correct if n != best]
    vs = ", ".join(f"{speed(best) / speed(n):.2f}x {n}" for n in others)
    checked = "right at every benched size" if report.parity_reference else "parity not checked"
    text = f"recommendation: --provider {best} (fastest {'correct ' if report.parity_reference else ''}engine here"
    text += f": {vs}, geometric mean over {len(by_case)} cases; {checked})" if others else f"; {checked})"
    return text + (f"; {where}" if where else "")


def bench(
    model_path: str,
    sizes: list[tuple[int, int]] | None = None,
    batch_sizes: tuple[int, ...] = BENCH_BATCH_SIZES,
    provider: str = DEFAULT_PROVIDER,
    warmup: int = BENCH_WARMUP,
    iters: int = BENCH_ITERS,
    compare_torch: bool = False,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
    parity: bool | None = None,
) -> BenchReport:
    """Time ``iters`` runs per (size, batch) and engine after ``warmup`` runs; medians and p90 in milliseconds.

    Every case is checked against the limits before the first run (`vitexport.security.limits`).

    Args:
        model_path: an .onnx file exported by vitexport.
        sizes: HxW sizes to time (default: `default_bench_sizes` of the model's metadata).
        batch_sizes: the batch sizes of every size.
        provider: an engine name, ``auto``, or ``all`` (every usable serving engine, side by side, interleaved).
        warmup: untimed runs per case.
        iters: timed runs per case.
        compare_torch: also time PyTorch eager (rebuilt from the file; needs the export extra), interleaved.
        threads: intra-op threads of the engines (and of torch).
        progress: called with a short line after each case.
        max_tokens: refuse sizes with more tokens per image.
        max_memory_gb: refuse cases whose estimated forward pass is larger.
        parity: check every engine's output against a reference at every case and set the report's
            `recommend` line (default: with several engines or ``compare_torch``).
    """
    if compare_torch:  # before any work: the base install has no torch
        from vitexport._util.extras import require_extra

        require_extra("export", "`vitexport bench --compare-torch`")
    from vitexport.security.sniff import require

    require(model_path, "onnx", deep=True)  # a folder, a checkpoint or a truncated file: named before any engine
    skipped: list[str] = []
    predictors = _predictors(model_path, provider, threads, compare_torch or provider == "all", skipped,
                             Limits(max_tokens, max_memory_gb))
    first = predictors[0]
    sizes = sizes if sizes is not None else default_bench_sizes(first.metadata)
    check_limits(first.vit_config, [(h, w, b) for h, w in sizes for b in batch_sizes], first.limits, "bench",
                 first.metadata.get("attention"))
    note = "; ".join(p.provider_note for p in predictors if p.provider_note)
    report = BenchReport(model_path, [d for p in predictors for d in p.providers], warmup, iters, threads,
                         skipped=skipped, provider_note=note)
    for p in predictors:
        entry = p.engine.describe()
        notes = [n for n in [p.provider_note, *entry.get("notes", [])] if n]
        report.engines.append(BenchEngine(p.provider, p.providers, entry.get("version", ""), notes))
    torch_model = None
    if compare_torch:
        import torch

        from vitexport.verify.reference import reference_from_onnx

        if threads:
            torch.set_num_threads(threads)
        torch_model = reference_from_onnx(model_path, first.metadata)
    check = parity if parity is not None else (compare_torch or len(predictors) > 1)
    reference = None
    if check:
        reference, report.parity_reference = _parity_reference(model_path, first.metadata, first, torch_model)
    tolerance = tolerance_for(first.metadata.get("dtype", "float32"))
    rng = np.random.default_rng(0)
    for h, w in sizes:
        for b in batch_sizes:
            x = rng.standard_normal((b, first.channels, h, w)).astype(np.float32)
            cases, outputs = _time_case(predictors, x, warmup, iters, torch_model)
            if check:  # each engine's last timed output: no extra run
                _check_parity(outputs, outputs[0] if reference is None else reference(x), tolerance, cases)
            report.cases.extend(cases)
            if progress is not None:
                progress(f"{h}x{w} batch {b} done")
    report.recommendation = recommend(report)
    return report
