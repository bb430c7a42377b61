"""A KServe ``InferenceService`` for the Triton repository `vitexport triton` writes (`vitexport serve --print-config
kserve`): KServe's Triton runtime (``kserve-tritonserver``, ``modelFormat: triton``) loads the repository from its
storage URI and answers the Open Inference Protocol (``protocolVersion: v2``), model name = the repository's.

The replicas, autoscaling target and GPU come from the same options as `vitexport serve`'s Ray Serve config.
Checked against the KServe SDK's own model classes (tests/unit/serving/test_kserve.py).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from vitexport._util.errors import EnvironmentProblem, UsageError
from vitexport.serving.http.config import INSTALL_HINT, ServeOptions

API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME = "kserve-tritonserver"
GRPC_PORT = 9000  # where KServe's Triton runtime listens for gRPC (h2c)
K8S_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def service_name(model_name: str) -> str:
    """The InferenceService's name for a model: lower case, '_' and '.' as '-' (a Kubernetes DNS label)."""
    name = re.sub(r"[._]", "-", model_name.lower())
    if not K8S_NAME_RE.match(name):
        raise UsageError(f"{model_name!r} gives {name!r}, which cannot name a Kubernetes InferenceService (lower-case "
                         "letters, digits and '-', starting with a letter, at most 63); pass another --name")
    return name


def inference_service(options: ServeOptions, storage_uri: str) -> dict[str, Any]:
    """The InferenceService (as a dict) serving the Triton repository at ``storage_uri`` with ``options``."""
    if not storage_uri or "://" not in storage_uri:
        raise UsageError(f"--storage-uri {storage_uri!r} must be where the repository was uploaded, e.g. "
                         "s3://bucket/models, gs://bucket/models or pvc://claim/models")
    app, scaling = options.app, options.scaling
    lo, hi = scaling.autoscale or (scaling.replicas, scaling.replicas)
    gpu = app.provider in ("cuda", "tensorrt")
    model: dict[str, Any] = {
        "modelFormat": {"name": "triton"},
        "protocolVersion": "v2",
        "runtime": RUNTIME,
        "storageUri": storage_uri,
        "resources": {"limits": {"nvidia.com/gpu": "1"}} if gpu else {"requests": {"cpu": "1"}},
    }
    if options.grpc_port is not None:  # Knative routes one port: gRPC (h2c) instead of HTTP
        model["ports"] = [{"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"}]
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": service_name(app.name)},
        "spec": {"predictor": {"minReplicas": lo, "maxReplicas": hi, "scaleMetric": "concurrency",
                               "scaleTarget": app.max_batch, "model": model}},
    }


def kserve_yaml(options: ServeOptions, storage_uri: str) -> str:
    """`inference_service` as YAML, headed by the command that writes the repository it serves."""
    try:
        import yaml
    except ImportError as exc:
        raise EnvironmentProblem(f"PyYAML is not installed; {INSTALL_HINT}") from exc
    document = inference_service(options, storage_uri)
    app = options.app
    kind = " --kind gpu" if app.provider in ("cuda", "tensorrt") else ""
    write = shlex.join(["vitexport", "triton", app.model, "-o", "REPO", "--name", app.name])
    head = ("# KServe InferenceService, written by `vitexport serve --print-config kserve`, for the Triton "
            "repository of\n"
            f"#   {write} --max-batch-size {app.max_batch}{kind}\n"
            f"# uploaded to {storage_uri} (REPO's content: {app.name}/config.pbtxt, {app.name}/1/model.onnx, ...).\n"
            f"# Clients: POST <the service's URL>/v2/models/{app.name}/infer (Open Inference Protocol).\n")
    return head + yaml.safe_dump(document, sort_keys=False)


__all__ = ["API_VERSION", "RUNTIME", "inference_service", "kserve_yaml", "service_name"]
