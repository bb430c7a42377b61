"""Offline inference over datasets: `run` an exported model over folders, globs, path lists, Parquet image columns
or WebDataset tar shards into a folder of Parquet shards, resumably, here or on a Ray cluster.

- `sources`: what a SOURCE argument names, its images (`Item`) and shards (`Shard`), the one image decoder.
- `infer`: a `Worker` (one Predictor, decoding threads) turns a shard into an Arrow table.
- `output`: the output folder: atomic shard commits, the job file, the lock, what resuming skips.
- `job`: `run` here (one shard at a time) and the `Summary`; `on_ray`: the same shards on Ray Data actors.

Imports numpy and pyarrow (the ``batch`` extra), never torch; only `on_ray` imports Ray.
"""

from __future__ import annotations

from vitexport._util.lazy import lazy_attributes

_LAZY = {
    "run": "vitexport.serving.batch.job",
    "Summary": "vitexport.serving.batch.job",
    "Progress": "vitexport.serving.batch.job",
    "BatchOptions": "vitexport.serving.batch.infer",
    "Worker": "vitexport.serving.batch.infer",
    "Source": "vitexport.serving.batch.sources",
    "Item": "vitexport.serving.batch.sources",
    "Shard": "vitexport.serving.batch.sources",
    "open_sources": "vitexport.serving.batch.sources",
    "decode_image": "vitexport.serving.batch.sources",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
__all__ = sorted(_LAZY)
