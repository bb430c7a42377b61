"""ONNX Runtime sessions with honest provider selection. Imports numpy and onnxruntime, never torch.

A "CUDA" request that ONNX Runtime quietly serves on the CPU is an error here, and
nodes that a CUDA session places on the CPU are found by profiling one run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from vitexport.errors import EnvironmentProblem, VerificationError

logger = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PROVIDER_CHOICES = ("auto", "cuda", "cpu", "tensorrt", "all")


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise EnvironmentProblem(
            "onnxruntime is not installed; pip install onnxruntime-gpu (or onnxruntime)"
        ) from exc
    return onnxruntime


@dataclass
class SessionInfo:
    """What a session really runs on."""

    requested: str
    providers: list[str]
    placement: dict[str, int] = field(default_factory=dict)  # provider -> node count (from profiling)
    cpu_nodes: list[str] = field(default_factory=list)  # op types a GPU session left on the CPU
    memcpy_nodes: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "providers": self.providers,
            "placement": self.placement,
            "cpu_nodes": self.cpu_nodes,
            "memcpy_nodes": self.memcpy_nodes,
            "warnings": self.warnings,
        }


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


def _session_options(
    debug: bool = False, threads: int | None = None, profile_prefix: str | None = None, spin: bool = True
):
    ort = _ort()
    opts = ort.SessionOptions()
    if not spin:  # idle worker threads stop busy-waiting (they would steal cores from other work)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ORT logs a provider it cannot initialise as an error and falls back; vitexport detects that itself
    opts.log_severity_level = 0 if debug else 3
    if threads:
        opts.intra_op_num_threads = threads
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def _preload_cuda() -> None:
    ort = _ort()
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()  # CUDA/cuDNN from the pip nvidia-* packages (a CUDA build of torch brings them)
        except Exception as exc:  # missing libraries show up as no CUDA provider below
            logger.debug("onnxruntime.preload_dlls failed: %s", exc)


def create_session(
    path: str | bytes, provider: str, threads: int | None = None, debug: bool = False, spin: bool = True
):
    """(session, SessionInfo) on ``provider`` ('cpu', 'cuda', 'tensorrt'); never silently on another one.

    Raises EnvironmentProblem (exit 2) when the provider is not usable here.
    """
    ort = _ort()
    if provider not in PROVIDERS:
        raise EnvironmentProblem(f"unknown provider {provider!r}; use one of {', '.join(PROVIDER_CHOICES)}")
    wanted = PROVIDERS[provider]
    available = available_providers()
    if wanted not in available:
        hint = (
            "install onnxruntime-gpu (and uninstall onnxruntime)" if provider != "cpu" else "reinstall onnxruntime"
        )
        raise EnvironmentProblem(
            f"{wanted} is not in this onnxruntime build (available: {', '.join(available)}); {hint}"
        )
    chain = [wanted] if provider == "cpu" else [wanted, "CPUExecutionProvider"]
    if provider == "tensorrt":
        chain = [wanted, "CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider != "cpu":
        _preload_cuda()
        # ORT's process-wide logger prints a provider it cannot load as an error; the check below
        # replaces that with one clear message (--debug keeps ORT's log)
        ort.set_default_logger_severity(0 if debug else 4)
    try:
        session = ort.InferenceSession(path, sess_options=_session_options(debug, threads, spin=spin), providers=chain)
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        where = "the model" if isinstance(path, bytes) else repr(path)
        raise VerificationError(f"ONNX Runtime could not load {where} on {wanted}: {text}") from exc
    finally:
        if provider != "cpu":
            ort.set_default_logger_severity(2)  # ORT's default (warning)
    used = list(session.get_providers())
    if wanted not in used:
        raise EnvironmentProblem(
            f"{wanted} could not be initialised here (no usable GPU, driver or CUDA/cuDNN libraries; "
            f"ONNX Runtime fell back to {', '.join(used)}); use --provider cpu, or --debug for ONNX Runtime's log"
        )
    return session, SessionInfo(requested=provider, providers=used)


def probe_provider(provider: str) -> tuple[bool, str]:
    """(usable, reason): can a session really run on ``provider`` here? Uses a one-node in-memory graph."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    try:
        create_session(model.SerializeToString(), provider)
    except (EnvironmentProblem, VerificationError) as exc:
        return False, str(exc)
    return True, ""


def resolve_providers(request: str) -> list[str]:
    """Provider names to run for a request: 'auto' is CUDA when usable (checked), else CPU."""
    if request not in PROVIDER_CHOICES:
        raise EnvironmentProblem(f"unknown provider {request!r}; use one of {', '.join(PROVIDER_CHOICES)}")
    if request == "all":
        return [p for p in ("cuda", "tensorrt", "cpu") if PROVIDERS[p] in available_providers()]
    if request == "auto":
        return ["auto"]
    return [request]


def profile_placement(path: str, provider: str, feeds: dict[str, Any], info: SessionInfo) -> None:
    """Run once with profiling and record which provider ran each node (GPU sessions only)."""
    ort = _ort()
    chain = [PROVIDERS[provider], "CPUExecutionProvider"]
    with tempfile.TemporaryDirectory() as folder:
        opts = _session_options(profile_prefix=os.path.join(folder, "profile"))
        session = ort.InferenceSession(path, sess_options=opts, providers=chain)
        session.run(None, feeds)
        profile_file = session.end_profiling()
        with open(profile_file, encoding="utf-8") as fh:
            events = json.load(fh)
    seen: dict[str, str] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args:
            seen[event["name"].removesuffix("_kernel_time").removesuffix("_fence_before").removesuffix(
                "_fence_after")] = f"{args['provider']}|{args.get('op_name', '')}"
    placement: dict[str, int] = {}
    cpu_ops: dict[str, int] = {}
    for value in seen.values():
        prov, op = value.split("|", 1)
        placement[prov] = placement.get(prov, 0) + 1
        if op.startswith("Memcpy"):
            info.memcpy_nodes += 1
        elif prov == "CPUExecutionProvider":
            cpu_ops[op] = cpu_ops.get(op, 0) + 1
    info.placement = placement
    info.cpu_nodes = [f"{op} x{n}" for op, n in sorted(cpu_ops.items())]
    if cpu_ops:
        info.warnings.append(
            f"{sum(cpu_ops.values())} nodes run on the CPU inside the {provider} session: {', '.join(info.cpu_nodes)}"
        )
    if info.memcpy_nodes:
        info.warnings.append(f"{info.memcpy_nodes} Memcpy nodes copy data between CPU and GPU")


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
    """Images of any size in, labels out, with ONNX Runtime; safe to share across threads.

    Reads preprocessing, labels and channels from the model's vitexport metadata. Equal
    sizes are batched together (at most ``max_batch`` per run); results come back in
    input order. ``max_tokens`` refuses inputs whose patch count would exhaust memory.
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
        from vitexport.preprocess import Preprocess
        from vitexport.spec import decode_metadata

        if max_batch < 1 or max_tokens < 1:
            raise ValueError("max_batch and max_tokens must be positive")
        self.model_path = str(model_path)
        if not os.path.isfile(self.model_path):
            raise VerificationError(f"model {self.model_path!r} does not exist; pass an exported .onnx file")
        if provider == "auto":
            usable, reason = probe_provider("cuda")
            provider = "cuda" if usable else "cpu"
            self.provider_note = "" if usable else f"auto: running on the CPU ({reason.split('; use')[0]})"
        else:
            self.provider_note = ""
        self.session, self.info = create_session(self.model_path, provider, threads=threads, spin=spin)
        self.provider = provider
        meta = decode_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        if not meta.get("config"):
            raise VerificationError(f"{self.model_path!r} has no vitexport metadata; export it with `vitexport onnx`")
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
        self.fixed_batch = meta.get("batch_size")
        self.max_batch = int(self.fixed_batch or max_batch)
        self.max_tokens = max_tokens
        self.top_k = top_k
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = "float16" if "float16" in inp.type else "float32"
        self.output_name = self.session.get_outputs()[0].name
        self.is_classifier = int(self.config.get("num_classes", 0)) > 0

    @property
    def providers(self) -> list[str]:
        return list(self.info.providers)

    def _tokens(self, h: int, w: int) -> int:
        return -(-h // self.patch[0]) * -(-w // self.patch[1])

    def prepare(self, image: Any) -> Any:
        """One image -> validated (C, H, W) float32 input."""
        from vitexport.errors import InputError
        from vitexport.preprocess import to_model_input

        x = to_model_input(image, self.preprocess)
        h, w = x.shape[1:]
        tokens = self._tokens(h, w)
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
        """Run one (N, C, H, W) float32 batch; returns the raw output (numpy)."""
        import numpy as np

        from vitexport.errors import InputError

        x = batch.astype(np.float16 if self.input_dtype == "float16" else np.float32, copy=False)
        if "CUDAExecutionProvider" in self.info.providers:
            binding = self.session.io_binding()  # per call: thread-safe, no host copies of the output in between
            binding.bind_cpu_input(self.input_name, np.ascontiguousarray(x))
            binding.bind_output(self.output_name, "cuda")
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            out = self.session.run([self.output_name], {self.input_name: x})[0]
        out = out.astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise InputError("the model produced NaN or Inf for this input")
        return out

    def predict(self, images: Any) -> Any:
        """One image -> one Prediction; a list -> a list of Predictions in the same order."""
        import numpy as np

        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            return []
        prepared = [self.prepare(img) for img in items]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(prepared):
            groups.setdefault((x.shape[1], x.shape[2]), []).append(i)
        outputs: list[Any] = [None] * len(items)
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
        results = []
        for i, out in enumerate(outputs):
            pred = Prediction(index=i, size=(prepared[i].shape[1], prepared[i].shape[2]), output=out)
            if self.is_classifier:
                probs = _softmax(out)
                pred.probabilities = probs
                k = min(self.top_k, probs.shape[-1])
                for c in np.argsort(-probs, kind="stable")[:k]:
                    label = self.labels[c] if self.labels and c < len(self.labels) else None
                    pred.top_k.append({"index": int(c), "label": label, "score": float(probs[c])})
            results.append(pred)
        return results[0] if single else results
