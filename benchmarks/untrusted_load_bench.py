"""What the hostile-file defences cost when reading a checkpoint: plain ``torch.load`` vs the pre-scan vs the
whole path (bounded zip read, pickle pre-scan, trial load in a forked child, then the real load), interleaved.

    python -m benchmarks.untrusted_load_bench [--iters 15] [--warmup 2] [--quick]

Cases: the digits sample (0.6 MB) and a ViT-B/16-size state dict (86.6 M parameters, 346 MB, random weights,
written once to a temporary folder). Per case the three paths alternate run by run (the order flips every
round) in this process; medians, spread, and the overhead of the whole path over plain ``torch.load``.
Run it on a quiet machine: timings taken while other work runs are noise. ``--quick`` is a smoke test
(the sample only, 2 timed runs, 1 warm-up), not a measurement.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vitexport.model.config import ViTConfig
from vitexport.model.presets import PRESETS
from vitexport.model.vit import VisionTransformer
from vitexport.security.sniff import sniff
from vitexport.security.untrusted import load_torch_file, prescan, torch_safe_globals

ROOT = Path(__file__).resolve().parents[1]


def plain(path: Path) -> Callable[[], object]:
    def run() -> object:
        with torch.serialization.safe_globals(torch_safe_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    return run


def cases(folder: Path, quick: bool) -> dict[str, Path]:
    out = {"digits sample (0.6 MB)": ROOT / "samples" / "digits-vit.pt"}
    if not quick:
        path = folder / "vit_b16.pt"
        torch.manual_seed(0)
        torch.save(VisionTransformer(ViTConfig(**PRESETS["vit_base_patch16_224"])).state_dict(), path)
        out[f"ViT-B/16 state dict ({path.stat().st_size / 1e6:.0f} MB)"] = path
    return out


def time_case(path: Path, iters: int, warmup: int) -> dict[str, list[float]]:
    kind = sniff(path).kind
    paths = {
        "torch.load": plain(path),
        "pre-scan only": lambda: prescan(path, kind),
        "whole path": lambda: load_torch_file(path, kind),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(warmup + iters):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            paths[name]()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    iters, warmup = (2, 1) if args.quick else (args.iters, args.warmup)
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'case':34s} {'path':14s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s}")
        for label, path in cases(Path(folder), args.quick).items():
            times = time_case(path, iters, warmup)
            for name, values in times.items():
                print(f"{label:34s} {name:14s} {statistics.median(values):10.1f} {min(values):8.1f} "
                      f"{max(values):8.1f}")
            extra = statistics.median(times["whole path"]) - statistics.median(times["torch.load"])
            print(f"{label:34s} {'overhead':14s} {extra:10.1f} ms over torch.load "
                  f"({statistics.median(times['whole path']) / statistics.median(times['torch.load']):.2f}x), "
                  f"{iters} interleaved runs")


if __name__ == "__main__":
    main()
