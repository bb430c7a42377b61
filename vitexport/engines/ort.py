"""ONNX Runtime sessions with honest provider selection. Imports numpy and onnxruntime, never torch.

- A "CUDA" request that ONNX Runtime quietly serves on the CPU is an error here
  (`EngineUnavailable`, exit 2): ``session.get_providers()`` tells what really runs.
- ``auto`` is decided once, by `resolve_auto_provider`: CUDA when a probe session really
  runs on it, else the CPU, with the reason.
- Nodes that a GPU session places on the CPU, and Memcpy nodes, are found by profiling one run.
- onnxruntime-gpu before 1.24.1 computes antialiased cubic Resize wrongly on CUDA (the fix of
  onnxruntime PR 25265 first ships in 1.24.1; 1.23.2 is the newest build for Python 3.10): a
  GPU engine says so for models exported with ``--resample resize`` (`OrtEngine.known_issues`).
- ONNX Runtime's process-wide logger is silenced while a GPU session is created (it logs an
  unusable provider as an error before falling back) and set back to its previous level
  afterwards. onnxruntime has no getter for that level (1.31 has only the setters), so this
  module remembers the level it last set, starting from onnxruntime's default;
  `set_logger_severity` sets it through the same record.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vitexport._util.errors import EngineError, EngineUnavailable, EnvironmentProblem, one_line
from vitexport._util.interrupt import scratch_folder
from vitexport._util.memory import release_freed_heap
from vitexport.engines.base import Engine

logger = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# The first onnxruntime-gpu with the CUDA antialiased-Resize fix (PR 25265: cubic_coeff_a honoured, right kernel
# grid when shrinking). Found in the wheels: ResizeAntiAliasImpl takes cubic_coeff_a from 1.24.1 on, not in 1.23.2.
CUDA_ANTIALIAS_FIX = (1, 24, 1)
ORT_DEFAULT_LOGGER_SEVERITY = 2  # warning: onnxruntime's own default
_UNAVAILABLE_ADVICE = "use --provider cpu, or --debug for ONNX Runtime's log"


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise EnvironmentProblem("onnxruntime is not installed; pip install onnxruntime-gpu (or onnxruntime)") from exc
    return onnxruntime


# ---------------------------------------------------------------------------
# ONNX Runtime's process-wide logger
# ---------------------------------------------------------------------------
_logger_lock = threading.RLock()
_logger_severity = ORT_DEFAULT_LOGGER_SEVERITY


def set_logger_severity(level: int) -> int:
    """Set ONNX Runtime's process-wide logger severity (0 verbose .. 4 fatal); returns the previous level."""
    global _logger_severity
    with _logger_lock:
        previous, _logger_severity = _logger_severity, int(level)
        _ort().set_default_logger_severity(int(level))
        return previous


@contextlib.contextmanager
def logger_severity(level: int) -> Iterator[None]:
    """ONNX Runtime's logger at ``level`` inside the block, at its previous level after it."""
    with _logger_lock:
        previous = set_logger_severity(level)
        try:
            yield
        finally:
            set_logger_severity(previous)


# ---------------------------------------------------------------------------
# sessions
# ---------------------------------------------------------------------------
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


def ort_version() -> str:
    """The installed onnxruntime distribution and its version, e.g. ``onnxruntime-gpu 1.31.1``."""
    ort = _ort()
    try:
        from onnxruntime.capi.build_and_package_info import package_name
    except ImportError:  # pragma: no cover - every wheel carries it
        package_name = "onnxruntime"
    return f"{package_name} {ort.__version__}"


def version_tuple(version: str) -> tuple[int, ...]:
    """'1.23.2' -> (1, 23, 2); pre-release and local parts ('1.24.0.dev1+cu12') are dropped."""
    parts = []
    for part in version.split("+")[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() < len(part):  # '1rc1': a pre-release of 1
            break
    return tuple(parts)


def cuda_resize_issue(version: str, resample: str) -> str:
    """The warning for a ``resize``-form model on CUDA with an onnxruntime-gpu before the fix; empty otherwise."""
    if resample != "resize" or version_tuple(version) >= CUDA_ANTIALIAS_FIX:
        return ""
    fixed = ".".join(map(str, CUDA_ANTIALIAS_FIX))
    return (f"onnxruntime {version} computes antialiased cubic Resize wrongly on CUDA (fixed in {fixed}, "
            f"onnxruntime PR 25265); this model resamples with Resize: upgrade onnxruntime-gpu to >= {fixed} "
            "(Python >= 3.11) or export with --resample portable")


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


def provider_chain(provider: str) -> list[str]:
    """The providers a session for ``provider`` is given, in order (the CPU as the last resort for GPU ones)."""
    if provider not in PROVIDERS:
        raise EnvironmentProblem(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")
    chain = {"cpu": ["cpu"], "cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"]}[provider]
    return [PROVIDERS[p] for p in chain]


# graph optimization levels by name (ONNX Runtime's default is "all")
GRAPH_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class SessionTuning:
    """ONNX Runtime CPU session settings that change speed, never results (each is tested for parity).

    ``graph_level``: ORT's graph optimization level ("all", its default, adds layout transforms and the
    fusions that need them); ``prepack``: MatMul weights pre-packed into MLAS's layout once at load (ORT's
    default); ``config``: further session config entries (``session.*`` keys), passed through verbatim.
    Thread count and spinning are the engine's ``threads`` and ``spin``.
    """

    graph_level: str = "all"
    prepack: bool = True
    config: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.graph_level not in GRAPH_LEVELS:
            raise EnvironmentProblem(f"unknown graph optimization level {self.graph_level!r}; "
                                     f"use one of {', '.join(GRAPH_LEVELS)}")
        for key, value in self.config:
            if not (isinstance(key, str) and isinstance(value, str) and key.startswith("session.")):
                raise EnvironmentProblem(f"session config entries are 'session.*' string pairs, got {key!r}: "
                                         f"{value!r}")

    @classmethod
    def from_options(cls, options: SessionTuning | dict[str, Any] | None) -> SessionTuning:
        """From a `SessionTuning`, a dict of its fields (``config`` may be a dict) or None (the defaults)."""
        if options is None or isinstance(options, SessionTuning):
            return options or cls()
        unknown = set(options) - {"graph_level", "prepack", "config"}
        if unknown:
            raise EnvironmentProblem(f"unknown ONNX Runtime session option(s) {', '.join(sorted(unknown))}; "
                                     "use graph_level, prepack, config")
        config = options.get("config") or {}
        return cls(options.get("graph_level", "all"), bool(options.get("prepack", True)),
                   tuple(sorted(dict(config).items())))


def session_options(debug: bool = False, threads: int | None = None, profile_prefix: str | None = None,
                    spin: bool = True, tuning: SessionTuning | None = None):
    ort = _ort()
    opts = ort.SessionOptions()
    if not spin:  # idle worker threads stop busy-waiting (they would steal cores from other work)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    tuning = tuning or SessionTuning()
    levels = ort.GraphOptimizationLevel
    opts.graph_optimization_level = {"disable": levels.ORT_DISABLE_ALL, "basic": levels.ORT_ENABLE_BASIC,
                                     "extended": levels.ORT_ENABLE_EXTENDED,
                                     "all": levels.ORT_ENABLE_ALL}[tuning.graph_level]
    if not tuning.prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    for key, value in tuning.config:
        opts.add_session_config_entry(key, value)
    # ORT logs a provider it cannot initialise as an error and falls back; vitexport detects that itself
    opts.log_severity_level = 0 if debug else 3
    if threads:
        opts.intra_op_num_threads = threads
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def _preload_cuda() -> None:
    preload = getattr(_ort(), "preload_dlls", None)
    if preload is not None:
        printed = io.StringIO()  # preload_dlls print()s each library it misses: on stdout, that breaks --json
        try:
            with contextlib.redirect_stdout(printed):
                preload()  # CUDA/cuDNN from the pip nvidia-* packages (a CUDA build of torch brings them)
        except Exception as exc:  # missing libraries show up as no CUDA provider below
            logger.debug("onnxruntime.preload_dlls failed: %s", exc)
        if printed.getvalue().strip():
            logger.debug("onnxruntime.preload_dlls: %s", " ".join(printed.getvalue().split()))


def _check_in_build(provider: str) -> None:
    wanted, available = PROVIDERS[provider], available_providers()
    if wanted not in available:
        advice = "install onnxruntime-gpu (and uninstall onnxruntime)" if provider != "cpu" else "reinstall onnxruntime"
        raise EngineUnavailable(f"{wanted} is not in this onnxruntime build (available: {', '.join(available)})",
                                advice)


_arena_lock = threading.Lock()


def _capped(opts: Any, chain: list[str], cap: int | None) -> tuple[list[Any], contextlib.AbstractContextManager]:
    """The providers of a session whose allocations are capped at ``cap`` bytes, and the context to create it in.

    The CPU: ONNX Runtime's shared (environment) arena with ``max_mem``, registered right before the session is
    created, under a lock (a session keeps the arena registered when it was made; a later registration replaces
    it for later sessions only); CUDA: the provider's ``gpu_mem_limit``. An allocation past the cap fails that
    run with an error instead of taking the machine's memory: the second line behind `vitexport.onnx.budget`."""
    if not cap:
        return list(chain), contextlib.nullcontext()
    providers: list[Any] = [(p, {"gpu_mem_limit": str(cap)}) if p == "CUDAExecutionProvider" else p for p in chain]
    if chain[0] != "CPUExecutionProvider":
        return providers, contextlib.nullcontext()
    ort = _ort()

    @contextlib.contextmanager
    def registered() -> Iterator[None]:
        with _arena_lock:
            memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(memory, ort.OrtArenaCfg({"max_mem": int(cap)}))
            opts.add_session_config_entry("session.use_env_allocators", "1")
            yield

    return providers, registered()


def memory_cap(budget: Any, path: str | bytes) -> int | None:
    """The allocation cap of a session for a `vitexport.onnx.budget.GraphBudget`: twice its limit (concurrent
    runs share the arena) plus the model file (its weights); None without a limit."""
    if budget is None or budget.max_bytes is None or isinstance(path, bytes):
        return None
    return int(2 * budget.max_bytes + os.path.getsize(path))


def create_session(
    path: str | bytes, provider: str, threads: int | None = None, debug: bool = False, spin: bool = True,
    tuning: SessionTuning | None = None, cap: int | None = None,
):
    """(session, SessionInfo) on ``provider`` ('cpu', 'cuda', 'tensorrt'); never silently on another one.
    ``cap``: the session's allocations are capped at that many bytes (`_capped`).

    Raises `EngineUnavailable` (exit 2) when the provider is not usable here, `EngineError` when
    ONNX Runtime cannot load the model.
    """
    ort = _ort()
    chain = provider_chain(provider)
    _check_in_build(provider)
    quiet = contextlib.nullcontext()
    if provider != "cpu":
        _preload_cuda()
        # ORT's process-wide logger prints a provider it cannot load as an error; the check below
        # replaces that with one clear message (--debug keeps ORT's log)
        quiet = logger_severity(0 if debug else 4)
    printed = io.StringIO()
    try:
        # onnxruntime's Python layer print()s a provider that failed to register ("EP Error", e.g. TensorRT
        # without its libraries) to stdout, which would corrupt --json output: it is captured and logged instead
        opts = session_options(debug, threads, spin=spin, tuning=tuning)
        providers, arena = _capped(opts, chain, cap)
        with quiet, contextlib.redirect_stdout(printed), arena:
            session = ort.InferenceSession(path, sess_options=opts, providers=providers)
    except Exception as exc:
        where = "the model" if isinstance(path, bytes) else repr(path)
        raise EngineError(f"ONNX Runtime could not load {where} on {chain[0]}: {one_line(exc)}") from exc
    finally:
        if printed.getvalue():
            logger.debug("onnxruntime printed while creating the session: %s", printed.getvalue())
    used = list(session.get_providers())
    if chain[0] not in used:
        raise EngineUnavailable(
            f"{chain[0]} could not be initialised here ({_fallback_cause(printed.getvalue())}; "
            f"ONNX Runtime fell back to {', '.join(used)})",
            _UNAVAILABLE_ADVICE,
        )
    return session, SessionInfo(requested=provider, providers=used)


def _fallback_cause(printed: str) -> str:
    """Why a provider fell back: what onnxruntime printed ("EP Error <where> <what> when using ..."), else the
    usual causes."""
    match = re.search(r"^EP Error (.*?)\s+when using", printed, re.M | re.S)
    if match is None:
        return "no usable GPU, driver or CUDA/cuDNN libraries"
    text = re.sub(r"^\S+:\d+\s+", "", match.group(1).strip())  # the source location
    text = re.sub(r"^(?:void|\S+) [\w:]+\([^)]*\)\s*", "", text)  # the C++ function
    return one_line(text, 200)


# A one-node ONNX model (Identity on a float[1], opset 18, IR version 8), serialized once with
# onnx.helper (tests/unit/engines/test_engines.py rebuilds it and compares), so probing needs no onnx package.
PROBE_MODEL = (
    b"\x08\x08:;\n\x10\n\x01x\x12\x01y\"\x08Identity\x12\x05probeZ\x0f\n\x01x\x12\n\n\x08\x08\x01\x12\x04\n\x02"
    b"\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\x12"
)


def _probe_model() -> bytes:
    return PROBE_MODEL


def probe_provider(provider: str, debug: bool = False) -> tuple[bool, str]:
    """(usable, reason): can a session really run on ``provider`` here? Uses a one-node in-memory graph."""
    try:
        create_session(_probe_model(), provider, debug=debug)
    except EngineUnavailable as exc:
        return False, exc.reason
    except EngineError as exc:
        return False, str(exc)
    return True, ""


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` resolved to: the provider, whether that is a fallback, and why."""

    provider: str
    fell_back: bool
    reason: str = ""

    @property
    def note(self) -> str:
        """One line for the user when ``auto`` fell back; empty otherwise."""
        return f"auto: running on the CPU ({self.reason})" if self.fell_back else ""


def resolve_auto_provider(debug: bool = False) -> AutoChoice:
    """``auto``: CUDA when a session really runs on it here, else the CPU, and the reason."""
    usable, reason = probe_provider("cuda", debug=debug)
    return AutoChoice("cuda", False) if usable else AutoChoice("cpu", True, reason)


def profile_placement(path: str, provider: str, feeds: dict[str, Any], info: SessionInfo) -> None:
    """Run once with profiling and record which provider ran each node (GPU sessions only)."""
    with scratch_folder("vitexport-profile-") as folder:
        opts = session_options(profile_prefix=os.path.join(folder, "profile"))
        session = _ort().InferenceSession(path, sess_options=opts, providers=provider_chain(provider))
        session.run(None, feeds)
        with open(session.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
    seen: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args:
            name = event["name"]
            for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
                name = name.removesuffix(suffix)
            seen[name] = (args["provider"], args.get("op_name", ""))
    placement: dict[str, int] = {}
    cpu_ops: dict[str, int] = {}
    for prov, op in seen.values():
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
# the engine
# ---------------------------------------------------------------------------
class OrtEngine(Engine):
    """ONNX Runtime on one execution provider; thread-safe `run` (a session is, and binding is per call)."""

    def __init__(self, provider: str = "cpu", *, threads: int | None = None, spin: bool = True,
                 debug: bool = False, session: SessionTuning | dict[str, Any] | None = None) -> None:
        provider_chain(provider)  # refuses unknown names now
        self.tuning = SessionTuning.from_options(session)
        self.name = provider
        self.threads, self.spin, self.debug = threads, spin, debug
        self.path = ""
        self.session: Any = None
        self.info = SessionInfo(requested=provider, providers=[])

    def available(self) -> tuple[bool, str]:
        return probe_provider(self.name, debug=self.debug)

    def load(self, path: str) -> OrtEngine:
        self.path = str(path)
        self.session, self.info = create_session(self.path, self.name, threads=self.threads, debug=self.debug,
                                                 spin=self.spin, tuning=self.tuning,
                                                 cap=memory_cap(self.budget, self.path))
        release_freed_heap()  # the load's freed temporaries (pre-packing) would stay in RSS (vitexport._util.memory)
        return self

    @property
    def metadata(self) -> dict[str, Any]:
        from vitexport.onnx.spec import decode_metadata

        return decode_metadata(dict(self.session.get_modelmeta().custom_metadata_map))

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def output_name(self) -> str:
        return self.session.get_outputs()[0].name

    @property
    def input_dtype(self) -> str:
        return "float16" if "float16" in self.session.get_inputs()[0].type else "float32"

    @property
    def input_shape(self) -> list[Any] | None:
        return list(self.session.get_inputs()[0].shape)

    @property
    def devices(self) -> list[str]:
        return list(self.info.providers)

    @property
    def version(self) -> str:
        return ort_version()

    def known_issues(self, metadata: dict[str, Any]) -> list[str]:
        """On a GPU provider: an onnxruntime-gpu before the CUDA antialias fix with a ``resize``-form model."""
        if self.name == "cpu":
            return []
        # exports from before the portable form carry no "resample" key: they hold a Resize
        issue = cuda_resize_issue(_ort().__version__, metadata.get("resample", "resize"))
        return [issue] if issue else []

    def run(self, x: Any) -> Any:
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float16 if self.input_dtype == "float16" else np.float32)
        if "CUDAExecutionProvider" in self.info.providers:
            binding = self.session.io_binding()  # per call: thread-safe, no host copies of the output in between
            binding.bind_cpu_input(self.input_name, x)
            binding.bind_output(self.output_name, "cuda")
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            out = self.session.run([self.output_name], {self.input_name: x})[0]
        return out.astype(np.float32, copy=False)

    def diagnose(self, x: Any) -> None:
        """On a GPU provider: profile one run and record node placement and Memcpy nodes."""
        import numpy as np

        if self.name != "cpu":
            dtype = np.float16 if self.input_dtype == "float16" else np.float32
            profile_placement(self.path, self.name, {self.input_name: x.astype(dtype)}, self.info)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.info.to_json(), "provider_chain": PROVIDERS[self.name],
                "version": self.version, "notes": []}


__all__ = [
    "CUDA_ANTIALIAS_FIX",
    "GRAPH_LEVELS",
    "ORT_DEFAULT_LOGGER_SEVERITY",
    "PROVIDERS",
    "AutoChoice",
    "OrtEngine",
    "SessionInfo",
    "SessionTuning",
    "available_providers",
    "create_session",
    "cuda_resize_issue",
    "logger_severity",
    "memory_cap",
    "ort_version",
    "probe_provider",
    "profile_placement",
    "provider_chain",
    "resolve_auto_provider",
    "set_logger_severity",
    "version_tuple",
]
