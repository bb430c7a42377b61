"""The scale-out path: a Ray cluster started with ``ray start --head`` (loopback node address, its own ports,
temp folder and auth token), `vitexport serve --address` deploying to it, then the printed config deployed
with ``serve deploy``; both answer tritonclient. The head is stopped and every process it started is checked."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.helpers.serving import VITEXPORT, ProcessTree, env, free_ports, require_ray, wait_ready

require_ray()
pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.timeout(600)]  # Ray starts: slow under load

import tritonclient.http as httpclient  # noqa: E402
import yaml  # noqa: E402 - a dependency of ray[serve]

from vitexport.serving.predictor import Predictor  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster():
    ray_exe = BIN / "ray"
    if not ray_exe.exists():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    gcs, dash, client, agent, agent_grpc, runtime_env, metrics, node, objects, http = free_ports(10)
    temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths must stay under 108 characters
    # an auth token of its own (Ray's default token file is shared by every cluster of the user), fast drain
    environ = env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
                  RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="1")
    proc = subprocess.Popen(
        [str(ray_exe), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
         f"--node-manager-port={node}", f"--object-manager-port={objects}", f"--temp-dir={temp}", "--num-cpus=2",
         "--disable-usage-stats"],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tree = ProcessTree(proc)
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:  # `ray start --block` says so once the head is up
            tree.snapshot()
            if "block forever" in line or time.monotonic() > deadline:
                break
        assert proc.poll() is None, "ray start --head exited"
        yield SimpleNamespace(address=f"127.0.0.1:{gcs}", dashboard=f"http://127.0.0.1:{dash}", http=http,
                              env=environ, tree=tree)
    finally:
        seconds, code, left = tree.stop(signal.SIGTERM, timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
    assert not left and seconds < 30, (seconds, code, left)


def _logits(port: int, name: str, x: np.ndarray) -> np.ndarray:
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    inputs = [httpclient.InferInput("pixel_values", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x)
    return triton.infer(name, inputs).as_numpy("logits")


def _wait_model(port: int, name: str, timeout: float = 90) -> None:
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if triton.is_model_ready(name):
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"model {name!r} not ready on port {port} within {timeout} s")


def test_deploy_with_address_then_with_the_printed_config(cluster, sample_onnx: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 1, 21, 30)).astype(np.float32)
    want = np.stack([p.logits for p in Predictor(str(sample_onnx), provider="cpu").predict(list(x))])
    common = ["--provider", "cpu", "--port", str(cluster.http)]

    deployed = subprocess.run([*VITEXPORT, "serve", str(sample_onnx), "--name", "digits", "--address",
                               cluster.address, "--replicas", "2", *common],
                              env=cluster.env, capture_output=True, text=True, timeout=180)
    cluster.tree.snapshot()
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert f"http://127.0.0.1:{cluster.http}/v2/models/digits/infer" in deployed.stdout and "deployed" in \
        deployed.stdout
    wait_ready(f"http://127.0.0.1:{cluster.http}", cluster.tree.proc)  # the driver is gone, the app is not
    np.testing.assert_allclose(_logits(cluster.http, "digits", x), want, rtol=1e-5, atol=1e-5)

    printed = subprocess.run([*VITEXPORT, "serve", str(sample_onnx), "--name", "digits-config", "--max-batch", "4",
                              "--print-config", *common], env=cluster.env, capture_output=True, text=True,
                             timeout=60)
    assert printed.returncode == 0, printed.stderr
    config = yaml.safe_load(printed.stdout)
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)  # what `serve deploy` and KubeRay's serveConfigV2 accept
    (tmp_path / "serve.yaml").write_text(printed.stdout)
    # a fresh start for the config, as on a new cluster (`serve deploy` keeps apps that `serve.run` deployed)
    stopped = subprocess.run([str(BIN / "serve"), "shutdown", "-y", "--address", cluster.dashboard], env=cluster.env,
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    result = subprocess.run([str(BIN / "serve"), "deploy", str(tmp_path / "serve.yaml"), "--address",
                             cluster.dashboard], env=cluster.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    try:
        _wait_model(cluster.http, "digits-config")
    except AssertionError as exc:
        status = subprocess.run([str(BIN / "serve"), "status", "--address", cluster.dashboard], env=cluster.env,
                                capture_output=True, text=True, timeout=60)
        raise AssertionError(f"{exc}\nserve status:\n{status.stdout}{status.stderr}") from None
    cluster.tree.snapshot()
    np.testing.assert_allclose(_logits(cluster.http, "digits-config", x), want, rtol=1e-5, atol=1e-5)
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{cluster.http}")
    with pytest.raises(Exception, match="unknown model 'digits'"):
        triton.get_model_metadata("digits")  # only the config's application is left
