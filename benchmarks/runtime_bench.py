"""Cross-check `vitexport bench --compare-torch` on ViT-S/16 against an independent measurement.

    python -m benchmarks.runtime_bench [--iters 20]

1. runs the real command `vitexport bench MODEL --compare-torch --json` (ORT and torch interleaved);
2. times the same model independently: a plain onnxruntime.InferenceSession loop and a plain
   torch.inference_mode loop, one after the other, with time.perf_counter;
and prints both tables side by side with their ratios.
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
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from vitexport.export.onnx_export import export_onnx
from vitexport.model.vit import create_model


def median_ms(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sizes", default="224x224,200x333")
    parser.add_argument("--batch-sizes", default="1,8")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    torch.manual_seed(0)
    model = create_model("vit_small_patch16_224")
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "vit_s16.onnx")
        export_onnx(model, path)
        exe = Path(sys.executable).with_name("vitexport")
        out = subprocess.run([str(exe), "bench", path, "--compare-torch", "--json", "--provider", "cpu",
                              "--sizes", args.sizes, "--batch-sizes", args.batch_sizes,
                              "--iters", str(args.iters), "--warmup", str(args.warmup)],
                             capture_output=True, text=True, check=True)
        cli = {(c["height"], c["width"], c["batch"]): c for c in json.loads(out.stdout)["cases"]}
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        rows = []
        for key, c in cli.items():
            h, w, b = key
            x = np.random.default_rng(0).standard_normal((b, 3, h, w)).astype(np.float32)
            ort_ms = median_ms(lambda x=x: session.run(None, {"pixel_values": x}), args.warmup, args.iters)
            tx = torch.from_numpy(x)
            with torch.inference_mode():
                torch_ms = median_ms(lambda tx=tx: model(tx), args.warmup, args.iters)
            rows.append((key, c, ort_ms, torch_ms))
    print(f"\n{'size':>8s} {'b':>2s} | {'bench: ORT ms':>13s} {'torch ms':>9s} {'speed-up':>8s} | "
          f"{'independent: ORT ms':>19s} {'torch ms':>9s} {'speed-up':>8s} | {'ORT ms ratio':>12s}")
    for (h, w, b), c, ort_ms, torch_ms in rows:
        print(f"{h:>4d}x{w:<3d} {b:>2d} | {c['runtime_median_ms']:>13.1f} {c['torch_median_ms']:>9.1f} "
              f"{c['speedup_vs_torch']:>7.2f}x | {ort_ms:>19.1f} {torch_ms:>9.1f} {torch_ms / ort_ms:>7.2f}x | "
              f"{c['runtime_median_ms'] / ort_ms:>12.2f}")
    print(f"\nmedians of {args.iters} runs after {args.warmup} warm-up runs; random weights, fp32, CPU provider")


if __name__ == "__main__":
    main()
