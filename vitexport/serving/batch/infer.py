"""One shard of images in, one Arrow table of results out: decoding in threads, inference grouped by patch grid.

A `Worker` holds one `Predictor` and a pool of decoding threads. It streams a shard's items: up to a window
of images are decoded ahead (`Item.load` with the Predictor's size check, `Predictor.prepare`) while the calling
thread runs the model, so decoding overlaps inference. Decoded inputs are zero-padded right/bottom to whole
patches, which is what the exported graph does to them itself (docs/numerics.md, "Padding"): inputs of one
patch grid then have one shape and share a batch, with the results they get alone (tested). Batches go
through `Predictor.run_prepared` (equal shapes, at most ``max_batch``, split to stay within the memory
limit). A bad image, or a batch the engine refuses, becomes an error row; the job goes on.

Memory is bounded whatever the source's size: the decoding window, the images waiting for a full batch and
one shard's result rows. The local runner and the Ray actors both run shards through this module, so their
rows are the same. Imports pyarrow (`table`), never torch or Ray.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from vitexport._util.errors import UsageError, VitexportError, one_line
from vitexport._util.geometry import padded_size
from vitexport.engines import DEFAULT_PROVIDER
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS
from vitexport.serving.batch.sources import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_SHARD_SIZE, Item, Shard
from vitexport.serving.defaults import DEFAULT_MAX_BATCH, DEFAULT_TOP_K

logger = logging.getLogger(__name__)

MAX_DECODE_THREADS = 4


@dataclass(frozen=True)
class BatchOptions:
    """What a batch job computes and how: `vitexport.batch.run`'s options, each checked on creation.

    Attributes:
        top_k: classes per image.
        logits: also write the logits (models with a head).
        image_column: the Parquet column of encoded images.
        shard_size: images per output shard, the unit of resuming (a tar file is one shard).
        provider: the engine, as for `Predictor`; on Ray, cuda and tensorrt give each actor a GPU.
        threads: engine threads (per actor on Ray, default 1 there).
        workers: decoding threads beside the engine (default: up to 4).
        max_batch: most images of one patch grid in one engine run.
        max_tokens: refuse images with more tokens (an error row).
        max_memory_gb: refuse images whose estimated forward pass is larger (an error row).
        max_image_bytes: refuse larger encoded images from tar and Parquet sources (an error row).
        run_tokens: most tokens (images x tokens each) in one engine run (None: the `Predictor`'s default, a cap
            on a CPU and none on a GPU; 0: no cap).
    """

    top_k: int = DEFAULT_TOP_K
    logits: bool = False
    image_column: str = "image"
    shard_size: int = DEFAULT_SHARD_SIZE
    provider: str = DEFAULT_PROVIDER
    threads: int | None = None
    workers: int | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    run_tokens: int | None = None

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> BatchOptions:
        """The options named in ``options`` (the others at their defaults); an unknown name is a `UsageError`."""
        known = [f.name for f in fields(cls)]
        if unknown := sorted(set(options) - set(known)):
            raise UsageError(f"unknown batch option(s) {', '.join(unknown)}; the options are {', '.join(known)}")
        return cls(**options)

    def __post_init__(self) -> None:
        for name in ("top_k", "shard_size", "max_batch", "max_image_bytes"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.run_tokens is not None and self.run_tokens < 0:
            raise UsageError(f"run_tokens must be 0 (no cap) or positive, got {self.run_tokens}")
        for name in ("threads", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1 (or None for the default), got {getattr(self, name)}")

    @property
    def decode_threads(self) -> int:
        return self.workers or max(1, min(MAX_DECODE_THREADS, os.cpu_count() or 1))

    def job_fields(self) -> dict[str, Any]:
        """The options that change the output's rows (what resuming must find unchanged)."""
        return {"top_k": self.top_k, "logits": self.logits, "image_column": self.image_column,
                "shard_size": self.shard_size, "max_tokens": self.max_tokens, "max_memory_gb": self.max_memory_gb,
                "max_image_bytes": self.max_image_bytes}


@dataclass
class Row:
    """One image's result: its key, the size it was run at, the model's output or the error."""

    key: tuple[str, str | None, int | None]
    size: tuple[int, int] | None = None
    output: Any = None
    top_k: list[dict[str, Any]] | None = None
    error: str | None = None


@dataclass
class _Decoded:
    position: int
    key: tuple[str, str | None, int | None]
    size: tuple[int, int]
    x: np.ndarray = field(repr=False)


class Worker:
    """One Predictor and its decoding threads; `table` runs a shard. Close it (or use it as a context manager)."""

    def __init__(self, model: str, options: BatchOptions, key_columns: tuple[str, ...] = ("path",),
                 spin: bool = True) -> None:
        """``spin``: the engine's idle threads busy-wait between the ops of a run (ONNX Runtime's default):
        7-15% more images/s here beside the decoding threads (benchmarks/RESULTS.md, "Batch"); off for Ray
        actors, which may share a node's cores."""
        from vitexport.serving.predictor import Predictor

        self.options = options
        self.key_columns = key_columns
        self.predictor = Predictor(model, provider=options.provider, threads=options.threads,
                                   max_batch=options.max_batch, max_tokens=options.max_tokens, top_k=options.top_k,
                                   spin=spin, max_memory_gb=options.max_memory_gb, run_tokens=options.run_tokens)
        if options.logits and not self.predictor.is_classifier:
            raise UsageError(f"{model!r} has no classification head (it outputs features); drop --logits")
        self.output_shape = self._probe_output()
        self.pool = ThreadPoolExecutor(options.decode_threads, thread_name_prefix="vitexport-decode")
        self._limits: dict[tuple[int, ...], int] = {}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _probe_output(self) -> tuple[int, ...]:
        """The output's shape after the batch axis (-1 where it follows the image size), from one run."""
        from vitexport.onnx.spec import IOSpec

        p = self.predictor
        h, w = p.static_size or p.vit_config.img_hw
        out = p.run_prepared([np.zeros((p.channels, int(h), int(w)), np.float32)])[0]
        dynamic = IOSpec.from_metadata(p.metadata).output_axes
        if len(out.shape) > 2:
            raise UsageError(f"the model's output has shape {out.shape} per image; batch writes vectors or token "
                             "lists of vectors")
        return tuple(-1 if axis + 1 in dynamic else int(d) for axis, d in enumerate(out.shape))

    # -- decoding (in the pool's threads) -----------------------------------------------------------
    def _to_grid(self, x: np.ndarray) -> np.ndarray:
        """Zero-pad a (C, H, W) input right/bottom to whole patches, as the graph does itself."""
        p = self.predictor
        if p.static_size or not p.vit_config.dynamic_img_pad:
            return x
        h, w = x.shape[1:]
        ph, pw = padded_size(h, w, p.patch)
        if (ph, pw) == (h, w):
            return x
        out = np.zeros((x.shape[0], ph, pw), np.float32)
        out[:, :h, :w] = x
        return out

    def _decode(self, position: int, item: Item) -> _Decoded | tuple[int, Row]:
        try:
            x = self.predictor.prepare(item.load(self.predictor.check_size))
        except MemoryError:
            raise
        except VitexportError as exc:
            return position, Row(item.key, error=one_line(exc))
        except Exception as exc:  # a decoder's own failure on a malformed file: that image's error row
            logger.debug("decoding %s failed", item.key, exc_info=True)
            return position, Row(item.key, error=f"cannot decode the image ({one_line(exc, 160, kind=True)})")
        return _Decoded(position, item.key, (int(x.shape[1]), int(x.shape[2])), self._to_grid(x))

    # -- inference (in the calling thread) ---------------------------------------------------------
    def _infer(self, group: list[_Decoded]) -> list[tuple[int, Row]]:
        try:
            outputs = self.predictor.run_prepared([d.x for d in group])
        except VitexportError as exc:
            if len(group) > 1:  # find the image the engine refused; the others get their results
                return [r for d in group for r in self._infer([d])]
            return [(group[0].position, Row(group[0].key, group[0].size, error=one_line(exc)))]
        rows = []
        for d, out in zip(group, outputs, strict=True):
            top = self.predictor.prediction(d.position, d.size, out).top_k if self.predictor.is_classifier else None
            rows.append((d.position, Row(d.key, d.size, out, top)))
        return rows

    def rows(self, items: Iterable[Item]) -> Iterator[tuple[int, Row]]:
        """(position, row) for each item, as results come (not in order): decoding runs ahead in the pool while
        this thread runs full batches of one shape (as many as `Predictor.batch_limit` gives the shape: on a CPU
        fewer than ``max_batch`` for large images); what is left runs at the end."""
        batch = self.predictor.max_batch
        window: deque[Future] = deque()
        ahead = max(2 * batch, 4 * self.options.decode_threads)
        waiting: dict[tuple[int, ...], list[_Decoded]] = {}
        try:
            for position, item in enumerate(items):
                window.append(self.pool.submit(self._decode, position, item))
                if len(window) >= ahead:
                    yield from self._take(window.popleft().result(), waiting, batch)
            while window:
                yield from self._take(window.popleft().result(), waiting, batch)
            for group in waiting.values():
                yield from self._infer(group)
        finally:
            for future in window:
                future.cancel()

    def _take(self, done: _Decoded | tuple[int, Row], waiting: dict[tuple[int, ...], list[_Decoded]],
              batch: int) -> Iterator[tuple[int, Row]]:
        if isinstance(done, tuple):
            yield done
            return
        group = waiting.setdefault(done.x.shape, [])
        group.append(done)
        if done.x.shape not in self._limits:  # a run's size for this shape (`Predictor.batch_limit`)
            self._limits[done.x.shape] = self.predictor.batch_limit(done.x.shape)
        if len(group) >= self._limits[done.x.shape]:
            yield from self._infer(waiting.pop(done.x.shape))
        elif sum(len(g) for g in waiting.values()) > 2 * batch:  # many shapes: run the largest group now
            yield from self._infer(waiting.pop(max(waiting, key=lambda s: len(waiting[s]))))

    def table(self, shard: Shard, on_rows: Callable[[int, int], None] | None = None) -> Any:
        """The shard's result table, rows in the shard's order; ``on_rows(done, failed)`` after each batch."""
        results: dict[int, Row] = {}
        for position, row in self.rows(shard.items()):
            results[position] = row
            if on_rows is not None:
                on_rows(1, int(row.error is not None))
        return build_table([results[i] for i in range(len(results))], self.key_columns, self.output_shape,
                           self.predictor.is_classifier, self.options.logits)


def build_table(rows: list[Row], key_columns: tuple[str, ...], output_shape: tuple[int, ...], classifier: bool,
                logits: bool) -> Any:
    """Rows -> an Arrow table: the key columns, ``height``/``width``, ``top_k`` (a classifier), ``logits``
    (asked for) or ``features`` (a features model), ``error``."""
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for i, name in enumerate(("path", "member", "row")):
        if name in key_columns:
            columns[name] = pa.array([r.key[i] for r in rows], pa.int64() if name == "row" else pa.string())
    columns["height"] = pa.array([r.size[0] if r.size else None for r in rows], pa.int32())
    columns["width"] = pa.array([r.size[1] if r.size else None for r in rows], pa.int32())
    if classifier:
        columns["top_k"] = pa.array([r.top_k for r in rows], _top_k_type())
    if logits or not classifier:
        columns["logits" if classifier else "features"] = _vectors(rows, output_shape)
    columns["error"] = pa.array([r.error for r in rows], pa.string())
    return pa.table(columns)


def _top_k_type() -> Any:
    """``top_k``: a list of {index, label, score} structs, as `predict --json` writes them."""
    import pyarrow as pa

    return pa.list_(pa.struct([("index", pa.int32()), ("label", pa.string()), ("score", pa.float64())]))


def _vectors(rows: list[Row], shape: tuple[int, ...]) -> Any:
    """Outputs as float32 fixed-size lists (one vector an image), or lists of them (token outputs)."""
    import pyarrow as pa

    width = shape[-1]
    if len(shape) == 1:
        values = np.zeros((len(rows), width), np.float32)
        for i, r in enumerate(rows):
            if r.output is not None:
                values[i] = r.output
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width,
                                                 mask=pa.array([r.output is None for r in rows]))
    vectors = pa.list_(pa.float32(), width)
    return pa.array([None if r.output is None else list(r.output.astype(np.float32)) for r in rows],
                    pa.list_(vectors))


__all__ = ["BatchOptions", "Row", "Worker", "build_table"]
