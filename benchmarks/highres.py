"""High resolution: time and peak RSS per engine at 1k-16k tokens (ViT-S/16, ViT-B/16), from the default export.

    python -m benchmarks.highres [--quick] [--models vit_small_patch16_224,vit_base_patch16_224]
                                 [--engines eager,ort,ort-mha,openvino] [--tokens 1024,4096,8192,16384]
                                 [--rounds 3] [--out-dir benchmarks/results]

Each engine runs in its own process (`--worker`), loaded once per model; the parent sends it one input
size at a time, so a process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` before each
run, after ``malloc_trim`` has handed freed heap pages back) is that engine's alone; "+" is over the
process after loading and one 32x32 run. Per size, every
engine first runs once untimed (a runtime's first run at a new shape prepares kernels; its output is
checked against eager's with verify's fp32 tolerance, and its peak counts), then ``--rounds`` timed
rounds, interleaved: each round runs every engine once, the order
rotating, one engine at a time. Rows are medians.

Engines: ``eager`` (PyTorch, inference mode: SDPA's flash kernel), ``ort`` (ONNX Runtime CPU on the
default export: chunked attention, `vitexport.export.attention`), ``ort-mha`` (an ``--attention mha``
export), ``openvino`` (OpenVINO CPU, f32, on the default export; its engine runs each chunked-attention
loop as its own ScaledDotProductAttention), ``ort-sdpa`` (the old default: whole score matrices; not in
the default list: 6.4 GB for ViT-S/16 at 16k tokens) and ``reference`` (the ONNX reference evaluator;
slow).

Also written: the quadratic term of a latency fit ``ms = a + b*T + c*T^2`` per engine and model (T: tokens;
`benchmarks.scaling.fit_quadratic`), GFLOP/s with attention's FLOPs counted (`benchmarks.perf.vit_flops`)
as a % of this machine's fp32 peak measured in the same run (`benchmarks.peak`, before and after; the
higher is used), the memory estimate (`vitexport.security.limits.estimate`) beside ONNX Runtime's measured
peak, and ``highres.png`` (time and peak RSS against tokens). Writes ``highres.{json,md,png}`` into
``--out-dir``. A full run takes hours on 2 cores (ViT-B/16 at 16k tokens: minutes per run per engine).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import base_parser, machine_line, run_footer, write_results
from benchmarks.peak import describe_peak, load_average, measure_peak
from vitexport._util.memory import release_freed_heap

MODELS = ("vit_small_patch16_224", "vit_base_patch16_224")
# A RoPE model (timm's Eva class: rotary tables computed in the graph per grid, 4 register tokens); sizes follow
# its patch size.
ROPE_MODELS: tuple[str, ...] = ("vit_small_patch16_dinov3",)
TOKENS = (1024, 4096, 8192, 16384)
ENGINES = ("eager", "ort", "ort-mha", "openvino")
EXPORTS = {"ort": None, "openvino": None, "reference": None, "ort-mha": "mha", "ort-sdpa": "sdpa"}  # None: default
LABELS = {"eager": "eager", "ort": "ORT", "ort-mha": "ORT mha", "openvino": "OpenVINO", "ort-sdpa": "ORT sdpa",
          "reference": "reference"}
SHORT = {"vit_small_patch16_224": "ViT-S/16", "vit_base_patch16_224": "ViT-B/16",
         "vit_small_patch16_dinov3": "DINOv3 ViT-S/16 (RoPE)"}
REPLY = "@@highres "  # a worker's answers start with this (libraries may print to stdout too)


def size_for(tokens: int, patch: tuple[int, int]) -> tuple[int, int]:
    """An input of ``tokens`` patches: a square grid when ``tokens`` is a square, else one twice as wide."""
    side = math.isqrt(tokens)
    gh, gw = (side, side) if side * side == tokens else (math.isqrt(tokens // 2), 2 * math.isqrt(tokens // 2))
    return gh * patch[0], gw * patch[1]


# ---------------------------------------------------------------------------
# the worker: one engine, one model, commanded over stdin
# ---------------------------------------------------------------------------
def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _runner(engine: str, source: str) -> Any:
    if engine == "eager":
        import torch

        from vitexport.model.vit import create_model

        torch.manual_seed(0)
        model = create_model(source).eval()

        def eager(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()
        return eager
    from vitexport.engines import create_engine

    name = "openvino" if engine == "openvino" else "reference" if engine == "reference" else "cpu"
    return create_engine(name, **({} if name == "reference" else {"spin": False})).load(source).run


def worker(engine: str, source: str) -> None:
    """Answer ``run H W OUT.npy|-`` lines with ``{"ms", "rss", "hwm"}``: time, RSS before, peak RSS during."""
    run = _runner(engine, source)
    run(np.zeros((1, 3, 32, 32), np.float32))  # the runtime's one-time first-run work is not the sizes' memory
    release_freed_heap()
    print(REPLY + json.dumps({"loaded_rss": _status("VmRSS")}), flush=True)
    for line in sys.stdin:
        _, h, w, out = line.split()
        x = np.random.default_rng(int(h) * 7919 + int(w)).standard_normal((1, 3, int(h), int(w))).astype(np.float32)
        release_freed_heap()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS: the peak of this run only
        rss = _status("VmRSS")
        t0 = time.perf_counter()
        y = run(x)
        ms = (time.perf_counter() - t0) * 1e3
        if out != "-":
            np.save(out, y)
        print(REPLY + json.dumps({"ms": ms, "rss": rss, "hwm": _status("VmHWM")}), flush=True)


class Worker:
    """A running `worker` process."""

    def __init__(self, engine: str, source: str) -> None:
        self.engine = engine
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.highres", "--worker", engine, source],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.loaded_rss = self._answer()["loaded_rss"]

    def _answer(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        raise RuntimeError(f"worker {self.engine} ended (exit {self.proc.wait()})")

    def run(self, h: int, w: int, out: str = "-") -> dict[str, Any]:
        self.proc.stdin.write(f"run {h} {w} {out}\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ---------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------
def export_files(name: str, engines: list[str], folder: str) -> dict[str, str]:
    """engine -> what its worker loads: the model name for eager, else the .onnx it runs (exported once)."""
    import torch

    from vitexport.export.exporter import export_onnx
    from vitexport.model.vit import create_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    files: dict[str | None, str] = {}
    sources = {}
    for engine in engines:
        if engine == "eager":
            sources[engine] = name
            continue
        attention = EXPORTS[engine]
        if attention not in files:
            files[attention] = os.path.join(folder, f"{name}_{attention or 'default'}.onnx")
            export_onnx(model, files[attention], attention=attention, max_tokens=None, max_memory_gb=None)
        sources[engine] = files[attention]
    return sources


def measure_size(workers: dict[str, Worker], h: int, w: int, rounds: int, folder: str) -> dict[str, Any]:
    """One size: the untimed first run of every engine (parity, peak), then ``rounds`` interleaved timed rounds."""
    from vitexport.verify.parity import TOLERANCES, compare

    result: dict[str, dict[str, Any]] = {}
    outputs = {}
    for key, wk in workers.items():
        out = os.path.join(folder, f"{key}.npy")
        first = wk.run(h, w, out)
        outputs[key] = np.load(out)
        result[key] = {"first_ms": first["ms"], "hwm": first["hwm"], "rss_before": first["rss"],
                       "loaded_rss": wk.loaded_rss, "runs_ms": []}
    expected = outputs.get("eager", next(iter(outputs.values())))
    atol, rtol = TOLERANCES["float32"]
    for key, out in outputs.items():
        comp = compare(out, expected, atol, rtol, top1=True)
        result[key].update(max_abs=comp.max_abs, ok=comp.within_tolerance)
    order = list(workers)
    for _ in range(rounds):
        order = order[1:] + order[:1]
        for key in order:
            answer = workers[key].run(h, w)
            result[key]["runs_ms"].append(answer["ms"])
            result[key]["hwm"] = max(result[key]["hwm"], answer["hwm"])
    for r in result.values():
        r["median_ms"] = statistics.median(r["runs_ms"]) if r["runs_ms"] else r["first_ms"]
        r["peak_mb"] = r["hwm"] / 1e6
        r["added_mb"] = (r["hwm"] - r["loaded_rss"]) / 1e6  # over the loaded process after one 32x32 run
    return result


def measure_model(name: str, args: Any, folder: str, peak: float) -> list[dict[str, Any]]:
    from benchmarks.perf import vit_flops
    from vitexport.model.config import get_preset
    from vitexport.security.limits import estimate

    engines = args.engines.split(",")
    cfg = get_preset(name)
    sources = export_files(name, engines, folder)
    workers = {e: Worker(e, sources[e]) for e in engines}
    rows = []
    try:
        for tokens in args.tokens:
            h, w = size_for(tokens, cfg.patch_hw)
            est = estimate(cfg, h, w, 1)
            row = {"model": name, "height": h, "width": w, "tokens": est.tokens,
                   "gflop": vit_flops(cfg, h, w, 1) / 1e9, "estimate_mb": est.bytes / 1e6,
                   "engines": measure_size(workers, h, w, args.rounds, folder)}
            add_peak_share([row], peak)
            rows.append(row)
            print(markdown_row(row, engines), flush=True)
    finally:
        for wk in workers.values():
            wk.close()
    return rows


def add_peak_share(rows: list[dict[str, Any]], peak: float) -> None:
    """GFLOP/s (attention's FLOPs counted) and % of ``peak`` per engine, in place."""
    for row in rows:
        for e in row["engines"].values():
            e["gflops"] = row["gflop"] / (e["median_ms"] / 1e3)
            e["pct_peak"] = 100 * e["gflops"] / peak


def _cell(e: dict[str, Any]) -> str:
    wrong = "" if e["ok"] else f" WRONG ({e['max_abs']:.1e})"
    return f"{e['median_ms'] / 1e3:.2f} s, {e['peak_mb']:,.0f} MB (+{e['added_mb']:,.0f}){wrong}"


def best_engine(row: dict[str, Any]) -> str | None:
    correct = [k for k, e in row["engines"].items() if e["ok"] and k != "eager"]
    return min(correct, key=lambda k: row["engines"][k]["median_ms"]) if correct else None


def markdown_header(engines: list[str]) -> list[str]:
    cols = ["model", "input", "tokens", *[f"{LABELS[e]}: time, peak RSS (+ over loaded)" for e in engines],
            "best correct", "best vs eager", "best % of peak", "estimate (ORT)"]
    return ["| " + " | ".join(cols) + " |", "| --- | --- |" + " ---: |" * (len(cols) - 2)]


def markdown_row(row: dict[str, Any], engines: list[str]) -> str:
    es, best = row["engines"], best_engine(row)
    cells = [SHORT.get(row["model"], row["model"]), f"{row['height']}x{row['width']}", f"{row['tokens']:,}"]
    cells += [_cell(es[e]) for e in engines]
    vs = f"{es['eager']['median_ms'] / es[best]['median_ms']:.2f}x" if best and "eager" in es else "-"
    est = f"{row['estimate_mb']:,.0f} MB" + (f" ({es['ort']['added_mb'] / row['estimate_mb']:.0%} measured)"
                                            if "ort" in es else "")
    cells += [LABELS[best] if best else "none", vs, f"{es[best]['pct_peak']:.0f}%" if best else "-", est]
    return "| " + " | ".join(cells) + " |"


def fits(rows: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """model -> engine -> (a, b, c) of ms = a + b*T + c*T^2 (needs 3 sizes)."""
    from benchmarks.scaling import fit_quadratic

    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = [r for r in rows if r["model"] == model]
        if len(mrows) >= 3:
            out[model] = {e: fit_quadratic([r["tokens"] for r in mrows], [r["engines"][e]["median_ms"] for r in mrows])
                          for e in mrows[0]["engines"]}
    return out


def fit_lines(rows: list[dict[str, Any]], fitted: dict[str, dict[str, tuple[float, float, float]]]) -> list[str]:
    lines = ["| model | engine | a (ms) | b (ms/token) | c (ms/token^2) | quadratic share at the largest size |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for model, per_engine in fitted.items():
        t = max(r["tokens"] for r in rows if r["model"] == model)
        for e, (a, b, c) in per_engine.items():
            lines.append(f"| {SHORT.get(model, model)} | {LABELS[e]} | {a:.1f} | {b:.3e} | {c:.3e} | "
                         f"{c * t * t / (a + b * t + c * t * t):.0%} |")
    return lines


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=90)
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        mrows = [r for r in rows if r["model"] == model]
        tokens = [r["tokens"] for r in mrows]
        for j, engine in enumerate(mrows[0]["engines"]):
            style = dict(color=f"C{j}", ls="-" if i == 0 else "--", marker="o" if i == 0 else "s",
                         label=f"{SHORT.get(model, model)} {LABELS[engine]}")
            ax_t.plot(tokens, [r["engines"][engine]["median_ms"] / 1e3 for r in mrows], **style)
            ax_m.plot(tokens, [r["engines"][engine]["peak_mb"] for r in mrows], **style)
    ax_t.set(xscale="log", yscale="log", xlabel="tokens", ylabel="latency, s (batch 1)", title="time")
    ax_m.set(xscale="log", yscale="log", xlabel="tokens", ylabel="peak RSS of the process, MB", title="memory")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", lw=0.3)
    ax_m.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report_lines(args: Any, report: dict[str, Any], fitted: dict[str, Any]) -> list[str]:
    engines = args.engines.split(",")
    rows = report["rows"]
    lines = ["## High resolution (benchmarks/highres.py)", "", "![time and memory vs tokens](highres.png)", "",
             *markdown_header(engines), *[markdown_row(r, engines) for r in rows], ""]
    if fitted:
        lines += ["Latency fit ms = a + b*T + c*T^2 (T: tokens, non-negative least squares in relative error):", "",
                  *fit_lines(rows, fitted), ""]
    lines += [describe_peak(report["peak"]), "",
              f"Batch 1, fp32. Per size: one untimed first run per engine (parity against eager, verify's fp32 "
              f"tolerance; peak RSS counted), then medians of {args.rounds} interleaved rounds; each engine in its "
              "own process (peak RSS = its VmHWM during the size's runs; + = over the loaded process after one 32x32 "
              "run). % of peak counts attention's FLOPs. Estimate: `vitexport.security.limits.estimate` for the "
              "default export, beside ORT's measured + (the 25% target). " + run_footer(report), ""]
    return lines


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
        return
    parser = base_parser(__doc__, "ViT-S/16 at 64-1,024 tokens, eager, ORT and OpenVINO, 1 round: a smoke test")
    parser.add_argument("--models", default=",".join(MODELS + ROPE_MODELS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.models, args.engines, args.tokens, args.rounds = MODELS[0], "eager,ort,openvino", "64,256,1024", 1
    args.tokens = [int(t) for t in args.tokens.split(",")]
    for engine in args.engines.split(","):
        if engine not in LABELS:
            raise SystemExit(f"unknown engine {engine!r}; use some of {', '.join(LABELS)}")
    start, load_start = time.perf_counter(), load_average() or 0.0
    quick_peak = dict(sizes=(1024,), seconds=0.3, mlas_n=None) if args.quick else {}
    peak = measure_peak(**quick_peak)
    with tempfile.TemporaryDirectory() as folder:
        rows = [r for name in args.models.split(",") for r in measure_model(name, args, folder,
                                                                            peak["measured_gflops"])]
    after = measure_peak(**quick_peak)
    peak = max(peak, after, key=lambda p: p["measured_gflops"])
    add_peak_share(rows, peak["measured_gflops"])
    fitted = fits(rows)
    report = {"machine": machine_line(), "args": vars(args), "peak": peak, "rows": rows, "fits_ms": fitted,
              "load_start": load_start, "load_end": load_average() or 0.0, "elapsed_s": time.perf_counter() - start}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "highres.png", f"batch 1, fp32; {report['machine']}")
    write_results(args.out_dir, "highres", report, report_lines(args, report, fitted))


if __name__ == "__main__":
    main()
