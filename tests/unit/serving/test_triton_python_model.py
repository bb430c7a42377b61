"""The Python-backend model (`vitexport.serving.triton.python_model`) in-process, with a stand-in for Triton's
``triton_python_backend_utils``: one execute call with requests of both input kinds, mixed sizes and bad ones.

The stand-in behaves as the real backend does where it matters: tensors cross by DLPack, and a consumed output
capsule is renamed ``used_dlpack`` (python_backend's name). The real server runs the same model in
tests/e2e/test_triton.py.
"""

from __future__ import annotations

import ctypes
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.serving import png_bytes
from vitexport.serving.predictor import Predictor
from vitexport.serving.triton.repository import write_repository

json_format = pytest.importorskip("google.protobuf.json_format")
text_format = pytest.importorskip("google.protobuf.text_format")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] is not installed (pip install 'vitexport[serve]')")
_SET_NAME = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_SetName", ctypes.pythonapi))
_USED_DLPACK = b"used_dlpack"


class _Capsule:
    def __init__(self, capsule) -> None:
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # CPU


class FakeTensor:
    def __init__(self, name: str, data) -> None:
        self._name, self.data = name, data

    def name(self) -> str:
        return self._name

    def as_numpy(self):
        return self.data

    def __dlpack__(self, **kwargs):
        return self.data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    @staticmethod
    def from_dlpack(name: str, capsule) -> FakeTensor:
        tensor = FakeTensor(name, np.from_dlpack(_Capsule(capsule)).copy())
        _SET_NAME(capsule, _USED_DLPACK)  # what python_backend does after consuming a capsule
        return tensor


class FakeError:
    INVALID_ARG, INTERNAL, NOT_FOUND, UNAVAILABLE = "INVALID_ARG", "INTERNAL", "NOT_FOUND", "UNAVAILABLE"

    def __init__(self, message: str, code: str | None = None) -> None:
        self.message, self.code = message, code


class FakeResponse:
    def __init__(self, output_tensors=None, error=None) -> None:
        self.outputs, self.error = output_tensors or [], error


def fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.TritonError, module.InferenceResponse = FakeTensor, FakeError, FakeResponse
    module.get_input_tensor_by_name = lambda request, name: request.get(name)
    return module


@pytest.fixture
def model(sample_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The model as Triton initializes it from the repository `vitexport triton --backend python` wrote."""
    from vitexport.serving.triton.python_model import TritonPythonModel

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    written = write_repository(sample_onnx, tmp_path / "repo", name="digits", backend="python", max_batch_size=8,
                               max_tokens=64)
    config = text_format.Parse((written.model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    instance = TritonPythonModel()
    as_json = json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))
    instance.initialize({"model_config": as_json,
                         "model_repository": str(written.model_dir), "model_version": "1", "model_name": "digits",
                         "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    return instance


def test_one_execute_runs_each_size_once_and_errors_stay_per_request(model, sample_onnx: Path) -> None:
    rng = np.random.default_rng(5)
    pixels_a = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    pixels_b = rng.standard_normal((1, 1, 20, 33)).astype(np.float32)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(28, 28), (20, 33), (12, 40)]]
    blobs = np.array([[png_bytes(a)] for a in images], dtype=object)  # [B, 1], as Triton hands BYTES over
    requests = [
        {"pixel_values": FakeTensor("pixel_values", pixels_a)},
        {"image": FakeTensor("image", blobs)},
        {"pixel_values": FakeTensor("pixel_values", rng.standard_normal((1, 3, 8, 8)).astype(np.float32))},
        {"pixel_values": FakeTensor("pixel_values", pixels_b)},
        {"pixel_values": FakeTensor("pixel_values", pixels_b), "image": FakeTensor("image", blobs[:1])},
        {"image": FakeTensor("image", np.array([[png_bytes(np.zeros((90, 90), np.uint8))]], dtype=object))},
        {"image": FakeTensor("image", np.array([[b"not an image"]], dtype=object))},
    ]
    runs: list[tuple[int, ...]] = []
    engine = model.service.predictor.engine
    real_run = engine.run
    engine.run = lambda x: (runs.append(x.shape), real_run(x))[1]
    responses = model.execute(requests)

    predictor = Predictor(str(sample_onnx), provider="cpu")
    want = {0: [p.logits for p in predictor.predict(list(pixels_a))],
            1: [p.logits for p in predictor.predict([Image.fromarray(a) for a in images])],
            3: [p.logits for p in predictor.predict(list(pixels_b))]}
    assert len(responses) == len(requests)
    for i, expected in want.items():
        assert responses[i].error is None, (i, responses[i].error and responses[i].error.message)
        (tensor,) = responses[i].outputs
        assert tensor.name() == "logits"
        np.testing.assert_allclose(tensor.as_numpy(), np.stack(expected), rtol=1e-5, atol=1e-5, err_msg=str(i))
    errors = {i: responses[i].error for i in (2, 4, 5, 6)}
    assert all(e is not None and e.code == "INVALID_ARG" for e in errors.values()), errors
    assert "[B, 1, H, W]" in errors[2].message and "exactly one input" in errors[4].message
    assert "over this server's limit" in errors[5].message and "not a PNG" in errors[6].message
    # 28x28: two pixel images and one encoded image in one run; 20x33: one pixel and one encoded image
    assert sorted(runs) == sorted([(3, 1, 28, 28), (2, 1, 20, 33), (1, 1, 12, 40)]), runs


def test_output_capsules_are_left_to_the_backend(model) -> None:
    """python_backend renames a consumed capsule 'used_dlpack'; without the standard name set back, numpy's
    capsule destructor reports an error for every response (seen in Triton's log)."""
    from vitexport.serving.triton.python_model import output_tensor

    reported = []
    hook, sys.unraisablehook = sys.unraisablehook, reported.append
    try:
        for _ in range(3):
            tensor = output_tensor(sys.modules["triton_python_backend_utils"], "logits", np.ones((2, 10), np.float32))
            assert tensor.as_numpy().shape == (2, 10)
        import gc

        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert not reported, [r.exc_value for r in reported]
