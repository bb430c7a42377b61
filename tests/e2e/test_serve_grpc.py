"""`vitexport serve --grpc-port` on a local Ray instance: tritonclient.grpc through Ray Serve's gRPC proxy gets what
tritonclient.http gets, with the same token and limits, the gRPC port bound like HTTP's (loopback), and the
server stops cleanly. The RPCs themselves are tested in-process in tests/unit/serving/test_serve_grpc.py.
"""

from __future__ import annotations

import secrets
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.helpers.serving import free_ports, infer_inputs, listening, png_bytes, require_ray, start_server

require_ray()
pytestmark = pytest.mark.serve

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (vitexport[serve])")
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from vitexport.cli import cli  # noqa: E402
from vitexport.serving.predictor import Predictor  # noqa: E402

MODEL = "digits"


@pytest.fixture(scope="module")
def server(sample_onnx: Path, tmp_path_factory: pytest.TempPathFactory):
    """The digits sample with a token, batches of 8 and a 1 MB body limit, over HTTP and gRPC; stopped with SIGINT."""
    token = tmp_path_factory.mktemp("grpc") / "token"
    token.write_text(secrets.token_urlsafe(24) + "\n")
    http_port, grpc_port = free_ports(2)
    url, tree = start_server(sample_onnx, "--name", MODEL, "--provider", "cpu", "--max-batch", "8", "--batch-wait-ms",
                             "10", "--max-body-mb", "1", "--token-file", str(token), "--grpc-port", str(grpc_port),
                             port=http_port)
    auth = token.read_text().strip()
    yield SimpleNamespace(http=url.removeprefix("http://"), grpc=f"127.0.0.1:{grpc_port}", grpc_port=grpc_port,
                          headers={"authorization": f"Bearer {auth}"}, tree=tree,
                          predictor=Predictor(str(sample_onnx), provider="cpu"))
    seconds, code, left = tree.stop(signal.SIGINT)
    out = tree.proc.stdout.read()
    assert code == 0 and not left and seconds < 30, (seconds, code, left)
    assert f"grpc      127.0.0.1:{grpc_port}" in out, out


def infer(module, address: str, headers: dict, inputs: dict[str, np.ndarray], class_count: int = 0) -> np.ndarray:
    client = module.InferenceServerClient(address)
    try:
        tensors = infer_inputs(module, inputs)
        outputs = [module.InferRequestedOutput("logits", class_count=class_count)]
        return client.infer(MODEL, tensors, outputs=outputs, headers=headers).as_numpy("logits")
    finally:
        client.close()


# The tests that start the server (Ray and its gRPC proxy: a minute or more on 2 busy cores) are slow, as the HTTP
# server's in test_serve.py; the RPCs run in the fast lane in-process (tests/unit/serving/test_serve_grpc.py).
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_grpc_equals_http(server) -> None:
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(28, 28), (20, 33), (9, 40)]]
    cases = [{"pixel_values": rng.standard_normal((3, 1, 23, 31)).astype(np.float32)},
             {"image": np.array([png_bytes(a) for a in images], dtype=object)}]
    want = [np.stack([p.logits for p in server.predictor.predict(list(cases[0]["pixel_values"]))]),
            np.stack([p.logits for p in server.predictor.predict([Image.fromarray(a) for a in images])])]
    for inputs, expected in zip(cases, want, strict=True):
        over_grpc = infer(grpcclient, server.grpc, server.headers, inputs)
        over_http = infer(httpclient, server.http, {"Authorization": server.headers["authorization"]}, inputs)
        np.testing.assert_array_equal(over_grpc, over_http)
        np.testing.assert_allclose(over_grpc, expected, rtol=1e-5, atol=1e-5)
        top_grpc = infer(grpcclient, server.grpc, server.headers, inputs, class_count=3)
        top_http = infer(httpclient, server.http, {"Authorization": server.headers["authorization"]}, inputs, 3)
        assert (top_grpc == top_http).all() and top_grpc.shape == (3, 3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_health_auth_limits_and_binding(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        assert client.is_server_live() and client.is_server_ready()  # no token, as /v2/health
        assert client.is_model_ready(MODEL, headers=server.headers)
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata(MODEL)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED", info.value
    finally:
        client.close()
    with pytest.raises(InferenceServerException) as info:  # 1.5 MB of pixels: over --max-body-mb 1
        infer(grpcclient, server.grpc, server.headers, {"pixel_values": np.zeros((6, 1, 256, 256), np.float32)})
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED", info.value
    with pytest.raises(InferenceServerException) as info:
        infer(grpcclient, server.grpc, server.headers, {"pixel_values": np.zeros((1, 3, 8, 8), np.float32)})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "[B, 1, H, W]" in info.value.message()
    # Ray Serve's gRPC proxy listens on [::] (every interface) unless vitexport binds it like HTTP: here 127.0.0.1
    assert listening(server.grpc_port) == {"0000000000000000FFFF00000100007F"}, listening(server.grpc_port)
    assert infer(grpcclient, server.grpc, server.headers,
                 {"pixel_values": np.zeros((1, 1, 28, 28), np.float32)}).shape == (1, 10)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_concurrent_grpc_and_http_clients_equal_predictor(server) -> None:
    """4 gRPC and 4 HTTP client threads, mixed sizes, share the replica's batches; each gets its own results."""
    sizes = [(28, 28), (20, 20), (33, 17)]
    results, errors = {}, []

    def worker(t: int) -> None:
        module, address = (grpcclient, server.grpc) if t % 2 else (httpclient, server.http)
        headers = server.headers if t % 2 else {"Authorization": server.headers["authorization"]}
        rng = np.random.default_rng(100 + t)
        try:
            for i in range(6):
                h, w = sizes[int(rng.integers(len(sizes)))]
                x = rng.standard_normal((int(rng.integers(1, 3)), 1, h, w)).astype(np.float32)
                results[(t, i)] = (x, infer(module, address, headers, {"pixel_values": x}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:3]
    assert len(results) == 48
    for key, (x, got) in results.items():
        want = np.stack([p.logits for p in server.predictor.predict(list(x))])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(key))


def test_print_config_carries_the_grpc_service(sample_onnx: Path) -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    result = CliRunner().invoke(cli, ["serve", str(sample_onnx), "--grpc-port", "9001", "--print-config"])
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    ServeDeploySchema.model_validate(config)
    assert config["grpc_options"] == {"port": 9001,
                                      "grpc_servicer_functions": ["vitexport.serving.grpc.service.add_servicer"]}
    result = CliRunner().invoke(cli, ["serve", str(sample_onnx), "--grpc-port", "8000"])
    assert result.exit_code == 2 and "must differ from --port" in result.stderr
