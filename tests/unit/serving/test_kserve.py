"""`vitexport serve --print-config kserve`: the InferenceService loads into the KServe SDK's own model classes (and the
Kubernetes classes they refer to) with no key left over, and serializes back to the same document."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from vitexport.cli import cli
from vitexport.serving.triton.kserve import service_name

kserve = pytest.importorskip("kserve", reason="the KServe SDK is not installed (the test extra has it)")
kubernetes_models = pytest.importorskip("kubernetes.client.models", reason="kubernetes is not installed (kserve's)")

PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object}


def load(data, type_name: str, where: str = "InferenceService"):
    """``data`` as an instance of the SDK's ``type_name`` (an OpenAPI model of kserve or kubernetes, a list(...) or
    dict(...) of them, or a primitive); a key the model does not declare, or a value of another type, fails."""
    if type_name.lower().startswith("list["):  # kserve writes list[X], kubernetes List[X]
        assert isinstance(data, list), (where, data)
        return [load(v, type_name[5:-1], f"{where}[{i}]") for i, v in enumerate(data)]
    if type_name.lower().startswith(("dict(", "dict[")):  # dict(str, X) or Dict[str, X]
        assert isinstance(data, dict), (where, data)
        value_type = type_name[5:-1].split(", ", 1)[1]
        return {k: load(v, value_type, f"{where}.{k}") for k, v in data.items()}
    if type_name in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[type_name]) and not (type_name == "int" and isinstance(data, bool)), \
            (where, type_name, data)
        return data
    klass = getattr(kserve.models, type_name, None) or getattr(kubernetes_models, type_name)
    assert isinstance(data, dict), (where, type_name, data)
    unknown = set(data) - set(klass.attribute_map.values())
    assert not unknown, f"{where} ({type_name}) has no field(s) {sorted(unknown)}"
    kwargs = {attr: load(data[key], klass.openapi_types[attr], f"{where}.{key}")
              for attr, key in klass.attribute_map.items() if key in data}
    return klass(**kwargs)  # the SDK's constructors refuse missing required fields and bad enum values


def without_defaults(value):
    """A serialized SDK object without the empty strings its constructors default to (a container's name)."""
    if isinstance(value, dict):
        return {k: without_defaults(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [without_defaults(v) for v in value]
    return value


def print_config(sample_onnx: Path, *args: str):
    return CliRunner().invoke(cli, ["serve", str(sample_onnx), "--print-config", "kserve", *args])


@pytest.mark.parametrize("args", [
    ["--storage-uri", "s3://bucket/models"],
    ["--storage-uri", "pvc://models/repo", "--name", "Digits_ViT.v2", "--autoscale", "0:4", "--provider", "cuda",
     "--max-batch", "8", "--grpc-port", "9001"],
], ids=["defaults", "gpu-autoscale-grpc"])
def test_inference_service_loads_into_the_sdk_classes(sample_onnx: Path, args: list[str]) -> None:
    result = print_config(sample_onnx, *args)
    assert result.exit_code == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    service = load(document, "V1beta1InferenceService")
    assert without_defaults(kserve.ApiClient().sanitize_for_serialization(service)) == document
    model = service.spec.predictor.model
    assert service.api_version == "serving.kserve.io/v1beta1" and service.kind == "InferenceService"
    assert model.protocol_version == "v2" and model.runtime == "kserve-tritonserver"
    assert model.model_format.name == "triton" and model.storage_uri == args[1]
    name = args[args.index("--name") + 1] if "--name" in args else "digits-vit"
    assert service.metadata.name == service_name(name)
    assert f"vitexport triton {sample_onnx} -o REPO --name {name}" in result.stdout  # the repository it serves
    assert f"/v2/models/{name}/infer" in result.stdout
    predictor = service.spec.predictor
    if "--provider" in args:
        assert model.resources.limits == {"nvidia.com/gpu": "1"} and "--kind gpu" in result.stdout
        assert (predictor.min_replicas, predictor.max_replicas, predictor.scale_target) == (0, 4, 8)
        assert [(p.name, p.container_port) for p in model.ports] == [("h2c", 9000)]
    else:
        assert (predictor.min_replicas, predictor.max_replicas) == (1, 1) and not model.ports


def test_the_sdk_check_refuses_a_misplaced_field(sample_onnx: Path) -> None:
    """The check above can fail: a field at the wrong level is named."""
    document = yaml.safe_load(print_config(sample_onnx, "--storage-uri", "s3://b/m").stdout)
    document["spec"]["predictor"]["storageUri"] = document["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(AssertionError, match="storageUri"):
        load(document, "V1beta1InferenceService")


@pytest.mark.parametrize("args, message", [
    ([], "--storage-uri goes with --print-config kserve"),
    (["--storage-uri", "bucket/models"], "must be where the repository was uploaded"),
    (["--storage-uri", "s3://b/m", "--name", "9lives"], "cannot name a Kubernetes InferenceService"),
])
def test_usage_errors(sample_onnx: Path, args: list[str], message: str) -> None:
    result = print_config(sample_onnx, *args)
    assert result.exit_code == 2 and message in result.stderr, (result.exit_code, result.stderr)
