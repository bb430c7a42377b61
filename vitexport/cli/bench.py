"""`vitexport bench`: latency and throughput per size, batch and engine."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from vitexport.cli.app import cli, echo
from vitexport.cli.options import check_source, fmt_hw, limit_options, model_source, preset_options, sweep_options
from vitexport.engines import DEFAULT_PROVIDER, PROVIDER_CHOICES
from vitexport.serving.defaults import BENCH_BATCH_SIZES, BENCH_ITERS, BENCH_WARMUP

if TYPE_CHECKING:
    from vitexport.serving.bench import BenchReport


@cli.command("bench")
@click.argument("model_path", metavar="MODEL", type=str, required=False)
@preset_options
@click.option("--config", "config", type=str, help="With --preset: overrides of its options (a JSON file, or the JSON "
                                                    "object itself), e.g. '{\"depth\": 2}'.")
@sweep_options(BENCH_BATCH_SIZES, "native and two odd sizes")
@click.option("--provider", type=click.Choice(PROVIDER_CHOICES), default=DEFAULT_PROVIDER, show_default=True,
              help="Engine to time, or all: every usable serving engine (ONNX Runtime, OpenVINO) side by side, "
                   "interleaved.")
@click.option("--warmup", type=click.IntRange(min=0), default=BENCH_WARMUP, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=BENCH_ITERS, show_default=True)
@click.option("--threads", type=click.IntRange(min=1, max=1024), help="Intra-op threads for the engines (and torch).")
@click.option("--compare-torch", is_flag=True, help="Also time PyTorch eager, interleaved, and print the ratio.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@limit_options
def bench_cmd(model_path, preset, random_weights, config, sizes, batch_sizes, provider, warmup, iters, threads,
              compare_torch, as_json, max_tokens, max_memory_gb) -> None:
    """Median and p90 latency and images/s per size and batch, per engine. With --preset NAME --random-weights:
    that architecture, exported to a temporary ONNX file first."""
    from vitexport.serving.bench import bench

    check_source(model_path, preset, random_weights, "MODEL")
    if config is not None and preset is None:
        raise click.UsageError("--config applies to --preset (overrides of its options); an exported MODEL "
                               "carries its own config")

    def progress(text: str) -> None:
        if not as_json and sys.stderr.isatty():
            echo(f"{text:40s}", nl=False, err=True, rewind=True)

    with model_source(model_path, preset, random_weights, config, max_tokens=max_tokens,
                      max_memory_gb=max_memory_gb) as model_path:
        report = bench(model_path, sizes, batch_sizes, provider=provider, warmup=warmup, iters=iters,
                       compare_torch=compare_torch, threads=threads, progress=progress, max_tokens=max_tokens,
                       max_memory_gb=max_memory_gb)
    if sys.stderr.isatty() and not as_json:
        click.echo("\r" + " " * 40 + "\r", nl=False, err=True)  # clears the progress line
    if report.provider_note:
        echo(f"note: {report.provider_note}", err=True)
    if as_json:
        echo(json.dumps(report.to_json(), indent=2), block=True)
        return
    _print_bench(report, compare_torch)


def _print_bench(report: BenchReport, compare_torch: bool) -> None:
    """One row per (size, batch); per engine its median, p90, images/s and parity side by side; then PyTorch;
    then the recommendation."""
    names = [e.name for e in report.engines]
    checked = bool(report.parity_reference)
    echo(f"model {report.model}; {report.warmup} warm-up + {report.iters} timed runs per case"
               + (", engines interleaved" if len(names) > 1 or compare_torch else ""))
    for e in report.engines:
        echo(f"engine {e.name}: {', '.join(e.providers)} ({e.version})" + "".join(f"; {n}" for n in e.notes))
    for skipped in report.skipped:
        echo(f"skipped {skipped}")
    if checked:
        echo(f"parity: every engine's output against {report.parity_reference} (max |difference|)")
    head = f"{'size':>9s} {'batch':>5s}"
    for name in names:
        head += f" {name + ' median ms':>18s} {'p90 ms':>8s} {'images/s':>9s}"
        head += f" {'parity':>15s}" if checked else ""
    if compare_torch:
        head += f" {'torch median ms':>18s} {'p90 ms':>8s} {'images/s':>9s}"
        head += "".join(f" {name + ' speed-up':>16s}" for name in names)
    echo(head)
    rows: dict[tuple[int, int, int], dict[str, Any]] = {}
    for c in report.cases:
        rows.setdefault((c.height, c.width, c.batch), {})[c.engine] = c
    for (h, w, b), by_engine in rows.items():
        cases = [by_engine[name] for name in names]
        line = f"{fmt_hw((h, w)):>9s} {b:>5d}"
        for c in cases:
            line += f" {c.runtime_median_ms:>18.2f} {c.runtime_p90_ms:>8.2f} {c.runtime_images_per_s:>9.1f}"
            if checked:
                line += f" {('ok ' if c.parity_ok else 'WRONG ') + f'{c.parity_max_abs:.1e}':>15s}"
        if compare_torch:
            c = cases[0]
            line += f" {c.torch_median_ms:>18.2f} {c.torch_p90_ms:>8.2f} {c.torch_images_per_s:>9.1f}"
            line += "".join(f" {c.speedup_vs_torch:>15.2f}x" for c in cases)
        echo(line)
    if len(names) > 1:
        echo(report.recommendation)
