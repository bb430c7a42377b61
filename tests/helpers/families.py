"""Representatives of timm's other ViT classes (Eva, distilled DeiT, NaFlexViT), shrunk, paired with timm's model.

Each representative is a real timm entrypoint (its layer and position choices) at depth 2 and a small
width, with the same keyword overrides for timm and for vitexport; weights are random and moved off
their init (`perturb_`) so that every parameter changes the output.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.helpers.models import perturb_
from vitexport.model.config import get_preset, preset_entry
from vitexport.model.family_models import model_for

TOL = 1e-5  # relative to max(1, |reference|): the layers are timm's arithmetic, rounding differs (~1e-7)
SMALL = dict(depth=2, embed_dim=64, num_heads=4, num_classes=5, patch_size=8, img_size=(24, 40))  # native 3x5
NAFLEX_SMALL = {**SMALL, "pos_embed_grid_size": (3, 5)}
# name -> (timm entrypoint, overrides beyond SMALL / NAFLEX_SMALL): one per position scheme and layout
REPRESENTATIVES: dict[str, tuple[str, dict[str, Any]]] = {
    "eva02-rope": ("eva02_small_patch14_224", {}),  # RoPE 'cat' ij + ref grid, abs table, packed SwiGLU, q/v bias
    "eva02-clip": ("eva02_base_patch16_clip_224", {"img_size": (40, 24)}),  # split q/k/v, SwiGLU + norms, token
    "eva-abs": ("eva_giant_patch14_224", {"mlp_ratio": 3.0}),  # EVA-01: absolute table only, GELU MLP, fc_norm
    "eva02-post-norm": ("eva02_enormous_patch14_clip_224", {"mlp_ratio": 3.0}),  # residual post-norm blocks
    "dinov3": ("vit_small_patch16_dinov3_qkvb", {}),  # normalized-coordinate RoPE, 4 registers, layer scale
    "dinov3-swiglu": ("vit_huge_plus_patch16_dinov3", {"mlp_ratio": 2.9}),  # SwiGLU width aligned to 8
    "pe-core": ("vit_pe_core_base_patch16_224", {"attn_pool_num_heads": 4}),  # PE RoPE xy + offset, attention pool
    "pe-core-nocls": ("vit_pe_core_gigantic_patch14_448", {"attn_pool_num_heads": 4}),  # no class token
    "pe-spatial": ("vit_pe_spatial_base_patch16_512", {"img_size": (32, 24)}),  # no final norm, no fc_norm
    "rope-axial": ("vit_small_patch16_rope_224", {}),  # RoPE-ViT axial, no absolute table
    "rope-mixed": ("vit_small_patch16_rope_mixed_224", {}),  # learned per-block frequencies
    "rope-axial-ape": ("vit_small_patch16_rope_ape_224", {}),  # axial RoPE + absolute table (no class row)
    "rope-mixed-ape": ("vit_small_patch16_rope_mixed_ape_224", {}),
    "sbb-rope": ("vit_betwixt_patch16_rope_reg4_gap_256", {}),  # registers, no class token, RoPE only
    "sapiens2": ("vit_base_patch16_sapiens2", {"num_kv_heads": (4, 2)}),  # GQA, RMSNorm q/k norm, attention-only LS
    "deit-distilled": ("deit_tiny_distilled_patch16_224", {"embed_dim": 48, "num_heads": 3}),
    "naflex-learned": ("naflexvit_base_patch16_gap", {}),  # linear patches, bicubic table, registers, fc_norm
    "naflex-ar": ("naflexvit_base_patch16_par_gap", {"pos_embed_grid_size": (4, 4)}),  # square resample + crop
    "naflex-factorized": ("naflexvit_base_patch16_parfac_gap", {}),  # row + column tables, linear resampling
    "naflex-siglip": ("naflexvit_base_patch16_siglip", {}),  # bilinear antialiased, MAP head, GELU-tanh
    "naflex-radio-v3": ("naflexvit_base_patch16_radio_v3", {"pos_embed_grid_size": (6, 6)}),  # align_corners
    "naflex-radio-v4": ("naflexvit_so400m_patch16_radio_v4", {"pos_embed_grid_size": (6, 6), "mlp_ratio": 3.0}),
    "naflex-conv": ("naflexvit_base_patch16_gap", {"embed_proj_type": "conv", "patchify_channels_last": False}),
}
SIZES = [(24, 40), (17, 45), (7, 5), (1, 1), (50, 31), (41, 57)]  # native, not multiples, < one patch, larger


def overrides(name: str) -> dict[str, Any]:
    arch, extra = REPRESENTATIVES[name]
    base = NAFLEX_SMALL if preset_entry(arch)[0] == "naflexvit" else SMALL
    return {**base, **extra}


def timm_reference(name: str) -> torch.nn.Module:
    """timm's model of a representative, dynamic size and padding on (NaFlexVit is always dynamic in size)."""
    import timm

    arch = REPRESENTATIVES[name][0]
    dynamic = {"dynamic_img_pad": True} if preset_entry(arch)[0] == "naflexvit" else {
        "dynamic_img_size": True, "dynamic_img_pad": True}
    return timm.create_model(arch, pretrained=False, **dynamic, **overrides(name)).eval()


def pair(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, timm's) for a representative, the same random weights."""
    torch.manual_seed(seed)
    ours = perturb_(model_for(get_preset(REPRESENTATIVES[name][0], **overrides(name))), seed).eval()
    ref = timm_reference(name)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def rel_err(out: torch.Tensor | np.ndarray, ref: torch.Tensor) -> float:
    out_t = torch.as_tensor(out)
    return float((out_t - ref).abs().max() / max(1.0, ref.abs().max().item()))


def export_dynamic(model: torch.nn.Module, path: Path, example: tuple[int, int], opset: int = 18) -> Path:
    """``torch.onnx.export(dynamo=True)`` with dynamic batch, height and width, portable resampling (as the
    exporter traces: a non-native, non-square example, batch 2)."""
    in_chans = model.config.in_chans
    x = torch.randn(2, in_chans, *example, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=1),
            3: torch.export.Dim("width", min=1)}
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), model.resampling("portable"):
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["pixel_values"],
                                    output_names=["output"], dynamic_shapes={"x": dims}, optimize=False)
    program.save(str(path))
    return path


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
