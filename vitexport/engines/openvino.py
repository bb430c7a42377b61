"""OpenVINO on the CPU device. Imports numpy and (lazily) openvino, never torch.

- **Precision forced to f32.** OpenVINO's CPU plugin infers in bf16 by default on CPUs with
  AVX512-BF16 or AMX; that alone puts ~8e-3 of error into the patch convolution of an fp32 model.
  The engine compiles with ``INFERENCE_PRECISION_HINT: f32``, checks that the compiled model
  really runs in f32, and its report entry says so (with the device's own default).
- **Dynamic shapes: compiled once.** The model is compiled with its dynamic batch, height and
  width; OpenVINO does not recompile for a new input shape, but the first run at each new shape
  costs extra (shape inference and kernel preparation, cached afterwards):
  `benchmarks/engine_shapes.py` measures it.
- **A first run at the native size.** OpenVINO 2026.4.1 (CPU, f32) keeps what it prepares for a dynamic
  model's first inference: when that inference has sequence length 1 (no class token and an image of at
  most one patch: avg-pool and MAP-head models, a 1x1 health check), every later size is wrong, by up to
  4 on the logits; after a first inference at the native size every size is right, that case included.
  So `load` runs one inference at the native size (zeros) right after compiling.
- **Thread-safe.** An OpenVINO infer request serves one call at a time: `run` takes an idle request
  from a pool (creating one when all are busy) and gives it back afterwards, so concurrent callers
  never share one. Outputs are copied out of the request before it is reused.
- **Performance hints.** ``performance_hint`` (OpenVINO's ``PERFORMANCE_HINT``: ``LATENCY``, one
  request at a time using every core, or ``THROUGHPUT``, several streams for concurrent requests)
  and ``num_streams`` are passed through when given; None keeps the device's own default. They
  change speed, not results (tested at several sizes).
- The vitexport metadata comes from the model OpenVINO read (ONNX ``metadata_props`` land in its
  ``rt_info["framework"]``), so the ONNX file is parsed once.
"""

from __future__ import annotations

import logging
import queue
from typing import Any

from vitexport._util.errors import EngineError, EngineUnavailable, EnvironmentProblem, one_line
from vitexport._util.extras import install_command
from vitexport.engines.base import Engine

logger = logging.getLogger(__name__)

INSTALL = install_command("openvino")
PRECISION = "f32"
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# bf16 in OpenVINO's CPU plugin: measured max |d| ~8e-3 in the patch convolution alone (docs/numerics.md)
PRECISION_NOTE = ("inference precision forced to f32 (INFERENCE_PRECISION_HINT); this device's default is {default}"
                  "{why}")


def _openvino():
    try:
        import openvino
    except ImportError as exc:
        raise EngineUnavailable(f"OpenVINO is not installed ({one_line(exc, 120)})", INSTALL) from exc
    return openvino


def _type_name(element_type: Any) -> str:
    """OpenVINO element type -> 'f32', 'bf16', 'f16', ... (to_string of Type, or str of a Type-like value)."""
    name = getattr(element_type, "get_type_name", None)
    return str(name() if name is not None else element_type)


def _metadata(model: Any) -> dict[str, Any]:
    """vitexport.* metadata of a model OpenVINO read from ONNX (its metadata_props are rt_info["framework"])."""
    from vitexport.onnx.spec import decode_metadata

    if not model.has_rt_info(["framework"]):
        return {}
    keys = list(model.get_rt_info()["framework"])
    return decode_metadata({k: model.get_rt_info(["framework", k]).astype(str) for k in keys})


class OpenVinoEngine(Engine):
    """OpenVINO on ``device`` (default the CPU), fp32; thread-safe `run` (a pool of infer requests)."""

    name = "openvino"

    def __init__(self, *, device: str = "CPU", threads: int | None = None, spin: bool = True,
                 debug: bool = False, performance_hint: str | None = None, num_streams: int | None = None) -> None:
        # spin: OpenVINO's worker threads do not busy-wait between runs (measured: ~1 ms of CPU in 0.5 s idle
        # after a ViT-S/16 run, against ONNX Runtime's ~36 ms), so there is nothing to turn off; debug: nothing
        # more to log. Both are taken because every engine takes them.
        if threads is not None and threads < 1:
            raise EnvironmentProblem(f"threads must be positive, got {threads}")
        if performance_hint is not None and performance_hint not in PERFORMANCE_HINTS:
            raise EnvironmentProblem(f"unknown OpenVINO performance hint {performance_hint!r}; "
                                     f"use one of {', '.join(PERFORMANCE_HINTS)}")
        if num_streams is not None and num_streams < 1:
            raise EnvironmentProblem(f"num_streams must be positive, got {num_streams}")
        self.performance_hint, self.num_streams = performance_hint, num_streams
        self.device, self.threads = device, threads
        self.path = ""
        self.compiled: Any = None
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._default_precision = ""

    def available(self) -> tuple[bool, str]:
        try:
            ov = _openvino()
        except EngineUnavailable as exc:
            return False, str(exc)
        return self._device_here(ov.Core())

    def _device_here(self, core: Any) -> tuple[bool, str]:
        devices = core.available_devices
        if self.device not in devices:
            return False, f"OpenVINO has no {self.device} device here (devices: {', '.join(devices) or 'none'})"
        return True, ""

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISION}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.performance_hint:
            config["PERFORMANCE_HINT"] = self.performance_hint
        if self.num_streams:
            config["NUM_STREAMS"] = int(self.num_streams)
        return config

    def load(self, path: str) -> OpenVinoEngine:
        core = _openvino().Core()
        usable, reason = self._device_here(core)
        if not usable:
            raise EngineUnavailable(reason, "use --provider cpu")
        self.path = str(path)
        try:
            model = core.read_model(self.path)
            self.compiled = core.compile_model(model, self.device, self._config())
        except Exception as exc:
            raise EngineError(f"OpenVINO could not load {self.path!r} on {self.device}: {one_line(exc)}") from exc
        used = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if used != PRECISION:
            raise EngineError(f"OpenVINO compiled {self.path!r} for {used} inference although f32 was asked for; "
                              "its results cannot be compared with fp32 PyTorch")
        self._default_precision = _type_name(core.get_property(self.device, "INFERENCE_PRECISION_HINT"))
        fp16 = _type_name(self.compiled.inputs[0].get_element_type()) == "f16"
        self._input_dtype = "float16" if fp16 else "float32"
        self._metadata = _metadata(model)
        self._requests = queue.SimpleQueue()
        self._first_run()
        return self

    def _first_run(self) -> None:
        """One inference at the native size before any caller's (the module's note: a first inference with one
        token would make every later one wrong)."""
        import numpy as np

        from vitexport._util.errors import VitexportError
        from vitexport.onnx.budget import native_shape
        from vitexport.onnx.metadata import check_metadata

        try:
            metadata = check_metadata(self._metadata, repr(self.path))
        except VitexportError:  # refused by its readers (Predictor, verify) with the reason: sized by the graph here
            metadata = {}
        dims = [d.get_length() if d.is_static else None for d in self.compiled.inputs[0].get_partial_shape()]
        shape = native_shape(dims, metadata)
        if shape is None:
            logger.warning("%s: no native input size in its graph or metadata; OpenVINO's first inference is the "
                           "first caller's (a first one with one token makes later ones wrong)", self.path)
            return
        try:
            self.run(np.zeros(shape, np.float32))
        except VitexportError:
            raise
        except Exception as exc:
            raise EngineError(f"OpenVINO could not run {self.path!r} at its native size "
                              f"{'x'.join(map(str, shape))}: {one_line(exc)}") from exc

    @property
    def devices(self) -> list[str]:
        devices = list(self.compiled.get_property("EXECUTION_DEVICES")) if self.compiled is not None else []
        return [f"OpenVINO {d}" for d in devices or [self.device]]

    @property
    def version(self) -> str:
        return f"openvino {_openvino().get_version().split('-')[0]}"

    def run(self, x: Any) -> Any:
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float16 if self.input_dtype == "float16" else np.float32)
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            out = request.infer({0: x})[0]  # share_outputs=False (the default): a copy of the output
        finally:
            self._requests.put(request)
        return np.asarray(out).astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        why = (": bf16 alone puts ~8e-3 of error into the patch convolution"
               if self._default_precision != PRECISION else "")
        note = PRECISION_NOTE.format(default=self._default_precision or "unknown", why=why)
        return {"name": self.name, "providers": self.devices, "version": self.version,
                "precision": PRECISION, "notes": [note], "warnings": []}


__all__ = ["INSTALL", "PERFORMANCE_HINTS", "OpenVinoEngine"]
