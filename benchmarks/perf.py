"""ViT-S/16 and ViT-B/16 on CPU: PyTorch eager vs ONNX Runtime on the dynamic export vs a static export.

    python benchmarks/perf.py [--iters 5] [--models vit_small_patch16_224,vit_base_patch16_224]
                              [--sizes 224x224,384x384,200x333,97x513] [--batch-sizes 1,8] [--write]

For every (model, size, batch) the engines run interleaved (rotating order, one run each per
round), so they see the same machine state; the table shows medians. Achieved GFLOP/s use an
analytic FLOP count of the forward pass; the "roofline" is this machine's fp32 matrix-multiply
throughput measured in the same run (best of torch.mm and numpy on large square matrices).
ONNX Runtime sessions run with thread spinning off, so that idle ORT workers do not steal the
cores from the engine that runs next. `--write` writes benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import cpu_session

from vitexport.attention import ATTENTION_CHOICES
from vitexport.export import export_onnx
from vitexport.geometry import grid_size
from vitexport.model import create_model

HERE = Path(__file__).resolve().parent


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


def matmul_roofline(seconds: float = 3.0) -> float:
    """Best fp32 GEMM GFLOP/s of torch.mm and numpy.matmul on 1024-2048 square matrices."""
    best = 0.0
    for n in (1024, 2048):
        a = torch.randn(n, n)
        b = torch.randn(n, n)
        an, bn = a.numpy(), b.numpy()
        for fn in (lambda a=a, b=b: torch.mm(a, b), lambda an=an, bn=bn: an @ bn):
            fn()
            runs = []
            end = time.perf_counter() + seconds / 4
            while time.perf_counter() < end or len(runs) < 3:
                t0 = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - t0)
            best = max(best, 2 * n**3 / statistics.median(runs) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--sizes", default="224x224,384x384,200x333,97x513")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--attention", choices=ATTENTION_CHOICES, default="sdpa")
    parser.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    machine = (f"{platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'}), "
               f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    roof = matmul_roofline()
    print(f"machine: {machine}\nfp32 matmul roofline: {roof:.1f} GFLOP/s\n", flush=True)
    header = ("| model | size | batch | eager ms | ORT dynamic ms | ORT static ms | dynamic vs eager | "
              "dynamic vs static | dynamic GFLOP/s | % of matmul roofline |")
    lines = [header, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = create_model(name)
            dyn_path = os.path.join(folder, f"{name}.onnx")
            export_onnx(model, dyn_path, attention=args.attention)
            dynamic = cpu_session(dyn_path)
            for h, w in sizes:
                st_path = os.path.join(folder, f"{name}_{h}x{w}.onnx")
                export_onnx(model, st_path, static_size=(h, w), attention=args.attention)
                static = cpu_session(st_path)
                for b in batches:
                    x = np.random.default_rng(0).standard_normal((b, 3, h, w)).astype(np.float32)
                    tx = torch.from_numpy(x)

                    def eager(tx=tx, model=model):
                        with torch.inference_mode():
                            model(tx)

                    engines = {
                        "eager": eager,
                        "dynamic": lambda x=x, s=dynamic: s.run(None, {"pixel_values": x}),
                        "static": lambda x=x, s=static: s.run(None, {"pixel_values": x}),
                    }
                    times: dict[str, list[float]] = {k: [] for k in engines}
                    order = list(engines)
                    for i in range(args.warmup + args.iters):
                        order = order[1:] + order[:1]
                        for key in order:
                            t0 = time.perf_counter()
                            engines[key]()
                            if i >= args.warmup:
                                times[key].append((time.perf_counter() - t0) * 1e3)
                    med = {k: statistics.median(v) for k, v in times.items()}
                    gflops = vit_flops(model.config, h, w, b) / (med["dynamic"] / 1e3) / 1e9
                    line = (f"| {name} | {h}x{w} | {b} | {med['eager']:.1f} | {med['dynamic']:.1f} | "
                            f"{med['static']:.1f} | {med['eager'] / med['dynamic']:.2f}x | "
                            f"{(med['dynamic'] / med['static'] - 1) * 100:+.1f}% | {gflops:.1f} | "
                            f"{100 * gflops / roof:.0f}% |")
                    lines.append(line)
                    print(line, flush=True)
    footer = (f"\nMedians of {args.iters} interleaved runs after {args.warmup} warm-up round(s); random weights, "
              f"fp32, batch as shown, attention export: {args.attention}. Machine: {machine}. fp32 matmul roofline "
              f"(best of torch.mm / numpy on 1024-2048 square matrices, same run): {roof:.1f} GFLOP/s.")
    print(footer)
    if args.write:
        write_section(f"attention export: {args.attention}", "\n".join(lines) + "\n" + footer + "\n")


def write_section(title: str, body: str) -> None:
    """Replace (or add) the section ``## title`` of benchmarks/RESULTS.md, keeping the others."""
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# CPU performance (benchmarks/perf.py)\n"
    head, *sections = text.split("\n## ")
    kept = [s for s in sections if not s.startswith(title)]
    path.write_text("\n## ".join([head.rstrip() + "\n", *[s.rstrip() + "\n" for s in kept],
                                  f"{title}\n\n{body}"]))


if __name__ == "__main__":
    main()
