"""The CUDA check of issue 16 in one command: install onnxruntime-gpu, test, verify, place, benchmark.

    python3 -m scripts.gpu_check OUTDIR [--parts /tmp/ortgpu] [--limit-s 300] [--bench-budget-s 120]
                                 [--only STEP,...] [--skip STEP,...] [--fresh] [--dry-run]

Run through scripts/gpu_check.sh (docs/gpu-runbook.md says when and how). Steps, in order:
env, wheel, libs, ort, imports, prepare, exports + pytest (side by side), verify + placement
(side by side), bench. Every step records its own result and failure and the script goes on;
it stops starting work when its time limit (--limit-s) is near. OUTDIR receives at most 8 small
files: summary.md, env.txt, log.txt, pytest.txt, verify-reports.json, placement.json, bench.json.
summary.md is rewritten after every step, so even a killed run leaves one.

--dry-run rehearses on a machine without a GPU: the CPU provider for verify, placement and
the benchmark (--quick), the sample model only, the environment's onnxruntime when no wheel
parts are there. Stdlib only here: what the steps need is checked by the steps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SPLIT = ROOT / "scripts" / "split_wheel.sh"
OUT_FILES = ("summary.md", "env.txt", "log.txt", "pytest.txt", "verify-reports.json", "placement.json", "bench.json")
SETUP_STEPS = ("env", "wheel", "libs", "ort", "imports", "prepare")  # always run: later steps need what they set
STEPS = ("exports", "pytest", "verify", "placement", "bench")  # what --only/--skip choose from
CUDA_LIBS = ("libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13", "libcurand.so.10")
MODULES = {  # module -> (what needs it, required for the check to mean anything)
    "torch": ("export and the PyTorch reference", True), "onnx": ("export and graph checks", True),
    "onnxscript": ("the dynamo exporter (>= 0.7.1)", True), "numpy": ("everything", True),
    "click": ("the vitexport CLI", True), "safetensors": ("checkpoint loading", True),
    "PIL": ("Predictor preprocessing", True), "pytest": ("pytest -m cuda", False),
    "timm": ("the timm-equality tests (collected by pytest)", False),
    "hypothesis": ("property tests (collected by pytest)", False), "matplotlib": ("verify --plot only", False),
}
SAMPLE = ("digits-vit", ROOT / "samples" / "digits-vit.pt")
VIT_S, VIT_B = "vit_small_patch16_224", "vit_base_patch16_224"
VARIANTS = {  # verify variants: file suffix, export flags ({p} = the provider)
    "default": ("float32-sdpa", []), "resize": ("float32-sdpa-resize", ["--resample", "resize"]),
    "fp16": ("float16-sdpa", ["--dtype", "float16"]), "mha": ("float32-mha", ["--attention", "mha"]),
    "optimize": ("optimized-{p}", ["--optimize", "{p}"]),
}
BENCH_ONLY = {  # extra exports the benchmark needs: model -> [(dtype, attention)]
    VIT_S: [("float16", "mha")],
    VIT_B: [("float32", "sdpa"), ("float16", "sdpa"), ("float32", "mha"), ("float16", "mha")],
}
JSON_MARK = "GPU_CHECK_JSON "
ORT_PROBE = r"""
import contextlib, io, json, re, sys
info = {}
try:
    import onnxruntime as ort
    info.update(file=ort.__file__, version=ort.__version__, available=ort.get_available_providers())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            ort.preload_dlls(); info["preload"] = "called"
        except Exception as exc:
            info["preload"] = f"{type(exc).__name__}: {exc}"
    info["preload_output"] = buf.getvalue().strip()[-1500:]
    maps = open("/proc/self/maps").read().split("\n")
    pat = re.compile(r"lib(cublas|cublasLt|cudart|curand|cudnn|cufft|nvrtc|cuda)\.so")
    info["loaded"] = sorted({l.split()[-1] for l in maps if pat.search(l)})
    from vitexport.serving.predictor import probe_provider
    ok, why = probe_provider("cuda")
    info["cuda_usable"], info["cuda_reason"] = ok, why
    if ok:
        from onnx import TensorProto, helper
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "p",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]); m.ir_version = 8
        s = ort.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider"])
        info["cuda_options"] = s.get_provider_options().get("CUDAExecutionProvider", {})
except Exception as exc:
    info["error"] = f"{type(exc).__name__}: {exc}"
print("GPU_CHECK_JSON " + json.dumps(info))
"""
IMPORTS_PROBE = r"""
import importlib, json
out = {}
for name in %r:
    try:
        mod = importlib.import_module(name)
        out[name] = {"version": str(getattr(mod, "__version__", "?")), "file": getattr(mod, "__file__", None)}
    except Exception as exc:
        out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
print("GPU_CHECK_JSON " + json.dumps(out))
"""
SAVE_CHECKPOINTS = r"""
import sys, torch, vitexport
from vitexport.model.vit import create_model
for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
    torch.manual_seed(0)
    vitexport.save_checkpoint(create_model(name), path)
    print("saved", path)
"""


@dataclass
class Proc:
    cmd: list[str]
    rc: int | None
    out: str
    seconds: float
    timed_out: bool = False

    def tail(self, n: int = 1500) -> str:
        return self.out[-n:]

    def json(self) -> dict[str, Any] | None:
        lines = [ln for ln in self.out.splitlines() if ln.startswith(JSON_MARK)]
        return json.loads(lines[-1][len(JSON_MARK):]) if lines else None


@dataclass
class Step:
    name: str
    status: str = "pending"  # ok | FAILED | skipped
    seconds: float = 0.0
    note: str = ""


class StepFailed(Exception):
    """A step's own failure: recorded, and the next step runs."""


class StepSkipped(Exception):
    """A step with nothing to do here (recorded as skipped, with the reason)."""


@dataclass
class Artifact:
    name: str
    model: str
    variant: str
    checkpoint: Path
    path: Path
    flags: list[str]
    verify: bool
    export: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (at most 8 files are written there)")
    parser.add_argument("--parts", type=Path, default=Path("/tmp/ortgpu"), help="folder of the wheel parts")
    parser.add_argument("--site", type=Path, help="install target of the wheel (default PARTS/site)")
    parser.add_argument("--work", type=Path, help="checkpoints, exports, reports (default PARTS/work)")
    parser.add_argument("--limit-s", type=float, default=300.0, help="no step starts after this many seconds")
    parser.add_argument("--bench-budget-s", type=float, default=120.0, help="time kept for the benchmark")
    parser.add_argument("--only", default="", help=f"comma-separated steps to run, of {','.join(STEPS)}")
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out")
    parser.add_argument("--workers", type=int, default=0, help="parallel exports/verifies (default: cores / 2, <= 6)")
    parser.add_argument("--fresh", action="store_true", help="export again even when the exports exist")
    parser.add_argument("--keep-going", action="store_true", help="run the GPU steps even when CUDA does not work")
    parser.add_argument("--dry-run", action="store_true", help="rehearse without a GPU (CPU provider, sample only)")
    args = parser.parse_args(argv)
    args.site = args.site or args.parts / "site"
    args.work = args.work or args.parts / "work"
    args.provider = "cpu" if args.dry_run else "cuda"
    for name in filter(None, (args.only + "," + args.skip).split(",")):
        if name not in STEPS:
            parser.error(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
    args.workers = args.workers or max(1, min(6, (os.cpu_count() or 2) // 2))
    return args


class Check:
    """State of one run: output files, the child environment, step records, artifacts."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        args.work.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        self.deadline = self.start + args.limit_s
        self.steps: list[Step] = []
        self.env_text: list[str] = []
        self.facts: dict[str, Any] = {"mode": "dry run (CPU provider)" if args.dry_run else "CUDA"}
        self.child_env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.python = sys.executable
        self.site: Path | None = None
        self.artifacts: list[Artifact] = []
        self.placement: dict[str, Any] = {}
        self.bench: dict[str, Any] | None = None
        self.pytest_summary = ""
        self.lib_paths: dict[str, str | None] = {}
        self.cuda_broken = False  # the ort step found no working CUDA session: the GPU steps are skipped
        self.reserve = 0.0  # seconds kept back for the benchmark while earlier phases run
        self.stopping = False  # set when the run is stopped: no new command starts
        self.signalled = False
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._log = open(self.out / "log.txt", "a", encoding="utf-8")
        self._set_pythonpath()

    # -- plumbing -------------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f}s] {text}"
        print(line, flush=True)
        with self._lock:
            if self._log.tell() < 3_000_000:
                self._log.write(line + "\n")
                self._log.flush()

    def _set_pythonpath(self) -> None:
        paths = ([str(self.site)] if self.site else []) + [str(ROOT)]
        rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
        self.child_env["PYTHONPATH"] = os.pathsep.join(paths + rest)

    def run(self, cmd: list[str], timeout: float, env: dict[str, str] | None = None,
            threads: int | None = None) -> Proc:
        """Run one command in its own process group, bounded by ``timeout`` and the time limit."""
        env = dict(env or self.child_env)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        limit = max(1.0, min(timeout, self.remaining() - self.reserve))
        t0 = time.monotonic()
        if self.stopping:
            return Proc(cmd, None, "not started: the run is being stopped", 0.0)
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
        except OSError as exc:
            return Proc(cmd, None, f"could not start: {exc}", 0.0)
        with self._lock:
            self._live.add(proc)
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            out += f"\n[killed after {limit:.0f} s]"
        finally:
            with self._lock:
                self._live.discard(proc)
        result = Proc(cmd, proc.returncode, out, time.monotonic() - t0, timed_out)
        short = " ".join(cmd if len(" ".join(cmd)) < 300 else cmd[:8] + ["..."])
        self.say(f"$ {short}\n  rc={result.rc} in {result.seconds:.1f} s\n" + _indent(result.tail(2500)))
        return result

    def kill_children(self) -> None:
        """Stop every command still running (each in its own process group) and start no new one."""
        self.stopping = True
        with self._lock:
            for proc in list(self._live):
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def parallel(self, jobs: list[Callable[[], Any]], workers: int) -> list[Any]:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda job: job(), jobs))

    def wanted(self, name: str) -> bool:
        if name in SETUP_STEPS:
            return True
        only = [s for s in self.args.only.split(",") if s]
        return (not only or name in only) and name not in self.args.skip.split(",")

    def blocked(self, name: str, min_s: float) -> str:
        """Why step ``name`` must not start now ('' when it may)."""
        if not self.wanted(name):
            return "not selected (--only/--skip)"
        if self.cuda_broken and name in STEPS and not self.args.keep_going:
            return "no working CUDA session (ort step); --keep-going runs it anyway"
        if self.remaining() - (self.reserve if name != "bench" else 0) < min_s:
            return f"time limit: {self.remaining():.0f} s left"
        return ""

    def step(self, name: str, fn: Callable[[], str], min_s: float = 5.0, reason: str | None = None,
             took: float = 0.0) -> Step:
        """Run one step: its note on success, its error on failure; never raises.

        ``reason`` (a skip reason decided earlier, '' = run) and ``took`` (seconds) are for steps whose
        work already ran side by side with another's; ``fn`` then only judges the results.
        """
        record = Step(name)
        self.steps.append(record)
        t0 = time.monotonic()
        reason = self.blocked(name, min_s) if reason is None else reason
        if reason:
            record.status, record.note = "skipped", reason
        else:
            self.say(f"== step {name}")
            try:
                record.note, record.status = fn() or "", "ok"
            except StepFailed as exc:
                record.status, record.note = "FAILED", str(exc)
            except StepSkipped as exc:
                record.status, record.note = "skipped", str(exc)
            except Exception as exc:  # a bug in this script must not lose the other steps
                record.status, record.note = "FAILED", f"{type(exc).__name__}: {exc}"
        record.seconds = time.monotonic() - t0 + (took if not reason else 0.0)
        self.say(f"== {name}: {record.status} {record.note}")
        write_outputs(self)
        return record


def _indent(text: str) -> str:
    return "\n".join("  | " + line for line in text.rstrip().splitlines())


def _clean(text: str, n: int = 400) -> str:
    return " ".join(str(text).split())[:n]


# -- steps: environment and installation ----------------------------------------------------------
def step_env(c: Check) -> str:
    smi = c.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], 30)
    gpu = smi.out.strip().splitlines()[0] if smi.rc == 0 and smi.out.strip() else "none (nvidia-smi: " + \
        _clean(smi.out, 120) + ")"
    c.facts["gpu"] = gpu
    torch_info = c.run([c.python, "-c", "import json, torch; print('" + JSON_MARK + "' + json.dumps({"
                        "'torch': torch.__version__, 'cuda': torch.version.cuda, "
                        "'cuda_available': torch.cuda.is_available(), "
                        "'device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "
                        "'matmul_tf32': torch.backends.cuda.matmul.allow_tf32}))"], 90)
    pip = c.run([c.python, "-m", "pip", "list", "--format=freeze"], 60)
    keep = re.compile(r"^(torch|onnx|onnxscript|onnxruntime|numpy|timm|nvidia|pytest|hypothesis|click|safetensors|"
                      r"pillow|protobuf|setuptools)", re.I)
    c.env_text += [f"python: {sys.version.split()[0]} at {c.python}", f"gpu: {gpu}",
                   f"torch: {json.dumps(torch_info.json())}", f"cpu cores: {os.cpu_count()}",
                   f"repository: {ROOT}", "pip list (relevant):",
                   *["  " + ln for ln in pip.out.splitlines() if keep.match(ln)]]
    c.facts["torch"] = torch_info.json()
    return gpu


def _one_manifest(parts: Path) -> Path | None:
    found = sorted(parts.glob("*.sha256")) if parts.is_dir() else []
    return found[0] if len(found) == 1 else None


def step_wheel(c: Check) -> str:
    args = c.args
    manifest = _one_manifest(args.parts)
    if manifest is None:
        if args.dry_run:
            raise StepSkipped("no wheel parts: the rehearsal uses this environment's onnxruntime")
        raise StepFailed(f"no (single) .sha256 manifest in {args.parts}: carry the parts as docs/gpu-runbook.md says")
    want, name = manifest.read_text().split("\n", 1)[0].split()
    stamp = args.site / ".wheel-sha256"
    if stamp.is_file() and stamp.read_text().strip() == want:  # written last, removed with the folder
        c.site = args.site
        c._set_pythonpath()
        return f"{name} already installed in {args.site}"
    joined = c.run(["bash", str(SPLIT), "join", str(args.parts), str(args.work / "wheel")], 180)
    if joined.rc != 0:
        raise StepFailed("join/checksum failed: " + _clean(joined.tail(600)))
    wheel = args.work / "wheel" / name
    if args.site.exists():
        c.run(["rm", "-rf", str(args.site)], 60)
    pip = c.run([c.python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile",
                 "--no-cache-dir", "--target", str(args.site), str(wheel)], 240)
    how = "pip install --target"
    if pip.rc != 0:  # a wheel is a zip: unpacking it is the same install, without pip's records
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(args.site)
        how = f"zip extraction (pip failed: {_clean(pip.tail(200), 200)})"
    stamp.write_text(want)
    wheel.unlink(missing_ok=True)
    c.site = args.site
    c._set_pythonpath()
    return f"{name}: sha256 ok, installed by {how} into {args.site}"


def nvidia_lib_dirs(c: Check) -> list[str]:
    """Library folders of the pip nvidia-* packages beside torch (nvidia/cu13/lib, nvidia/cudnn/lib, ...)."""
    code = "import json, nvidia; print('" + JSON_MARK + "' + json.dumps(list(nvidia.__path__)))"
    proc = c.run([c.python, "-c", code], 60)
    bases = proc.json() or []
    dirs = []
    for base in bases:
        for lib in sorted(Path(base).glob("*/lib")):
            if any(lib.glob("*.so*")) and str(lib) not in dirs:
                dirs.append(str(lib))
    return dirs


def parse_ldd(text: str) -> dict[str, str]:
    """ldd output -> {soname: resolved path or 'not found'}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(not found|\S+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _provider_library(c: Check) -> Path | None:
    if c.site:
        return c.site / "onnxruntime" / "capi" / "libonnxruntime_providers_cuda.so"
    proc = c.run([c.python, "-c", "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))"], 60)
    lib = Path(proc.out.strip().splitlines()[-1] if proc.out.strip() else ".") / "capi" / \
        "libonnxruntime_providers_cuda.so"
    return lib if lib.is_file() else None


DRIVER_DIRS = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
               "/usr/local/cuda/lib64", "/usr/local/cuda/compat")


def library_paths(nvidia: list[str]) -> dict[str, str | None]:
    """LD_LIBRARY_PATH candidates, tried in this order: as the machine has it, + the nvidia-* package
    folders, + the folders that hold the driver's libcuda.so.1."""
    base = os.environ.get("LD_LIBRARY_PATH", "")
    driver = [d for d in DRIVER_DIRS if (Path(d) / "libcuda.so.1").exists()]
    join = lambda parts: os.pathsep.join(dict.fromkeys(p for p in parts if p))  # noqa: E731
    out: dict[str, str | None] = {"machine": base or None}
    if nvidia:
        out["nvidia"] = join(nvidia + [base])
    if driver:
        out["nvidia+driver"] = join(nvidia + driver + [base])
    return out


def step_libs(c: Check) -> str:
    """Does libonnxruntime_providers_cuda.so find its CUDA libraries (ldd), with which LD_LIBRARY_PATH?"""
    dirs = nvidia_lib_dirs(c)
    c.lib_paths = library_paths(dirs)
    c.env_text += ["nvidia library folders:", *["  " + d for d in dirs],
                   "LD_LIBRARY_PATH candidates: " + json.dumps(c.lib_paths)]
    lib = _provider_library(c)
    if lib is None or not lib.is_file():
        if c.args.dry_run:
            raise StepSkipped("no libonnxruntime_providers_cuda.so here (a CPU-only onnxruntime)")
        raise StepFailed("no libonnxruntime_providers_cuda.so (this onnxruntime is a CPU-only build)")
    resolved: dict[str, dict[str, str]] = {}
    for name, value in c.lib_paths.items():
        env = dict(c.child_env)
        env.pop("LD_LIBRARY_PATH", None)
        if value:
            env["LD_LIBRARY_PATH"] = value
        resolved[name] = parse_ldd(c.run(["ldd", str(lib)], 30, env=env).out)
        c.env_text += [f"ldd {lib.name} with LD_LIBRARY_PATH = {name}:",
                       *[f"  {k} => {v}" for k, v in resolved[name].items()]]
    unresolved = {name: [n for n, v in r.items() if v == "not found"] for name, r in resolved.items()}
    best = list(c.lib_paths)[-1]
    if c.lib_paths[best]:  # the widest candidate until the ort step knows better
        c.child_env["LD_LIBRARY_PATH"] = c.lib_paths[best]
    missing = [n for n in CUDA_LIBS if resolved[best].get(n, "not found") == "not found"]
    note = "; ".join(f"{name}: unresolved {', '.join(u) or 'none'}" for name, u in unresolved.items())
    if missing and not c.args.dry_run:
        raise StepFailed(f"{', '.join(missing)} not found by ldd with any LD_LIBRARY_PATH | {note}")
    return note


def _probe(c: Check, lib_path: str | None, torch_first: bool = False) -> dict[str, Any]:
    env = dict(c.child_env)
    env.pop("LD_LIBRARY_PATH", None)
    if lib_path:
        env["LD_LIBRARY_PATH"] = lib_path
    code = ("import torch\n" if torch_first else "") + ORT_PROBE
    return c.run([c.python, "-c", code], 120, env=env).json() or {"error": "the probe printed no result"}


def step_ort(c: Check) -> str:
    """Which onnxruntime is imported, and with which LD_LIBRARY_PATH does a CUDA session run?"""
    probes: dict[str, dict[str, Any]] = {}
    for name, value in (c.lib_paths or {"machine": os.environ.get("LD_LIBRARY_PATH")}).items():
        probes[name] = _probe(c, value)
        c.env_text += [f"onnxruntime probe, LD_LIBRARY_PATH = {name}:", "  " + json.dumps(probes[name])]
    usable = [name for name, p in probes.items() if p.get("cuda_usable")]
    if not usable and not c.args.dry_run:  # diagnosis only: does importing torch first load what is missing?
        first = _probe(c, list(c.lib_paths.values())[-1] if c.lib_paths else None, True)
        c.env_text += ["onnxruntime probe after `import torch`:", "  " + json.dumps(first)]
        c.facts["cuda_usable_after_import_torch"] = first.get("cuda_usable")
    chosen = usable[0] if usable else list(probes)[-1]
    if usable and c.lib_paths:
        value = c.lib_paths[chosen]
        if value:
            c.child_env["LD_LIBRARY_PATH"] = value
        else:
            c.child_env.pop("LD_LIBRARY_PATH", None)
    full = probes[chosen]
    c.facts.update(ort_file=full.get("file"), ort_version=full.get("version"), cuda_usable=bool(usable),
                   cuda_options=full.get("cuda_options"), ld_library_path=chosen if usable else "none works",
                   cuda_libraries_loaded=full.get("loaded"))
    if "error" in full:
        raise StepFailed("onnxruntime does not import: " + full["error"])
    problems = []
    if c.site and not str(full.get("file", "")).startswith(str(c.site)):
        problems.append(f"the machine's onnxruntime ({full.get('file')}) shadows the wheel in {c.site}")
    if "CUDAExecutionProvider" not in full.get("available", []):
        problems.append(f"CUDAExecutionProvider not available (providers: {full.get('available')})")
    if not usable:
        problems.append("CUDA session not usable with any LD_LIBRARY_PATH: " + _clean(full.get("cuda_reason", ""), 300))
    note = (f"onnxruntime {full.get('version')} from {full.get('file')}; CUDA usable with LD_LIBRARY_PATH = "
            + ", ".join(f"{n}: {p.get('cuda_usable')}" for n, p in probes.items()))
    if problems and not c.args.dry_run:
        c.cuda_broken = True
        raise StepFailed("; ".join(problems) + " | " + note)
    return note + (f" (expected in a dry run: {'; '.join(problems)})" if problems else "")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+")[0])[:3])


def step_imports(c: Check) -> str:
    names = ["vitexport", *MODULES]
    found = c.run([c.python, "-c", IMPORTS_PROBE % (names,)], 120).json() or {}
    c.env_text += ["imports:", *[f"  {k}: {v}" for k, v in found.items()]]
    c.facts["imports"] = {k: v.get("version", v.get("error")) for k, v in found.items()}
    vx = found.get("vitexport", {})
    problems = []
    if not str(vx.get("file", "")).startswith(str(ROOT)):
        problems.append(f"vitexport imports from {vx.get('file') or vx.get('error')}, not {ROOT}")
    missing_req = [f"{n} ({why})" for n, (why, req) in MODULES.items() if req and "error" in found.get(n, {"error": 1})]
    missing_opt = [f"{n} ({why})" for n, (why, req) in MODULES.items()
                   if not req and "error" in found.get(n, {"error": 1})]
    old = []
    for name, least in (("torch", (2, 6)), ("onnxscript", (0, 7, 1))):
        version = found.get(name, {}).get("version")
        if version and _version_tuple(version) < least:
            old.append(f"{name} {version} < {'.'.join(map(str, least))}")
    c.facts["missing_optional"] = missing_opt
    note = (f"missing required: {', '.join(missing_req) or 'none'}; "
            f"missing optional: {', '.join(missing_opt) or 'none'}" + (f"; too old: {', '.join(old)}" if old else ""))
    if problems or missing_req or old:
        raise StepFailed("; ".join(problems) + ("; " if problems else "") + note)
    return note


# -- steps: artifacts, tests, verification ------------------------------------------------------
def vitexport_cmd(c: Check, *args: str) -> list[str]:
    return [c.python, "-m", "vitexport.cli", *args]


def plan_artifacts(c: Check, resample: bool) -> list[Artifact]:
    """The verify set (sample and ViT-S/16 x five variants) and the benchmark's extra exports."""
    work, p = c.args.work, c.args.provider
    models = [SAMPLE] + ([] if c.args.dry_run else [(VIT_S, work / f"{VIT_S}.pt")])
    plan = []
    for model, ckpt in models:
        for variant, (suffix, flags) in VARIANTS.items():
            if variant == "resize" and not resample:
                continue
            name = f"{model}-{suffix.format(p=p)}"
            plan.append(Artifact(name, model, variant, ckpt, work / f"{name}.onnx", [f.format(p=p) for f in flags],
                                 verify=True))
    if not c.args.dry_run:
        for model, pairs in BENCH_ONLY.items():
            for dtype, attention in pairs:
                name = f"{model}-{dtype}-{attention}"
                if not any(a.name == name for a in plan):
                    plan.append(Artifact(name, model, "bench", work / f"{model}.pt", work / f"{name}.onnx",
                                         ["--dtype", dtype, "--attention", attention], verify=False))
    return plan


def step_prepare(c: Check) -> str:
    """Is --resample there? Save the random-weight ViT-S/16 and ViT-B/16 checkpoints (seed 0)."""
    help_text = c.run(vitexport_cmd(c, "onnx", "--help"), 120)
    if help_text.rc != 0:
        raise StepFailed("`vitexport onnx --help` failed: " + _clean(help_text.tail(500)))
    resample = "--resample" in help_text.out
    c.facts["resample_flag"] = resample
    c.artifacts = plan_artifacts(c, resample)
    todo = [] if c.args.dry_run else [(m, c.args.work / f"{m}.pt") for m in (VIT_S, VIT_B)]
    todo = [(m, p) for m, p in todo if not p.is_file()]
    if todo:
        saved = c.run([c.python, "-c", SAVE_CHECKPOINTS, *[str(x) for pair in todo for x in pair]], 240)
        if saved.rc != 0:
            raise StepFailed("saving the random-weight checkpoints failed: " + _clean(saved.tail(500)))
    note = f"{len(c.artifacts)} exports planned" + (
        "" if resample else "; `vitexport onnx --help` has no --resample: the resize variant is skipped")
    return note


def export_one(c: Check, art: Artifact, threads: int) -> None:
    if art.path.is_file() and not c.args.fresh:
        art.export = {"rc": 0, "seconds": 0.0, "note": "reused an earlier export (--fresh exports again)"}
        return
    proc = c.run(vitexport_cmd(c, "onnx", str(art.checkpoint), "-o", str(art.path), "--force", *art.flags), 300,
                 threads=threads)
    art.export = {"rc": proc.rc, "seconds": round(proc.seconds, 1), "timed_out": proc.timed_out,
                  "command": " ".join(["vitexport", "onnx", art.checkpoint.name, *art.flags]),
                  "output": proc.tail(1200)}


def run_pytest(c: Check, threads: int) -> Proc:
    return c.run([c.python, "-m", "pytest", "-m", "cuda", "-q", "-rA", "-p", "no:cacheprovider",
                  "--continue-on-collection-errors", "tests"], 300, threads=threads)


def phase_exports_and_pytest(c: Check) -> None:
    """Exports (parallel, CPU) side by side with pytest -m cuda; two step records."""
    workers = c.args.workers
    threads = max(1, (os.cpu_count() or 2) // (workers + 1))
    box: dict[str, Proc] = {}
    why_pytest, why_exports = c.blocked("pytest", 30), c.blocked("exports", 30)
    jobs: list[Callable[[], Any]] = []
    if not why_pytest:
        jobs.append(lambda: box.setdefault("pytest", run_pytest(c, threads)))
    if not why_exports:
        jobs += [lambda a=a: export_one(c, a, threads) for a in c.artifacts]
    else:  # a rerun of later steps uses the exports an earlier run left in the work folder
        for a in c.artifacts:
            if a.path.is_file():
                a.export = {"rc": 0, "seconds": 0.0, "note": "reused an earlier export"}
    if jobs:
        c.say(f"== exports ({'no' if why_exports else len(c.artifacts)}) and pytest ({why_pytest or 'yes'}) "
              f"side by side, {workers + 1} at a time")
    t0 = time.monotonic()
    c.parallel(jobs, workers + 1)
    took = time.monotonic() - t0

    def exports() -> str:
        failed = [a.name for a in c.artifacts if a.export.get("rc") != 0]
        note = f"{len(c.artifacts) - len(failed)}/{len(c.artifacts)} exports ok"
        if failed:
            raise StepFailed(note + "; failed: " + ", ".join(failed))
        return note

    def pytest_step() -> str:
        proc = box["pytest"]
        (c.out / "pytest.txt").write_text(proc.out[-1_000_000:], encoding="utf-8")
        c.pytest_summary = proc.out.strip().splitlines()[-1] if proc.out.strip() else ""
        if proc.rc != 0:
            raise StepFailed(f"rc={proc.rc}: {c.pytest_summary}")
        return c.pytest_summary

    c.step("exports", exports, reason=why_exports, took=took)
    c.step("pytest", pytest_step, reason=why_pytest, took=box["pytest"].seconds if "pytest" in box else 0.0)


def verify_one(c: Check, art: Artifact, threads: int) -> None:
    if art.export.get("rc") != 0 or not art.path.is_file():
        art.result = {"rc": None, "note": "not verified: no export"}
        return
    report_path = c.args.work / "reports" / f"{art.name}.json"
    report_path.parent.mkdir(exist_ok=True)
    report_path.unlink(missing_ok=True)
    extra = ["--checkpoint", str(art.checkpoint)] if art.variant == "optimize" else []
    proc = c.run(vitexport_cmd(c, "verify", str(art.path), "--provider", c.args.provider, "--json", str(report_path),
                               "--force", *extra), 300, threads=threads)
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    art.result = {"rc": proc.rc, "seconds": round(proc.seconds, 1), "timed_out": proc.timed_out,
                  "command": " ".join(["vitexport", "verify", art.path.name, "--provider", c.args.provider,
                                       "--json", "R", *(["--checkpoint", art.checkpoint.name] if extra else [])]),
                  "output": proc.tail(2500), "report": report}


def run_placement(c: Check, arts: list[Artifact], threads: int) -> None:
    raw = c.args.work / "placement-raw.json"
    raw.unlink(missing_ok=True)
    proc = c.run([c.python, "-m", "scripts.ort_placement", "--provider", c.args.provider,
                  "--json", str(raw), *[str(a.path) for a in arts]], 300, threads=threads)
    by_path = json.loads(raw.read_text()) if raw.is_file() else {}
    c.placement = {a.name: by_path.get(str(a.path), {"error": "no result: " + _clean(proc.tail(300))})
                   for a in arts}


def phase_verify_and_placement(c: Check) -> None:
    """verify --json per artifact (parallel) side by side with the placement analysis; two step records."""
    arts = [a for a in c.artifacts if a.verify]
    workers = c.args.workers
    threads = max(1, (os.cpu_count() or 2) // (workers + 1))
    ready = [a for a in arts if a.export.get("rc") == 0 and a.path.is_file()]
    why_verify, why_placement = c.blocked("verify", 30), c.blocked("placement", 30)
    jobs: list[Callable[[], Any]] = []
    if not why_placement and ready:
        jobs.append(lambda: run_placement(c, ready, threads))
    if not why_verify:
        jobs += [lambda a=a: verify_one(c, a, threads) for a in arts]
    t0 = time.monotonic()
    c.parallel(jobs, workers + 1)
    took = time.monotonic() - t0

    def verify() -> str:
        passed = [a.name for a in arts if a.result.get("rc") == 0]
        note = f"{len(passed)}/{len(arts)} verify runs passed"
        if len(passed) < len(arts):
            raise StepFailed(note + "; not passed: " + ", ".join(a.name for a in arts if a.name not in passed))
        return note

    def placement() -> str:
        if not c.placement:
            raise StepFailed("no placement results (nothing was exported)")
        missed = [n for n, p in c.placement.items() if not p.get("target_met")]
        note = (f"target (0 CPU nodes, Memcpy only at input/output) met by {len(c.placement) - len(missed)}/"
                f"{len(c.placement)}")
        if missed and not c.args.dry_run:
            raise StepFailed(note + "; not met: " + ", ".join(missed))
        return note

    c.step("verify", verify, reason=why_verify, took=took)
    c.step("placement", placement, reason=why_placement, took=took)


def step_bench(c: Check) -> str:
    budget = min(c.args.bench_budget_s, c.remaining() - 15)
    if budget < 20:
        raise StepFailed(f"only {budget:.0f} s left for the benchmark")
    out = c.args.work / "bench.json"
    out.unlink(missing_ok=True)
    cmd = [c.python, "-m", "benchmarks.gpu_bench", "--device", c.args.provider,
           "--artifacts", str(c.args.work), "--budget-s", f"{budget:.0f}", "--json", str(out)]
    if c.args.dry_run:
        cmd += ["--quick", "--engines", "eager-fp32,ort-fp32-sdpa,ort-fp16-sdpa"]
    proc = c.run(cmd, budget + 60)
    c.bench = json.loads(out.read_text()) if out.is_file() else None
    if c.bench is None:
        raise StepFailed(f"no results (rc={proc.rc}): " + _clean(proc.tail(500)))
    note = c.bench.get("target", "")
    if proc.rc != 0:
        raise StepFailed(f"rc={proc.rc}; {note}; errors: {_clean(json.dumps(c.bench.get('errors')), 300)}")
    return note


# -- outputs ------------------------------------------------------------------------------------
def _case_text(case: dict[str, Any]) -> str:
    return (f"{case['height']}x{case['width']} b{case['batch']} {case.get('input_kind', '')} "
            f"max|d| {case.get('max_abs', float('nan')):.2e}" + (f" ({case['error']})" if case.get("error") else ""))


def artifact_row(c: Check, art: Artifact) -> tuple[str, list[str]]:
    """One line of the verify table and the findings it brings."""
    report = art.result.get("report") or {}
    cases = report.get("cases") or []
    bad = [x for x in cases if not x.get("passed")]
    worst = max((x.get("max_abs") or 0.0 for x in cases), default=float("nan"))
    session = (report.get("sessions") or [{}])[0]
    place = c.placement.get(art.name, {})
    findings = []
    if bad:
        findings.append(f"{art.name}: {len(bad)}/{len(cases)} cases over tolerance (atol {report.get('atol')}, "
                        f"rtol {report.get('rtol')}): " + "; ".join(_case_text(x) for x in bad[:8]))
    if report.get("static_problems"):
        findings.append(f"{art.name}: static problems: {'; '.join(report['static_problems'])}")
    if art.export.get("rc") not in (0, None) or (art.result.get("rc") not in (0, None) and not bad):
        findings.append(f"{art.name}: export rc={art.export.get('rc')}, verify rc={art.result.get('rc')}: "
                        + _clean(art.result.get("output") or art.export.get("output") or "", 300))
    if place.get("cpu_nodes"):
        findings.append(f"{art.name}: {place['cpu_nodes']} nodes on the CPU ({place.get('cpu_shape_only', 0)} of them "
                        f"integer shape arithmetic): {place.get('cpu_ops')}")
    if place.get("memcpy_inside"):
        findings.append(f"{art.name}: {len(place['memcpy_inside'])} Memcpy nodes inside the graph: "
                        + "; ".join(f"{m['op']} {m['from']} -> {','.join(m['to'])}"
                                    for m in place["memcpy_inside"][:6]))
    if place.get("error"):
        findings.append(f"{art.name}: placement analysis failed: {place['error']}")
    verdict = "PASS" if art.result.get("rc") == 0 else ("-" if art.result.get("rc") is None else "FAIL")
    memcpy = "-"
    if place and "error" not in place:
        memcpy = f"{place.get('memcpy_at_io', '?')} / {len(place.get('memcpy_inside', []))}"
    row = (f"| {art.name} | {art.export.get('rc', '-')} ({art.export.get('seconds', '-')} s) | {verdict} | "
           f"{len(cases) - len(bad)}/{len(cases)} | {worst:.1e} | {session.get('providers', '-')} | "
           f"{place.get('cpu_nodes', session.get('cpu_nodes', '-'))} | {memcpy} |")
    return row, findings


def summary_text(c: Check) -> str:
    lines = [f"# gpu_check: {c.facts.get('mode')}", "",
             f"- GPU: {c.facts.get('gpu', '?')}", f"- onnxruntime: {c.facts.get('ort_version')} from "
             f"{c.facts.get('ort_file')}", f"- CUDA usable: {c.facts.get('cuda_usable')}; LD_LIBRARY_PATH that "
             f"works: {c.facts.get('ld_library_path')}; CUDA provider options: {c.facts.get('cuda_options')}",
             f"- torch: {c.facts.get('torch')}", f"- `--resample` in this tree: {c.facts.get('resample_flag')}",
             f"- wall time: {time.monotonic() - c.start:.0f} s of a {c.args.limit_s:.0f} s limit", "",
             "| step | status | seconds | note |", "| --- | --- | ---: | --- |"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.1f} | {_clean(s.note, 600)} |" for s in c.steps]
    findings: list[str] = []
    if c.artifacts:
        lines += ["", "| artifact | export rc (time) | verify | cases ok | worst max abs | providers | CPU nodes | "
                  "Memcpy at I/O / inside |", "| --- | --- | --- | ---: | ---: | --- | ---: | --- |"]
        for art in [a for a in c.artifacts if a.verify]:
            row, found = artifact_row(c, art)
            lines.append(row)
            findings += found
    if c.facts.get("missing_optional"):
        findings.append("missing on this machine (optional): " + ", ".join(c.facts["missing_optional"]))
    if c.pytest_summary:
        lines += ["", f"pytest -m cuda: {c.pytest_summary}"]
    lines += ["", "## Findings", ""] + ([f"- {f}" for f in findings] or ["- none"])
    if c.bench:
        lines += ["", "## Benchmark", "", c.bench.get("target", ""), "", bench_table(c.bench)]
        if c.bench.get("skipped"):
            lines += ["", "skipped cases: " + json.dumps(c.bench["skipped"])]
    lines += ["", "files: " + ", ".join(f for f in OUT_FILES if (c.out / f).exists())]
    return "\n".join(lines) + "\n"


def bench_table(bench: dict[str, Any]) -> str:
    lines = ["| model | size | batch | engine | median ms | images/s | vs eager fp16 | max abs vs fp32 |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in bench.get("results", []):
        ratio = f"{r['ratio_to_eager_fp16']:.2f}x" if r.get("ratio_to_eager_fp16") else "-"
        diff = f"{r['max_abs_vs_eager_fp32']:.1e}" if r.get("max_abs_vs_eager_fp32") is not None else "-"
        lines.append(f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r['engine']} | "
                     f"{r['median_ms']:.2f} | {r['images_per_s']:.1f} | {ratio} | {diff} |")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(c: Check) -> None:
    """Rewrite every output file from the state so far (at most 8 files, all small)."""
    _write(c.out / "env.txt", "\n".join(c.env_text) + "\n\nfacts: " + json.dumps(c.facts, indent=1, default=str) + "\n")
    if c.artifacts:
        _write(c.out / "verify-reports.json", json.dumps({"provider": c.args.provider, "artifacts": [
            {"name": a.name, "model": a.model, "variant": a.variant, "file": a.path.name, "export": a.export,
             "verify": a.result} for a in c.artifacts if a.verify or a.export.get("rc") not in (0, None)]}, indent=1))
    if c.placement:
        reports = {a.name: (a.result.get("report") or {}).get("sessions") for a in c.artifacts}
        _write(c.out / "placement.json", json.dumps({n: {"analysis": p, "verify_sessions": reports.get(n)}
                                                      for n, p in c.placement.items()}, indent=1))
    if c.bench:
        _write(c.out / "bench.json", json.dumps(c.bench, indent=1))
    _write(c.out / "summary.md", summary_text(c))


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    c = Check(args)

    def on_signal(signum: int, frame: Any) -> None:
        if c.signalled:  # `timeout` signals the process and then its group: act once, let the cleanup finish
            return
        c.signalled = True
        c.kill_children()  # first, so that waiting threads return at once
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    c.say(f"gpu_check: {c.facts['mode']}; limit {args.limit_s:.0f} s; out {args.out}; work {args.work}")
    try:
        for name, fn, min_s in (("env", step_env, 10), ("wheel", step_wheel, 30), ("libs", step_libs, 10),
                                ("ort", step_ort, 20), ("imports", step_imports, 15), ("prepare", step_prepare, 20)):
            c.step(name, lambda fn=fn: fn(c), min_s)
        if c.wanted("bench"):  # the benchmark keeps its share while exports and verify run
            c.reserve = min(60.0, args.bench_budget_s)
        phase_exports_and_pytest(c)
        phase_verify_and_placement(c)
        c.reserve = 0.0
        c.step("bench", lambda: step_bench(c), min_s=30)
    finally:
        c.kill_children()
        if c.signalled:
            c.steps.append(Step("stopped", "FAILED", 0.0, "stopped by a signal (the hard limit of gpu_check.sh?): "
                                "the steps after the last one listed did not finish"))
        write_outputs(c)
        c.say(f"done in {time.monotonic() - c.start:.0f} s; results in {args.out}")
    return 1 if any(s.status == "FAILED" for s in c.steps) else 0


if __name__ == "__main__":
    sys.exit(main())
