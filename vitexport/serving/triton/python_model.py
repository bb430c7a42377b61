"""``TritonPythonModel`` for Triton's Python backend: vitexport's `Predictor` behind Triton, as `vitexport serve` runs.

The model folder that `vitexport triton --backend python` writes holds ``1/model.py``, which imports this class,
and ``1/model.onnx``. Each model instance is one Python process (Triton's stub) with one `ModelService`, the
object behind `vitexport serve`'s HTTP and gRPC endpoints, so inputs, limits and results are the same:

- ``pixel_values`` FP32 ``[B, C, H, W]`` (preprocessed, any H and W) or ``image`` BYTES ``[B, 1]`` (encoded images,
  pixels counted before decoding against ``max_tokens``, preprocessed from the model's metadata); one per request.
- Triton's dynamic batcher hands several requests to one `execute` call (the inputs are ragged: any sizes);
  they are cut into chunks of one image size and equal sizes run together (`ModelService.run_chunks`). A request
  the model refuses gets its own error; the others their outputs.
- Numeric tensors cross the backend by DLPack (``np.from_dlpack``, ``Tensor.from_dlpack``), which works with
  numpy 1 and 2 on every Python backend since Triton 21.x; ``image`` needs ``as_numpy()``, which Python backends
  older than Triton 24.11 (pybind11 2.10) break under numpy >= 2 (triton-inference-server/python_backend#384).
- On a ``KIND_GPU`` instance, the process sees only its own GPU (``CUDA_VISIBLE_DEVICES``) and runs ONNX
  Runtime's CUDA provider; on ``KIND_CPU``, ONNX Runtime's CPU provider.

Triton's classification extension (``class_count``) is Triton's own, from the labels file in the config.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from vitexport.security.limits import DEFAULT_MAX_TOKENS
from vitexport.serving.batching import size_chunks
from vitexport.serving.http.config import AppArgs
from vitexport.serving.http.protocol import InferRequest, RequestError, Tensor
from vitexport.serving.http.service import IMAGE_INPUT, ModelService, error_status

logger = logging.getLogger(__name__)

_CONSUMED = b"used_dltensor"  # a capsule keeps the pointer to its name: this constant lives as long as the module
_SET_NAME = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_SetName", ctypes.pythonapi))
_IS_VALID = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_IsValid", ctypes.pythonapi))
# HTTP status -> TritonError code name (Triton maps them back to HTTP statuses and gRPC codes)
ERROR_CODES = {400: "INVALID_ARG", 404: "NOT_FOUND", 413: "INVALID_ARG", 503: "UNAVAILABLE"}


def app_args(args: dict[str, str]) -> AppArgs:
    """The service's arguments from Triton's ``initialize`` arguments (the model config and the instance)."""
    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    folder = Path(args["model_repository"]) / args["model_version"]
    gpu = args.get("model_instance_kind") == "GPU"
    return AppArgs(model=str(folder / "model.onnx"), name=args["model_name"], provider="cuda" if gpu else "cpu",
                   max_batch=max(1, int(config.get("max_batch_size") or AppArgs.max_batch)),
                   max_tokens=int(params.get("max_tokens") or DEFAULT_MAX_TOKENS))


def output_tensor(pb_utils: Any, name: str, value: np.ndarray) -> Any:
    """A Python-backend output tensor of a numpy array, by DLPack.

    The backend marks the capsule it consumed ``used_dlpack``, not DLPack's ``used_dltensor``; numpy's capsule
    destructor then takes it for unconsumed and prints an error for every response. The standard name is set
    back, so the destructor leaves the tensor to the backend that owns it."""
    capsule = value.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    if _IS_VALID(capsule, b"used_dlpack"):
        _SET_NAME(capsule, _CONSUMED)
    return tensor


class TritonPythonModel:
    """One model instance in Triton's Python backend."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        self.pb = pb_utils
        if args.get("model_instance_kind") == "GPU":  # before ONNX Runtime touches CUDA in this process
            os.environ["CUDA_VISIBLE_DEVICES"] = str(args.get("model_instance_device_id", "0"))
        self.service = ModelService(app_args(args))
        logger.info("%s: %s on %s", self.service.name, self.service.args.model, self.service.predictor.provider)

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order; each image size runs once across the requests."""
        prepared: list[Any] = []
        for request in requests:
            try:
                prepared.append(self.service.prepare_request(self._parse(request)))
            except Exception as exc:  # this request's own error
                prepared.append(exc)
        chunks = [(r, idx, stack) for r, inputs in enumerate(prepared) if not isinstance(inputs, Exception)
                  for idx, stack in size_chunks(inputs, self.service.args.max_batch)]
        results = self.service.run_chunks([stack for _, _, stack in chunks]) if chunks else []
        outputs: list[Any] = [exc if isinstance(exc, Exception) else [None] * len(exc) for exc in prepared]
        for (r, idx, _), result in zip(chunks, results, strict=True):
            if isinstance(outputs[r], Exception):
                continue
            if isinstance(result, BaseException):
                outputs[r] = result
                continue
            for j, i in enumerate(idx):
                outputs[r][i] = result[j]
        return [self._response(out) for out in outputs]

    def _parse(self, request: Any) -> InferRequest:
        """A Triton request -> the protocol's `InferRequest` (one input: pixel values or encoded images)."""
        name = self.service.input_name
        pixels = self.pb.get_input_tensor_by_name(request, name)
        image = self.pb.get_input_tensor_by_name(request, IMAGE_INPUT)
        if (pixels is None) == (image is None):
            raise RequestError(400, f"send exactly one input, {name!r} (FP32 [B, C, H, W]) or {IMAGE_INPUT!r} "
                                    "(BYTES [B, 1], encoded images)")
        if pixels is not None:
            data = np.array(np.from_dlpack(pixels), dtype=np.float32)  # a copy: Triton's buffer is freed after us
            return InferRequest([Tensor(name, "FP32", list(data.shape), data)], [])
        blobs = [bytes(b) for b in image.as_numpy().reshape(-1)]
        return InferRequest([Tensor(IMAGE_INPUT, "BYTES", [len(blobs)], blobs)], [])

    def _response(self, out: Any) -> Any:
        if isinstance(out, Exception):
            status, message, _ = error_status(out, f"{self.service.name} execute")
            error = self.pb.TritonError
            code = getattr(error, ERROR_CODES.get(status, "INTERNAL"), None)
            return self.pb.InferenceResponse(error=error(message) if code is None else error(message, code))
        value = np.ascontiguousarray(np.stack(out), dtype=np.float32)
        return self.pb.InferenceResponse([output_tensor(self.pb, self.service.spec.output_name, value)])

    def finalize(self) -> None:
        logger.info("%s: unloaded", self.service.name)


__all__ = ["TritonPythonModel", "app_args", "output_tensor"]
