"""Serving: the torch-free `Predictor` (images of any size in, labels out) on any engine of
`vitexport.engines` (ONNX Runtime CPU/CUDA/TensorRT, OpenVINO, the ONNX reference). Imports numpy
and the engine's runtime, never torch.

Sessions, provider honesty and diagnostics live in `vitexport.engines.ort`; the names below
are re-exported from there for code written against earlier versions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from vitexport.engines import Engine, create_engine, resolve_request
from vitexport.engines.ort import (  # noqa: F401 - re-exported
    PROVIDER_CHOICES,
    PROVIDERS,
    AutoChoice,
    OrtEngine,
    SessionInfo,
    available_providers,
    create_session,
    probe_provider,
    profile_placement,
    resolve_auto_provider,
    resolve_providers,
)
from vitexport.errors import EnvironmentProblem, InputError, ServingError
from vitexport.geometry import token_count

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# production inference
# ---------------------------------------------------------------------------
@dataclass
class Prediction:
    """One image's result, in the order the images were given."""

    index: int
    size: tuple[int, int]
    output: Any  # numpy: logits (num_classes,) or features
    probabilities: Any | None = None
    top_k: list[dict[str, Any]] = field(default_factory=list)

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

    Reads preprocessing, labels and channels from the model's vitexport metadata. Equal
    sizes are batched together (at most ``max_batch`` per run); results come back in
    input order. ``max_tokens`` refuses inputs whose patch count would exhaust memory.
    ``provider`` names an engine (`vitexport.engines`: ``cpu``, ``cuda``, ``tensorrt``,
    ``openvino``, ``reference``); ``auto`` is ONNX Runtime's CUDA when usable, else its CPU,
    and `provider_note` says why it fell back.
    """

    def __init__(
        self,
        model_path: str,
        provider: str = "auto",
        threads: int | None = None,
        max_batch: int = 16,
        max_tokens: int = 4096,
        top_k: int = 5,
        spin: bool = True,
    ) -> None:
        if max_batch < 1 or max_tokens < 1:
            raise ValueError("max_batch and max_tokens must be positive")
        if not os.path.exists(str(model_path)):
            raise ServingError(f"model {str(model_path)!r} does not exist; pass an exported .onnx file")
        if provider == "all":
            raise EnvironmentProblem("a Predictor runs on one engine; name one instead of 'all'")
        from vitexport.sniff import require

        # a folder, a checkpoint or a truncated file: named here, not by the engine
        require(str(model_path), "onnx", deep=True)
        [(name, notes)] = resolve_request(provider)
        engine = create_engine(name, threads=threads, spin=spin).load(str(model_path))
        self._attach(engine, str(model_path), "; ".join(notes), max_batch, max_tokens, top_k)

    @classmethod
    def from_engine(cls, engine: Engine, model_path: str, *, provider_note: str = "", max_batch: int = 16,
                    max_tokens: int = 4096, top_k: int = 5) -> Predictor:
        """A Predictor on an engine that has already loaded ``model_path`` (e.g. from `load_engines`)."""
        if max_batch < 1 or max_tokens < 1:
            raise ValueError("max_batch and max_tokens must be positive")
        predictor = cls.__new__(cls)
        predictor._attach(engine, str(model_path), provider_note, max_batch, max_tokens, top_k)
        return predictor

    def _attach(self, engine: Engine, model_path: str, note: str, max_batch: int, max_tokens: int,
                top_k: int) -> None:
        self.model_path, self.engine, self.provider, self.provider_note = model_path, engine, engine.name, note
        self._read_metadata(engine.metadata)
        for issue in engine.known_issues(self.metadata):
            logger.warning("%s on %s: %s", model_path, engine.name, issue)
        self.fixed_batch = self.metadata.get("batch_size")
        self.max_batch = int(self.fixed_batch or max_batch)
        self.max_tokens = max_tokens
        self.top_k = top_k

    def _read_metadata(self, meta: dict[str, Any]) -> None:
        from vitexport.preprocess import Preprocess

        if not meta.get("config"):
            raise ServingError(f"{self.model_path!r} has no vitexport metadata; export it with `vitexport onnx`")
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
        self.is_classifier = int(self.config.get("num_classes", 0)) > 0

    @property
    def providers(self) -> list[str]:
        return self.engine.devices


    def prepare(self, image: Any) -> Any:
        """One image -> validated (C, H, W) float32 input."""
        from vitexport.preprocess import to_model_input

        x = to_model_input(image, self.preprocess)
        h, w = x.shape[1:]
        tokens = token_count(h, w, self.patch)
        if tokens > self.max_tokens:
            raise InputError(
                f"a {h}x{w} image gives {tokens:,} patches, over the limit of {self.max_tokens:,} (max_tokens); "
                "downscale it or raise max_tokens"
            )
        if self.static_size and (h, w) != self.static_size:
            raise InputError(f"this export is fixed at {self.static_size[0]}x{self.static_size[1]}, got {h}x{w}; "
                             "resize the image or export a dynamic model")
        return x

    def run_batch(self, batch: Any) -> Any:
        """Run one (N, C, H, W) float32 batch; returns the raw output (numpy float32)."""
        import numpy as np

        out = self.engine.run(batch)
        if not np.isfinite(out).all():
            raise InputError("the model produced NaN or Inf for this input")
        return out

    def _run_groups(self, prepared: list[Any]) -> list[Any]:
        """Outputs in input order; equal sizes run together, at most max_batch at a time."""
        import numpy as np

        groups: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(prepared):
            groups.setdefault((x.shape[1], x.shape[2]), []).append(i)
        outputs: list[Any] = [None] * len(prepared)
        for idx in groups.values():
            for start in range(0, len(idx), self.max_batch):
                chunk = idx[start : start + self.max_batch]
                batch = np.stack([prepared[i] for i in chunk])
                if self.fixed_batch and len(chunk) < self.fixed_batch:  # a fixed-batch export: pad the batch
                    pad = np.zeros((self.fixed_batch - len(chunk), *batch.shape[1:]), batch.dtype)
                    batch = np.concatenate([batch, pad])
                out = self.run_batch(batch)
                for j, i in enumerate(chunk):
                    outputs[i] = out[j]
        return outputs

    def _prediction(self, index: int, size: tuple[int, int], out: Any) -> Prediction:
        import numpy as np

        pred = Prediction(index=index, size=size, output=out)
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
        outputs = self._run_groups(prepared)
        results = [self._prediction(i, (x.shape[1], x.shape[2]), out)
                   for i, (x, out) in enumerate(zip(prepared, outputs, strict=True))]
        return results[0] if single else results
