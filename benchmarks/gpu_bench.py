"""GPU throughput: PyTorch eager fp32/fp16 (SDPA) vs ONNX Runtime CUDA fp32/fp16 (sdpa and mha exports).

    python -m benchmarks.gpu_bench [--device cuda] [--models vit_small_patch16_224,vit_base_patch16_224]
                                   [--sizes 224x224,384x384,200x333] [--batch-sizes 1,32] [--iters 25]
                                   [--warmup 2] [--budget-s 150] [--artifacts DIR] [--json OUT.json] [--write]
    python -m benchmarks.gpu_bench --device cpu --quick        # smoke test of every code path, no GPU

Random weights (seed 0). For every (model, size, batch) all engines run interleaved (rotating
order, one run each per round) and the table shows medians. Each timed run covers the work on
the device only: PyTorch is followed by torch.cuda.synchronize(); ONNX Runtime runs through I/O
binding with the input and a preallocated output already on the device, followed by
synchronize_outputs(), so no host copy is timed. Throughput is batch / median; the ratio is
against eager fp16. Before timing, every engine's output is compared with eager fp32 once
(max |d| column). ``--budget-s`` bounds the whole run: cases are measured in priority order
(ViT-B/16 batch 32 224x224 first, the issue's target) and rounds per case shrink to fit; cases
that no longer fit are listed as skipped. ``--artifacts DIR`` reuses (or writes) the exports
``{model}-{dtype}-{attention}.onnx``. ``--write`` adds the table to benchmarks/RESULTS.md;
``--from-json BENCH.json --write`` does so from the results of an earlier run (the GPU visit's bench.json).

Uses vitexport's create_model / export_onnx and plain onnxruntime (no vitexport runtime internals).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ENGINES = ("eager-fp32", "eager-fp16", "ort-fp32-sdpa", "ort-fp32-mha", "ort-fp16-sdpa", "ort-fp16-mha")
QUICK_CONFIG = dict(img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=64, depth=2, num_heads=4)
TARGET = ("vit_base_patch16_224", (224, 224), 32)  # ORT CUDA fp16 >= eager fp16 here is the target


@dataclass
class Case:
    model: str
    size: tuple[int, int]
    batch: int
    times: dict[str, list[float]] = field(default_factory=dict)
    max_abs: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: str = ""


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [(int(h), int(w)) for h, w in (s.split("x") for s in text.split(","))]


def build_model(name: str):
    from vitexport.model.config import ViTConfig
    from vitexport.model.vit import VisionTransformer, create_model

    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**QUICK_CONFIG)) if name == "quick" else create_model(name)
    return model.eval()


def artifact(model, name: str, dtype: str, attention: str, folder: Path) -> Path:
    """The export ``{name}-{dtype}-{attention}.onnx`` in ``folder``, written when missing."""
    from vitexport.export.onnx_export import export_onnx

    path = folder / f"{name}-{dtype}-{attention}.onnx"
    if not path.exists():
        t0 = time.perf_counter()
        export_onnx(model, path, dtype=dtype, attention=attention)
        print(f"exported {path.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def ort_session(path: Path, device: str):
    import onnxruntime as ort

    if device == "cuda":
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        chain = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        chain = ["CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle ORT threads must not steal cores
    session = ort.InferenceSession(str(path), sess_options=opts, providers=chain)
    if chain[0] not in session.get_providers():
        raise RuntimeError(f"{chain[0]} could not be initialised for {path.name}: got {session.get_providers()}")
    return session


def ort_runner(session, x: np.ndarray, device: str) -> tuple[Callable[[], None], Callable[[], np.ndarray]]:
    """(run, fetch): run() executes with I/O binding on ``device``; fetch() copies the output to the host."""
    import onnxruntime as ort

    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    x_dev = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x.astype(dtype)), device, 0)
    probe = session.run([out.name], {inp.name: x.astype(dtype)})[0]  # output shape for the preallocation
    y_dev = ort.OrtValue.ortvalue_from_shape_and_type(list(probe.shape), probe.dtype, device, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(inp.name, x_dev)
    binding.bind_ortvalue_output(out.name, y_dev)

    def run() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run, lambda: binding.copy_outputs_to_cpu()[0].astype(np.float32)


def torch_runner(model, x: np.ndarray, device: str, half: bool) -> tuple[Callable[[], None], Callable[[], np.ndarray]]:
    tx = torch.from_numpy(x).to(device)
    if half:
        tx = tx.half()
    result: dict[str, torch.Tensor] = {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run() -> None:
        with torch.inference_mode():
            result["y"] = model(tx)
        sync()

    return run, lambda: result["y"].float().cpu().numpy()


class Bench:
    """Holds the models and sessions of one run and times the cases."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.deadline = time.monotonic() + args.budget_s
        self.engines = [e for e in args.engines.split(",") if e]
        self.eager: dict[tuple[str, str], Any] = {}
        self.sessions: dict[tuple[str, str], Any] = {}
        self.setup_errors: dict[str, str] = {}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def load(self, name: str, folder: Path) -> None:
        """One ORT session per export variant (exported from the CPU model), then eager fp32/fp16 on the device."""
        model = build_model(name)
        for engine in sorted(self.engines, key=lambda e: e.startswith("eager")):
            try:
                kind, dtype = engine.split("-")[:2]
                if kind == "eager":
                    m = build_model(name) if dtype == "fp16" else model
                    self.eager[(name, engine)] = (m.half() if dtype == "fp16" else m).to(self.device)
                else:
                    full = "float16" if dtype == "fp16" else "float32"
                    path = artifact(model, name, full, engine.split("-")[2], folder)
                    self.sessions[(name, engine)] = ort_session(path, self.device)
            except Exception as exc:
                self.setup_errors[f"{name} {engine}"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
                print(f"setup failed: {name} {engine}: {self.setup_errors[f'{name} {engine}']}", flush=True)

    def runners(self, case: Case, x: np.ndarray) -> dict[str, tuple[Callable, Callable]]:
        out = {}
        for engine in self.engines:
            key = (case.model, engine)
            try:
                if key in self.eager:
                    out[engine] = torch_runner(self.eager[key], x, self.device, half=engine.endswith("fp16"))
                elif key in self.sessions:
                    out[engine] = ort_runner(self.sessions[key], x, self.device)
            except Exception as exc:
                case.errors[engine] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        return out

    def measure(self, case: Case, cases_left: int) -> None:
        if self.remaining() <= 0:
            case.skipped = "budget: none left"
            return
        h, w = case.size
        x = np.random.default_rng(0).standard_normal((case.batch, 3, h, w)).astype(np.float32)
        runs = self.runners(case, x)
        order = list(runs)
        ref = None
        round_s = []
        for i in range(self.args.warmup):  # also the correctness check against eager fp32
            t0 = time.perf_counter()
            for key in order:
                runs[key][0]()
            round_s.append(time.perf_counter() - t0)
            if i == 0:
                ref = runs["eager-fp32"][1]() if "eager-fp32" in runs else None
                for key in order:
                    if ref is not None:
                        case.max_abs[key] = float(np.max(np.abs(runs[key][1]() - ref)))
        per_round = min(round_s) if round_s else 0.05
        share = max(0.0, self.remaining()) / max(1, cases_left)
        rounds = int(min(self.args.iters, share / max(per_round, 1e-4)))
        if rounds < 3:
            case.skipped = f"budget: {self.remaining():.0f} s left, a round takes {per_round * 1e3:.0f} ms"
            return
        case.times = {k: [] for k in order}
        for _ in range(rounds):
            order = order[1:] + order[:1]
            for key in order:
                if self.device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                runs[key][0]()
                case.times[key].append((time.perf_counter() - t0) * 1e3)


def case_order(models: list[str], sizes: list[tuple[int, int]], batches: list[int]) -> list[tuple[str, tuple, int]]:
    """Target case first, then the largest batch of the largest model, down to batch 1 of the smallest."""
    cases = [(m, s, b) for b in sorted(batches, reverse=True) for m in reversed(models) for s in sizes]
    if TARGET in cases:
        cases.remove(TARGET)
        cases.insert(0, TARGET)
    return cases


def rows(cases: list[Case]) -> list[dict[str, Any]]:
    out = []
    for c in cases:
        here = []
        for engine, times in c.times.items():
            med = statistics.median(times)
            here.append({"model": c.model, "size": list(c.size), "batch": c.batch, "engine": engine,
                         "median_ms": med, "p90_ms": float(np.percentile(times, 90)), "runs": len(times),
                         "images_per_s": c.batch / (med / 1e3), "max_abs_vs_eager_fp32": c.max_abs.get(engine)})
        ref = next((r["images_per_s"] for r in here if r["engine"] == "eager-fp16"), None)
        for r in here:
            r["ratio_to_eager_fp16"] = r["images_per_s"] / ref if ref else None
        out.extend(here)
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | size | batch | engine | median ms | p90 ms | images/s | vs eager fp16 | max abs vs fp32 |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        ratio = f"{r['ratio_to_eager_fp16']:.2f}x" if r["ratio_to_eager_fp16"] else "-"
        diff = f"{r['max_abs_vs_eager_fp32']:.1e}" if r["max_abs_vs_eager_fp32"] is not None else "-"
        lines.append(f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r['engine']} | "
                     f"{r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['images_per_s']:.1f} | {ratio} | {diff} |")
    return "\n".join(lines)


def target_verdict(results: list[dict[str, Any]]) -> str:
    model, (h, w), b = TARGET
    here = {r["engine"]: r for r in results if r["model"] == model and tuple(r["size"]) == (h, w) and r["batch"] == b}
    ort16 = [r for e, r in here.items() if e.startswith("ort-fp16")]
    if "eager-fp16" not in here or not ort16:
        return "target case not measured"
    best = max(ort16, key=lambda r: r["images_per_s"])
    met = best["images_per_s"] >= here["eager-fp16"]["images_per_s"]
    return (f"target {'MET' if met else 'NOT met'}: {model} {h}x{w} batch {b}: best ORT CUDA fp16 ({best['engine']}) "
            f"{best['images_per_s']:.1f} images/s vs eager fp16 {here['eager-fp16']['images_per_s']:.1f} "
            f"({best['ratio_to_eager_fp16']:.2f}x)")


def environment(device: str) -> dict[str, Any]:
    import onnxruntime as ort

    env = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
           "torch": torch.__version__, "onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__,
           "device": device}
    if device == "cuda":
        env.update({"gpu": torch.cuda.get_device_name(0), "torch_cuda": torch.version.cuda,
                    "torch_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                    "torch_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                    "torch_sdpa_flash": torch.backends.cuda.flash_sdp_enabled()})
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--sizes", default="224x224,384x384,200x333")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--iters", type=int, default=25, help="timed rounds per case at most")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=150.0, help="wall-clock bound for the whole run")
    parser.add_argument("--artifacts", type=Path, help="folder of exports to reuse (written when missing)")
    parser.add_argument("--json", dest="json_path", type=Path, help="write results and environment as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny model, two small sizes, batch 1 and 2")
    parser.add_argument("--write", action="store_true", help="add the table to benchmarks/RESULTS.md")
    parser.add_argument("--from-json", type=Path, help="print (and --write) the results of an earlier --json run")
    args = parser.parse_args(argv)
    if args.from_json:
        return args
    if args.quick:
        args.models, args.sizes, args.batch_sizes = "quick", "32x32,21x45", "1,2"
        args.iters, args.warmup = min(args.iters, 3), 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("torch sees no CUDA device; use --device cpu --quick for a smoke test")
    return args


def write_results(results: list[dict[str, Any]], verdict: str, footer: str, title: str) -> None:
    """Replace (or add) the GPU section of benchmarks/RESULTS.md."""
    from benchmarks.perf import write_section

    write_section(title, table(results) + "\n\n" + verdict + "\n\n" + footer + "\n")


def footer_text(env: dict[str, Any], iters: Any, warmup: Any, seconds: float) -> str:
    return (f"Medians of up to {iters} interleaved rounds after {warmup} warm-up round(s) per case; random "
            f"weights (seed 0); {env.get('gpu', env.get('machine'))}; torch {env.get('torch')} (TF32 matmul "
            f"{env.get('torch_matmul_allow_tf32', '-')}), onnxruntime {env.get('onnxruntime')}; {seconds:.0f} s "
            f"in all (benchmarks/gpu_bench.py).")


def from_json(args: argparse.Namespace) -> int:
    data = json.loads(args.from_json.read_text())
    env, run = data["environment"], data.get("args", {})
    footer = footer_text(env, run.get("iters"), run.get("warmup"), data.get("seconds", 0.0))
    print(table(data["results"]) + "\n\n" + data["target"] + "\n" + footer)
    if args.write:
        write_results(data["results"], data["target"], footer, f"GPU: {env.get('gpu', env.get('device'))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return from_json(args)
    start = time.monotonic()
    bench = Bench(args)
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.artifacts or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in models:
            bench.load(name, folder)
        print(f"loaded in {time.monotonic() - start:.1f} s; {bench.remaining():.0f} s of the budget left", flush=True)
        order = case_order(models, parse_sizes(args.sizes), [int(b) for b in args.batch_sizes.split(",")])
        cases = []
        for i, (model, size, batch) in enumerate(order):
            case = Case(model, size, batch)
            try:
                bench.measure(case, len(order) - i)
            except Exception as exc:  # e.g. out of memory: recorded, the next case still runs
                case.skipped = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            cases.append(case)
            print(f"{model} {size[0]}x{size[1]} b{batch}: {case.skipped or 'measured'}", flush=True)
    results = rows(cases)
    verdict = target_verdict(results)
    env = environment(args.device)
    footer = footer_text(env, args.iters, args.warmup, time.monotonic() - start)
    print("\n" + table(results) + "\n\n" + verdict + "\n" + footer, flush=True)
    skipped = {f"{c.model} {c.size[0]}x{c.size[1]} b{c.batch}": c.skipped for c in cases if c.skipped}
    errors = {f"{c.model} {c.size[0]}x{c.size[1]} b{c.batch} {e}": m for c in cases for e, m in c.errors.items()}
    if args.json_path:
        args.json_path.write_text(json.dumps({"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
                                              "results": results, "target": verdict, "skipped": skipped,
                                              "setup_errors": bench.setup_errors, "errors": errors,
                                              "seconds": time.monotonic() - start}, indent=1))
    if args.write:
        write_results(results, verdict, footer, f"GPU: {env.get('gpu', args.device)}")
    return 1 if bench.setup_errors or errors or not results else 0


if __name__ == "__main__":
    sys.exit(main())
