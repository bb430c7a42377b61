"""What a new input shape costs on each engine: one load for every shape, the first run at each new shape,
and the runs after it.

    python -m benchmarks.engine_shapes [--model vit_small_patch16_224 | --onnx MODEL.onnx]
                                       [--engines cpu,openvino] [--shapes 6] [--batch 1] [--iters 10] [--quick]

Exports the model once (random weights, the default portable form) unless ``--onnx`` is given, loads it
on every engine (`vitexport.engines`: ONNX Runtime compiles nothing per shape; OpenVINO compiles the
dynamic model once, then prepares each new shape on its first run), then walks through ``--shapes``
sizes never seen before. At each size the engines take turns (the order flips from size to size): one
first run, then ``--iters`` runs whose median is the steady state. Prints load times, per size the
first run and the median, and per engine the median extra cost of a first run. Run it on a quiet
machine; ``--quick`` (2 sizes, 2 runs) is a smoke test, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from vitexport.model.config import ViTConfig


def sizes_for(native: tuple[int, int], patch: int, count: int) -> list[tuple[int, int]]:
    """``count`` distinct sizes around the native one: non-square, not multiples of the patch, some above it."""
    h, w = native
    out: list[tuple[int, int]] = []
    k = 0
    while len(out) < count:
        size = (max(1, h + (k * 37) % (2 * h) - h // 2 + 1), max(1, w + (k * 53) % (2 * w) - w // 3 + 3))
        if size not in out and size[0] % patch and size != native:
            out.append(size)
        k += 1
    return out


def export(model_name: str, folder: str) -> str:
    import torch

    from vitexport.export.onnx_export import export_onnx
    from vitexport.model.vit import create_model

    torch.manual_seed(0)
    path = os.path.join(folder, f"{model_name}.onnx")
    export_onnx(create_model(model_name), path)
    return path


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--onnx", default=None, help="an exported model to time instead of exporting --model")
    parser.add_argument("--engines", default="cpu,openvino")
    parser.add_argument("--shapes", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 sizes, 2 runs each")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.iters = 2, 2
    from vitexport.engines import create_engine

    with tempfile.TemporaryDirectory() as folder:
        path = args.onnx or export(args.model, folder)
        engines, load_ms = [], {}
        for name in args.engines.split(","):
            engine = create_engine(name, spin=False)  # they take turns: no thread may spin into the next one's run
            load_ms[name] = timed(lambda engine=engine: engine.load(path))
            engines.append(engine)
        config = ViTConfig.from_dict(engines[0].metadata["config"])
        channels = config.in_chans
        sizes = sizes_for(config.img_hw, config.patch_hw[0], args.shapes)
        print(f"{os.path.basename(path)}; batch {args.batch}; {len(sizes)} new sizes, each: 1 first run + "
              f"{args.iters} runs per engine, engines taking turns")
        print("load ms: " + ", ".join(f"{e.name} {load_ms[e.name]:.0f} ({e.version})" for e in engines))
        print(f"{'size':>9s} " + " ".join(f"{e.name + ' first ms':>18s} {'median ms':>10s}" for e in engines))
        extra: dict[str, list[float]] = {e.name: [] for e in engines}
        for k, (h, w) in enumerate(sizes):
            x = np.random.default_rng(k).standard_normal((args.batch, channels, h, w)).astype(np.float32)
            row = {}
            for engine in engines if k % 2 == 0 else engines[::-1]:
                first = timed(lambda engine=engine, x=x: engine.run(x))
                median = statistics.median(timed(lambda engine=engine, x=x: engine.run(x)) for _ in range(args.iters))
                row[engine.name] = (first, median)
                extra[engine.name].append(first - median)
            print(f"{h:>4d}x{w:<4d} " + " ".join(f"{row[e.name][0]:>18.1f} {row[e.name][1]:>10.1f}" for e in engines))
        print("median extra cost of a first run at a new size: "
              + ", ".join(f"{name} {statistics.median(v):.1f} ms" for name, v in extra.items()))


if __name__ == "__main__":
    main()
