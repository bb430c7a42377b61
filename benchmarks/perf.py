"""ViT-S/16 and ViT-B/16 on CPU: PyTorch eager vs ONNX Runtime vs OpenVINO, each as a % of this machine's peak.

    python -m benchmarks.perf [--quick] [--iters 5] [--engines eager,ort,ort-mha,openvino]
                              [--models vit_small_patch16_224,vit_base_patch16_224]
                              [--sizes 224x224,384x384,200x333,97x513] [--batch-sizes 1,8]
                              [--out-dir benchmarks/results]

Engines: ``eager`` (PyTorch, inference mode), ``ort`` (ONNX Runtime CPU on the default export, the
library's default session: what `Predictor(provider="cpu")` runs), ``ort-mha`` (the same on an export with
``--attention mha``, ORT's fused attention), ``openvino`` (OpenVINO CPU, f32, on the default export:
`Predictor(provider="openvino")`). For every (model, size, batch) the engines run interleaved (the order
rotating every round, a short untimed pause before each run so no runtime's spinning threads steal the
next one's cores); rows are medians. Every engine's output is checked against eager's with verify's fp32
tolerance: a speed figure of an engine that is wrong there is marked WRONG and never "best".

The fp32 peak (benchmarks/peak.py: best sustained torch.mm sgemm on 2048-4096 squares) is measured in the
same run, before and after the table; the higher of the two is used. GFLOP/s count the forward pass
analytically (`vit_flops`). Writes ``perf.json`` and ``perf.md`` (the table for RESULTS.md and rows for the
README) into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import base_parser, machine_line, time_case, write_results
from benchmarks.peak import describe_peak, load_average, measure_peak
from vitexport._util.geometry import grid_size
from vitexport.engines import create_engine
from vitexport.export.attention import DEFAULT_ATTENTION
from vitexport.export.onnx_export import export_onnx
from vitexport.model.vit import create_model

HERE = Path(__file__).resolve().parent
ENGINES = ("eager", "ort", "ort-mha", "openvino")
LABELS = {"eager": "eager", "ort": "ORT", "ort-mha": "ORT mha", "openvino": "OpenVINO"}
SHORT = {"vit_small_patch16_224": "ViT-S/16", "vit_base_patch16_224": "ViT-B/16"}


def vit_flops(cfg, h: int, w: int, batch: int) -> float:
    """Multiply-adds x 2 of one forward: patch conv, per block QKV/proj/MLP and attention, head."""
    (ph, pw), d = cfg.patch_hw, cfg.embed_dim
    gh, gw = grid_size(h, w, (ph, pw))
    t = gh * gw + cfg.num_prefix_tokens
    hidden = int(d * cfg.mlp_ratio)
    per_block = 2 * t * d * 3 * d + 2 * t * d * d + 2 * 2 * t * d * hidden + 2 * 2 * t * t * d
    patch = 2 * gh * gw * cfg.in_chans * ph * pw * d
    head = 2 * d * cfg.num_classes
    return batch * (patch + cfg.depth * per_block + head)


def load_runners(model: Any, folder: str, name: str, engines: list[str]) -> dict[str, Any]:
    """engine name -> function(x numpy) -> output numpy; exports what the engines need once per model."""
    runners: dict[str, Any] = {}
    paths: dict[str, str] = {}

    def export(attention: str) -> str:
        if attention not in paths:
            paths[attention] = os.path.join(folder, f"{name}_{attention}.onnx")
            export_onnx(model, paths[attention], attention=attention)
        return paths[attention]

    for engine in engines:
        if engine == "eager":
            def eager(x: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return model(torch.from_numpy(x)).numpy()
            runners[engine] = eager
        elif engine in ("ort", "ort-mha"):
            loaded = create_engine("cpu").load(export("mha" if engine == "ort-mha" else DEFAULT_ATTENTION))
            runners[engine] = loaded.run
        elif engine == "openvino":
            runners[engine] = create_engine("openvino").load(export(DEFAULT_ATTENTION)).run
        else:
            raise SystemExit(f"unknown engine {engine!r}; use some of {', '.join(ENGINES)}")
    return runners


def summarize(row: dict[str, Any], peak: float) -> None:
    """Add GFLOP/s, % of peak, ratios to eager and the best correct engine to a row (in place)."""
    engines = row["engines"]
    for e in engines.values():
        e["gflops"] = row["gflop"] / (e["median_ms"] / 1e3)
        e["pct_peak"] = 100 * e["gflops"] / peak
        if "eager" in engines:
            e["vs_eager"] = engines["eager"]["median_ms"] / e["median_ms"]
    correct = [k for k, e in engines.items() if e["ok"] and k != "eager"]
    row["best"] = min(correct, key=lambda k: engines[k]["median_ms"]) if correct else None


def run_table(args: argparse.Namespace, folder: str, peak: float) -> list[dict[str, Any]]:
    rows = []
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name).eval()
        runners = load_runners(model, folder, name, args.engines.split(","))
        for h, w in sizes:
            for b in (int(v) for v in args.batch_sizes.split(",")):
                x = np.random.default_rng(0).standard_normal((b, 3, h, w)).astype(np.float32)
                gh, gw = grid_size(h, w, model.config.patch_hw)
                row = {"model": name, "height": h, "width": w, "batch": b,
                       "tokens": gh * gw + model.config.num_prefix_tokens,
                       "gflop": vit_flops(model.config, h, w, b) / 1e9,
                       "engines": time_case(runners, x, args.warmup, args.iters, args.gap_ms / 1e3,
                                            args.max_case_s)}
                summarize(row, peak)
                rows.append(row)
                print(markdown_row(row, args.engines.split(",")), flush=True)
    return rows


def _cell(e: dict[str, Any]) -> str:
    return f"{e['median_ms']:.1f}" + ("" if e["ok"] else f" WRONG ({e['max_abs']:.1e})")


def markdown_header(engines: list[str]) -> list[str]:
    cols = ["model", "size", "batch", *[f"{LABELS[e]} ms" for e in engines]]
    cols += [f"{LABELS[e]} vs eager" for e in engines if e != "eager" and "eager" in engines]
    cols += ["best correct", "best vs eager", "best % of peak", "eager % of peak"]
    return ["| " + " | ".join(cols) + " |", "| --- | --- |" + " ---: |" * (len(cols) - 2)]


def markdown_row(row: dict[str, Any], engines: list[str]) -> str:
    es = row["engines"]
    cells = [SHORT.get(row["model"], row["model"]), f"{row['height']}x{row['width']}", str(row["batch"])]
    cells += [_cell(es[e]) for e in engines]
    cells += [f"{es[e]['vs_eager']:.2f}x" for e in engines if e != "eager" and "eager" in engines]
    best = row["best"]
    cells += [LABELS[best] if best else "none",
              f"{es[best]['vs_eager']:.2f}x" if best and "vs_eager" in es[best] else "-",
              f"{es[best]['pct_peak']:.0f}%" if best else "-",
              f"{es['eager']['pct_peak']:.0f}%" if "eager" in es else "-"]
    return "| " + " | ".join(cells) + " |"


def readme_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The README's performance table: per case the best correct engine, its ratio to eager and to peak."""
    lines = ["| model | size | batch | best engine | ms | vs eager | % of peak |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        best = r["best"]
        if best:
            e = r["engines"][best]
            lines.append(f"| {SHORT.get(r['model'], r['model'])} | {r['height']}x{r['width']} | {r['batch']} | "
                         f"{LABELS[best]} | {e['median_ms']:.1f} | {e.get('vs_eager', float('nan')):.2f}x | "
                         f"{e['pct_peak']:.0f}% |")
    return lines


def _verdict(name: str, values: list[tuple[str, float]], target: float, unit: str) -> str:
    if not values:
        return f"- {name}: not measured in this run"
    worst = min(values, key=lambda v: v[1])
    met = "met" if worst[1] >= target else "NOT met"
    return f"- {name}: {met}; worst {worst[1]:.2f}{unit} at {worst[0]} (target {target:g}{unit}, {len(values)} cases)"


def goals(rows: list[dict[str, Any]]) -> list[str]:
    """The targets of issue 14, checked on this run's rows (worst case of each)."""
    def where(r: dict[str, Any]) -> str:
        return f"{SHORT.get(r['model'], r['model'])} {r['height']}x{r['width']} b{r['batch']}"

    def ok(r: dict[str, Any], e: str) -> bool:
        return e in r["engines"] and r["engines"][e]["ok"]

    base = [r for r in rows if r["model"] == "vit_base_patch16_224"]
    ort_eager = [(where(r), r["engines"]["ort"]["vs_eager"]) for r in rows if ok(r, "ort") and "eager" in r["engines"]]
    ort_best = [(where(r), max(r["engines"][e]["vs_eager"] for e in ("ort", "ort-mha") if ok(r, e)))
                for r in rows if (ok(r, "ort") or ok(r, "ort-mha")) and "eager" in r["engines"]]
    ort_peak = [(where(r), max(r["engines"][e]["pct_peak"] for e in ("ort", "ort-mha") if ok(r, e)))
                for r in base if ok(r, "ort") or ok(r, "ort-mha")]
    best = [r for r in base if r["best"] and r["batch"] in (1, 8)]
    return [
        _verdict("ORT (default export) >= 1.15x eager at every case", ort_eager, 1.15, "x"),
        _verdict("ORT (better of default and mha export) >= 1.15x eager at every case", ort_best, 1.15, "x"),
        _verdict("ViT-B/16 on ORT >= 70% of the measured peak", ort_peak, 70, "%"),
        _verdict("ViT-B/16, best correct engine >= 1.3x eager", [(where(r), r["engines"][r["best"]]["vs_eager"])
                                                                for r in best if "eager" in r["engines"]], 1.3, "x"),
        _verdict("ViT-B/16, best correct engine >= 75% of the measured peak",
                 [(where(r), r["engines"][r["best"]]["pct_peak"]) for r in best], 75, "%"),
        "- engines WRONG somewhere: " + (", ".join(sorted({f"{LABELS[e]} ({where(r)})" for r in rows
                                                           for e, v in r["engines"].items() if not v["ok"]}))
                                        or "none"),
    ]


def write_outputs(out_dir: str, args: argparse.Namespace, report: dict[str, Any]) -> None:
    engines = args.engines.split(",")
    table = markdown_header(engines) + [markdown_row(r, engines) for r in report["rows"]]
    load = f"load average {report['load_start']:.2f} before, {report['load_end']:.2f} after"
    footer = (f"Medians of {args.iters} interleaved runs (fewer, at least 3, where a case would take over "
              f"{args.max_case_s:g} s) after one parity run and {args.warmup} warm-up round(s), {args.gap_ms:g} ms "
              f"untimed pause before each run; random weights, fp32. {report['peak_text']} Peak used: "
              f"{report['peak_gflops']:.1f} GFLOP/s (higher of the measurements before and after the table: "
              f"{report['peak_start']['measured_gflops']:.1f}, {report['peak_end']['measured_gflops']:.1f}). "
              f"Machine: {report['machine']}; {load}. Run time {report['elapsed_s']:.0f} s.")
    text = ["## Tables (benchmarks/perf.py)", "", *table, "", footer, "", "## Targets of issue 14 in this run", "",
            *goals(report["rows"]), "", "## README rows", "", *readme_rows(report["rows"]), ""]
    write_results(out_dir, "perf", report, text)


def write_section(title: str, body: str) -> None:
    """Replace (or add) the section ``## title`` of benchmarks/RESULTS.md, keeping the others (gpu_bench.py)."""
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# CPU performance (benchmarks/perf.py)\n"
    head, *sections = text.split("\n## ")
    kept = [s for s in sections if not s.startswith(title)]
    path.write_text("\n## ".join([head.rstrip() + "\n", *[s.rstrip() + "\n" for s in kept],
                                  f"{title}\n\n{body}"]))


def main() -> None:
    parser = base_parser(__doc__, "ViT-S/16, one size, batch 1, 2 runs: a smoke test")
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--sizes", default="224x224,384x384,200x333,97x513")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=0, help="untimed rounds after the parity run (itself a "
                        "first run of every engine at the case's shape)")
    parser.add_argument("--gap-ms", type=float, default=100.0)
    parser.add_argument("--max-case-s", type=float, default=30.0,
                        help="fewer timed rounds (at least 3) for cases whose rounds would take longer (0: off)")
    args = parser.parse_args()
    if args.quick:
        args.models, args.sizes, args.batch_sizes, args.iters, args.gap_ms = (
            "vit_small_patch16_224", "97x513", "1", 2, 20.0)
    start = time.perf_counter()
    peak_kw = {"sizes": (1024,), "seconds": 0.3, "mlas_n": 1024} if args.quick else {}
    report: dict[str, Any] = {"machine": machine_line(), "args": vars(args), "load_start": load_average() or 0.0}
    report["peak_start"] = measure_peak(**peak_kw)
    print(describe_peak(report["peak_start"]), flush=True)
    print("\n".join(markdown_header(args.engines.split(","))), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        rows = run_table(args, folder, report["peak_start"]["measured_gflops"])
    report["peak_end"] = measure_peak(**peak_kw)
    best_peak = max(report["peak_start"], report["peak_end"], key=lambda p: p["measured_gflops"])
    report.update(peak_gflops=best_peak["measured_gflops"], peak_text=describe_peak(best_peak))
    for row in rows:  # ratios to the final (higher) peak
        summarize(row, report["peak_gflops"])
    report.update(rows=rows, load_end=load_average() or 0.0, elapsed_s=time.perf_counter() - start)
    write_outputs(args.out_dir, args, report)


if __name__ == "__main__":
    main()
