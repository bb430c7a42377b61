"""Serving: the torch-free `Predictor` (images of any size in, labels out) on any engine of
`vitexport.engines` (ONNX Runtime CPU/CUDA/TensorRT, OpenVINO, the ONNX reference). Imports numpy
and the engine's runtime, never torch.

Sessions, provider honesty and diagnostics live in `vitexport.engines.ort`; the names below
are re-exported from there for code written against earlier versions.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vitexport._util.errors import (
    CheckpointError,
    EngineError,
    EnvironmentProblem,
    InputError,
    ServingError,
    ServingPathError,
    UsageError,
    VitexportError,
    one_line,
)
from vitexport._util.geometry import token_count
from vitexport.engines import (  # noqa: F401 - PROVIDER_CHOICES re-exported
    DEFAULT_PROVIDER,
    PROVIDER_CHOICES,
    Engine,
    load_engines,
)
from vitexport.engines.ort import (  # noqa: F401 - re-exported
    PROVIDERS,
    AutoChoice,
    OrtEngine,
    SessionInfo,
    available_providers,
    create_session,
    probe_provider,
    profile_placement,
    resolve_auto_provider,
)
from vitexport.model.family_config import config_from_dict
from vitexport.model.names import default_output
from vitexport.security.limits import (
    DEFAULT_MAX_MEMORY_GB,
    DEFAULT_MAX_TOKENS,
    Limits,
    estimate,
    largest_batch,
    over_limit,
)
from vitexport.serving.defaults import CPU_RUN_TOKENS, DEFAULT_MAX_BATCH, DEFAULT_TOP_K

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# production inference
# ---------------------------------------------------------------------------
@dataclass
class Prediction:
    """One image's result, in the order the images were given."""

    index: int
    size: tuple[int, int]
    output: Any  # numpy: logits (num_classes,), features (D,) or tokens (T, D): the model's output, ``kind``
    probabilities: Any | None = None
    top_k: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "logits"  # `vitexport.model.names.OUTPUTS`: what ``output`` holds

    @property
    def logits(self) -> Any:
        return self.output


def _softmax(x: Any) -> Any:
    import numpy as np

    z = x.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """Images of any size in, labels out, on one engine; safe to share across threads.

    Reads preprocessing, labels and channels from the model's vitexport metadata. Equal sizes are batched
    together (at most ``max_batch`` per run, and on a CPU at most ``run_tokens`` tokens per run); results come
    back in input order. ``max_tokens`` (tokens per image) and ``max_memory_gb`` (the estimate of one forward
    pass, `vitexport.security.limits`) refuse images that would exhaust memory, before they are decoded when
    read with `read_image` (``check=predictor.check_size``); batches of equal sizes are split to stay within
    ``max_memory_gb``.
    ``provider`` names an engine (`vitexport.engines`: ``cpu``, ``cuda``, ``tensorrt``,
    ``openvino``, ``reference``); ``auto`` is ONNX Runtime's CUDA when usable, else its CPU,
    and `provider_note` says why it fell back. ``engine_options`` go to the engine: for ONNX Runtime
    ``{"session": {"graph_level": ..., "prepack": ..., "config": {...}}}`` (`SessionTuning`), for
    OpenVINO ``{"performance_hint": "LATENCY" | "THROUGHPUT", "num_streams": n}``.
    """

    def __init__(
        self,
        model_path: str,
        provider: str = DEFAULT_PROVIDER,
        threads: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        top_k: int = DEFAULT_TOP_K,
        spin: bool = True,
        max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
        engine_options: dict[str, Any] | None = None,
        run_tokens: int | None = None,
    ) -> None:
        """Load ``model_path`` on one engine.

        Args:
            model_path: an .onnx file exported by vitexport (its metadata gives preprocessing and labels).
            provider: the engine: ``auto`` (ONNX Runtime's CUDA when usable, else its CPU), ``cpu``, ``cuda``,
                ``tensorrt``, ``openvino`` or ``reference``.
            threads: the engine's intra-op threads (None: the runtime's default).
            max_batch: the most images of one size in one engine run.
            max_tokens: refuse images with more tokens (`vitexport.security.limits`).
            top_k: classes per image in each `Prediction`.
            spin: let idle engine threads busy-wait between runs (faster alone, worse beside other work).
            max_memory_gb: refuse images whose estimated forward pass is larger; split batches to stay within it.
            engine_options: engine-specific options (see the class docstring).
            run_tokens: the most tokens (images x tokens per image) in one engine run; None: `CPU_RUN_TOKENS`
                on a CPU engine, no cap on a GPU; 0: no cap.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        limits = Limits(max_tokens, max_memory_gb)
        if not os.path.exists(str(model_path)):
            raise ServingPathError(f"model {str(model_path)!r} does not exist; pass an exported .onnx file")
        if provider == "all":
            raise EnvironmentProblem("a Predictor runs on one engine; name one instead of 'all'")
        from vitexport.security.sniff import require

        # a folder, a checkpoint or a truncated file: named here, not by the engine
        require(str(model_path), "onnx", deep=True)
        [(engine, notes)], _ = load_engines(str(model_path), provider, threads=threads, spin=spin,
                                            max_memory_gb=max_memory_gb, **(engine_options or {}))
        self._attach(engine, str(model_path), "; ".join(notes), max_batch, limits, top_k, run_tokens)

    @classmethod
    def from_engine(cls, engine: Engine, model_path: str, *, provider_note: str = "",
                    max_batch: int = DEFAULT_MAX_BATCH, max_tokens: int | None = DEFAULT_MAX_TOKENS,
                    top_k: int = DEFAULT_TOP_K, max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
                    run_tokens: int | None = None) -> Predictor:
        """A Predictor on an engine that has already loaded ``model_path`` (e.g. from `load_engines`)."""
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        predictor = cls.__new__(cls)
        predictor._attach(engine, str(model_path), provider_note, max_batch, Limits(max_tokens, max_memory_gb), top_k,
                          run_tokens)
        return predictor

    def _attach(self, engine: Engine, model_path: str, note: str, max_batch: int, limits: Limits,
                top_k: int, run_tokens: int | None) -> None:
        self.model_path, self.engine, self.provider, self.provider_note = model_path, engine, engine.name, note
        self.limits = limits
        if engine.budget is None or engine.budget.max_memory_gb != limits.max_memory_gb:
            from vitexport.engines import graph_budget

            engine.budget = graph_budget(model_path, limits.max_memory_gb)
        self.budget = engine.budget
        self._read_metadata(engine.metadata)
        for issue in engine.known_issues(self.metadata):
            logger.warning("%s on %s: %s", model_path, engine.name, issue)
        self.fixed_batch = self.metadata.get("batch_size")
        self.max_batch = int(self.fixed_batch or max_batch)
        self.max_tokens = limits.max_tokens
        self.top_k = top_k
        self.vit_config = config_from_dict(self.config)  # any model class: what the limits read
        if run_tokens is not None and run_tokens < 0:
            raise ValueError("run_tokens must be 0 (no cap) or positive")
        self.run_tokens = (CPU_RUN_TOKENS if engine.on_cpu else 0) if run_tokens is None else int(run_tokens)

    def _read_metadata(self, meta: dict[str, Any]) -> None:
        from vitexport.onnx.metadata import check_metadata
        from vitexport.serving.preprocess import Preprocess

        if not meta.get("config"):
            raise ServingError(f"{self.model_path!r} has no vitexport metadata; export it with `vitexport onnx`")
        check_metadata(meta, repr(self.model_path), self.engine.input_shape, ServingError)
        self.metadata = meta
        self.config = meta["config"]
        self.channels = int(self.config.get("in_chans", 3))
        self.labels: list[str] | None = meta.get("labels")
        self.preprocess = Preprocess.from_metadata(meta.get("preprocess"), self.channels)
        if not meta.get("preprocess"):
            logger.warning("%s carries no preprocessing: uint8 pixels are only scaled by 1/255", self.model_path)
        patch = meta.get("patch_size") or [16, 16]
        self.patch = (int(patch[0]), int(patch[1]))
        self.static_size = tuple(meta["static_size"]) if meta.get("static_size") else None
        # the output a classifier's top-k reads: logits (features and tokens models return embeddings)
        self.output = meta.get("output") or default_output(int(self.config.get("num_classes", 0)))
        self.is_classifier = self.output == "logits"

    @property
    def providers(self) -> list[str]:
        return self.engine.devices

    def check_size(self, height: int, width: int) -> None:
        """Refuse an image size over the limits (or other than a static export's size), before any decoding."""
        if self.static_size and (height, width) != self.static_size:
            raise InputError(f"this export is fixed at {self.static_size[0]}x{self.static_size[1]}, got "
                             f"{height}x{width}; resize the image or export a dynamic model")
        est = estimate(self.vit_config, height, width, self.fixed_batch or 1, self.metadata.get("attention"))
        reason = over_limit(est, self.limits)
        if reason:
            raise InputError(f"a {height}x{width} image gives {reason}; downscale it or raise the limit "
                             "(max_tokens / max_memory_gb in Python)")
        try:  # the graph itself at this size (`vitexport.onnx.budget`): what runs, not what the config says
            reason = self.budget.over((self.fixed_batch or 1, self.channels, height, width))
        except CheckpointError as exc:
            raise InputError(f"a {height}x{width} image: {exc}") from None
        if reason:
            raise InputError(f"a {height}x{width} image: {reason}; downscale it, or raise the limit if you trust "
                             "this model")

    def prepare(self, image: Any) -> Any:
        """One image -> validated (C, H, W) float32 input."""
        from vitexport.security.images import header_size
        from vitexport.serving.preprocess import to_model_input

        if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image: refuse before converting its pixels
            self.check_size(*header_size(image))
        x = to_model_input(image, self.preprocess)
        self.check_size(*x.shape[1:])
        return x

    def run_batch(self, batch: Any) -> Any:
        """Run one (N, C, H, W) float32 batch; returns the raw output (numpy float32)."""
        import numpy as np

        try:
            out = self.engine.run(batch)
        except VitexportError:
            raise
        except Exception as exc:  # the runtime refused the input (e.g. a graph that disagrees with its metadata)
            raise EngineError(f"{self.engine.name} could not run a {'x'.join(map(str, batch.shape))} input: "
                              f"{one_line(exc, 200)}; check that the model was exported by vitexport") from exc
        if not np.isfinite(out).all():
            raise InputError("the model produced NaN or Inf for this input")
        return out

    def batch_limit(self, shape: tuple[int, ...]) -> int:
        """The most (C, H, W) inputs of ``shape`` in one run: ``max_batch``, fewer where ``run_tokens`` or the
        memory limit say so (a fixed-batch export always runs its batch)."""
        if self.fixed_batch:
            return self.max_batch
        cfg = self.vit_config
        attention = self.metadata.get("attention")
        limit = min(self.max_batch, largest_batch(cfg, shape[-2], shape[-1], self.limits, attention))
        if self.run_tokens:
            tokens = token_count(shape[-2], shape[-1], cfg.patch_hw, cfg.num_prefix_tokens, cfg.dynamic_img_pad)
            limit = min(limit, max(1, self.run_tokens // tokens))
        if self.limits.max_bytes is not None:  # the graph's own footprint per image (each run is checked too)
            limit = min(limit, max(1, int(self.limits.max_bytes // max(self.budget.per_item((1, *shape)), 1))))
        return limit

    def run_prepared(self, prepared: list[Any]) -> list[Any]:
        """Raw outputs of `prepare`d (C, H, W) inputs, in order; equal sizes share runs (`batch_limit`)."""
        import numpy as np

        from vitexport.serving.batching import size_chunks

        outputs: list[Any] = [None] * len(prepared)
        for chunk, batch in size_chunks(prepared, self.batch_limit):
            if self.fixed_batch and len(chunk) < self.fixed_batch:  # a fixed-batch export: pad the batch
                pad = np.zeros((self.fixed_batch - len(chunk), *batch.shape[1:]), batch.dtype)
                batch = np.concatenate([batch, pad])
            out = self.run_batch(batch)
            for j, i in enumerate(chunk):
                outputs[i] = out[j]
        return outputs

    def prediction(self, index: int, size: tuple[int, int], out: Any) -> Prediction:
        """The `Prediction` of one raw output (of `run_prepared`): probabilities and top-k for a classifier."""
        import numpy as np

        pred = Prediction(index=index, size=size, output=out, kind=self.output)
        if self.is_classifier:
            probs = _softmax(out)
            pred.probabilities = probs
            for c in np.argsort(-probs, kind="stable")[: min(self.top_k, probs.shape[-1])]:
                label = self.labels[c] if self.labels and c < len(self.labels) else None
                pred.top_k.append({"index": int(c), "label": label, "score": float(probs[c])})
        return pred

    def predict(self, images: Any) -> Any:
        """One image -> one Prediction; a list -> a list of Predictions in the same order."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            return []
        prepared = [self.prepare(img) for img in items]
        outputs = self.run_prepared(prepared)
        results = [self.prediction(i, (x.shape[1], x.shape[2]), out)
                   for i, (x, out) in enumerate(zip(prepared, outputs, strict=True))]
        return results[0] if single else results


@dataclass
class FilePrediction:
    """One image's result in `predict_files`: its key (the file; the member of a tar file, the row of a Parquet
    file), and its `Prediction`, or the one-line ``error`` that kept it from one."""

    path: str
    prediction: Prediction | None
    error: str | None = None
    member: str | None = None
    row: int | None = None

    def to_json(self) -> dict[str, Any]:
        """``top_k`` for a classifier; a features or tokens model's ``embedding`` (nested lists) instead; ``error``
        (and no size, output or result) for an image that gave none."""
        out: dict[str, Any] = {"path": self.path}
        if self.member is not None:
            out["member"] = self.member
        if self.row is not None:
            out["row"] = self.row
        p = self.prediction
        out.update(size=list(p.size) if p else None, output=p.kind if p else None, top_k=p.top_k if p else None,
                   error=self.error)
        if p is not None and p.kind != "logits":
            out["embedding"] = p.output.tolist()
        return out


@dataclass
class PredictReport:
    """`predict_files`' result: the engine that ran, why ``auto`` fell back (if it did), one entry per image
    (`FilePrediction`, with an ``error`` for each image that gave no result), the files the folders held that
    are not images (``ignored``), and the sources as given."""

    model: str
    provider: str
    provider_note: str
    files: list[FilePrediction] = field(default_factory=list)
    ignored: int = 0
    sources: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[FilePrediction]:
        return [f for f in self.files if f.error is not None]

    def to_json(self) -> list[dict[str, Any]]:
        """One object per image, in the order found (`vitexport predict --json`)."""
        return [f.to_json() for f in self.files]


PREDICT_CHUNK = 64  # images decoded at a time by `predict_files`: memory stays bounded over any folder
PREDICTOR_OPTIONS = tuple(inspect.signature(Predictor.__init__).parameters)[2:]  # after self and model_path


def predict_files(
    model_path: str,
    sources: list[str],
    *,
    on_result: Callable[[FilePrediction], None] | None = None,
    **options: Any,
) -> PredictReport:
    """Classify the images of ``sources``; an image that cannot be read, decoded or run becomes an entry with
    its ``error``, and the others go on. Sizes over the limits are refused from the header, before decoding.

    Args:
        model_path: an .onnx file exported by vitexport.
        sources: image files, folders (walked recursively), globs (``'data/**/*.png'``), text files listing
            image paths, tar shards or Parquet files: what `vitexport batch` takes
            (`vitexport.serving.batch.sources.open_sources`). A source that does not exist, a glob that matches
            nothing, a file of another kind and sources holding no image at all are `UsageError`s, raised
            before the model loads.
        on_result: called with each entry, in order, as soon as it is known (the CLI prints rows as they come).
        options: the `Predictor`'s options by name (``provider``, ``top_k``, ``max_tokens``, ``max_memory_gb``,
            ``threads``, ``max_batch``, ...), checked before the sources are read.
    """
    if unknown := sorted(set(options) - set(PREDICTOR_OPTIONS)):
        raise UsageError(f"unknown Predictor option(s) {', '.join(unknown)}; the options are "
                         f"{', '.join(PREDICTOR_OPTIONS)}")
    from itertools import chain, islice

    from vitexport.serving.batch.sources import open_sources

    opened = open_sources(sources)
    items = chain.from_iterable(source.items() for source in opened)
    first = next(items, None)
    if first is None:
        ignored = sum(s.ignored for s in opened)
        raise UsageError(f"no images in {', '.join(map(repr, sources[:3]))}"
                         + (f" ({ignored} other files ignored)" if ignored else "")
                         + "; pass image files, or folders and globs that hold some")
    items = chain([first], items)
    predictor = Predictor(model_path, **options)
    report = PredictReport(str(model_path), predictor.provider, predictor.provider_note, sources=list(sources))
    while chunk := list(islice(items, PREDICT_CHUNK)):
        for entry in _predict_chunk(predictor, chunk):
            report.files.append(entry)
            if on_result is not None:
                on_result(entry)
    report.ignored = sum(s.ignored for s in opened)
    return report


def _predict_chunk(predictor: Predictor, items: list[Any]) -> list[FilePrediction]:
    """Entries for a few images (`Item`s of `vitexport.serving.batch.sources`), in order: decoded with the
    Predictor's size check, run together; a run the engine refuses is retried image by image, so that only the
    images it refuses get its error."""
    entries = [FilePrediction(item.path, None, member=item.member, row=item.row) for item in items]
    decoded: dict[int, Any] = {}
    for i, item in enumerate(items):
        try:
            decoded[i] = item.load(predictor.check_size)
        except VitexportError as exc:
            entries[i].error = str(exc)
    try:
        runs = [(list(decoded), predictor.predict(list(decoded.values())))] if decoded else []
    except VitexportError:
        runs = []
        for i, image in decoded.items():
            try:
                runs.append(([i], [predictor.predict(image)]))
            except VitexportError as exc:
                entries[i].error = str(exc)
    for indices, predictions in runs:
        for i, pred in zip(indices, predictions, strict=True):
            entries[i].prediction = pred
    return entries
