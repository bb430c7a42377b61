"""Repositories written by `vitexport triton`, loaded by a real ``tritonserver`` (the one the nvidia-pytriton wheel
ships), on 127.0.0.1 with free ports, stopped at the end with its process tree checked.

- ``--backend python`` on the digits sample: READY, and tritonclient.http and tritonclient.grpc get `Predictor`'s
  results for ``pixel_values`` and ``image``, Triton's classification extension with the labels, the 450
  held-out digits with the labels `vitexport predict` gives, concurrent requests batched, bad requests refused
  with the service's message.
- ``--backend onnxruntime``: the server parses and normalizes the config and fails only because its ONNX Runtime
  backend is not in the wheel (a broken copy of the config beside it is refused when the repository is read);
  Triton checks the dims against the graph only inside that backend, so tests/unit/serving/test_triton_repository.py
  checks them against the graph itself.

The wheel's Python backend (Triton 2.45) predates python_backend#384: with numpy >= 2 in the stub's Python it
corrupts BYTES tensors before the model sees them, so the ``image`` cases need numpy < 2 on the stub's path:
``pip install --target DIR 'numpy<2'`` and ``VITEXPORT_TRITON_STUB_PATH=DIR`` (.ci/run does this); without it
they are skipped with that reason, and the digits go as preprocessed pixels.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from samples.digits_data import held_out
from tests.helpers.serving import infer_inputs, png_bytes
from vitexport._util.errors import EnvironmentProblem
from vitexport.cli import cli
from vitexport.serving.predictor import Predictor
from vitexport.serving.preprocess import read_image

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (vitexport[serve])")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (vitexport[serve])")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.triton]
MODEL = "digits"
STUB_PATH = "VITEXPORT_TRITON_STUB_PATH"


def start(repository: Path, work: Path, **kwargs) -> SimpleNamespace:
    from vitexport.serving.triton.local import start_tritonserver

    extra = [p for p in os.environ.get(STUB_PATH, "").split(os.pathsep) if p]
    try:
        return start_tritonserver(repository, work, extra_paths=extra, **kwargs)
    except EnvironmentProblem as exc:
        pytest.skip(f"no tritonserver here: {exc}")


def stop(server) -> None:
    seconds, code, left = server.stop()
    assert code == 0 and not left and seconds < 30, (seconds, code, left, server.log_text())


@pytest.fixture(scope="module")
def triton(sample_onnx: Path, tmp_path_factory: pytest.TempPathFactory):
    """`vitexport triton --backend python` on the digits sample (max 64 tokens per image), served."""
    folder = tmp_path_factory.mktemp("triton")
    result = CliRunner().invoke(cli, ["triton", str(sample_onnx), "-o", str(folder / "repo"), "--name", MODEL,
                                      "--backend", "python", "--max-batch-size", "16", "--max-tokens", "64"])
    assert result.exit_code == 0, result.output
    assert f"tritonserver --model-repository {(folder / 'repo').resolve()}" in result.output
    server = start(folder / "repo", folder / "work")
    stub_numpy = subprocess.run([str(folder / "work" / "stub-env" / "bin" / "python3"), "-c",
                                 "import numpy; print(numpy.__version__)"], capture_output=True, text=True, timeout=60)
    yield SimpleNamespace(http=server.http, grpc=server.grpc, server=server, stub_numpy=stub_numpy.stdout.strip(),
                          predictor=Predictor(str(sample_onnx), provider="cpu"))
    stop(server)


def bytes_supported(triton) -> str | None:
    """None when BYTES inputs reach the model intact here; else why not."""
    client = httpclient.InferenceServerClient(triton.http)
    version = tuple(int(v) for v in client.get_server_metadata()["version"].split(".")[:2])
    client.close()
    if version >= (2, 52) or int(triton.stub_numpy.split(".")[0]) < 2:
        return None
    return (f"Triton {'.'.join(map(str, version))}'s Python backend corrupts BYTES tensors under numpy "
            f"{triton.stub_numpy} (python_backend#384, fixed in 2.52); set {STUB_PATH} to a folder with numpy<2")


def infer(module, address: str, inputs: dict[str, np.ndarray], class_count: int = 0) -> np.ndarray:
    """One request with tritonclient's http or grpc module; a fresh client (they are not thread-safe)."""
    client = module.InferenceServerClient(address)
    try:
        tensors = infer_inputs(module, inputs)
        return client.infer(MODEL, tensors, outputs=[module.InferRequestedOutput("logits", class_count=class_count)]
                            ).as_numpy("logits")
    finally:
        client.close()


def top(row: np.ndarray) -> list[tuple[float, int, str]]:
    return [(float(v), int(i), label) for v, i, label in (c.decode().split(":") for c in row)]


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_pixel_values_and_classification_equal_predictor(triton, module) -> None:
    address = triton.http if module is httpclient else triton.grpc
    client = module.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL, **({"as_json": True} if module is grpcclient else {}))
    client.close()
    assert [(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in meta["inputs"]] == \
        [("pixel_values", "FP32", [-1, 1, -1, -1]), ("image", "BYTES", [-1, 1])]
    x = np.random.default_rng(1).standard_normal((3, 1, 23, 31)).astype(np.float32)
    want = np.stack([p.logits for p in triton.predictor.predict(list(x))])
    np.testing.assert_allclose(infer(module, address, {"pixel_values": x}), want, rtol=1e-5, atol=1e-5)
    classes = infer(module, address, {"pixel_values": x}, class_count=3)
    labels = triton.predictor.labels
    for row, logits in zip(classes, want, strict=True):
        best = np.argsort(-logits, kind="stable")[:3]
        got = top(row)
        assert [i for _, i, _ in got] == list(best) and [lab for _, _, lab in got] == [labels[i] for i in best]
        np.testing.assert_allclose([v for v, _, _ in got], logits[best], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_images_equal_predictor(triton, module) -> None:
    if reason := bytes_supported(triton):
        pytest.skip(reason)
    address = triton.http if module is httpclient else triton.grpc
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(28, 28), (20, 33), (9, 40)]]
    blobs = np.array([[png_bytes(a)] for a in images], dtype=object)
    want = np.stack([p.logits for p in triton.predictor.predict([Image.fromarray(a) for a in images])])
    np.testing.assert_allclose(infer(module, address, {"image": blobs}), want, rtol=1e-5, atol=1e-5)


def test_held_out_digits_equal_vitexport_predict(triton, sample_onnx: Path, tmp_path: Path) -> None:
    """The 450 held-out digits at 28 px as PNG files: top-1 through Triton is, image by image, what
    `vitexport predict --json` says. Sent as the PNG bytes where BYTES work here, else as the pixels
    `vitexport predict` computes from each file (read_image, Predictor.prepare)."""
    images, labels = held_out(28)
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i:03d}.png")
        Image.fromarray(img, mode="L").save(paths[-1])
    result = CliRunner().invoke(cli, ["predict", str(sample_onnx), *map(str, paths), "--json", "--top-k", "1",
                                      "--provider", "cpu"])
    assert result.exit_code == 0, result.stderr
    predicted = [d["top_k"][0]["index"] for d in json.loads(result.stdout)]
    as_bytes = bytes_supported(triton) is None
    served = []
    for start in range(0, len(paths), 16):
        chunk = paths[start : start + 16]
        if as_bytes:
            inputs = {"image": np.array([[p.read_bytes()] for p in chunk], dtype=object)}
        else:
            inputs = {"pixel_values": np.stack([triton.predictor.prepare(read_image(p)) for p in chunk])}
        served += [top(row)[0][1] for row in infer(grpcclient, triton.grpc, inputs, class_count=1)]
    assert served == predicted
    accuracy = np.mean(np.array(served) == labels)
    assert accuracy >= 0.97, accuracy


def test_concurrent_requests_share_executions_and_equal_predictor(triton) -> None:
    """6 threads x 6 requests of mixed sizes: Triton's dynamic batcher hands several requests to one execute call
    (its statistics count fewer executions than requests), and each request gets its own results."""
    sizes = [(28, 28), (20, 24), (33, 17)]
    results, errors = {}, []
    client = httpclient.InferenceServerClient(triton.http)
    before = client.get_inference_statistics(MODEL)["model_stats"][0]
    client.close()

    def worker(t: int) -> None:
        rng = np.random.default_rng(10 + t)
        try:
            for i in range(6):
                h, w = sizes[int(rng.integers(len(sizes)))]
                x = rng.standard_normal((int(rng.integers(1, 4)), 1, h, w)).astype(np.float32)
                results[(t, i)] = (x, infer(httpclient, triton.http, {"pixel_values": x}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:3]
    assert len(results) == 36
    for key, (x, got) in results.items():
        want = np.stack([p.logits for p in triton.predictor.predict(list(x))])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(key))
    client = httpclient.InferenceServerClient(triton.http)
    after = client.get_inference_statistics(MODEL)["model_stats"][0]
    client.close()
    requests = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    executions = after["execution_count"] - before["execution_count"]
    # (a request of the previous test may be counted late, after its response went out: at least 36)
    assert requests >= 36 and executions < requests, (requests, executions)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_bad_requests_are_refused_with_the_reason(triton, module) -> None:
    address = triton.http if module is httpclient else triton.grpc
    big = np.zeros((1, 1, 100, 100), np.float32)  # 13 x 13 patches: over the repository's 64 tokens
    with pytest.raises(InferenceServerException) as info:
        infer(module, address, {"pixel_values": big})
    assert "over" in info.value.message() and "tokens" in info.value.message(), info.value.message()
    assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), info.value.status()
    with pytest.raises(InferenceServerException):  # Triton's own check: the config says 1 channel
        infer(module, address, {"pixel_values": np.zeros((1, 3, 8, 8), np.float32)})
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert infer(module, address, {"pixel_values": x}).shape == (1, 10)  # still serving


def test_onnxruntime_repository_fails_only_for_the_missing_backend(sample_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("vit", "broken"):
        result = CliRunner().invoke(cli, ["triton", str(sample_onnx), "-o", str(repo), "--name", name])
        assert result.exit_code == 0, result.output
    config = repo / "broken" / "config.pbtxt"
    config.write_text(config.read_text().replace("TYPE_FP32", "TYPE_FP3"))  # the control: a config Triton refuses
    server = start(repo, tmp_path / "work", ready=False, args=["--exit-on-error", "false"])
    try:
        client = httpclient.InferenceServerClient(server.http)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        client.close()
    finally:
        stop(server)
    print(f"\nonnxruntime repository on the wheel's tritonserver: {index['vit']['reason']}")
    assert index["vit"]["state"] == "UNAVAILABLE"  # parsed and normalized; the load fails at the backend
    assert "unable to find backend library for backend 'onnxruntime'" in index["vit"]["reason"], index
    # the control never got that far: its config is refused when the repository is read
    assert "state" not in index["broken"], index
    assert f"failed to read text proto from {config.resolve()}" in server.log_text(20000), server.log_text()
