"""int8 on ONNX Runtime CPU: fp32 vs dynamic int8 (`vitexport quantize`) vs static int8 (QDQ, calibrated), interleaved;
and the digits sample's held-out accuracy of each at every size from 20 to 40 px.

    python -m benchmarks.int8_bench [--quick] [--iters 10] [--out-dir benchmarks/results]

Static int8 is not a library feature (yet): this script builds it with onnxruntime.quantization.quantize_static
(QDQ format, MatMul only like the dynamic one, per-channel int8 weights, uint8 activations, MinMax calibration)
on the same folded graph `vitexport quantize` starts from. Calibration: 16 training images of the digits sample
at its native 28x28 (real images, as the issue asks), and for the ViT-S/16 speed model, which has random
weights, 8 random inputs at 224x224. The library keeps dynamic int8 unless static beats it here.
Writes ``int8.json`` and ``int8.md`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import base_parser, cpu_session, interleave, machine_line, run_footer, write_results
from benchmarks.peak import load_average
from vitexport import load_model
from vitexport.export.onnx_export import export_onnx
from vitexport.export.optimize import _fold_for_quantization, quantize_onnx
from vitexport.model.vit import create_model
from vitexport.serving.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
from samples.digits_data import held_out, load_digits_uint8, render, split  # noqa: E402

SPEED_CASES = (((224, 224), 1), ((224, 224), 8), ((200, 333), 1), ((97, 513), 8))


def quantize_static_qdq(src: str, dst: str, calibration: list[np.ndarray], folder: str) -> None:
    """Static int8 QDQ of the MatMuls of ``src`` (folded first, as `vitexport quantize` does), written to ``dst``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"pixel_values": x} for x in calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    folded = Path(folder) / (Path(dst).stem + ".folded.onnx")
    _fold_for_quantization(src, folded)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static advises pre-processing on the root logger
    quantize_static(str(folded), dst, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    # the metadata (preprocessing, labels) is needed by the Predictor for the accuracy runs
    from vitexport.onnx.graph import read_metadata, set_metadata

    set_metadata(dst, {**read_metadata(src), "dtype": "int8-static"})


def speed(folder: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    paths = {k: os.path.join(folder, f"s_{k}.onnx") for k in ("fp32", "dynamic", "static")}
    export_onnx(create_model("vit_small_patch16_224"), paths["fp32"])
    quantize_onnx(paths["fp32"], paths["dynamic"])
    rng = np.random.default_rng(1)
    quantize_static_qdq(paths["fp32"], paths["static"],
                        [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(8)], folder)
    sessions = {k: cpu_session(p) for k, p in paths.items()}
    rows = []
    for (h, w), b in SPEED_CASES[:1] if args.quick else SPEED_CASES:
        x = np.random.default_rng(0).standard_normal((b, 3, h, w)).astype(np.float32)
        t = interleave({k: (lambda s=s, x=x: s.run(None, {"pixel_values": x})) for k, s in sessions.items()},
                       args.warmup, args.iters, args.gap_ms / 1e3)
        med = {k: statistics.median(v) for k, v in t.items()}
        rows.append({"size": f"{h}x{w}", "batch": b, "median_ms": med, "runs_ms": t})
        print(f"ViT-S/16 {h}x{w} b{b}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items()), flush=True)
    return rows


def accuracy(folder: str, sizes: list[int]) -> dict[str, dict[int, float]]:
    """Held-out top-1 (%) of the digits sample per size: fp32, dynamic int8, static int8 (calibrated on 16
    training images at 28x28)."""
    paths = {k: os.path.join(folder, f"d_{k}.onnx") for k in ("fp32", "dynamic", "static")}
    export_onnx(load_model(ROOT / "samples" / "digits-vit.pt"), paths["fp32"])
    quantize_onnx(paths["fp32"], paths["dynamic"])
    fp32 = Predictor(paths["fp32"], provider="cpu")
    images, _ = load_digits_uint8()
    train, _ = split()
    calib = render(images[train[:16]], 28)
    quantize_static_qdq(paths["fp32"], paths["static"], [fp32.prepare(img)[None] for img in calib], folder)
    data = {size: held_out(size) for size in sizes}
    result: dict[str, dict[int, float]] = {}
    for k, path in paths.items():
        p = fp32 if k == "fp32" else Predictor(path, provider="cpu")
        result[k] = {}
        for size, (x, y) in data.items():
            preds = p.predict(list(x))
            result[k][size] = 100 * float(np.mean([q.top_k[0]["index"] == t for q, t in zip(preds, y, strict=True)]))
    return result


def main() -> None:
    parser = base_parser(__doc__, "one speed case, 2 runs, two accuracy sizes")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--gap-ms", type=float, default=100.0)
    args = parser.parse_args()
    if args.quick:
        args.iters, args.gap_ms = 2, 20.0
    sizes = [20, 28] if args.quick else [20, 24, 28, 32, 36, 40]
    start, load_start = time.perf_counter(), load_average() or 0.0
    with tempfile.TemporaryDirectory() as folder:
        rows = speed(folder, args)
        acc = accuracy(folder, sizes)
    report = {"machine": machine_line(), "args": vars(args), "speed": rows, "accuracy": acc,
              "load_start": load_start, "load_end": load_average() or 0.0, "elapsed_s": time.perf_counter() - start}
    lines = ["## int8 (benchmarks/int8_bench.py)", "", "ViT-S/16 (random weights), ONNX Runtime CPU:", "",
             "| size | batch | fp32 ms | dynamic int8 ms | static int8 (QDQ) ms | dynamic vs fp32 "
             "| static vs dynamic |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        m = r["median_ms"]
        lines.append(f"| {r['size']} | {r['batch']} | {m['fp32']:.1f} | {m['dynamic']:.1f} | {m['static']:.1f} | "
                     f"{m['fp32'] / m['dynamic']:.2f}x | {m['dynamic'] / m['static']:.2f}x |")
    lines += ["", "Digits sample, held-out top-1 (450 images) per input size:", "",
              "| size | fp32 | dynamic int8 | static int8 | dynamic drop | static drop |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in sizes:
        a = {k: acc[k][s] for k in acc}
        lines.append(f"| {s}px | {a['fp32']:.2f}% | {a['dynamic']:.2f}% | {a['static']:.2f}% | "
                     f"{a['fp32'] - a['dynamic']:+.2f} | {a['fp32'] - a['static']:+.2f} |")
    lines += ["", f"Medians of {args.iters} interleaved runs after {args.warmup} warm-up. " + run_footer(report), ""]
    write_results(args.out_dir, "int8", report, lines)


if __name__ == "__main__":
    main()
