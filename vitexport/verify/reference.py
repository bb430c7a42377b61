"""The PyTorch reference of an exported model: rebuilt from the config and weights an artifact carries (ONNX,
TorchScript), or from the original checkpoint; and how far an artifact's weights moved from it.

Shared by verify and by `bench --compare-torch` / its parity check, which rebuild the same model.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vitexport._util.errors import CheckpointError, UsageError, VerificationError
from vitexport.model.family_config import config_from_dict
from vitexport.model.names import UNUSED_BY_OUTPUT, default_output
from vitexport.onnx.graph import load_onnx
from vitexport.onnx.metadata import transformed_by_ort


def model_from_weights(config: dict[str, Any], state_dict: dict[str, torch.Tensor], where: str,
                       output: str | None = None) -> torch.nn.Module:
    """The reference model from an artifact's config and its weights (an artifact also holds other tensors,
    e.g. ONNX shape constants): the config's keys (any model class), checked before anything is allocated, in
    float32, returning the artifact's ``output`` (default: the model's). The weights that output never reads
    (a features export's head) are zeros when the file lacks them, never more values than the file holds."""
    from vitexport.checkpoint.weights import build_model, check_count, check_tensors, expected_shapes, unused_weights

    cfg = config_from_dict(config)
    output = output or default_output(cfg.num_classes)
    unused = unused_weights(cfg, output, state_dict)
    if sum(math.prod(s) for s in unused.values()) > sum(t.numel() for t in state_dict.values()):
        raise CheckpointError(f"{where}: the config's unused head is larger than the weights the file holds; "
                              "re-export the model")
    state_dict = {**state_dict, **{k: torch.zeros(s) for k, s in unused.items()}}  # never read by this output
    check_count(cfg, state_dict, where)  # a config far larger than the file is refused before keys are listed
    keys = expected_shapes(cfg)
    sd = {k: v for k, v in state_dict.items() if k in keys}
    check_tensors(sd, where)
    model = build_model(cfg, {k: v.float() for k, v in sd.items()}, where)
    model.select_output(output)
    return model


def reference_from_onnx(path: str, metadata: dict[str, Any]) -> torch.nn.Module:
    """The PyTorch model rebuilt from the ONNX file's embedded config and its initializers (by state_dict name).

    Args:
        path: the exported .onnx file (external data beside it is read).
        metadata: its vitexport metadata (`vitexport.onnx.graph.read_metadata`).
    """
    from onnx import numpy_helper

    if not metadata.get("config"):
        raise VerificationError(
            f"{path!r} carries no vitexport config (not exported by vitexport); pass --checkpoint and --config"
        )
    transformed = transformed_by_ort(metadata)
    if transformed:
        raise UsageError(
            f"{path!r} was {transformed} by ONNX Runtime, so its weights are no longer stored under their "
            "PyTorch names; verify it against the original: --checkpoint CHECKPOINT, or --checkpoint with the "
            "float .onnx it was made from"
        )
    proto = load_onnx(path, load_external_data=True)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    return model_from_weights(metadata["config"], weights, f"the weights inside {path!r}", metadata.get("output"))


def reference_from_torchscript(state_dict: dict[str, Any], metadata: dict[str, Any], path: str) -> torch.nn.Module:
    """The PyTorch model rebuilt from a TorchScript archive's config and weights (numpy arrays or tensors)."""
    weights = {k: torch.as_tensor(v) for k, v in state_dict.items()}
    return model_from_weights(metadata["config"], weights, f"the weights inside {path!r}", metadata.get("output"))


def reference_from_file(path: str, config: Any = None) -> torch.nn.Module:
    """``--checkpoint``: the original checkpoint, or the float ONNX export a transformed (int8, optimized)
    model came from (its weights are stored under their PyTorch names)."""
    from vitexport.security.sniff import require

    if require(path, "reference").kind == "onnx":
        from vitexport.onnx.graph import read_metadata

        return reference_from_onnx(path, read_metadata(path))
    from vitexport.checkpoint.load import load_model

    return load_model(path, config=config)


def weight_difference(artifact: torch.nn.Module, reference: torch.nn.Module) -> dict[str, float]:
    """Largest absolute difference per tensor between the artifact's weights and the checkpoint's (non-zero only)."""
    ref = reference.state_dict()
    unused = UNUSED_BY_OUTPUT[artifact.output]  # not in the file: zeros in the rebuilt model (`model_from_weights`)
    out = {}
    for k, v in artifact.state_dict().items():
        if k in ref and v.shape == ref[k].shape and not k.startswith(unused):
            d = (v.float() - ref[k].float()).abs().max().item()
            if d > 0:
                out[k] = d
    return out


__all__ = ["model_from_weights", "reference_from_file", "reference_from_onnx", "reference_from_torchscript",
           "weight_difference"]
