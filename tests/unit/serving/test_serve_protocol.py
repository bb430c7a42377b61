"""The serving protocol without Ray: the wire codec against tritonclient's own encoder and decoder, and the
whole request path of `ModelService` in-process (both input kinds equal the Predictor, auth, limits, 4xx)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.images import crafted_exif_png, eps_bytes
from tests.helpers.models import needs_openvino
from tests.helpers.serving import png_bytes
from tests.helpers.shared import rgb_classifier
from vitexport.serving.batching import size_chunks
from vitexport.serving.http.config import AppArgs
from vitexport.serving.http.protocol import (
    RequestedOutput,
    RequestError,
    classify,
    decode_content,
    encode_infer_response,
    parse_infer_request,
)
from vitexport.serving.http.service import HttpRequest, ModelService, largest_size_group
from vitexport.serving.predictor import Predictor

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed "
                                 "(pip install 'vitexport[serve]')")
Client = httpclient.InferenceServerClient
INFER = "/v2/models/m/infer"


def request_body(inputs, outputs=None, **kw) -> tuple[bytes, dict[str, str]]:
    """The body and headers tritonclient.http would send."""
    body, header_length = Client.generate_request_body(inputs, outputs=outputs, **kw)
    return body, ({"Inference-Header-Content-Length": str(header_length)} if header_length is not None else {})


def pixels_input(x: np.ndarray, binary: bool = True, name: str = "pixel_values"):
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def images_input(blobs: list[bytes], binary: bool = True):
    inp = httpclient.InferInput("image", [len(blobs)], "BYTES")
    data = blobs if binary else [base64.b64encode(b) for b in blobs]  # JSON carries images as base64 strings
    inp.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)
    return inp


def parse_response(response) -> object:
    """tritonclient's InferResult of one of our responses."""
    assert response.status == 200, response.body[:300]
    size = response.headers.get("Inference-Header-Content-Length")
    return Client.parse_response_body(response.body, header_length=int(size) if size else None)


# ---------------------------------------------------------------------------
# the codec against tritonclient
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_fp32_request_from_tritonclient(binary: bool) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 7)).astype(np.float32)
    body, headers = request_body([pixels_input(x, binary)], request_id="r-1")
    request = parse_infer_request(body, headers.get("Inference-Header-Content-Length"))
    assert [t.name for t in request.inputs] == ["pixel_values"] and request.inputs[0].datatype == "FP32"
    np.testing.assert_array_equal(request.inputs[0].data, x)  # JSON floats carry float32 exactly
    assert request.id == "r-1" and request.binary_output and not request.outputs  # no outputs: all, binary


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json-base64"])
def test_bytes_request_from_tritonclient(binary: bool) -> None:
    blobs = [b"\x89PNG\x00\xff" * 3, b"", b"x" * 1000]
    body, headers = request_body([images_input(blobs, binary)],
                                 outputs=[httpclient.InferRequestedOutput("logits", binary_data=False,
                                                                          class_count=3)])
    request = parse_infer_request(body, headers.get("Inference-Header-Content-Length"))
    assert request.inputs[0].data == blobs
    assert request.outputs == [RequestedOutput("logits", binary=False, classification=3)]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_response_decodes_in_tritonclient(binary: bool) -> None:
    logits = np.array([[0.5, 2.0, -1.0, 2.0], [3.0, 1.0, 0.0, -2.0]], np.float32)
    request = parse_infer_request(json.dumps({"id": "7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                                                                     "data": [0]}],
                                              "outputs": [{"name": "logits", "parameters": {"binary_data": binary}}]}
                                             ).encode())
    result = parse_response(encode_infer_response("m", request, {"logits": logits}))
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    assert result.get_response()["id"] == "7" and result.get_response()["model_name"] == "m"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_extension(binary: bool) -> None:
    logits = np.array([[0.5, 2.0, -1.0, 2.0], [3.0, 1.0, 0.0, -2.0]], np.float32)
    request = parse_infer_request(json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}],
                                              "outputs": [{"name": "logits", "parameters": {
                                                  "classification": 3, "binary_data": binary}}]}).encode())
    result = parse_response(encode_infer_response("m", request, {"logits": logits}, labels=["a", "b", "c", "d"]))
    got = result.as_numpy("logits")
    assert got.shape == (2, 3)
    # Triton's form "<value>:<index>:<label>", highest value first, ties in index order
    assert [v.decode() if isinstance(v, bytes) else v for v in got[0]] == ["2.0:1:b", "2.0:3:d", "0.5:0:a"]
    assert [v.decode() if isinstance(v, bytes) else v for v in got[1]] == ["3.0:0:a", "1.0:1:b", "0.0:2:c"]


def test_classify_clamps_and_omits_missing_labels() -> None:
    out = classify(np.array([[1.0, 3.0]], np.float32), 5, None)
    assert out.tolist() == [[b"3.0:1", b"1.0:0"]]


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


GOOD_INPUT = {"name": "pixel_values", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]}


@pytest.mark.parametrize("body, header_length, status, message", [
    (b"{not json", None, 400, "malformed JSON"),
    (b"\xff\xfe", None, 400, "malformed JSON"),
    (_json([1, 2]), None, 400, "not an object"),
    (_json({}), None, 400, "no 'inputs'"),
    (_json({"inputs": [{"datatype": "FP32"}]}), None, 400, "'name'"),
    (_json({"inputs": [{**GOOD_INPUT, "shape": [1, -1]}]}), None, 400, "shape must be"),
    (_json({"inputs": [{**GOOD_INPUT, "shape": "1x1"}]}), None, 400, "shape must be"),
    (_json({"inputs": [{**GOOD_INPUT, "data": [1, 2, 3]}]}), None, 400, "holds 3 values"),
    (_json({"inputs": [{**GOOD_INPUT, "data": [[1, 2], [3]]}]}), None, 400, "ragged"),
    (_json({"inputs": [{**GOOD_INPUT, "data": ["a", "b", "c", "d"]}]}), None, 400, "numbers"),
    (_json({"inputs": [{**GOOD_INPUT, "datatype": "INT8"}]}), None, 400, "not accepted"),
    (_json({"inputs": [{**GOOD_INPUT, "extra": 1}]}), None, 400, "unknown field"),
    (_json({"inputs": [{k: v for k, v in GOOD_INPUT.items() if k != "data"}]}), None, 400, "no 'data'"),
    (_json({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["***"]}]}), None, 400, "base64"),
    (_json({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [3]}]}), None, 400, "base64"),
    (_json({"inputs": [GOOD_INPUT], "outputs": [{"name": "logits", "parameters": {"classification": -2}}]}), None,
     400, "classification"),
    (_json({"inputs": [GOOD_INPUT], "outputs": {"name": "logits"}}), None, 400, "'outputs' must be"),
    (_json({"inputs": [GOOD_INPUT]}), "abc", 400, "not a number"),
    (_json({"inputs": [GOOD_INPUT]}), "100000", 400, "does not fit"),
    (_json({"inputs": [{**GOOD_INPUT, "data": None, "parameters": {"binary_data_size": 16}}]}) + b"\0" * 8,
     None, 400, None),  # header length missing: the binary tail makes the JSON malformed
])
def test_malformed_requests_are_400(body: bytes, header_length: str | None, status: int, message: str | None) -> None:
    with pytest.raises(RequestError) as info:
        parse_infer_request(body, header_length)
    assert info.value.status == status
    assert message is None or message in info.value.message, info.value.message


def _binary(header: dict, tail: bytes) -> tuple[bytes, str]:
    head = _json(header)
    return head + tail, str(len(head))


@pytest.mark.parametrize("header, tail, message", [
    ({"inputs": [{**GOOD_INPUT, "data": None, "parameters": {"binary_data_size": 16}}]}, b"\0" * 8, "does not fit"),
    ({"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 1, 2, 2],
                  "parameters": {"binary_data_size": 12}}]}, b"\0" * 12, "needs 16"),
    ({"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 1, 2, 2],
                  "parameters": {"binary_data_size": 16}}]}, b"\0" * 20, "belong to no input"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 20}}]},
     struct.pack("<I", 5) + b"abcde", "does not fit"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 9}}]},
     struct.pack("<I", 5) + b"abcde", "ends before element 1"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
     struct.pack("<I", 9) + b"ab", "claims 9 bytes"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}]},
     struct.pack("<I", 1) + b"abc", "after its 1 elements"),
])
def test_malformed_binary_requests_are_400(header: dict, tail: bytes, message: str) -> None:
    body, header_length = _binary(header, tail)
    with pytest.raises(RequestError) as info:
        parse_infer_request(body, header_length)
    assert info.value.status == 400 and message in info.value.message, info.value.message


def test_content_encoding_and_compression_bombs() -> None:
    payload = _json({"inputs": [GOOD_INPUT]})
    assert decode_content(gzip.compress(payload), "gzip", 1000) == payload
    assert decode_content(zlib.compress(payload), "deflate", 1000) == payload
    bomb = gzip.compress(b"\0" * 50_000_000)  # 50 MB of zeros in ~50 KB
    assert len(bomb) < 100_000
    with pytest.raises(RequestError) as info:
        decode_content(bomb, "gzip", 1_000_000)
    assert info.value.status == 413
    for body, encoding, status in [(b"not gzip", "gzip", 400), (gzip.compress(payload)[:-6], "gzip", 400),
                                   (payload, "br", 415)]:
        with pytest.raises(RequestError) as info:
            decode_content(body, encoding, 1000)
        assert info.value.status == status, (encoding, info.value.message)


def test_protocol_and_service_import_neither_ray_nor_torch() -> None:
    code = ("import sys\nimport vitexport.serving.http.protocol, vitexport.serving.http.service\n"
            "import vitexport.serving.http.config\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))\nassert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------
# the service in-process
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-channel model with its own mean/std and labels: the server's preprocessing must use them."""
    return rgb_classifier(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def service(rgb_model: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelService:
    token = tmp_path_factory.mktemp("token") / "token"
    token.write_text("s3cret-token\n")
    return ModelService(AppArgs(str(rgb_model), "m", provider="cpu", max_batch=4, max_tokens=200, max_body_mb=1,
                                token_file=str(token)))


AUTH = {"Authorization": "Bearer s3cret-token"}


def call(service: ModelService, method: str, path: str, headers: dict | None = None, body: bytes = b""):
    return asyncio.run(service.handle(HttpRequest.of(method, path, {**AUTH, **(headers or {})}, body)))


def infer(service: ModelService, inputs, outputs=None, headers: dict | None = None):
    body, extra = request_body(inputs, outputs)
    return call(service, "POST", INFER, {**extra, **(headers or {})}, body)


def rgb_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


SIZES = [(24, 40), (17, 33), (24, 40), (9, 60), (40, 24), (24, 40)]  # mixed, non-square, not multiples of 8


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_images_equal_predictor(service: ModelService, rgb_model: Path, binary: bool) -> None:
    images = rgb_images(SIZES)
    response = infer(service, [images_input([png_bytes(a) for a in images], binary)],
                     [httpclient.InferRequestedOutput("logits", binary_data=binary)])
    got = parse_response(response).as_numpy("logits")
    want = np.stack([p.logits for p in Predictor(str(rgb_model), provider="cpu").predict(
        [Image.fromarray(a) for a in images])])
    assert got.shape == (len(SIZES), 7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_pixel_values_equal_predictor(service: ModelService, rgb_model: Path, binary: bool) -> None:
    x = np.random.default_rng(3).standard_normal((3, 3, 19, 45)).astype(np.float32)
    got = parse_response(infer(service, [pixels_input(x, binary)])).as_numpy("logits")
    want = np.stack([p.logits for p in Predictor(str(rgb_model), provider="cpu").predict(list(x))])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_classification_through_the_service(service: ModelService, rgb_model: Path) -> None:
    images = rgb_images([(30, 30), (12, 50)], seed=9)
    out = httpclient.InferRequestedOutput("logits", binary_data=True, class_count=2)
    got = parse_response(infer(service, [images_input([png_bytes(a) for a in images])], [out])).as_numpy("logits")
    for row, pred in zip(got, Predictor(str(rgb_model), provider="cpu").predict([Image.fromarray(a) for a in images]),
                         strict=True):
        best = np.argsort(-pred.logits, kind="stable")[:2]
        assert [v.decode().split(":")[1:] for v in row] == [[str(c), f"c{c}"] for c in best]
        np.testing.assert_allclose([float(v.decode().split(":")[0]) for v in row], pred.logits[best], rtol=1e-5)


def test_metadata_and_health(service: ModelService, tmp_path: Path) -> None:
    meta = json.loads(call(service, "GET", "/v2/models/m").body)
    assert meta["inputs"] == [{"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, -1, -1]},
                              {"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 7]}]
    assert json.loads(call(service, "GET", "/v2/models/m/versions/1/ready").body) == {"name": "m", "ready": True}
    server = json.loads(call(service, "GET", "/v2").body)
    assert set(server["extensions"]) >= {"binary_tensor_data", "classification"}


def test_openvino_provider_passes_through(rgb_model: Path) -> None:
    """--provider openvino: each replica's Predictor runs on OpenVINO; the server says so and answers as it does."""
    needs_openvino()
    ov = ModelService(AppArgs(str(rgb_model), "m", provider="openvino", max_batch=4))
    assert ov.predictor.provider == "openvino"
    assert json.loads(call(ov, "GET", "/v2/models/m").body)["platform"] == "openvino"
    x = np.random.default_rng(11).standard_normal((2, 3, 23, 37)).astype(np.float32)
    got = parse_response(infer(ov, [pixels_input(x)])).as_numpy("logits")
    predictor = Predictor(str(rgb_model), provider="openvino")
    np.testing.assert_allclose(got, np.stack([p.logits for p in predictor.predict(list(x))]), rtol=1e-5, atol=1e-5)


def test_features_model_metadata_and_one_size_per_request(exported) -> None:
    _, path, _ = exported["features_nopool"]  # output (B, tokens, 48)
    service = ModelService(AppArgs(str(path), "f", provider="cpu"))
    meta = json.loads(asyncio.run(service.handle(HttpRequest.of("GET", "/v2/models/f"))).body)
    assert meta["outputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, -1, 48]}
    images = rgb_images([(30, 30), (30, 30)]) + rgb_images([(36, 30)])
    ok = asyncio.run(service.handle(HttpRequest.of("POST", "/v2/models/f/infer", {}, _json({"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [2],
         "data": [base64.b64encode(png_bytes(a)).decode() for a in images[:2]]}]}))))
    assert ok.status == 200 and ok.json()["outputs"][0]["shape"] == [2, 26, 48]  # 25 patches + class token
    mixed = asyncio.run(service.handle(HttpRequest.of("POST", "/v2/models/f/infer", {}, _json({"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [3],
         "data": [base64.b64encode(png_bytes(a)).decode() for a in images]}]}))))
    assert mixed.status == 400 and "one image size per request" in mixed.json()["error"]


def test_auth(service: ModelService) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        response = asyncio.run(service.handle(HttpRequest.of("GET", path)))  # no token needed
        assert response.status == 200, path
    for method, path in [("GET", "/v2"), ("GET", "/v2/models/m"), ("GET", "/v2/models/m/ready"), ("POST", INFER),
                         ("GET", "/nowhere")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                        {"Authorization": "Basic s3cret-token"}):
            response = asyncio.run(service.handle(HttpRequest.of(method, path, headers)))
            assert response.status == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer" and "bearer token" in response.json()["error"]
    assert call(service, "GET", "/v2/models/m", {"Authorization": "bearer  s3cret-token"}).status == 200


def _bomb_png(side: int) -> bytes:
    """A valid PNG of side x side black pixels (1 bit each): ~110 KB on the wire for side 30,000, side**2 pixels
    when decoded. Written chunk by chunk (Pillow would first draw the whole 110 MB bitmap: 2 s per test worker)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte "none", then the row's bits
    deflate = zlib.compressobj(9)
    idat = b"".join([*(deflate.compress(row) for _ in range(side)), deflate.flush()])
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _image_request(blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    return request_body([images_input(blobs)])


def _images(blobs: list[bytes]) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a binary request with these encoded images."""
    body, headers = _image_request(blobs)
    return headers, body


NOISE_PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (30, 30, 3), np.uint8))  # ~2.7 KB
BAD_SERVICE_REQUESTS = [
    # (description, method, path, headers, body, status, message)
    ("unknown model", "POST", "/v2/models/other/infer", {}, b"{}", 404, "unknown model 'other'"),
    ("unknown version", "GET", "/v2/models/m/versions/2", {}, b"", 404, "only version 1"),
    ("wrong method", "GET", INFER, {}, b"", 405, "takes POST"),
    ("unknown endpoint", "GET", "/v2/models/m/stats", {}, b"", 404, "no endpoint"),
    ("two inputs", "POST", INFER, {}, _json({"inputs": [GOOD_INPUT, GOOD_INPUT]}), 400, "exactly one input"),
    ("unknown input", "POST", INFER, {}, _json({"inputs": [{**GOOD_INPUT, "name": "x"}]}), 400, "unknown input 'x'"),
    ("wrong channels", "POST", INFER, {}, _json({"inputs": [GOOD_INPUT]}), 400, "[B, 3, H, W]"),
    ("rank 3", "POST", INFER, {}, _json({"inputs": [{**GOOD_INPUT, "shape": [3, 2, 2],
                                                      "data": list(range(12))}]}), 400, "[B, 3, H, W]"),
    ("empty batch", "POST", INFER, {}, _json({"inputs": [{**GOOD_INPUT, "shape": [0, 3, 2, 2], "data": []}]}), 400,
     "B, H, W >= 1"),
    ("NaN", "POST", INFER, {}, _json({"inputs": [{**GOOD_INPUT, "shape": [1, 3, 1, 1], "data": [1, 1e39, 1]}]}),
     400, "NaN or Inf"),
    ("too many tokens", "POST", INFER, {}, _json({"inputs": [{**GOOD_INPUT, "shape": [1, 3, 8, 2000],
                                                               "data": [0.0] * 48000}]}), 400,
     "over this server's limit"),
    ("image as FP32", "POST", INFER, {}, _json({"inputs": [{**GOOD_INPUT, "name": "image"}]}), 400, "must be BYTES"),
    ("pixels as BYTES", "POST", INFER, {}, _json({"inputs": [{"name": "pixel_values", "datatype": "BYTES",
                                                              "shape": [1], "data": ["AA=="]}]}), 400, "must be FP32"),
    ("image 2-d", "POST", INFER, {}, _json({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1],
                                                          "data": ["AA=="]}]}), 400, "shape [B]"),
    ("not an image", "POST", INFER, *_images([b"hello, not a picture"]), 400, "not a PNG"),
    ("empty image", "POST", INFER, *_images([b""]), 400, "empty"),
    ("truncated PNG", "POST", INFER, *_images([NOISE_PNG[:1500]]), 400,
     "truncated or corrupt"),
    ("decompression bomb", "POST", INFER, *_images([_bomb_png(5_000)]), 400,
     "25,000,000 pixels, over this server's limit of 12,800"),
    ("bomb over Pillow's own limit", "POST", INFER, *_images([_bomb_png(30_000)]), 400, "decompression bomb"),
    ("crafted EXIF", "POST", INFER, *_images([crafted_exif_png()]), 400, "is corrupt: its EXIF block does not parse"),
    ("EPS image", "POST", INFER, *_images([eps_bytes()]), 400, "is an EPS file, which vitexport does not decode"),
    ("unknown output", "POST", INFER, {}, _json({"inputs": [GOOD_INPUT], "outputs": [{"name": "probs"}]}), 400,
     "unknown output 'probs'"),
    ("body too large", "POST", INFER, {}, b" " * (2**20 + 1), 413, "over this server's limit"),
    ("announced too large", "POST", INFER, {"Content-Length": str(2**30)}, b"{}", 413, "over this server's limit"),
    ("gzip bomb", "POST", INFER, {"Content-Encoding": "gzip"}, gzip.compress(b" " * 5_000_000), 413, "inflates"),
    ("unknown encoding", "POST", INFER, {"Content-Encoding": "br"}, b"{}", 415, "not supported"),
]


@pytest.mark.parametrize("what, method, path, headers, body, status, message", BAD_SERVICE_REQUESTS,
                         ids=[r[0] for r in BAD_SERVICE_REQUESTS])
def test_bad_requests_get_4xx_with_an_error(service: ModelService, what, method, path, headers, body, status,
                                            message) -> None:
    response = call(service, method, path, headers, body)
    assert response.status == status, (response.status, response.body[:300])
    error = response.json()["error"]
    assert message in error, error
    assert "\n" not in error and "Traceback" not in error


def test_image_bodies_with_binary_headers_are_refused_per_image(service: ModelService) -> None:
    good = png_bytes(rgb_images([(20, 20)])[0])
    for blobs, message in [([good, b"garbage"], "image 1:"), ([good, _bomb_png(30_000)], "image 1:"),
                           ([good] * 3 + [_bomb_png(200)], "image 3:")]:
        body, headers = _image_request(blobs)
        response = call(service, "POST", INFER, headers, body)
        assert response.status == 400 and message in response.json()["error"], response.body[:300]


def test_decoded_pixel_budget_per_request(rgb_model: Path) -> None:
    """Many small PNGs that decode to more values than a pixel_values body of the limit are refused, unread."""
    service = ModelService(AppArgs(str(rgb_model), "m", provider="cpu", max_body_mb=0.05))  # 13,107 values
    ok = png_bytes(rgb_images([(30, 40)])[0])  # 3,600 values each
    body, headers = _image_request([ok] * 3)
    assert call(service, "POST", INFER, headers, body).status == 200
    body, headers = _image_request([ok] * 4)
    response = call(service, "POST", INFER, headers, body)
    assert response.status == 400 and "image 3: the images decode to more than 13,107 values" in response.json()[
        "error"]


def test_service_survives_bad_requests_and_stays_correct(service: ModelService, rgb_model: Path) -> None:
    for _, method, path, headers, body, _, _ in BAD_SERVICE_REQUESTS:
        call(service, method, path, headers, body)
    test_images_equal_predictor(service, rgb_model, True)


# ---------------------------------------------------------------------------
# batching pieces (the deployment's queue itself is tested in test_serve.py)
# ---------------------------------------------------------------------------
def test_batch_size_is_the_largest_group_of_one_size() -> None:
    xs = [np.full((1, h, w), i, np.float32) for i, (h, w) in enumerate([(2, 3), (4, 4), (2, 3), (2, 3), (4, 4)])]
    chunks = size_chunks(xs, max_batch=2)  # [0, 2], [3] of 2x3 and [1, 4] of 4x4
    assert largest_size_group([s for _, s in chunks]) == 3
    assert largest_size_group([]) == 0


def test_the_service_chunks_requests_with_the_predictors_batching(service: ModelService,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One function cuts both: the runner gets `size_chunks` of the request at the service's max_batch."""
    import vitexport.serving.http.service as service_module

    seen: list[tuple] = []
    real = service_module.size_chunks
    monkeypatch.setattr(service_module, "size_chunks",
                        lambda xs, limit: seen.append((len(xs), limit)) or real(xs, limit))
    xs = [np.zeros((3, 16, 16), np.float32)] * 5 + [np.zeros((3, 20, 16), np.float32)]
    outputs = asyncio.run(service.infer_prepared(xs))
    assert seen == [(6, service.args.max_batch)] and len(outputs) == 6


def test_run_chunks_isolates_a_failing_chunk(service: ModelService, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk the engine refuses fails alone; the chunks batched with it get their outputs."""
    from vitexport._util.errors import InputError

    good = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    bad = np.full((1, 3, 16, 16), 7.0, np.float32)
    run = service.predictor.run_batch

    def refuse_marked(batch):
        if (batch == 7.0).all(axis=(1, 2, 3)).any():
            raise InputError("the model produced NaN or Inf for this input")
        return run(batch)

    want = service.run_chunks([good])[0]
    monkeypatch.setattr(service.predictor, "run_batch", refuse_marked)
    results = service.run_chunks([good, bad, good[:1]])
    np.testing.assert_allclose(results[0], want, rtol=1e-5, atol=1e-6)
    assert isinstance(results[1], InputError)
    np.testing.assert_allclose(results[2], want[:1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# the command line, without Ray
# ---------------------------------------------------------------------------
