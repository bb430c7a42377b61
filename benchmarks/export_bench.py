"""Export time and peak memory for ViT-S/16 and ViT-B/16 (random weights), each run in a fresh process.

    python -m benchmarks.export_bench [--repeats 3] [--models vit_small_patch16_224,vit_base_patch16_224]

Prints a table of medians. Peak RSS is the child process's maximum resident set size
(model build + export + graph checks), so it includes Python, torch and onnx themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time, tempfile, os
t0 = time.perf_counter()
import torch
from vitexport.model.vit import create_model
from vitexport.export.onnx_export import export_onnx
torch.manual_seed(0)
model = create_model(sys.argv[1])
folder = tempfile.mkdtemp()
t1 = time.perf_counter()
result = export_onnx(model, os.path.join(folder, "m.onnx"))
t2 = time.perf_counter()
print(json.dumps({"export_s": t2 - t1, "total_s": t2 - t0, "bytes": result.bytes,
                  "params": result.parameters,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rows = []
    for name in args.models.split(","):
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD, name], capture_output=True, text=True, check=True,
                                 cwd=tempfile.gettempdir())
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows.append((name, runs))
    print(f"\n{'model':26s} {'params':>11s} {'export s (median)':>18s} {'min-max':>13s} {'process s':>10s} "
          f"{'peak RSS MB':>12s} {'file MB':>8s}")
    for name, runs in rows:
        ex = [r["export_s"] for r in runs]
        print(f"{name:26s} {runs[0]['params']:>11,d} {statistics.median(ex):>18.1f} {min(ex):>6.1f}-{max(ex):<6.1f} "
              f"{statistics.median(r['total_s'] for r in runs):>10.1f} "
              f"{statistics.median(r['peak_rss_mb'] for r in runs):>12.0f} {runs[0]['bytes'] / 1e6:>8.1f}")
    print(f"\n{args.repeats} runs per model, each in a fresh process.")


if __name__ == "__main__":
    main()
