"""`vitexport serve` on a local Ray instance, through the official tritonclient.http client.

One server per module (Ray takes ~10 s to start here), bound to 127.0.0.1 on a free port, stopped by
SIGINT at the end with its process tree checked; the replica-fault test runs its own two-replica server
and stops it with SIGTERM. Request loops are bounded in count and time.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import secrets
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from samples.digits_data import held_out
from tests.helpers.serving import listening, png_bytes, replica_pids, require_ray, start_server, wait_replicas

require_ray()
pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.timeout(600)]  # Ray starts: slow under load

import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from vitexport.cli import cli  # noqa: E402
from vitexport.serving.predictor import Predictor  # noqa: E402

MODEL = "digits"


@pytest.fixture(scope="module")
def server(sample_onnx: Path, tmp_path_factory: pytest.TempPathFactory):
    """The digits sample served with a bearer token, batches of 8, a 4 MB body limit; stopped with SIGINT."""
    token = tmp_path_factory.mktemp("serve") / "token"
    token.write_text(secrets.token_urlsafe(24) + "\n")
    url, tree = start_server(sample_onnx, "--name", MODEL, "--provider", "cpu", "--max-batch", "8",
                             "--batch-wait-ms", "10", "--max-body-mb", "4", "--token-file", str(token))
    header = lines_until(tree.proc.stdout, "stop ")  # what it printed until it was ready
    yield SimpleNamespace(url=url, address=url.removeprefix("http://"), token=token.read_text().strip(), tree=tree,
                          header=header)
    seconds, code, left = tree.stop(signal.SIGINT)
    out, err = header + tree.proc.stdout.read(), tree.proc.stderr.read()
    if found := re.search(r"^ray log   (\S+) ", header, re.M):
        Path(found.group(1)).unlink(missing_ok=True)
    print(f"\nSIGINT: the server exited {code} after {seconds:.1f} s, {len(left)} processes left")
    assert code == 0 and not left and seconds < 30, (seconds, code, left)
    assert f"{url}/v2/models/{MODEL}/infer" in out and "curl -s" in out and "Authorization: Bearer" in out, out
    # Ray's warnings and its coloured shutdown lines went to the log file, not to this terminal
    assert "RAY_AUTH_MODE" not in out + err and "\x1b[" not in out + err and "ServeController" not in out, (out, err)


def lines_until(stream, prefix: str, timeout: float = 30.0) -> str:
    """What ``stream`` holds up to the line starting with ``prefix`` (read in a thread: bounded in time)."""
    lines: list[str] = []

    def read() -> None:
        for line in stream:
            lines.append(line)
            if line.startswith(prefix):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return "".join(lines)


def test_serve_says_what_it_is_doing_and_keeps_rays_noise_in_a_log(server) -> None:
    """A start line at once, where Ray's own output goes, and readiness with the time it took; Ray's messages are
    in that log file (the fixture checks the terminal at the end: none there, at start or at shutdown)."""
    lines = server.header.splitlines()
    assert lines[0].startswith("starting  Ray Serve for ") and lines[1].startswith("ray log   "), lines
    assert re.fullmatch(r"started   in \d+\.\d s, ready for requests", lines[2]), lines
    log = Path(lines[1].split()[2])
    assert log.is_file() and log.stat().st_size > 0, log
    assert "RAY_AUTH_MODE" not in server.header and "\x1b[" not in server.header


def client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=server.address)  # one per thread: clients are not thread-safe


def auth(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def infer_pixels(triton, server, x: np.ndarray, binary: bool = True) -> np.ndarray:
    inputs = [httpclient.InferInput("pixel_values", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
    return triton.infer(MODEL, inputs, outputs=outputs, headers=auth(server)).as_numpy("logits")


def infer_images(triton, server, blobs: list[bytes], class_count: int = 0) -> np.ndarray:
    inputs = [httpclient.InferInput("image", [len(blobs)], "BYTES")]
    inputs[0].set_data_from_numpy(np.array(blobs, dtype=object), binary_data=True)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=True, class_count=class_count)]
    return triton.infer(MODEL, inputs, outputs=outputs, headers=auth(server)).as_numpy("logits")


def digit_images(sizes: list[tuple[int, int]], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w), dtype=np.uint8) for h, w in sizes]


def test_tritonclient_both_input_kinds_equal_predictor(server, sample_onnx: Path) -> None:
    triton = client(server)
    assert triton.is_server_live() and triton.is_server_ready()  # health needs no token
    assert triton.is_model_ready(MODEL, headers=auth(server))
    meta = triton.get_model_metadata(MODEL, headers=auth(server))
    assert meta["inputs"][0] == {"name": "pixel_values", "datatype": "FP32", "shape": [-1, 1, -1, -1]}
    predictor = Predictor(str(sample_onnx), provider="cpu")
    images = digit_images([(28, 28), (20, 33), (28, 28), (9, 40)], seed=1)
    want = np.stack([p.logits for p in predictor.predict([Image.fromarray(a) for a in images])])
    np.testing.assert_allclose(infer_images(triton, server, [png_bytes(a) for a in images]), want,
                               rtol=1e-5, atol=1e-5)
    x = np.random.default_rng(2).standard_normal((3, 1, 23, 31)).astype(np.float32)
    want = np.stack([p.logits for p in predictor.predict(list(x))])
    for binary in (True, False):
        np.testing.assert_allclose(infer_pixels(triton, server, x, binary), want, rtol=1e-5, atol=1e-5)


def test_digits_accuracy_equals_vitexport_predict(server, sample_onnx: Path, tmp_path: Path) -> None:
    """The 450 held-out digits at 28 px: top-1 through the server (classification extension) is, image by
    image, what `vitexport predict --json` says, and so is the accuracy."""
    images, labels = held_out(28)
    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"{i:03d}.png"))
        Image.fromarray(img, mode="L").save(paths[-1])
    result = CliRunner().invoke(cli, ["predict", str(sample_onnx), *paths, "--json", "--top-k", "1",
                                      "--provider", "cpu"])
    assert result.exit_code == 0, result.stderr
    predicted = [d["top_k"][0]["index"] for d in json.loads(result.stdout)]
    triton = client(server)
    served = []
    for start in range(0, len(paths), 50):
        blobs = [Path(p).read_bytes() for p in paths[start : start + 50]]
        top = infer_images(triton, server, blobs, class_count=1)
        served += [int(row[0].decode().split(":")[1]) for row in top]
    assert served == predicted
    accuracy = np.mean(np.array(served) == labels)
    assert accuracy == np.mean(np.array(predicted) == labels) and accuracy >= 0.97, accuracy


def test_concurrent_clients_mixed_sizes_equal_predictor(server, sample_onnx: Path) -> None:
    """8 threads, each with its own client, 10 requests each of seeded random sizes and both input kinds."""
    predictor = Predictor(str(sample_onnx), provider="cpu")
    sizes = [(28, 28), (28, 28), (20, 20), (33, 17), (28, 28), (40, 40), (12, 30)]
    results: dict[tuple[int, int], np.ndarray] = {}
    expected: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        triton = client(server)
        rng = np.random.default_rng(100 + t)
        try:
            for i in range(10):
                picked = [sizes[j] for j in rng.integers(0, len(sizes), int(rng.integers(1, 4)))]
                images = digit_images(picked, seed=1000 * t + i)
                if i % 2:
                    got = infer_images(triton, server, [png_bytes(a) for a in images])
                    want = [p.logits for p in predictor.predict([Image.fromarray(a) for a in images])]
                else:
                    x = np.stack([(a[None].astype(np.float32) / 255 - 0.5) for a in images[:1]])
                    got = infer_pixels(triton, server, x)
                    want = [p.logits for p in predictor.predict(list(x))]
                results[(t, i)], expected[(t, i)] = got, np.stack(want)
        except BaseException as exc:  # reported below, with the thread's index
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:3]
    assert len(results) == 80
    for key, got in results.items():
        np.testing.assert_allclose(got, expected[key], rtol=1e-5, atol=1e-5, err_msg=str(key))


def _raw(server, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
    host, port = server.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers={**auth(server), **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_ray_routes_are_not_exposed(server) -> None:
    """Ray Serve's proxy answers /-/routes (naming the model) and /-/healthz itself, before any replica could ask for
    the token: the local server hides them (issue 22, row 4); its own health checks stay open."""
    for path in ("/-/routes", "/-/healthz", "/-/routes/"):
        for headers in ({"Authorization": ""}, {}):  # without the token, and with it
            status, payload = _raw(server, "GET", path, headers=headers)
            assert status == 404 and MODEL not in json.dumps(payload), (path, status, payload)
    assert _raw(server, "GET", "/v2/health/ready", headers={"Authorization": ""}) == (200, {"ready": True})


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server) -> None:
    infer = f"/v2/models/{MODEL}/infer"
    cases = [
        ("POST", infer, b"{broken", {}, 400, "malformed JSON"),
        ("POST", infer, json.dumps({"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 3, 4, 4],
                                                "data": [0] * 48}]}).encode(), {}, 400, "[B, 1, H, W]"),
        ("POST", infer, json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                "data": ["bm90IGFuIGltYWdl"]}]}).encode(), {}, 400, "not a PNG"),
        ("POST", infer, b"{" + b" " * (5 * 2**20) + b"}", {}, 413, "over this server's limit"),
        ("POST", "/v2/models/other/infer", b"{}", {}, 404, "unknown model"),
        ("GET", infer, b"", {}, 405, "takes POST"),
        ("GET", f"/v2/models/{MODEL}", b"", {"Authorization": "Bearer nope"}, 401, "bearer token"),
    ]
    for method, path, body, headers, status, message in cases:
        got, payload = _raw(server, method, path, body, headers)
        assert got == status and message in payload.get("error", ""), (path, got, payload)
    triton = client(server)
    with pytest.raises(InferenceServerException) as info:  # tritonclient shows the server's message
        bad = httpclient.InferInput("pixels", [1, 1, 4, 4], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 1, 4, 4), np.float32))
        triton.infer(MODEL, [bad], headers=auth(server))
    assert info.value.status() == "400" and "unknown input 'pixels'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata(MODEL)  # no token
    assert info.value.status() == "401"
    assert triton.is_server_ready()
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert infer_pixels(triton, server, x).shape == (1, 10)


def test_binds_to_loopback_by_default(server, sample_onnx: Path) -> None:
    """The module's server was started without --host: it listens on 127.0.0.1 only, and so does the config."""
    port = int(server.address.split(":")[1])
    assert listening(port) == {"0100007F"}, listening(port)  # 127.0.0.1, nothing on 0.0.0.0 or ::
    result = CliRunner().invoke(cli, ["serve", str(sample_onnx), "--print-config"])
    assert result.exit_code == 0, result.stderr
    import yaml

    assert yaml.safe_load(result.stdout)["http_options"] == {"host": "127.0.0.1", "port": 8000}


def test_deployment_batches_equal_sizes_across_requests(sample_onnx: Path) -> None:
    """The real deployment class with its batcher, in-process: concurrent requests of mixed sizes run as one
    engine call per size (at most --max-batch images), and equal the Predictor."""
    from vitexport.serving.http.app import VitexportModel
    from vitexport.serving.http.service import HttpRequest

    rng = np.random.default_rng(4)
    sizes = [(28, 28)] * 7 + [(20, 24)] * 3 + [(33, 17)]
    inputs = [rng.standard_normal((1, 1, h, w)).astype(np.float32) for h, w in sizes]
    expected = Predictor(str(sample_onnx), provider="cpu")
    want = [expected.predict([x[0]])[0].logits for x in inputs]

    async def served(max_batch: int) -> tuple[list[np.ndarray], list[tuple[list, list]]]:
        replica = VitexportModel.func_or_class({"model": str(sample_onnx), "name": "d", "provider": "cpu",
                                                "max_batch": max_batch, "batch_wait_ms": 300})
        runs: list[tuple[int, ...]] = []
        batches: list[tuple[list, list]] = []  # (chunk shapes, engine-run shapes) per batch of the queue
        service = replica.service
        engine_run, run_chunks = service.predictor.engine.run, service.run_chunks
        service.predictor.engine.run = lambda x: (runs.append(x.shape), engine_run(x))[1]

        def spy_chunks(stacks):
            start = len(runs)
            out = run_chunks(stacks)
            batches.append(([s.shape for s in stacks], runs[start:]))
            return out

        replica.batcher.run = spy_chunks

        def request(x: np.ndarray) -> HttpRequest:
            inp = httpclient.InferInput("pixel_values", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            body, size = httpclient.InferenceServerClient.generate_request_body([inp])
            return HttpRequest.of("POST", "/v2/models/d/infer", {"Inference-Header-Content-Length": str(size)}, body)

        responses = await asyncio.wait_for(asyncio.gather(*(service.handle(request(x)) for x in inputs)), 60)
        outs = [httpclient.InferenceServerClient.parse_response_body(
            r.body, header_length=int(r.headers["Inference-Header-Content-Length"])).as_numpy("logits")[0]
            for r in responses]
        return outs, batches

    async def both() -> list:
        return [await served(4), await served(1)]

    results = asyncio.run(both())
    for max_batch, (outs, batches) in zip((4, 1), results, strict=True):
        for got, ref in zip(outs, want, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        for chunks, runs in batches:  # within a batch: one engine run per image size, holding all its images
            counts: dict[tuple[int, ...], int] = {}
            for n, *shape in chunks:
                counts[tuple(shape)] = counts.get(tuple(shape), 0) + n
            assert sorted((tuple(shape), n) for n, *shape in runs) == sorted((k, v) for k, v in counts.items())
            assert max(counts.values()) <= max_batch, chunks
        assert sum(len(chunks) for chunks, _ in batches) == len(sizes)
        if max_batch == 1:  # one image per engine run
            assert sum(len(runs) for _, runs in batches) == len(sizes)
        else:  # requests shared engine runs: 11 requests in at most 3 + 3 + 1 runs
            assert sum(len(runs) for _, runs in batches) <= 7, batches


def test_replica_killed_under_load_is_replaced(sample_onnx: Path) -> None:
    """SIGKILL one of two replicas while 4 clients send requests: Ray starts a new one, the server serves
    again, and SIGTERM under load then stops everything within seconds. The failed requests and the recovery
    time are printed (benchmarks/serve_bench.py --fault measures them)."""
    url, tree = start_server(sample_onnx, "--name", MODEL, "--provider", "cpu", "--replicas", "2")
    address = url.removeprefix("http://")
    stop, threads = threading.Event(), []
    try:
        before = wait_replicas(tree, MODEL, 2)
        assert len(before) == 2, before
        log, lock = [], threading.Lock()

        def load() -> None:
            triton = httpclient.InferenceServerClient(url=address, network_timeout=20)
            x = np.zeros((1, 1, 28, 28), np.float32)
            inputs = [httpclient.InferInput("pixel_values", [1, 1, 28, 28], "FP32")]
            inputs[0].set_data_from_numpy(x)
            for _ in range(2000):  # bounded; the test stops it much earlier
                if stop.is_set():
                    return
                try:
                    triton.infer(MODEL, inputs)
                    ok = True
                except Exception:
                    ok = False
                with lock:
                    log.append((time.monotonic(), ok))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for th in threads:
            th.start()
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(before[0], signal.SIGKILL)
        deadline = killed_at + 60
        while time.monotonic() < deadline:
            now = replica_pids(tree, MODEL)
            if len(now) == 2 and before[0] not in now:
                break
            time.sleep(0.2)
        replaced_after = time.monotonic() - killed_at
        time.sleep(2.0)
        stop.set()
        for th in threads:
            th.join(30)
        after = replica_pids(tree, MODEL)
        assert len(after) == 2 and before[0] not in after, "the replica was not replaced"
        failed = [t for t, ok in log if not ok]
        print(f"\nreplica killed under load: {len(failed)} of {len(log)} requests failed, the last "
              f"{(max(failed) - killed_at) if failed else 0:.2f} s after the kill; new replica process after "
              f"{replaced_after:.1f} s")
        assert all(ok for t, ok in log if t > killed_at + replaced_after + 1.0), "requests still fail after recovery"
        triton = httpclient.InferenceServerClient(url=address)
        x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
        inputs = [httpclient.InferInput("pixel_values", [2, 1, 28, 28], "FP32")]
        inputs[0].set_data_from_numpy(x)
        want = np.stack([p.logits for p in Predictor(str(sample_onnx), provider="cpu").predict(list(x))])
        for _ in range(6):  # both replicas answer (the router spreads requests)
            np.testing.assert_allclose(triton.infer(MODEL, inputs).as_numpy("logits"), want, rtol=1e-5, atol=1e-5)
        stop.clear()  # SIGTERM arrives (below) while 4 clients are sending requests
        threads = [threading.Thread(target=load) for _ in range(4)]
        for th in threads:
            th.start()
        time.sleep(0.5)
    finally:
        seconds, code, left = tree.stop(signal.SIGTERM)
        stop.set()
        for th in threads:
            th.join(30)
    print(f"SIGTERM under load: the server exited {code} after {seconds:.1f} s, {len(left)} processes left")
    assert code == 0 and not left and seconds < 30, (seconds, code, left)


def test_print_config_is_a_serve_deploy_config(sample_onnx: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    monkeypatch.chdir(sample_onnx.parent)
    (tmp_path / "token").write_text("t0ken\n")
    result = CliRunner().invoke(cli, ["serve", sample_onnx.name, "--print-config", "--autoscale", "0:3", "--host",
                                      "0.0.0.0", "--port", "9000", "--provider", "cuda", "--max-batch", "8",
                                      "--token-file", str(tmp_path / "token")])
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    ServeDeploySchema.model_validate(config)
    assert config["http_options"] == {"host": "0.0.0.0", "port": 9000}
    app = config["applications"][0]
    assert app["name"] == "digits-vit" and app["route_prefix"] == "/"
    assert app["import_path"] == "vitexport.serving.http.app:build_app"
    assert app["args"]["model"] == str(sample_onnx.resolve())  # absolute: replicas run elsewhere
    assert app["args"]["token_file"] == str((tmp_path / "token").resolve()) and "t0ken" not in result.stdout
    deployment = app["deployments"][0]
    assert deployment["autoscaling_config"]["min_replicas"] == 0 and deployment["autoscaling_config"][
        "max_replicas"] == 3 and "num_replicas" not in deployment
    assert deployment["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1}
    assert deployment["max_ongoing_requests"] >= 8  # room for a full batch


def test_build_app_takes_the_config_args(sample_onnx: Path) -> None:
    from vitexport.serving.http.app import build_app

    app = build_app({"model": str(sample_onnx), "name": "x", "max_batch": 4})
    assert app is not None
    with pytest.raises(ValueError, match="unknown vitexport serve argument"):
        build_app({"model": str(sample_onnx), "name": "x", "max_batches": 4})


@pytest.fixture
def ray_init_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    import ray

    calls: list = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append((a, k)) or pytest.fail("ray.init was called"))
    return calls


@pytest.mark.parametrize("content, message, code", [("", "must hold one token", 1),
                                                    ("two words", "must hold one token", 1),
                                                    (None, "cannot read the token file", 2)])
def test_bad_token_file_fails_before_ray_starts(sample_onnx: Path, tmp_path: Path, ray_init_calls, content,
                                                message: str, code: int) -> None:
    """A token file that is not there is usage (2); one whose content is unusable is the work failing (1)."""
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    result = CliRunner().invoke(cli, ["serve", str(sample_onnx), "--token-file", str(token), "--provider", "cpu"])
    assert result.exit_code == code and message in result.stderr, (result.exit_code, result.stderr)
    assert not ray_init_calls


def test_missing_model_fails_before_ray_starts(tmp_path: Path, ray_init_calls) -> None:
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "nope.onnx"), "--provider", "cpu"])
    assert result.exit_code == 2 and "does not exist" in result.stderr, result.stderr
    assert not ray_init_calls
