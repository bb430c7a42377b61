"""`vitexport serve --print-config kserve`: the InferenceService loads into the KServe SDK's own model classes (and the
Kubernetes classes they refer to) with no key left over, and serializes back to the same document.

The SDK runs in its own interpreter (tests/helpers/kserve_check.py): it and tritonclient.grpc register the
protocol's protobuf messages under different file names, which protobuf refuses in one process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.helpers.models import ROOT
from vitexport.cli import cli
from vitexport.serving.triton.kserve import service_name

needs_kserve = pytest.mark.skipif(importlib.util.find_spec("kserve") is None,
                                  reason="the KServe SDK is not installed (the test extra has it)")


def sdk_check(document_text: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-m", "tests.helpers.kserve_check"], input=document_text, text=True,
                       capture_output=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.splitlines()[-1])


def print_config(sample_onnx: Path, *args: str):
    return CliRunner().invoke(cli, ["serve", str(sample_onnx), "--print-config", "kserve", *args])


@needs_kserve
@pytest.mark.parametrize("args", [
    ["--storage-uri", "s3://bucket/models"],
    ["--storage-uri", "pvc://models/repo", "--name", "Digits_ViT.v2", "--autoscale", "0:4", "--provider", "cuda",
     "--max-batch", "8", "--grpc-port", "9001"],
], ids=["defaults", "gpu-autoscale-grpc"])
def test_inference_service_loads_into_the_sdk_classes(sample_onnx: Path, args: list[str]) -> None:
    result = print_config(sample_onnx, *args)
    assert result.exit_code == 0, result.stderr
    verdict = sdk_check(result.stdout)
    assert verdict["ok"] and verdict["roundtrip"], verdict
    assert verdict["model"] == {"format": "triton", "runtime": "kserve-tritonserver", "protocol": "v2"}
    document = yaml.safe_load(result.stdout)
    assert document["apiVersion"] == "serving.kserve.io/v1beta1" and document["kind"] == "InferenceService"
    name = args[args.index("--name") + 1] if "--name" in args else "digits-vit"
    assert document["metadata"]["name"] == service_name(name)
    assert f"vitexport triton {sample_onnx} -o REPO --name {name}" in result.stdout  # the repository it serves
    assert f"/v2/models/{name}/infer" in result.stdout
    predictor = document["spec"]["predictor"]
    model = predictor["model"]
    assert model["storageUri"] == args[1]
    if "--provider" in args:
        assert model["resources"] == {"limits": {"nvidia.com/gpu": "1"}} and "--kind gpu" in result.stdout
        assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleTarget"]) == (0, 4, 8)
        assert model["ports"] == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    else:
        assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1) and "ports" not in model


@needs_kserve
def test_the_sdk_check_refuses_a_misplaced_field(sample_onnx: Path) -> None:
    """The check above can fail: a field at the wrong level is named."""
    document = yaml.safe_load(print_config(sample_onnx, "--storage-uri", "s3://b/m").stdout)
    document["spec"]["predictor"]["storageUri"] = document["spec"]["predictor"]["model"].pop("storageUri")
    verdict = sdk_check(yaml.safe_dump(document))
    assert not verdict["ok"] and "storageUri" in verdict["error"], verdict


@pytest.mark.parametrize("args, message", [
    ([], "--storage-uri goes with --print-config kserve"),
    (["--storage-uri", "bucket/models"], "must be where the repository was uploaded"),
    (["--storage-uri", "s3://b/m", "--name", "9lives"], "cannot name a Kubernetes InferenceService"),
])
def test_usage_errors(sample_onnx: Path, args: list[str], message: str) -> None:
    result = print_config(sample_onnx, *args)
    assert result.exit_code == 2 and message in result.stderr, (result.exit_code, result.stderr)
