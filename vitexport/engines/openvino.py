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
- **Chunked attention runs as OpenVINO's own attention op.** The default export computes attention
  one block of queries at a time in an ONNX ``Loop`` (`vitexport.export.attention`); OpenVINO runs
  such a loop without its fused attention kernel and keeps per-iteration buffers (ViT-S/16 at 16k
  tokens: +1.9 GB against +0.74 GB for the plain form, docs/numerics.md). So `load` puts one
  ``ScaledDotProductAttention`` (OpenVINO's opset 13; linear memory on the CPU) in place of each
  such loop before compiling (``fuse_attention=False`` runs the file as written). Same semantics,
  checked by verify like any engine.
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
    cold_start = ("OpenVINO 2026.4.1 keeps what it prepares for a compiled model's first inference: a first request of "
                  "one token made every later size wrong (the engine runs a two-patch input right after compiling)")

    def __init__(self, *, device: str = "CPU", threads: int | None = None, spin: bool = True,
                 debug: bool = False, performance_hint: str | None = None, num_streams: int | None = None,
                 fuse_attention: bool = True) -> None:
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
        self.fuse_attention, self.fused = fuse_attention, 0
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
            metadata = _metadata(model)
            self.fused = fuse_chunked_attention(model) if self.fuse_attention and _chunked(metadata) else 0
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
        self._metadata = metadata
        self._requests = queue.SimpleQueue()
        self._prime()
        return self

    def _prime(self) -> None:
        """Run once at two patches when height and width are dynamic: OpenVINO 2026.4 computes attention wrongly
        at later, longer sequences when a compiled model's first run had a one-token sequence (a model without
        prefix tokens given an image of at most one patch; docs/numerics.md); a first run at two tokens or more
        avoids it."""
        import numpy as np

        shape = self.compiled.inputs[0].get_partial_shape()
        patch = self._metadata.get("patch_size")
        if shape.rank.is_dynamic or shape.rank.get_length() != 4 or not patch or shape[1].is_dynamic or not (
                shape[2].is_dynamic and shape[3].is_dynamic):
            return
        batch = 1 if shape[0].is_dynamic else shape[0].get_length()
        self.run(np.zeros((batch, shape[1].get_length(), patch[0], 2 * patch[1]), np.float32))

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
        notes = [PRECISION_NOTE.format(default=self._default_precision or "unknown", why=why)]
        if self.fused:
            notes.append(f"chunked attention: {self.fused} query-block loop(s) run as OpenVINO's "
                         "ScaledDotProductAttention")
        return {"name": self.name, "providers": self.devices, "version": self.version,
                "precision": PRECISION, "notes": notes, "warnings": []}


def _chunked(metadata: dict[str, Any]) -> bool:
    return metadata.get("attention") == "chunked"


def _source(node: Any, index: int) -> Any:
    return node.input(index).get_source_output()


def _only_consumer(node: Any, op_type: str) -> Any:
    targets = list(node.output(0).get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != op_type:
        return None
    return targets[0].get_node()


def _outer_sources(loop: Any) -> tuple[Any, Any, Any] | None:
    """The outer values a chunked-attention Loop body reads as (query blocks, keys^T, values): the data of its
    Gather, the right operands of its first and second MatMul; None when the body is not Gather, MatMul,
    Softmax, MatMul. (OpenVINO orders a Loop's inputs by the body's parameters, not as the file lists them.)"""
    body = loop.get_function()
    ops = [op for op in body.get_ordered_ops() if op.get_type_name() in ("Gather", "MatMul", "Softmax")]
    if [op.get_type_name() for op in ops] != ["Gather", "MatMul", "Softmax", "MatMul"]:
        return None
    params = {p.get_friendly_name(): i for i, p in enumerate(body.get_parameters())}
    to_input = {d.body_parameter_index: d.input_index for d in loop.get_input_descriptions()}

    def outer(node: Any, index: int) -> Any:
        param = params.get(_source(node, index).get_node().get_friendly_name())
        return _source(loop, to_input[param]) if param in to_input else None

    found = (outer(ops[0], 0), outer(ops[1], 1), outer(ops[3], 1))
    return None if any(v is None for v in found) else found


def _chunked_attention_parts(loop: Any) -> tuple[Any, Any, Any, Any] | None:
    """(scaled queries, keys, values, the node whose output is the attention) of a chunked-attention Loop, or None.

    The structure `vitexport.export.attention` writes: Loop(trip count, condition; outer values: the query
    blocks = Reshape(Concat(queries, zero rows)), Transpose(keys), values) whose body is Gather, MatMul,
    Softmax, MatMul, Reshape; its output goes Reshape -> Transpose -> Reshape -> Slice, (B, h, N, dv).
    """
    try:
        sources = _outer_sources(loop)
        if sources is None:
            return None
        blocks, keys_t, values = sources
        concat = _source(blocks.get_node(), 0).get_node()
        if (blocks.get_node().get_type_name(), concat.get_type_name(), keys_t.get_node().get_type_name()) != (
                "Reshape", "Concat", "Transpose"):
            return None
        end = loop
        for op_type in ("Reshape", "Transpose", "Reshape", "Slice"):
            end = _only_consumer(end, op_type)
            if end is None:
                return None
        return _source(concat, 0), _source(keys_t.get_node(), 0), values, end
    except (IndexError, KeyError, RuntimeError) as exc:  # another structure: run the loop as written
        logger.debug("OpenVINO: a Loop that is not chunked attention (%s)", one_line(exc))
        return None


def fuse_chunked_attention(model: Any) -> int:
    """Replace each chunked-attention Loop of ``model`` (an OpenVINO model read from a vitexport export) by
    one ScaledDotProductAttention on the same queries (already scaled), keys and values; how many were replaced."""
    import numpy as np
    from openvino import opset13

    count = 0
    for loop in [op for op in model.get_ordered_ops() if op.get_type_name() == "Loop"]:
        parts = _chunked_attention_parts(loop)
        if parts is None:
            continue
        queries, keys, values, end = parts
        one = opset13.constant(np.array(1.0, dtype=np.float32))
        if queries.get_element_type() != one.output(0).get_element_type():
            one = opset13.convert(one, queries.get_element_type())
        attention = opset13.scaled_dot_product_attention(queries, keys, values, scale=one)
        end.output(0).replace(attention.output(0))
        count += 1
    if count:
        model.validate_nodes_and_infer_types()
    logger.debug("OpenVINO: %d chunked-attention loop(s) replaced by ScaledDotProductAttention", count)
    return count


__all__ = ["INSTALL", "PERFORMANCE_HINTS", "OpenVinoEngine", "fuse_chunked_attention"]
