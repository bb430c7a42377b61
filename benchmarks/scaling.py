"""Latency against token count (16 to 4,096 patch tokens) per engine, with the quadratic attention term fitted.

    python -m benchmarks.scaling [--quick] [--model vit_small_patch16_224] [--engines eager,ort,openvino]
                                 [--iters 3] [--out-dir benchmarks/results]

Square inputs of 4x4 .. 64x64 patches, batch 1, engines interleaved per size (as in perf.py, outputs checked
against eager). Per engine, latency = a + b*T + c*T^2 is fitted (non-negative least squares in relative
error; T: tokens incl. prefix tokens); the plot shows the points, the fit and its quadratic part c*T^2
(attention scores and softmax grow with T^2, everything else with T), and the default token cap
(``max_tokens``, `vitexport.security.limits.DEFAULT_MAX_TOKENS`; Predictor, bench and verify refuse larger
inputs unless it is raised; beyond this script's sizes: `benchmarks/highres.py`).
Writes ``scaling.png``, ``scaling.json`` and ``scaling.md`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import base_parser, machine_line, run_footer, time_case, write_results
from benchmarks.peak import load_average
from benchmarks.perf import LABELS, load_runners
from vitexport.model.vit import create_model
from vitexport.security.limits import DEFAULT_MAX_TOKENS

GRIDS = (4, 8, 16, 24, 32, 48, 64)  # patches per side: 16 .. 4,096 tokens


def fit_quadratic(tokens: list[int], ms: list[float]) -> tuple[float, float, float]:
    """Non-negative (a, b, c) of ms = a + b*T + c*T^2, least squares in relative error (the sizes span 3 decades)."""
    from scipy.optimize import nnls

    t, y = np.asarray(tokens, dtype=np.float64), np.asarray(ms, dtype=np.float64)
    design = np.stack([np.ones_like(t), t, t * t], 1) / y[:, None]
    coef, _ = nnls(design, np.ones_like(y))
    return float(coef[0]), float(coef[1]), float(coef[2])


def measure(args: argparse.Namespace, folder: str) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    runners = load_runners(model, folder, args.model, args.engines.split(","))
    patch, prefix = model.config.patch_hw[0], model.config.num_prefix_tokens
    rows = []
    for g in args.grids:
        x = np.random.default_rng(g).standard_normal((1, 3, g * patch, g * patch)).astype(np.float32)
        row = {"grid": g, "tokens": g * g + prefix, "size": g * patch,
               "engines": time_case(runners, x, 1, args.iters, args.gap_ms / 1e3)}
        rows.append(row)
        print(f"{row['tokens']:>5d} tokens: " + ", ".join(f"{k} {e['median_ms']:.1f} ms" + ("" if e["ok"] else " WRONG")
                                                       for k, e in row["engines"].items()), flush=True)
    return rows


def plot(rows: list[dict[str, Any]], fits: dict[str, tuple[float, float, float]], path: Path, title: str,
         max_tokens: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
    t_fine = np.geomspace(min(r["tokens"] for r in rows), max(r["tokens"] for r in rows), 100)
    for i, (engine, (a, b, c)) in enumerate(fits.items()):
        color = f"C{i}"
        tokens = [r["tokens"] for r in rows]
        ax.plot(tokens, [r["engines"][engine]["median_ms"] for r in rows], "o", color=color, label=LABELS[engine])
        ax.plot(t_fine, a + b * t_fine + c * t_fine**2, "-", color=color, lw=1)
        ax.plot(t_fine, np.maximum(c * t_fine**2, 1e-3), ":", color=color, lw=1,
                label=f"{LABELS[engine]}: quadratic term c*T^2")
    ax.axvline(max_tokens, color="k", ls="--", lw=1)
    ax.text(max_tokens, 0.03, " max_tokens\n (default cap)", fontsize=8, va="bottom", ha="right",
            transform=ax.get_xaxis_transform())
    ax.set(xscale="log", yscale="log", xlabel="tokens (patches + prefix tokens)", ylabel="latency, ms (batch 1)",
           title=title)
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = base_parser(__doc__, "four small grids, 1 run: a smoke test")
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--engines", default="eager,ort,openvino")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=100.0)
    args = parser.parse_args()
    args.grids = GRIDS[:4] if args.quick else GRIDS
    if args.quick:
        args.iters, args.gap_ms = 1, 20.0
    start, load_start = time.perf_counter(), load_average() or 0.0
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(args, folder)
    fits = {k: fit_quadratic([r["tokens"] for r in rows], [r["engines"][k]["median_ms"] for r in rows])
            for k in rows[0]["engines"]}
    max_tokens = DEFAULT_MAX_TOKENS
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_line()
    plot(rows, fits, out / "scaling.png", f"{args.model}, batch 1, fp32 ({machine.split(',')[0]})", max_tokens)
    report = {"machine": machine, "args": vars(args), "rows": rows,
              "fits_ms": fits, "max_tokens": max_tokens, "load_start": load_start,
              "load_end": load_average() or 0.0, "elapsed_s": time.perf_counter() - start}
    t = rows[-1]["tokens"]
    lines = ["## Scaling with input size (benchmarks/scaling.py)", "", "![latency vs tokens](scaling.png)", "",
             "| engine | a (ms) | b (ms/token) | c (ms/token^2) | quadratic share at " + f"{t} tokens |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for k, (a, b, c) in fits.items():
        lines.append(f"| {LABELS[k]} | {a:.2f} | {b:.3e} | {c:.3e} | {c * t * t / (a + b * t + c * t * t):.0%} |")
    lines += ["", f"Medians of {args.iters} interleaved runs per size after 1 warm-up; fit ms = a + b*T + c*T^2. "
              + run_footer(report), ""]
    write_results(args.out_dir, "scaling", report, lines)


if __name__ == "__main__":
    main()
