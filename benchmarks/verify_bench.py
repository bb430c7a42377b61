"""Time of `vitexport verify`'s default sweep on ViT-S/16 (random weights) on the CPU provider.

    python -m benchmarks.verify_bench [--repeats 3] [--model vit_small_patch16_224]

Exports once, then runs the full default sweep several times and prints a table of
medians: whole verify call, summed ONNX Runtime time, summed PyTorch time, cases,
worst max |difference|.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from vitexport.export.onnx_export import export_onnx
from vitexport.model.vit import create_model
from vitexport.verify.sweep import verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="vit_small_patch16_224")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    torch.manual_seed(0)
    model = create_model(args.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.onnx")
        t0 = time.perf_counter()
        export_onnx(model, path)
        print(f"export: {time.perf_counter() - t0:.1f} s")
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            report = verify(path, provider="cpu")
            wall = time.perf_counter() - t0
            runs.append((wall, sum(c.runtime_ms or 0 for c in report.cases) / 1e3,
                         sum(c.torch_ms or 0 for c in report.cases) / 1e3, report))
    last = runs[-1][3]
    worst = max(c.max_abs for c in last.cases)
    print(f"\n{'model':24s} {'cases':>5s} {'verify s (median)':>18s} {'min-max':>11s} {'ORT s':>7s} {'torch s':>8s} "
          f"{'worst max|d|':>13s} {'passed':>7s}")
    walls = [r[0] for r in runs]
    print(f"{args.model:24s} {len(last.cases):>5d} {statistics.median(walls):>18.1f} "
          f"{min(walls):>5.1f}-{max(walls):<5.1f} {statistics.median(r[1] for r in runs):>7.1f} "
          f"{statistics.median(r[2] for r in runs):>8.1f} {worst:>13.2e} {last.passed!s:>7s}")
    sizes = sorted({(c.height, c.width) for c in last.cases})
    print(f"\n{args.repeats} runs; sizes: {', '.join(f'{h}x{w}' for h, w in sizes)}")


if __name__ == "__main__":
    main()
