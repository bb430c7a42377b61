"""Dynamic int8 (vitexport quantize) vs fp32 on the CPU provider, ViT-S/16, interleaved runs; plus the
digits sample's held-out accuracy before and after quantization.

    python benchmarks/int8_bench.py [--iters 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vitexport import load_model
from vitexport.export import export_onnx
from vitexport.model import create_model
from vitexport.optimize import quantize_onnx
from vitexport.runtime import Predictor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "samples"))
from common import cpu_session  # noqa: E402
from digits_data import held_out  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        fp32, int8 = os.path.join(folder, "s.onnx"), os.path.join(folder, "s8.onnx")
        export_onnx(create_model("vit_small_patch16_224"), fp32)
        quantize_onnx(fp32, int8)
        sessions = {"fp32": cpu_session(fp32), "int8": cpu_session(int8)}
        print(f"ViT-S/16, CPU provider, {args.iters} interleaved runs after 2 warm-up:")
        print(f"{'size':>9s} {'batch':>5s} {'fp32 ms':>8s} {'int8 ms':>8s} {'speed-up':>8s}")
        for (h, w), b in [((224, 224), 1), ((224, 224), 8), ((200, 333), 1), ((97, 513), 8)]:
            x = np.random.default_rng(0).standard_normal((b, 3, h, w)).astype(np.float32)
            t: dict[str, list[float]] = {k: [] for k in sessions}
            for i in range(args.iters + 2):
                for k, s in sessions.items():
                    t0 = time.perf_counter()
                    s.run(None, {"pixel_values": x})
                    if i >= 2:
                        t[k].append((time.perf_counter() - t0) * 1e3)
            a, q = statistics.median(t["fp32"]), statistics.median(t["int8"])
            print(f"{h:>4d}x{w:<4d} {b:>5d} {a:>8.1f} {q:>8.1f} {a / q:>7.2f}x")
        d32, d8 = os.path.join(folder, "d.onnx"), os.path.join(folder, "d8.onnx")
        export_onnx(load_model(ROOT / "samples" / "digits-vit.pt"), d32)
        quantize_onnx(d32, d8)
        x, y = held_out(28)
        for name, path in (("fp32", d32), ("int8", d8)):
            preds = Predictor(path, provider="cpu").predict(list(x))
            acc = np.mean([p.top_k[0]["index"] == t for p, t in zip(preds, y, strict=True)])
            print(f"digits held-out at 28x28, {name}: {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
