"""Every server input path has a budget (issue 22, row 4): one account per request for FP32 pixels and BYTES images,
over HTTP and gRPC alike, charged from the shape before any work; every malformed body a 400 whose message never
repeats unbounded input; numeric options finite; Ray's own routes hidden.

The stalling request (FP32 ``[1000000, 1, 1, 1]``, a 4 MB body under the body limit) is sent to a server in its own
process (`tests.helpers.grpc_server`: one `ModelService` behind HTTP and gRPC with a `SizeBatcher`, as a replica),
and a concurrent small request must still answer within 2 s: before the budget it waited for a million
preparations and 250,000 engine runs.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.helpers.models import ROOT
from tests.helpers.serving import infer_inputs, png_bytes, wait_ready
from vitexport._util.procs import free_ports
from vitexport.serving.http.config import AppArgs
from vitexport.serving.http.protocol import InferRequest, RequestError, Tensor, parse_infer_request
from vitexport.serving.http.service import MAX_ERROR_CHARS, HttpRequest, ModelService

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'vitexport[serve]')")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install 'vitexport[serve]')")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from vitexport.serving.grpc.service import GrpcError, GrpcService  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
INFER = "/v2/models/digits/infer"
OPTIONS = dict(max_batch=4, max_tokens=64, max_body_mb=8)  # a 4 MB body fits; the default 256 images per request
HUGE = "9" * 5000  # int() of it is a ValueError (Python's 4,300-digit limit); repeating it is an unbounded echo
STALL_WINDOW_S = 60.0  # how long small requests are sent while the big one is not answered


def stalling_inputs(kind: str) -> dict[str, np.ndarray]:
    """What stalled a server: a million 1x1 FP32 images (4 MB), or 50,000 encoded 1x1 images (3.4 MB)."""
    if kind == "FP32":
        return {"pixel_values": np.zeros((1_000_000, 1, 1, 1), np.float32)}
    return {"image": np.array([png_bytes(np.zeros((1, 1), np.uint8))] * 50_000, dtype=object)}


SMALL = {"pixel_values": np.zeros((1, 1, 28, 28), np.float32)}


# ---------------------------------------------------------------------------
# the stalling request against a server in its own process
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(sample_onnx: Path, tmp_path_factory: pytest.TempPathFactory):
    """(gRPC address, HTTP host:port) of the sample behind one service, batched as in a replica."""
    token = tmp_path_factory.mktemp("budget") / "token"
    token.write_text(TOKEN + "\n")
    grpc_port, http_port = free_ports(2)
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.grpc_server", str(sample_onnx), str(grpc_port),
                             str(token), str(http_port), json.dumps(OPTIONS)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        ready = proc.stdout.readline()
        assert ready.strip() == "serving", f"the test server did not start (exit {proc.poll()})"
        wait_ready(f"http://127.0.0.1:{http_port}", proc, timeout=60)
        yield f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}"
    finally:
        proc.kill()
        proc.wait(30)


def http_send(address: str, inputs: dict[str, np.ndarray], timeout: float) -> tuple[int, str]:
    """(status, error or "") of a binary request as tritonclient.http makes it."""
    body, size = httpclient.InferenceServerClient.generate_request_body(infer_inputs(httpclient, inputs))
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", INFER, body=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                         "Inference-Header-Content-Length": str(size)})
        response = conn.getresponse()
        payload = response.read()
        return response.status, "" if response.status == 200 else json.loads(payload)["error"]
    except TimeoutError:
        return 0, f"no answer within {timeout:g} s"
    finally:
        conn.close()


def grpc_send(address: str, inputs: dict[str, np.ndarray], timeout: float) -> tuple[int, str]:
    client = grpcclient.InferenceServerClient(address)
    try:
        client.infer("digits", infer_inputs(grpcclient, inputs), headers=AUTH, client_timeout=timeout)
        return 200, ""
    except InferenceServerException as exc:
        return {"StatusCode.INVALID_ARGUMENT": 400}.get(exc.status(), 500), exc.message()
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["FP32", "BYTES"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_stalling_request_is_refused_and_a_small_one_still_answers(server, protocol: str, kind: str) -> None:
    """Small requests sent while the big one is on the server (until it is answered, or for STALL_WINDOW_S) each
    answer within 2 s: a functional bound, the big one cannot hold them up. Before the budget the big one was
    prepared image by image and then queued ahead of them as 250,000 engine runs."""
    send = http_send if protocol == "http" else grpc_send
    address = server[1] if protocol == "http" else server[0]
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(send, address, stalling_inputs(kind), STALL_WINDOW_S + 30)
        time.sleep(0.3)  # the big request is on the server
        deadline = time.monotonic() + STALL_WINDOW_S
        while True:
            start = time.monotonic()
            status, error = send(address, SMALL, 10.0)
            took = time.monotonic() - start
            assert status == 200 and took < 2.0, (status, error, f"{took:.1f} s")
            if big.done() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        big_status, big_error = big.result()
    assert big_status == 400 and "over this server's limit of 256 per request (--max-images)" in big_error, big_error


# ---------------------------------------------------------------------------
# the budget in-process: from the shape, before any work
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(sample_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelService:
    token = tmp_path_factory.mktemp("budget-service") / "token"
    token.write_text(TOKEN)
    return ModelService(AppArgs(str(sample_onnx), "digits", "cpu", token_file=str(token), **OPTIONS))


def call(service: ModelService, body: bytes, headers: dict[str, str] | None = None, path: str = INFER):
    response = asyncio.run(service.handle(HttpRequest.of("POST", path, {**AUTH, **(headers or {})}, body)))
    return response.status, response.json().get("error", "")


def http_body(inputs: dict[str, np.ndarray], binary: bool = True) -> tuple[bytes, dict[str, str]]:
    tensors = infer_inputs(httpclient, inputs)
    for t in tensors:
        if not binary:
            t.set_data_from_numpy(inputs[t.name()], binary_data=False)
    body, size = httpclient.InferenceServerClient.generate_request_body(tensors)
    return body, ({"Inference-Header-Content-Length": str(size)} if size is not None else {})


class Counted:
    """The service's per-image work (preparations, image decodes) fails the request and is counted: a request over
    the budget must be refused before any."""

    def __init__(self, service: ModelService, monkeypatch: pytest.MonkeyPatch) -> None:
        import vitexport.serving.http.service as module

        self.calls = 0
        prepare, decode = service.predictor.prepare, module.decode_bytes

        def counted(fn):
            def wrapper(*args, **kwargs):
                self.calls += 1
                raise AssertionError(f"{fn.__name__} ran before the refusal")  # not a million times
            return wrapper

        monkeypatch.setattr(service.predictor, "prepare", counted(prepare))
        monkeypatch.setattr(module, "decode_bytes", counted(decode))


PNG = png_bytes(np.zeros((28, 28), np.uint8))
OVER_BUDGET = [
    # (what, inputs, JSON rather than binary, the message)
    ("a million FP32 images", {"pixel_values": np.zeros((1_000_000, 1, 1, 1), np.float32)}, False, "--max-images"),
    ("257 FP32 images as JSON", {"pixel_values": np.zeros((257, 1, 1, 1), np.float32)}, True, "--max-images"),
    ("257 encoded images", {"image": np.array([PNG] * 257, dtype=object)}, False, "--max-images"),
    ("BYTES [16, 17]", {"image": np.array([[PNG] * 17] * 16, dtype=object)}, False, "--max-images"),
    ("200 full-size images: 3,200 patches", {"pixel_values": np.zeros((200, 1, 28, 28), np.float32)}, False,
     "more than 256 patches in all"),
    ("one image over the pixel limit", {"pixel_values": np.zeros((1, 1, 8, 1000), np.float32)}, False,
     "8,000 pixels, over this server's limit of 4,096"),
]


@pytest.mark.parametrize("what, inputs, as_json, message", OVER_BUDGET, ids=[c[0] for c in OVER_BUDGET])
def test_http_requests_over_the_budget_are_refused_before_any_work(service: ModelService, monkeypatch, what, inputs,
                                                                    as_json: bool, message: str) -> None:
    body, headers = http_body(inputs, binary=not as_json)
    counted = Counted(service, monkeypatch)
    status, error = call(service, body, headers)
    assert status == 400 and message in error, (status, error)
    assert counted.calls == 0, f"{counted.calls} images prepared or decoded before the refusal"


@pytest.mark.parametrize("what, inputs, as_json, message", OVER_BUDGET, ids=[c[0] for c in OVER_BUDGET])
def test_grpc_requests_over_the_budget_are_refused_before_any_work(service: ModelService, monkeypatch, what, inputs,
                                                                    as_json: bool, message: str) -> None:
    """The same account over gRPC: raw contents (what tritonclient sends), or typed contents for the JSON rows."""
    (name, value), = inputs.items()
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name=name, datatype="BYTES" if value.dtype == object else "FP32",
                                shape=list(value.shape))
    if as_json:
        tensor.contents.fp32_contents.extend(value.reshape(-1).tolist())
    else:
        request.raw_input_contents.append(infer_inputs(grpcclient, inputs)[0]._get_content())
    counted = Counted(service, monkeypatch)
    with pytest.raises(GrpcError) as info:
        asyncio.run(GrpcService(service).call("ModelInfer", request, AUTH))
    assert info.value.code == "INVALID_ARGUMENT" and message in info.value.message, info.value.message
    assert counted.calls == 0


def test_the_triton_backend_path_is_charged_too(service: ModelService) -> None:
    """A request parsed elsewhere (Triton's Python backend) is admitted by `prepare_request` itself."""
    from vitexport._util.errors import InputError

    pixels = Tensor("pixel_values", "FP32", [300, 1, 1, 1], np.zeros((300, 1, 1, 1), np.float32))
    with pytest.raises(InputError, match="--max-images"):
        service.prepare_request(InferRequest([pixels], []))
    images = Tensor("image", "BYTES", [300], [PNG] * 300)
    with pytest.raises(InputError, match="--max-images"):
        service.prepare_request(InferRequest([images], []))


def test_requests_within_the_budget_still_answer(service: ModelService) -> None:
    for inputs in ({"pixel_values": np.zeros((256, 1, 1, 1), np.float32)},
                   {"image": np.array([PNG] * 5, dtype=object)}, {"pixel_values": np.zeros((5, 1, 28, 28),
                                                                                           np.float32)}):
        body, headers = http_body(inputs)
        assert call(service, body, headers) == (200, "")


# ---------------------------------------------------------------------------
# malformed bodies: a 400, and nothing unbounded repeated
# ---------------------------------------------------------------------------
def _json(obj) -> bytes:
    return json.dumps(obj).encode()


GOOD = {"name": "pixel_values", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": [0, 0, 0, 0]}
MALFORMED = [
    # (what, body, headers)
    ("JSON 100,000 deep", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}),
    ("a 5,000-digit number in the data", _json({"inputs": [GOOD]}).replace(b"[0, 0, 0, 0]",
                                                                               f"[{HUGE}, 0, 0, 0]".encode()), {}),
    ("a 5,000-digit number in the shape", _json({"inputs": [GOOD]}).replace(b"[1, 1, 2, 2]",
                                                                                f"[{HUGE}, 1, 2, 2]".encode()), {}),
    ("a 5,000-digit classification", _json({"inputs": [GOOD], "outputs": [{"name": "logits", "parameters": {
        "classification": 7}}]}).replace(b": 7", f": {HUGE}".encode()), {}),
    ("a 5,000-digit Inference-Header-Content-Length", _json({"inputs": [GOOD]}),
     {"Inference-Header-Content-Length": HUGE}),
    ("a 5,000-digit Content-Length", _json({"inputs": [GOOD]}), {"Content-Length": HUGE}),
    ("a 100,000-character input name", _json({"inputs": [{**GOOD, "name": "x" * 100_000}]}), {}),
    ("a 100,000-character datatype", _json({"inputs": [{**GOOD, "datatype": "D" * 100_000}]}), {}),
    ("a 100,000-character unknown field", _json({"inputs": [{**GOOD, "f" * 100_000: 1}]}), {}),
    ("a shape of 100,000 dimensions, one negative", _json({"inputs": [{**GOOD, "shape": [1] * 100_000 + [-1]}]}), {}),
    ("a binary_data_size of 100,000 items", _json({"inputs": [{**GOOD, "parameters": {
        "binary_data_size": [1] * 100_000}}]}), {}),
]


@pytest.mark.parametrize("what, body, headers", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_bodies_are_4xx_with_a_bounded_message(service: ModelService, what: str, body: bytes,
                                                         headers: dict[str, str]) -> None:
    status, error = call(service, body, headers)
    assert 400 <= status < 500, (status, error[:300])
    assert len(error) <= MAX_ERROR_CHARS and "\n" not in error, error[:300]
    for unbounded in ("9" * 100, "x" * 100, "D" * 100, "f" * 100, "1, " * 100):
        assert unbounded not in error, error[:300]


def test_a_long_path_or_model_name_is_not_repeated(service: ModelService) -> None:
    for path in (f"/v2/models/{'m' * 100_000}/infer", f"/{'p' * 100_000}"):
        status, error = call(service, b"{}", {}, path)
        assert status == 404 and len(error) < 300, (status, error[:300])


def _grpc_request(name: str, datatype: str, model: str = "digits") -> object:
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[b"\0" * 16])
    request.inputs.add(name=name, datatype=datatype, shape=[1, 1, 2, 2])
    return request


def test_grpc_names_are_not_repeated(service: ModelService) -> None:
    for request in (_grpc_request("pixel_values", "FP32", "m" * 100_000), _grpc_request("x" * 100_000, "FP32"),
                    _grpc_request("pixel_values", "D" * 100_000)):
        with pytest.raises(GrpcError) as info:
            asyncio.run(GrpcService(service).call("ModelInfer", request, AUTH))
        assert len(info.value.message) < 300, info.value.message[:300]


def test_the_parser_admits_each_shape_before_reading_its_data() -> None:
    """A BYTES input of a billion elements is refused by ``admit`` before the parser walks its binary data."""
    seen = []

    def admit(name, datatype, shape):
        seen.append((name, datatype, shape))
        raise RequestError(400, "refused")

    head = _json({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [10**9],
                              "parameters": {"binary_data_size": 8}}]})
    with pytest.raises(RequestError, match="refused"):
        parse_infer_request(head + struct.pack("<I", 4) + b"abcd", str(len(head)), admit=admit)
    assert seen == [("image", "BYTES", [10**9])]


# ---------------------------------------------------------------------------
# numeric options: finite and positive
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["serve", "m.onnx", "--max-body-mb", "nan"], ["serve", "m.onnx", "--max-body-mb", "inf"],
    ["serve", "m.onnx", "--batch-wait-ms", "inf"], ["serve", "m.onnx", "--batch-wait-ms", "nan"],
    ["predict", "m.onnx", "x.png", "--max-memory-gb", "nan"], ["predict", "m.onnx", "x.png", "--max-memory-gb", "inf"],
    ["bench", "m.onnx", "--max-memory-gb", "inf"],  # verify's --atol and --rtol: test_hostile_args.py
], ids=lambda a: " ".join(a[2:]) + f" ({a[0]})")
def test_numeric_options_are_finite(args: list[str]) -> None:
    from vitexport.cli import cli

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "is not a finite number" in result.output, result.output


@pytest.mark.parametrize("field, value", [("max_body_mb", float("nan")), ("max_body_mb", float("inf")),
                                          ("batch_wait_ms", float("inf")), ("batch_wait_ms", float("nan")),
                                          ("max_images", 0), ("max_tokens", "64"), ("max_batch", 1.5j)])
def test_a_ray_config_is_held_to_the_same_numbers(field: str, value) -> None:
    with pytest.raises(ValueError, match=field) as info:
        AppArgs.from_args({"model": "m.onnx", "name": "m", field: value})
    assert len(str(info.value)) < 200


# ---------------------------------------------------------------------------
# Ray's own routes
# ---------------------------------------------------------------------------
def test_ray_routes_are_hidden_by_the_proxy_middleware() -> None:
    """The middleware Ray Serve's HTTP proxy wraps itself in (the local server sets its callback for the proxy):
    /-/routes and /-/healthz get a 404, everything else reaches the proxy."""
    from vitexport.serving.http.config import ServeOptions
    from vitexport.serving.http.launch import PROXY_CALLBACK_VARIABLE, _runtime_env, proxy_middlewares

    for grpc_port in (None, 9001):
        env = _runtime_env(ServeOptions(AppArgs("m.onnx", "m"), grpc_port=grpc_port))["env_vars"]
        module, _, name = env[PROXY_CALLBACK_VARIABLE].rpartition(".")
        assert getattr(__import__(module, fromlist=[name]), name) is proxy_middlewares
    (middleware,) = proxy_middlewares()
    reached = []

    async def proxy(scope, receive, send) -> None:
        reached.append(scope["path"])

    async def get(path: str) -> list[dict]:
        sent = []

        async def send(message) -> None:
            sent.append(message)

        await middleware.cls(proxy, *middleware.args, **middleware.kwargs)({"type": "http", "path": path}, None, send)
        return sent

    for path in ("/-/routes", "/-/healthz"):
        sent = asyncio.run(get(path))
        assert sent[0]["status"] == 404 and b"/v2/health" in sent[1]["body"], sent
    assert asyncio.run(get("/v2/health/ready")) == [] and reached == ["/v2/health/ready"]
