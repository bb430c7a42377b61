"""`vitexport batch`: an exported model over a whole dataset into Parquet shards, resumable, here or on Ray."""

from __future__ import annotations

import json
import sys
import time

import click

from vitexport.cli.app import cli, echo
from vitexport.cli.options import ONE_ENGINE, limit_options
from vitexport.engines import DEFAULT_PROVIDER
from vitexport.serving.defaults import CPU_RUN_TOKENS, DEFAULT_MAX_BATCH, DEFAULT_SHARD_SIZE, DEFAULT_TOP_K


class ProgressLine:
    """One line on a terminal's stderr, redrawn at most 5 times a second: images, rate, ETA, failures."""

    def __init__(self) -> None:
        self.last = 0.0
        self.width = 0
        self.text = ""

    def __call__(self, p) -> None:
        now = time.monotonic()
        finished = p.total is not None and p.images >= p.total
        if now - self.last < 0.2 and not finished:
            return
        self.last = now
        rate = p.processed / p.seconds if p.seconds > 0 else 0.0
        done = f"{p.images:,}/{p.total:,} images ({100 * p.images / max(p.total, 1):.0f}%)" if p.total is not None \
            else f"{p.images:,} images, {p.shards:,}/{p.total_shards if p.total_shards is not None else '?'} shards"
        eta = ""
        if p.total is not None and rate > 0:
            left = int((p.total - p.images) / rate)
            eta = f"  ETA {left // 3600:d}:{left // 60 % 60:02d}:{left % 60:02d}"
        failed = f"  {p.failed:,} failed" if p.failed else ""
        text = f"{done}  {rate:,.1f} images/s{eta}{failed}"
        if text == self.text:
            return
        self.text = text
        sys.stderr.write("\r" + text.ljust(self.width))
        sys.stderr.flush()
        self.width = len(text)

    def end(self) -> None:
        if self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _print_summary(summary) -> None:
    skipped = f" ({summary.skipped_shards:,} already done, skipped)" if summary.skipped_shards else ""
    shards = f"{summary.shards:,} shard{'' if summary.shards == 1 else 's'}"
    echo(f"output    {summary.output}: {summary.images:,} rows in {shards}{skipped}")
    echo(f"failed    {summary.failed:,} (rows with an error)")
    echo(f"ran       {summary.processed:,} images in {summary.seconds:.1f} s, {summary.images_per_s:,.1f} "
               f"images/s ({summary.mode}, {summary.provider})")
    if summary.ignored_files:
        echo(f"ignored   {summary.ignored_files:,} files without an image, .tar or .parquet suffix")


@cli.command("batch")
@click.argument("model_path", metavar="MODEL", type=str)
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True, type=str)
@click.option("-o", "--output", required=True, help="Output folder: part-NNNNN.parquet shards and _job.json.")
@click.option("--image-column", default="image", show_default=True,
              help="Parquet sources: the column of encoded images (binary, or a struct with a 'bytes' field).")
@click.option("--top-k", type=click.IntRange(min=1), default=DEFAULT_TOP_K, show_default=True)
@click.option("--logits", is_flag=True, help="Also write each image's logits (models with a head).")
@click.option("--shard-size", type=click.IntRange(min=1), default=DEFAULT_SHARD_SIZE, show_default=True,
              help="Images per output shard, the unit of resuming (a tar file is one shard).")
@click.option("--force", is_flag=True, help="Start over instead of resuming (replaces this layout's files in -o).")
@click.option("--provider", type=click.Choice(ONE_ENGINE), default=DEFAULT_PROVIDER, show_default=True,
              help="Engine, as for predict; on Ray, cuda and tensorrt give each actor a GPU.")
@click.option("--threads", type=click.IntRange(min=1), help="Engine threads (per actor on Ray, default 1 there).")
@click.option("--workers", type=click.IntRange(min=1), help="Decoding threads beside the engine (default: up to 4).")
@click.option("--max-batch", type=click.IntRange(min=1), default=DEFAULT_MAX_BATCH, show_default=True,
              help="Most images of one patch grid in one engine run.")
@click.option("--run-tokens", type=click.IntRange(min=0),
              help=f"Most tokens (images x tokens each) in one engine run [default: {CPU_RUN_TOKENS} on a CPU, no "
                   "cap on a GPU; 0: no cap].")
@limit_options
@click.option("--ray", "use_ray", is_flag=True, help="Run on a new local Ray instance (a pool of Ray Data actors).")
@click.option("--address", help="Run on the Ray cluster at this address (e.g. 10.0.0.5:6379, auto).")
@click.option("--replicas", type=click.IntRange(min=1),
              help="Ray actors, each holding one model (default: the cluster's CPUs over --threads).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object (and no progress).")
def batch_cmd(model_path, sources, output, image_column, top_k, logits, shard_size, force, provider, threads,
              workers, max_batch, run_tokens, max_tokens, max_memory_gb, use_ray, address, replicas, as_json) -> None:
    """Run a model over every image of SOURCE... (folders, globs, path lists, Parquet files, tar shards) into
    Parquet shards in OUTPUT; a rerun resumes, bad images become rows with an error."""
    import logging

    from vitexport.serving.batch.job import run

    if use_ray or address:
        from vitexport.serving.batch.on_ray import ray_modules

        ray_modules()  # exit 2 with the install command before any work; Ray Data sets up its loggers on import
        if not logging.getLogger("vitexport").isEnabledFor(logging.INFO):
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # its progress and tracebacks: our one line says
    line = ProgressLine() if sys.stderr.isatty() and not as_json else None
    try:
        summary = run(model_path, sources, output, top_k=top_k, logits=logits, image_column=image_column,
                      shard_size=shard_size, force=force, provider=provider, threads=threads, workers=workers,
                      max_batch=max_batch, run_tokens=run_tokens, max_tokens=max_tokens, max_memory_gb=max_memory_gb,
                      ray=use_ray, address=address, replicas=replicas, progress=line)
    finally:
        if line is not None:
            line.end()
    if summary.provider_note:
        echo(f"note: {summary.provider_note}", err=True)
    if as_json:
        echo(json.dumps(summary.to_json()))
        return
    _print_summary(summary)
