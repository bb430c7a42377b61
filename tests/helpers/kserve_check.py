"""Load a KServe InferenceService (YAML on stdin) into the KServe SDK's model classes; print a JSON verdict.

Run as ``python -m tests.helpers.kserve_check`` in its own interpreter: the SDK registers the protocol's
``inference.*`` protobuf messages under another file name than tritonclient.grpc does, and protobuf refuses
both in one process (``duplicate symbol 'inference.ServerLiveRequest'``).
"""

from __future__ import annotations

import json
import sys

import yaml

PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object}


def load(data, type_name: str, where: str = "InferenceService"):
    """``data`` as an instance of the SDK's ``type_name`` (an OpenAPI model of kserve or kubernetes, a list or dict
    of them, or a primitive); a key the model does not declare, or a value of another type, raises ValueError."""
    import kserve
    from kubernetes.client import models as kubernetes_models

    if type_name.lower().startswith("list["):  # kserve writes list[X], kubernetes List[X]
        if not isinstance(data, list):
            raise ValueError(f"{where}: expected a list, got {data!r}")
        return [load(v, type_name[5:-1], f"{where}[{i}]") for i, v in enumerate(data)]
    if type_name.lower().startswith(("dict(", "dict[")):  # dict(str, X) or Dict[str, X]
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping, got {data!r}")
        value_type = type_name[5:-1].split(", ", 1)[1]
        return {k: load(v, value_type, f"{where}.{k}") for k, v in data.items()}
    if type_name in PRIMITIVES:
        if not isinstance(data, PRIMITIVES[type_name]) or (type_name == "int" and isinstance(data, bool)):
            raise ValueError(f"{where}: expected {type_name}, got {data!r}")
        return data
    klass = getattr(kserve.models, type_name, None) or getattr(kubernetes_models, type_name)
    if not isinstance(data, dict):
        raise ValueError(f"{where} ({type_name}): expected a mapping, got {data!r}")
    if unknown := set(data) - set(klass.attribute_map.values()):
        raise ValueError(f"{where} ({type_name}) has no field(s) {sorted(unknown)}")
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


def main() -> None:
    import kserve

    document = yaml.safe_load(sys.stdin.read())
    try:
        service = load(document, "V1beta1InferenceService")
    except ValueError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return
    back = without_defaults(kserve.ApiClient().sanitize_for_serialization(service))
    model = service.spec.predictor.model
    print(json.dumps({"ok": True, "roundtrip": back == document, "kserve": kserve.__version__ if hasattr(
        kserve, "__version__") else "?", "model": {"format": model.model_format.name, "runtime": model.runtime,
                                                    "protocol": model.protocol_version}}))


if __name__ == "__main__":
    main()
