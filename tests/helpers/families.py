"""Representatives of timm's other ViT classes (Eva, distilled DeiT, NaFlexViT), shrunk, paired with timm's model.

Each representative is a family's real timm entrypoint (its layer and position choices) at depth 2 and a small
width, as the library's coverage configs shrink it (vitexport/model/coverage.py), with the same keyword overrides
for timm and for vitexport; weights are random and moved off their init (`perturb_`) so that every parameter
changes the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.helpers.models import perturb_
from vitexport.model.config import get_preset
from vitexport.model.coverage import CLASS_CONFIGS, class_config, family_args, family_config
from vitexport.model.families import FAMILIES
from vitexport.model.family_models import model_for

TOL = 1e-5  # relative to max(1, |reference|): the layers are timm's arithmetic, rounding differs (~1e-7)
# name -> (timm entrypoint, timm keyword overrides): every family of timm's other classes (its representative,
# shrunk as vitexport/model/coverage.py shrinks it) and the class code paths no family takes (CLASS_CONFIGS)
REPRESENTATIVES: dict[str, tuple[str, dict[str, Any]]] = {
    **{f.name: (f.representative, family_args(f.name)) for f in FAMILIES if f.model_class != "vit"},
    **{name: (next(f.representative for f in FAMILIES if f.name == family), {**family_args(family), **change})
       for name, (family, change) in CLASS_CONFIGS.items()},
}
SIZES = [(24, 40), (17, 45), (7, 5), (1, 1), (50, 31), (41, 57)]  # native, not multiples, < one patch, larger


def overrides(name: str) -> dict[str, Any]:
    return dict(REPRESENTATIVES[name][1])


def config(name: str) -> Any:
    """The library's config of a representative (`vitexport.model.coverage`)."""
    return class_config(name) if name in CLASS_CONFIGS else family_config(name)


def timm_reference(name: str) -> torch.nn.Module:
    """timm's model of a representative, dynamic size and padding on (NaFlexVit is always dynamic in size)."""
    import timm

    arch = REPRESENTATIVES[name][0]
    dynamic = {"dynamic_img_pad": True} if get_preset(arch).CLASS == "naflexvit" else {
        "dynamic_img_size": True, "dynamic_img_pad": True}
    return timm.create_model(arch, pretrained=False, **dynamic, **overrides(name)).eval()


def pair(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, timm's) for a representative, the same random weights."""
    torch.manual_seed(seed)
    ours = perturb_(model_for(config(name)), seed).eval()
    assert ours.config == get_preset(REPRESENTATIVES[name][0], **overrides(name))
    ref = timm_reference(name)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def rel_err(out: torch.Tensor | np.ndarray, ref: torch.Tensor) -> float:
    out_t = torch.as_tensor(out)
    return float((out_t - ref).abs().max() / max(1.0, ref.abs().max().item()))


def openvino_runner(path: Path) -> Any:
    """A function running the ONNX file on OpenVINO's CPU plugin in f32, or None without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return None
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: x})[0])

    return run
