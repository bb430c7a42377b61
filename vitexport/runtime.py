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


def _session_options(debug: bool = False, threads: int | None = None, profile_prefix: str | None = None):
    ort = _ort()
    opts = ort.SessionOptions()
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


def create_session(path: str | bytes, provider: str, threads: int | None = None, debug: bool = False):
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
        session = ort.InferenceSession(path, sess_options=_session_options(debug, threads), providers=chain)
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
