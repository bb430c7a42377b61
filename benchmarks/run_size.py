"""Time per image against the number of images in one engine run, on the CPU engines: what `Predictor`'s
``run_tokens`` cap (`vitexport.serving.defaults.CPU_RUN_TOKENS`) rests on.

    python -m benchmarks.run_size            # ViT-S/16 (random weights), ORT CPU and OpenVINO, 224x224, 200x333
                                             # and 160x240, runs of 1, 2, 4, 8 and 16 images, 5 interleaved rounds
    python -m benchmarks.run_size --quick    # the digits sample, 1 round: a smoke test

Each case runs 16 decoded images of one size as 16/n engine runs of n images through `Predictor.run_prepared`
with the cap lifted (``run_tokens=0``, ``max_batch=n``), and as one call of 16 with the default cap; every run
size of a size and engine is timed in the same round (order rotating), after an untimed round. The table shows the
median ms per image, each run size's cost over the best one, the tokens a run holds, and what the default cap
picks. The fp32 peak (benchmarks/peak.py) is measured at the start of the same run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.batch_bench import export_model
from benchmarks.common import base_parser, interleave, run_footer, start_report, write_results
from benchmarks.peak import describe_peak, load_average

RUNS = (1, 2, 4, 8, 16)
SIZES = [(224, 224), (200, 333), (160, 240)]
IMAGES = 16


def predictors(model: Path, engine: str) -> dict[str, Any]:
    """One Predictor per run size (the cap lifted), and one with the defaults."""
    from vitexport.serving.predictor import Predictor

    out = {f"runs of {n}": Predictor(str(model), provider=engine, max_batch=n, run_tokens=0, spin=False)
           for n in RUNS}
    out["default cap"] = Predictor(str(model), provider=engine, max_batch=IMAGES, spin=False)
    return out


def case(model: Path, engine: str, size: tuple[int, int], rounds: int) -> dict[str, Any]:
    from vitexport._util.geometry import padded_size, token_count

    preds = predictors(model, engine)
    first = preds["default cap"]
    cfg = first.vit_config
    h, w = padded_size(*size, first.patch)  # what the graph runs: whole patches (the batch job pads so too)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((first.channels, h, w)).astype(np.float32) for _ in range(IMAGES)]
    runners = {name: (lambda p=p: p.run_prepared(xs)) for name, p in preds.items()}
    times = interleave(runners, warmup=1, iters=rounds, gap_s=0.2)
    per_image = {name: statistics.median(v) / IMAGES for name, v in times.items()}
    tokens = token_count(h, w, first.patch, cfg.num_prefix_tokens)
    best = min(per_image[f"runs of {n}"] for n in RUNS)
    return {"engine": engine, "size": list(size), "tokens": tokens, "ms_per_image": per_image,
            "over_best": {k: v / best for k, v in per_image.items()},
            "cap_images": first.batch_limit((first.channels, h, w)), "rounds_ms": times}


def lines_of(report: dict[str, Any]) -> list[str]:
    head = " | ".join(f"runs of {n}" for n in RUNS)
    text = ["## Run size (benchmarks/run_size.py): ms per image against images per engine run", "",
            f"| engine | input | tokens/image | {head} | default cap (images a run) | worst / best |",
            "| --- | --- | ---: | " + " | ".join("---:" for _ in RUNS) + " | ---: | ---: |"]
    for r in report["cases"]:
        ms, over = r["ms_per_image"], r["over_best"]
        cells = " | ".join(f"{ms[f'runs of {n}']:.1f} ({n * r['tokens']:,} tok)" for n in RUNS)
        worst = max(over[f"runs of {n}"] for n in RUNS)
        text.append(f"| {r['engine']} | {r['size'][0]}x{r['size'][1]} | {r['tokens']} | {cells} | "
                    f"{ms['default cap']:.1f} ({r['cap_images']}) | {worst:.2f} |")
    text += ["", f"Medians of {report['args']['rounds']} interleaved rounds after an untimed one; 16 images a case; "
             "each cell: ms per image (tokens in one run).", "", describe_peak(report["peak"]), "",
             run_footer(report)]
    return text


def main() -> None:
    parser = base_parser(__doc__, "the digits sample, 1 round: a smoke test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engines", default="cpu,openvino")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    start = time.perf_counter()
    report = start_report(args)
    with tempfile.TemporaryDirectory(prefix="run-size-") as tmp:
        model = export_model(Path(tmp), args.quick)
        sizes = [(28, 28), (20, 33)] if args.quick else SIZES
        report["cases"] = []
        for engine in args.engines.split(","):
            for size in sizes:
                report["cases"].append(case(model, engine, size, args.rounds))
                r = report["cases"][-1]
                print(f"{engine} {size}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["ms_per_image"].items()),
                      flush=True)
    report.update(load_end=load_average() or 0.0, elapsed_s=time.perf_counter() - start)
    write_results(args.out_dir, "run_size", report, lines_of(report))


if __name__ == "__main__":
    main()
