"""Time of the two resampling forms of one model on one engine: `portable` vs `resize`, interleaved.

    python -m benchmarks.resample_bench [--model vit_small_patch16_224] [--sizes 224x224,200x333]
                                        [--batch-sizes 1,8] [--iters 30] [--warmup 3] [--threads N]
                                        [--engine cpu|openvino] [--quick]

Exports the model (random weights) twice, `--resample portable` and `--resample resize`, then per
case alternates the two sessions run by run (the order flips every round, so neither always runs
second), and prints medians, the spread and the ratio portable / resize. Also prints how far apart
their logits are (on OpenVINO the `resize` form is wrong wherever the grid changes: a timing, not a
result). `--engine` is any engine of `vitexport.engines` (default ONNX Runtime's CPU provider).
Run it on a quiet machine: timings taken while other work runs are noise. `--quick` is a smoke
test (2 timed runs, 1 warm-up), not a measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import numpy as np
import torch

from benchmarks.common import interleave
from vitexport.engines import create_engine
from vitexport.export.onnx_export import export_onnx
from vitexport.model.vit import create_model
from vitexport.onnx.graph import inspect_graph, load_onnx

FORMS = ("portable", "resize")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",")]  # type: ignore[misc]


def time_case(sessions: dict, x: np.ndarray, iters: int, warmup: int) -> dict[str, list[float]]:
    """Interleaved runs (the two forms alternate which goes first every round); warm-up rounds are dropped."""
    return interleave({name: (lambda s=sessions[name]: s.run(x)) for name in FORMS}, warmup, iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--sizes", default="224x224,200x333", type=parse_sizes)
    parser.add_argument("--batch-sizes", default="1,8", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the engine's)")
    parser.add_argument("--engine", default="cpu", help="an engine of vitexport.engines (cpu, openvino, ...)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 timed runs after 1 warm-up")
    args = parser.parse_args()
    if args.quick:
        args.iters, args.warmup = 2, 1
    torch.manual_seed(0)
    model = create_model(args.model)
    with tempfile.TemporaryDirectory() as folder:
        paths = {form: os.path.join(folder, f"{form}.onnx") for form in FORMS}
        for form, path in paths.items():
            export_onnx(model, path, resample=form)
        sessions = {form: create_engine(args.engine, threads=args.threads, spin=False).load(path)
                    for form, path in paths.items()}
        nodes = {form: sum(inspect_graph(load_onnx(path)).op_counts.values()) for form, path in paths.items()}
        print(f"{args.model}, random weights, {args.engine} ({sessions['portable'].version}), {args.iters} "
              f"interleaved runs per form after {args.warmup} warm-up; graph nodes: portable {nodes['portable']}, "
              f"resize {nodes['resize']}")
        print("     size batch  portable ms  (min-max)        resize ms  (min-max)        portable/resize  max|d|")
        for h, w in args.sizes:
            for batch in args.batch_sizes:
                x = np.random.default_rng([h, w, batch]).standard_normal((batch, 3, h, w)).astype(np.float32)
                outs = {form: s.run(x) for form, s in sessions.items()}
                diff = float(np.abs(outs["portable"] - outs["resize"]).max())
                times = time_case(sessions, x, args.iters, args.warmup)
                med = {form: statistics.median(t) for form, t in times.items()}
                spread = {form: f"({min(t):.1f}-{max(t):.1f})" for form, t in times.items()}
                print(f"{h:>4d}x{w:<4d} {batch:>4d} {med['portable']:11.2f}  {spread['portable']:16s} "
                      f"{med['resize']:10.2f}  {spread['resize']:16s} {med['portable'] / med['resize']:15.3f}  "
                      f"{diff:.1e}")


if __name__ == "__main__":
    main()
