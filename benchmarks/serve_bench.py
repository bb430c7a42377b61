"""Load test of `vitexport serve` through tritonclient.http on loopback, against the in-process Predictor.

    python -m benchmarks.serve_bench                 # ViT-S/16 (random weights), 224 and mixed sizes,
                                                     # 1/4/16/64 clients, 10 s per case, 3 interleaved rounds
    python -m benchmarks.serve_bench --quick         # smoke test: the digits sample, 1/4 clients, 2 s, 1 round
    python -m benchmarks.serve_bench --fault         # kill one of two replicas under load; failures and recovery

Two servers run side by side on this machine (batching: --max-batch 16 --batch-wait-ms 5; and
--max-batch 1), each one replica on the same cores as the clients and the in-process runs. Every
request is one image, FP32 pixel_values in the binary form; each client thread has its own
client and sends requests back to back for a bounded time and count. The in-process references
are one thread calling Predictor.predict on lists of 16 images (batched) and N threads predicting
one image each. Cases are interleaved within a round; the table shows medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from vitexport.serving.http.background import replica_pids, start_server, wait_replicas
from vitexport.serving.predictor import Predictor

NAME = "bench"
MAX_REQUESTS = 200_000  # per case, on top of the time bound


def export_model(folder: Path, quick: bool) -> tuple[Path, dict[str, list[tuple[int, int]]]]:
    """The model file and its workloads (name -> sizes a request picks from)."""
    from vitexport.export.onnx_export import export_onnx

    path = folder / ("digits.onnx" if quick else "vit_s16.onnx")
    if quick:
        from vitexport import load_model

        export_onnx(load_model(Path(__file__).resolve().parents[1] / "samples" / "digits-vit.pt"), path)
        return path, {"28x28": [(28, 28)], "mixed": [(28, 28), (20, 20), (33, 17), (40, 40)]}
    import torch

    from vitexport.model.vit import create_model

    torch.manual_seed(0)
    export_onnx(create_model("vit_small_patch16_224"), path)
    return path, {"224x224": [(224, 224)], "mixed": [(224, 224), (200, 333), (160, 240), (256, 192)]}


def _stats(latencies: list[float], images: int, seconds: float, errors: int) -> dict:
    lat = sorted(latencies) or [float("nan")]
    return {"images_per_s": images / seconds if seconds else 0.0, "p50_ms": 1e3 * lat[len(lat) // 2],
            "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "errors": errors}


def _threads(worker, concurrency: int) -> float:
    start = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=worker, args=(t, start)) for t in range(concurrency)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    return time.perf_counter() - t0


def run_clients(address: str, channels: int, sizes, concurrency: int, seconds: float) -> dict:
    """``concurrency`` tritonclient threads (one client each) for ``seconds``; one image per request."""
    latencies, images, errors, lock = [], [0], [0], threading.Lock()

    def worker(t: int, start: threading.Barrier) -> None:
        triton = httpclient.InferenceServerClient(url=address, network_timeout=120)
        rng = np.random.default_rng(t)
        prebuilt = {}
        for h, w in sizes:
            inp = httpclient.InferInput("pixel_values", [1, channels, h, w], "FP32")
            inp.set_data_from_numpy(rng.standard_normal((1, channels, h, w)).astype(np.float32))
            prebuilt[(h, w)] = [inp]
        mine, ok, bad = [], 0, 0
        start.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline and ok + bad < MAX_REQUESTS:
            inputs = prebuilt[sizes[int(rng.integers(len(sizes)))]]
            t0 = time.perf_counter()
            try:
                triton.infer(NAME, inputs)
                ok += 1
                mine.append(time.perf_counter() - t0)
            except Exception:
                bad += 1
        with lock:
            latencies.extend(mine)
            images[0] += ok
            errors[0] += bad

    elapsed = _threads(worker, concurrency)
    return _stats(latencies, images[0], elapsed, errors[0])


def run_inprocess(predictor: Predictor, sizes, concurrency: int, seconds: float, batch: int) -> dict:
    """``concurrency`` threads calling ``predictor.predict`` on ``batch`` images at a time."""
    latencies, images, lock = [], [0], threading.Lock()

    def worker(t: int, start: threading.Barrier) -> None:
        rng = np.random.default_rng(t)
        pool = {s: rng.standard_normal((predictor.channels, *s)).astype(np.float32) for s in sizes}
        mine, count = [], 0
        start.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline and count < MAX_REQUESTS:
            xs = [pool[sizes[int(rng.integers(len(sizes)))]] for _ in range(batch)]
            t0 = time.perf_counter()
            predictor.predict(xs)
            mine.append(time.perf_counter() - t0)
            count += batch
        with lock:
            latencies.extend(mine)
            images[0] += count

    elapsed = _threads(worker, concurrency)
    return _stats(latencies, images[0], elapsed, 0)


def benchmark(args: argparse.Namespace, model: Path, workloads: dict) -> list[dict]:
    predictor = Predictor(str(model), provider="cpu")
    servers = {}
    try:
        for label, extra in (("server", ["--max-batch", "16", "--batch-wait-ms", "5"]),
                             ("server max-batch 1", ["--max-batch", "1"])):
            url, tree = start_server(model, "--name", NAME, "--provider", "cpu", *extra)
            servers[label] = (url.removeprefix("http://"), tree)
        rows: dict[tuple, list[dict]] = {}
        for r in range(args.rounds):
            for workload, sizes in workloads.items():
                rows.setdefault((workload, "in-process batch 16", 1), []).append(
                    run_inprocess(predictor, sizes, 1, args.seconds, 16))
                for c in args.concurrency:
                    for label, (address, _) in servers.items():
                        rows.setdefault((workload, label, c), []).append(
                            run_clients(address, predictor.channels, sizes, c, args.seconds))
                    rows.setdefault((workload, "in-process threads", c), []).append(
                        run_inprocess(predictor, sizes, c, args.seconds, 1))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for _, tree in servers.values():
            tree.stop(signal.SIGTERM)
    return [{"workload": w, "mode": m, "clients": c,
             **{k: statistics.median(run[k] for run in runs) for k in runs[0] if k != "errors"},
             "errors": sum(run["errors"] for run in runs), "rounds": len(runs)}
            for (w, m, c), runs in rows.items()]


def print_table(results: list[dict]) -> None:
    print(f"{'workload':>9s} {'mode':>20s} {'clients':>7s} {'images/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'errors':>6s} {'vs in-process batched':>22s}")
    ref = {r["workload"]: r["images_per_s"] for r in results if r["mode"] == "in-process batch 16"}
    for r in sorted(results, key=lambda r: (r["workload"], r["clients"], r["mode"])):
        ratio = r["images_per_s"] / ref[r["workload"]] if ref.get(r["workload"]) else float("nan")
        print(f"{r['workload']:>9s} {r['mode']:>20s} {r['clients']:>7d} {r['images_per_s']:>9.1f} "
              f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>6d} {ratio:>21.0%}")


def fault(args: argparse.Namespace, model: Path, sizes) -> None:
    """Kill one of two replicas under load; print failed requests and recovery times."""
    url, tree = start_server(model, "--name", NAME, "--provider", "cpu", "--replicas", "2")
    address, channels = url.removeprefix("http://"), Predictor(str(model), provider="cpu").channels
    try:
        before = wait_replicas(tree, NAME, 2)
        if len(before) != 2:
            raise SystemExit(f"expected 2 replica processes, found {before}; is /proc readable?")
        log, lock, stop = [], threading.Lock(), threading.Event()

        def load(t: int) -> None:
            triton = httpclient.InferenceServerClient(url=address, network_timeout=60)
            inp = httpclient.InferInput("pixel_values", [1, channels, *sizes[0]], "FP32")
            inp.set_data_from_numpy(np.zeros((1, channels, *sizes[0]), np.float32))
            while not stop.is_set() and len(log) < MAX_REQUESTS:
                try:
                    triton.infer(NAME, [inp])
                    ok = True
                except Exception:
                    ok = False
                with lock:
                    log.append((time.monotonic(), ok))

        threads = [threading.Thread(target=load, args=(t,)) for t in range(args.concurrency[-1])]
        for th in threads:
            th.start()
        time.sleep(args.seconds / 3)
        killed = time.monotonic()
        os.kill(before[0], signal.SIGKILL)
        replaced = None
        while time.monotonic() - killed < max(60.0, args.seconds):
            now = replica_pids(tree, NAME)
            if replaced is None and len(now) == 2 and before[0] not in now:
                replaced = time.monotonic() - killed
            if replaced is not None and time.monotonic() - killed > replaced + args.seconds / 3:
                break
            time.sleep(0.1)
        stop.set()
        for th in threads:
            th.join()
        print(json.dumps(_fault_summary(log, killed, replaced, len(threads)), indent=2))
    finally:
        tree.stop(signal.SIGTERM)


def _fault_summary(log: list[tuple[float, bool]], killed: float, replaced: float | None, clients: int) -> dict:
    """Failed requests and recovery: service (the last failure after the kill) and capacity (the new
    replica process; requests/s before the kill, until the new process, and after it)."""
    failed = [t - killed for t, ok in log if not ok]
    start, end = min(t for t, _ in log), max(t for t, _ in log)
    new = killed + (replaced if replaced is not None else end - killed)

    def rate(lo: float, hi: float) -> float | None:
        n = sum(ok for t, ok in log if lo <= t < hi)
        return round(n / (hi - lo), 1) if hi > lo else None

    after = [ok for t, ok in log if t > new]
    return {"clients": clients, "requests": len(log), "failed": len(failed),
            "service_recovered_after_s": max(failed) if failed else 0.0,
            "replacement_process_after_s": replaced,
            "ok_per_s_before_kill": rate(start, killed), "ok_per_s_until_replacement": rate(killed, new),
            "ok_per_s_after_replacement": rate(new, end),
            "requests_after_replacement": len(after), "failed_after_replacement": after.count(False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="The digits sample, 1/4 clients, 2 s, one round.")
    parser.add_argument("--fault", action="store_true", help="Kill a replica under load instead.")
    parser.add_argument("--concurrency", default=None, help="Comma-separated client counts (default 1,4,16,64).")
    parser.add_argument("--seconds", type=float, default=None, help="Seconds per case (default 10).")
    parser.add_argument("--rounds", type=int, default=None, help="Interleaved rounds (default 3).")
    parser.add_argument("--json", help="Also write the results to this file.")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in (args.concurrency or ("1,4" if args.quick else "1,4,16,64")).split(",")]
    args.seconds = args.seconds or (2.0 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"clients, servers and in-process runs share these cores")
    with tempfile.TemporaryDirectory() as folder:
        model, workloads = export_model(Path(folder), args.quick)
        if args.fault:
            fault(args, model, next(iter(workloads.values())))
            return
        results = benchmark(args, model, workloads)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
