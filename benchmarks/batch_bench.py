"""`vitexport batch` against a plain in-process loop of `Predictor.predict` over the same images, its peak memory at
two dataset sizes, and Ray Data on a two-node local cluster against the local run.

    python -m benchmarks.batch_bench            # ViT-S/16 (random weights): 512 JPEGs at 224x224 and 512 of mixed
                                                # sizes, 3 interleaved rounds; peak RSS at 10,000 and 100,000 images;
                                                # Ray on `ray start --head` + `ray start --address`, one CPU each
    python -m benchmarks.batch_bench --quick    # smoke test: the digits sample, 64 images, 1 round, 500 and 5,000
                                                # images for memory, the same two-node cluster

Throughput: every round runs both runners on each workload, the order rotating each round, 0.5 s apart. Each run
decodes every image from its file (the loop with `read_image` and the Predictor's size check, as `predict` does;
batch with its own decoder), runs the model and, for batch, writes its Parquet shards into a fresh folder; both
load the model inside the timed run. The loop predicts 16 images at a time (the Predictor's default batch). The
table shows medians over rounds and batch / loop. Decoding alone (one thread) and inference alone (decoded inputs,
batches of 16) are timed once per workload, which says whether decoding bounds the run. The fp32 peak
(benchmarks/peak.py) is measured at the start of the same run, and each rate is also a % of it (FLOPs per image
from benchmarks/perf.vit_flops).

Memory: `vitexport batch` in a child process on 28x28 PNGs (folders of 1,000, given as one list file); the peak RSS
of the child (``ru_maxrss``) at the small and the large count should be about equal (bounded streaming: what grows
with the shard size, one shard's result rows, is the same in both).

Ray: the 224x224 (quick: 28x28) folder through `vitexport batch --address` on a cluster of two `ray start` nodes of
this machine, one CPU and one actor (``--threads 1``) each, against `vitexport batch` here (all cores): the rows
are compared (keys, top-k indices, scores within 1e-5) and images/s per CPU are given for both (from each run's
summary: model loading excluded, Ray's actors starting included).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import base_parser, interleave, run_footer, start_report, write_results
from benchmarks.peak import describe_peak, load_average

ROOT = Path(__file__).resolve().parents[1]
VITEXPORT = [sys.executable, "-c", "from vitexport.cli import main; main()"]
MIXED = [(224, 224), (200, 333), (160, 240), (256, 192)]


def export_model(folder: Path, quick: bool) -> Path:
    from vitexport.export.exporter import export_onnx

    path = folder / ("digits.onnx" if quick else "vit_s16.onnx")
    if quick:
        from vitexport import load_model

        export_onnx(load_model(ROOT / "samples" / "digits-vit.pt"), path)
    else:
        import torch

        from vitexport.model.vit import create_model

        torch.manual_seed(0)
        export_onnx(create_model("vit_small_patch16_224"), path)
    return path


def write_jpegs(folder: Path, sizes: list[tuple[int, int]], count: int, gray: bool, seed: int = 0) -> list[str]:
    """``count`` JPEG photos-like images (smooth gradients plus noise), sizes taken in turn, quality 90."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = (np.sin(xx / (7 + i % 13)) + np.cos(yy / (5 + i % 11))) * 60 + 128
        img = np.clip(base[..., None] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img[..., 0] if gray else img).save(path, quality=90)
        paths.append(str(path))
    return paths


def loop_runner(model: Path, paths: list[str], batch: int = 16) -> None:
    """The plain loop: read 16 files, `Predictor.predict` them, again."""
    from vitexport.serving.predictor import Predictor
    from vitexport.serving.preprocess import read_image

    predictor = Predictor(str(model), provider="cpu")
    for i in range(0, len(paths), batch):
        predictor.predict([read_image(p, check=predictor.check_size) for p in paths[i : i + batch]])


def batch_runner(model: Path, folder: Path, out: Path) -> None:
    from vitexport.batch import run

    run(str(model), str(folder), str(out), force=True, provider="cpu")


def bound(model: Path, paths: list[str]) -> dict[str, float]:
    """Images/s of decoding alone (one thread) and of inference alone (decoded inputs, batches of 16)."""
    from vitexport.serving.predictor import Predictor
    from vitexport.serving.preprocess import read_image

    predictor = Predictor(str(model), provider="cpu")
    t0 = time.perf_counter()
    prepared = [predictor.prepare(read_image(p, check=predictor.check_size)) for p in paths]
    decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(prepared), 16):
        predictor.run_prepared(prepared[i : i + 16])
    return {"decode_per_s": len(paths) / decode_s, "infer_per_s": len(paths) / (time.perf_counter() - t0)}


def throughput(model: Path, folder: Path, quick: bool, rounds: int) -> list[dict[str, Any]]:
    """Per workload: median seconds of each runner over interleaved rounds, images/s, batch / loop, the bound."""
    from benchmarks.perf import vit_flops
    from vitexport.model.config import ViTConfig
    from vitexport.serving.predictor import Predictor

    count = 64 if quick else 512
    native = [(28, 28)] if quick else [(224, 224)]
    mixed = [(28, 28), (20, 20), (33, 17), (40, 40)] if quick else MIXED
    cfg = ViTConfig.from_dict(Predictor(str(model), provider="cpu").config)
    rows = []
    for name, sizes in ((f"{native[0][0]}x{native[0][1]}", native), ("mixed", mixed)):
        paths = write_jpegs(folder / name, sizes, count, gray=quick)
        out = folder / f"out-{name}"
        runners = {"loop": lambda p=paths: loop_runner(model, p), "batch": lambda n=name, o=out: batch_runner(
            model, folder / n, o)}
        times = interleave(runners, warmup=1, iters=rounds, gap_s=0.5)  # a first round untimed: imports, caches
        med = {k: statistics.median(v) / 1e3 for k, v in times.items()}
        flops = sum(vit_flops(cfg, h, w, 1) for h, w in (sizes[i % len(sizes)] for i in range(count))) / count
        row = {"workload": name, "folder": str(folder / name), "images": count, "median_s": med, "rounds_ms": times,
               "per_s": {k: count / s for k, s in med.items()}, "batch_vs_loop": med["loop"] / med["batch"],
               "gflop_per_image": flops / 1e9, **bound(model, paths)}
        rows.append(row)
        print(f"{name}: loop {row['per_s']['loop']:.1f}/s, batch {row['per_s']['batch']:.1f}/s "
              f"({row['batch_vs_loop']:.2f}x)", flush=True)
    return rows


def memory(model: Path, folder: Path, counts: tuple[int, int]) -> list[dict[str, Any]]:
    """Peak RSS of `vitexport batch` on the first ``counts[0]`` and on all ``counts[1]`` of the same 28x28 PNGs, each
    given as one list file (one source: full shards of the default size in both runs)."""
    from samples.digits_data import held_out

    images, _ = held_out(28)
    root = folder / "memory"
    paths = []
    for i in range(counts[1]):
        sub = root / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        paths.append(str(sub / f"{i:06d}.png"))
        Image.fromarray(images[i % len(images)], mode="L").save(paths[-1])
    rows = []
    for n in counts:
        listing = folder / f"memory-{n}.txt"
        listing.write_text("\n".join(paths[:n]) + "\n")
        rss, summary = measure_child(model, [str(listing)], folder / f"mem-out-{n}")
        rows.append({"images": summary["images"], "peak_rss_mib": rss, "per_s": summary["images_per_s"]})
        print(f"memory: {summary['images']:,} images, peak RSS {rss:.0f} MiB", flush=True)
    return rows


# A small Python process that starts the measured one and reports its peak RSS: the RSS of a child forked from this
# (large) process counts this process's pages until it execs, and ru_maxrss keeps that across the exec.
SPAWNER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def measure_child(model: Path, sources: list[str], out: Path) -> tuple[float, dict[str, Any]]:
    """Peak RSS (MiB) and summary of one `vitexport batch` process over ``sources``."""
    done = subprocess.run([sys.executable, "-c", SPAWNER, *VITEXPORT, "batch", str(model), *sources, "-o", str(out),
                           "--provider", "cpu", "--json"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"vitexport batch failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(done.stderr.strip().splitlines()[-1]) / 1024, json.loads(done.stdout)


def compare_rows(a: Path, b: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    x, y = pq.read_table(a).to_pylist(), pq.read_table(b).to_pylist()
    same_keys = [r["path"] for r in x] == [r["path"] for r in y]
    same_top = all([t["index"] for t in r["top_k"] or []] == [t["index"] for t in s["top_k"] or []]
                   for r, s in zip(x, y, strict=False))
    diff = max((abs(t["score"] - u["score"]) for r, s in zip(x, y, strict=False) if r["top_k"] and s["top_k"]
                for t, u in zip(r["top_k"], s["top_k"], strict=True)), default=0.0)
    return {"rows": len(x), "same_keys": same_keys, "same_top_k": same_top, "max_score_diff": diff,
            "equal": same_keys and same_top and diff < 1e-5 and len(x) == len(y)}


def on_ray(model: Path, folder: Path, out: Path) -> dict[str, Any]:
    """The folder through a two-node cluster (one CPU each) and here; rows compared, images/s per CPU."""
    from vitexport.serving.batch.cluster import local_cluster

    out.mkdir(parents=True, exist_ok=True)
    _, local = measure_child(model, [str(folder)], out / "local")
    with local_cluster(nodes=2, cpus=1, PYTHONPATH=str(ROOT)) as cluster:
        done = subprocess.run([*VITEXPORT, "batch", str(model), str(folder), "-o", str(out / "ray"), "--provider",
                               "cpu", "--address", cluster.address, "--replicas", "2", "--threads", "1",
                               "--shard-size", "64", "--json"], env=cluster.env, capture_output=True, text=True,
                              timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"vitexport batch on Ray failed: {done.stderr[-2000:]}")
    ray = json.loads(done.stdout)
    cpus = os.cpu_count() or 1
    return {"local_per_s": local["images_per_s"], "local_cpus": cpus, "ray_per_s": ray["images_per_s"], "ray_cpus": 2,
            "local_per_cpu": local["images_per_s"] / cpus, "ray_per_cpu": ray["images_per_s"] / 2,
            "compare": compare_rows(out / "local", out / "ray")}


def lines_of(report: dict[str, Any]) -> list[str]:
    peak = report["peak"]["measured_gflops"]
    text = ["## Throughput (benchmarks/batch_bench.py)", "",
            "| workload | images | loop images/s | batch images/s | batch / loop | loop % of peak | batch % of peak "
            "| decode alone /s (1 thread) | inference alone /s | bound |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in report["throughput"]:
        pct = {k: 100 * v * r["gflop_per_image"] / peak for k, v in r["per_s"].items()}
        which = "decoding" if r["decode_per_s"] < r["infer_per_s"] else "inference"
        text.append(f"| {r['workload']} | {r['images']} | {r['per_s']['loop']:.1f} | {r['per_s']['batch']:.1f} | "
                    f"{r['batch_vs_loop']:.2f}x | {pct['loop']:.0f}% | {pct['batch']:.0f}% | "
                    f"{r['decode_per_s']:.0f} | {r['infer_per_s']:.1f} | {which} |")
    text += ["", "## Peak memory", "", "| images | peak RSS MiB | images/s |", "| ---: | ---: | ---: |"]
    text += [f"| {m['images']:,} | {m['peak_rss_mib']:.0f} | {m['per_s']:.1f} |" for m in report["memory"]]
    ray = report["ray"]
    text += ["", "## Ray Data on two `ray start` nodes of this machine (one CPU, one actor each)", "",
             "| run | CPUs | images/s | images/s per CPU |", "| --- | ---: | ---: | ---: |",
             f"| local | {ray['local_cpus']} | {ray['local_per_s']:.1f} | {ray['local_per_cpu']:.1f} |",
             f"| Ray, 2 nodes | {ray['ray_cpus']} | {ray['ray_per_s']:.1f} | {ray['ray_per_cpu']:.1f} |", "",
             f"Rows equal to the local run: {ray['compare']['equal']} ({ray['compare']['rows']} rows, max score "
             f"difference {ray['compare']['max_score_diff']:.2g}).", "", describe_peak(report["peak"]), "",
             run_footer(report)]
    return text


def main() -> None:
    parser = base_parser(__doc__, "the digits sample, 64 images, 1 round, 500/5,000 for memory: a smoke test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-counts", default="10000,100000")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.memory_counts = 1, "500,5000"
    small, large = (int(c) for c in args.memory_counts.split(","))
    start = time.perf_counter()
    report = start_report(args)
    print(describe_peak(report["peak"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        folder = Path(tmp)
        model = export_model(folder, args.quick)
        report["throughput"] = throughput(model, folder, args.quick, args.rounds)
        report["memory"] = memory(model, folder, (small, large))
        report["ray"] = on_ray(model, Path(report["throughput"][0]["folder"]), folder / "ray")
    report.update(load_end=load_average() or 0.0, elapsed_s=time.perf_counter() - start)
    write_results(args.out_dir, "batch", report, lines_of(report))


if __name__ == "__main__":
    main()
