"""The protocol over gRPC without Ray: the deployment's gRPC methods (`GrpcMethods`) registered by `add_servicer`
on an in-process ``grpc.aio`` server, called by tritonclient.grpc, against the same `ModelService`'s HTTP path.

What Ray adds (its proxy, routing by method name, pickling the messages to a replica, the bound address) is
tested against a real `vitexport serve --grpc-port` in tests/e2e/test_serve_grpc.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers.models import ROOT
from tests.helpers.serving import infer_inputs, png_bytes
from vitexport._util.procs import free_ports
from vitexport.serving.http.service import HttpRequest, ModelService
from vitexport.serving.predictor import Predictor

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'vitexport[serve]')")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed "
                                 "(pip install 'vitexport[serve]')")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.helpers.grpc_server import model_service  # noqa: E402
from vitexport.serving.grpc.service import GrpcError, GrpcService  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    """The address of a gRPC server in its own process, and an equal `ModelService` in this one whose coroutines run
    on one event loop of a thread (the service's batcher belongs to the loop that first used it, as in a replica)."""

    service: ModelService
    address: str
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)


@pytest.fixture(scope="module")
def served(sample_onnx: Path, tmp_path_factory: pytest.TempPathFactory):
    """The sample behind `tests.helpers.grpc_server` (a token, batches of 4, a 0.25 MB body limit, 64 tokens)."""
    token = tmp_path_factory.mktemp("grpc") / "token"
    token.write_text(TOKEN + "\n")
    port = free_ports()[0]
    server = subprocess.Popen([sys.executable, "-m", "tests.helpers.grpc_server", str(sample_onnx), str(port),
                               str(token)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        ready = server.stdout.readline()  # "serving" once the port is bound; nothing if it died
        assert ready.strip() == "serving", f"the gRPC test server did not start (exit {server.poll()})"
        yield Served(model_service(str(sample_onnx), str(token)), f"127.0.0.1:{port}", loop)
    finally:
        server.kill()
        server.wait(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def grpc_infer(address: str, inputs: dict[str, np.ndarray], class_count: int = 0, headers=AUTH) -> np.ndarray:
    client = grpcclient.InferenceServerClient(address)
    try:
        tensors = infer_inputs(grpcclient, inputs)
        return client.infer("digits", tensors, outputs=[grpcclient.InferRequestedOutput("logits", class_count)],
                            headers=headers).as_numpy("logits")
    finally:
        client.close()


def http_infer(served: Served, inputs: dict[str, np.ndarray], class_count: int = 0) -> np.ndarray:
    tensors = infer_inputs(httpclient, inputs)
    outputs = [httpclient.InferRequestedOutput("logits", class_count=class_count)]
    body, size = httpclient.InferenceServerClient.generate_request_body(tensors, outputs=outputs)
    response = served.run(served.service.handle(HttpRequest.of("POST", "/v2/models/digits/infer", {
        **AUTH, "Inference-Header-Content-Length": str(size)}, body)))
    assert response.status == 200, response.body
    return httpclient.InferenceServerClient.parse_response_body(
        response.body, header_length=int(response.headers["Inference-Header-Content-Length"])).as_numpy("logits")


def test_both_input_kinds_and_classification_equal_http_and_predictor(served, sample_onnx: Path) -> None:
    address = served.address
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 1, 23, 31)).astype(np.float32)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(28, 28), (20, 33), (9, 40)]]
    blobs = np.array([png_bytes(a) for a in images], dtype=object)
    predictor = Predictor(str(sample_onnx), provider="cpu")
    for inputs, want in (({"pixel_values": x}, predictor.predict(list(x))),
                         ({"image": blobs}, predictor.predict([Image.fromarray(a) for a in images]))):
        got = grpc_infer(address, inputs)
        np.testing.assert_allclose(got, np.stack([p.logits for p in want]), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got, http_infer(served, inputs))
        top = grpc_infer(address, inputs, class_count=3)
        assert top.shape == (3, 3) and (top == http_infer(served, inputs, class_count=3)).all()
        best = [int(row[0].decode().split(":")[1]) for row in top]
        assert best == [int(np.argmax(p.logits)) for p in want]
        assert top[0, 0].decode().split(":")[2] == predictor.labels[best[0]]


def test_health_metadata_and_auth(served) -> None:
    service, address = served.service, served.address
    client = grpcclient.InferenceServerClient(address)
    try:
        assert client.is_server_live() and client.is_server_ready()  # no token needed, as /v2/health
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("digits")
        assert info.value.status() == "StatusCode.UNAUTHENTICATED" and "bearer token" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.is_model_ready("digits", headers={"authorization": "Bearer wrong"})
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.is_model_ready("digits", headers=AUTH)
        assert client.get_server_metadata(headers=AUTH, as_json=True)["name"] == "vitexport"
        meta = client.get_model_metadata("digits", headers=AUTH, as_json=True)
        want = service.model_metadata()
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == \
            [(t["name"], t["datatype"], t["shape"]) for t in want["inputs"]]
        assert meta["platform"] == want["platform"] and meta["versions"] == ["1"]
        for call, args in ((client.get_model_metadata, ("other",)), (client.is_model_ready, ("digits", "2"))):
            with pytest.raises(InferenceServerException) as info:
                call(*args, headers=AUTH)
            assert info.value.status() == "StatusCode.NOT_FOUND", info.value
        with pytest.raises(InferenceServerException) as info:  # registered only what is implemented
            client.get_model_repository_index(headers=AUTH)
        assert info.value.status() == "StatusCode.UNIMPLEMENTED", info.value
    finally:
        client.close()


def test_bad_requests_get_the_http_message_and_status(served) -> None:
    address = served.address
    cases = [
        ({"pixel_values": np.zeros((1, 3, 8, 8), np.float32)}, "INVALID_ARGUMENT", "[B, 1, H, W]"),
        ({"pixels": np.zeros((1, 1, 8, 8), np.float32)}, "INVALID_ARGUMENT", "unknown input 'pixels'"),
        ({"pixel_values": np.zeros((1, 1, 100, 100), np.float32)}, "INVALID_ARGUMENT", "tokens"),
        ({"image": np.array([b"not an image"], dtype=object)}, "INVALID_ARGUMENT", "not a PNG"),
        ({"pixel_values": np.zeros((2, 1, 200, 200), np.float32)}, "RESOURCE_EXHAUSTED", "--max-body-mb"),
    ]
    for inputs, code, message in cases:
        with pytest.raises(InferenceServerException) as info:
            grpc_infer(address, inputs)
        assert info.value.status() == f"StatusCode.{code}" and message in info.value.message(), info.value
    with pytest.raises(InferenceServerException) as info:
        grpc_infer(address, {"pixel_values": np.zeros((1, 1, 8, 8), np.float32)}, headers={})
    assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    assert grpc_infer(address, {"pixel_values": np.zeros((1, 1, 28, 28), np.float32)}).shape == (1, 10)


def test_typed_contents_equal_raw_contents(served) -> None:
    """Clients other than tritonclient may send InferTensorContents instead of raw_input_contents."""
    from tritonclient.grpc import service_pb2 as pb

    x = np.random.default_rng(4).standard_normal((2, 1, 20, 24)).astype(np.float32)
    blob = png_bytes(np.random.default_rng(5).integers(0, 256, (28, 28), dtype=np.uint8))
    grpc_service = GrpcService(served.service)

    def run(request) -> np.ndarray:
        response = served.run(grpc_service.call("ModelInfer", request, AUTH))
        return grpcclient.InferResult(response).as_numpy("logits")

    typed = pb.ModelInferRequest(model_name="digits")
    typed.inputs.add(name="pixel_values", datatype="FP32", shape=list(x.shape)).contents.fp32_contents.extend(
        x.reshape(-1).tolist())
    raw = pb.ModelInferRequest(model_name="digits", raw_input_contents=[x.tobytes()])
    raw.inputs.add(name="pixel_values", datatype="FP32", shape=list(x.shape))
    np.testing.assert_array_equal(run(typed), run(raw))
    images = pb.ModelInferRequest(model_name="digits")
    images.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(blob)
    np.testing.assert_array_equal(run(images), http_infer(served, {"image": np.array([blob], dtype=object)}))
    short = pb.ModelInferRequest(model_name="digits", raw_input_contents=[x.tobytes()[:-4]])
    short.inputs.add(name="pixel_values", datatype="FP32", shape=list(x.shape))
    with pytest.raises(GrpcError) as info:
        run(short)
    assert info.value.code == "INVALID_ARGUMENT" and "binary data" in info.value.message
