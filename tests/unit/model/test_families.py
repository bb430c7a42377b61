"""One representative of every configuration family of timm's VisionTransformer matches timm in PyTorch, TorchScript
and ONNX (the families of timm's other classes: tests/unit/model/test_family_models.py, test_family_onnx.py); every
preset of every class belongs to a tested family.

The representative is the real timm entrypoint (its layer choices) shrunk to depth 2 and a small
width with timm's own keyword overrides; our model is the preset of the same name with the same
overrides. Weights are random and moved off their init so every parameter changes the output.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from timm.layers import RmsNorm

from tests.helpers.families import REPRESENTATIVES
from tests.helpers.models import perturb_
from vitexport import load_model
from vitexport._util.errors import ConfigError
from vitexport.checkpoint.infer import infer_config_args
from vitexport.export.onnx_export import export_onnx
from vitexport.export.torchscript_export import export_torchscript
from vitexport.model.config import ViTConfig, get_preset
from vitexport.model.coverage import FAMILY_BASE, family_args
from vitexport.model.families import FAMILIES, family_of, preset_names
from vitexport.model.vit import VisionTransformer
from vitexport.verify.sweep import verify

TOL = 1e-5  # relative to max(1, |reference|); timm-exact layers differ by float rounding only (~1e-7)
SIZES = [(24, 40), (17, 45), (7, 5), (50, 31), (1, 1)]  # native-ish, not multiples, < one patch, larger
FAMILY_NAMES = [f.name for f in FAMILIES if f.model_class == "vit"]


def pair(name: str, seed: int = 0) -> tuple[VisionTransformer, torch.nn.Module]:
    """(ours, timm's) for a family's representative, same random weights."""
    import timm

    family = next(f for f in FAMILIES if f.name == name)
    args = family_args(name)
    torch.manual_seed(seed)
    ours = perturb_(VisionTransformer(get_preset(family.representative, **args)), seed).eval()
    ref = timm.create_model(family.representative, dynamic_img_size=True, dynamic_img_pad=True, **args).eval()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def rel_err(out: torch.Tensor | np.ndarray, ref: torch.Tensor) -> float:
    out_t = torch.as_tensor(out)
    return float((out_t - ref).abs().max() / max(1.0, ref.abs().max().item()))


def test_every_preset_belongs_to_a_tested_family() -> None:
    """Every entrypoint of vision_transformer.py, eva.py, deit.py and naflexvit.py: a family tested here (timm's
    VisionTransformer) or in test_family_models.py / test_family_onnx.py (the other classes)."""
    families = {family_of(get_preset(name)) for name in preset_names()}
    tested = set(FAMILY_NAMES) | set(REPRESENTATIVES)
    assert families == {f.name for f in FAMILIES} and families <= tested, families ^ tested
    assert len({family_of(get_preset(f.representative)) for f in FAMILIES}) == len(FAMILIES)
    assert all(get_preset(f.representative).CLASS == f.model_class for f in FAMILIES)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@torch.no_grad()
def test_family_matches_timm_in_pytorch_and_torchscript(name: str, tmp_path: Path) -> None:
    ours, ref = pair(name)
    assert family_of(ours.config) == name
    path = tmp_path / "m.ts"
    export_torchscript(ours, path)
    scripted = torch.jit.load(str(path))
    gen = torch.Generator().manual_seed(1)
    for h, w in SIZES:
        x = torch.randn(3, ours.config.in_chans, h, w, generator=gen)
        expected = ref(x)
        assert rel_err(ours(x), expected) <= TOL, (name, h, w)
        assert rel_err(ours(x[:1]), expected[:1]) <= TOL, (name, h, w)
        assert rel_err(scripted(x), expected) <= TOL, (name, h, w)
    # every norm alone, on inputs whose variance is near eps: a wrong eps or norm type shows here
    norms = [(n, m) for n, m in ref.named_modules() if isinstance(m, (torch.nn.LayerNorm, RmsNorm))]
    assert norms
    for mod_name, norm in norms:
        t = torch.randn(2, 7, norm.normalized_shape[0], generator=gen) * 3e-3
        assert rel_err(ours.get_submodule(mod_name)(t), norm(t)) <= TOL, (name, mod_name)


def graph_ops(path: Path) -> set[tuple[str, str]]:
    proto = onnx.load(str(path))
    return {(node.domain, node.op_type) for node in proto.graph.node}


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_NAMES)
@torch.no_grad()
def test_family_onnx_matches_timm_with_portable_ops(name: str, tmp_path: Path) -> None:
    ours, ref = pair(name, seed=3)
    path = tmp_path / "m.onnx"
    export_onnx(ours, path)
    ops = graph_ops(path)
    assert {d for d, _ in ops} == {""}, ops  # no contrib (com.microsoft) or custom domain
    for _, op in ops:  # every op a standard one of opset 18 (no RMSNormalization-23); no sequences
        assert onnx.defs.get_schema(op, 18, "").since_version <= 18 and "Sequence" not in op, op
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain == ""] == [18]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, ours.config.in_chans, 17, 45, generator=torch.Generator().manual_seed(2))
    assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], ref(x)) <= TOL, name
    # verify rebuilds the PyTorch model from the config the file carries (the config round trip), on every
    # usable engine: ONNX Runtime, OpenVINO (f32) and the ONNX reference evaluator, compared with each other too
    report = verify(path, provider="all", sizes=SIZES, batch_sizes=(1, 3))
    engines = [s["name"] for s in report.sessions]
    assert {"cpu", "reference"} <= set(engines), report.skipped_providers
    assert "openvino" in engines or importlib.util.find_spec("openvino") is None, report.skipped_providers
    swept = [c for c in report.cases if not c.fresh_compile]  # OpenVINO adds its fresh-compile cold start
    assert len(swept) == 2 * len(SIZES) * len(engines) and report.cross_provider
    assert len(report.cases) - len(swept) == (3 if "openvino" in engines else 0)
    assert report, [(c.provider, c.height, c.width, c.max_abs) for c in report.failures]



@pytest.mark.slow
@pytest.mark.parametrize("name, fused", [("siglip", 2 + 1), ("diff-attention", 2 * 2)])
def test_fused_attention_covers_latent_query_and_differential_heads(name: str, fused: int, tmp_path: Path) -> None:
    """--attention mha: the MAP head's one query over N keys, and values twice as wide as queries."""
    ours, _ = pair(name, seed=4)
    path = tmp_path / "mha.onnx"
    export_onnx(ours, path, attention="mha")
    ops = [op for _, op in graph_ops(path)]
    assert ops.count("MultiHeadAttention") == 1 and "Softmax" not in ops
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("MultiHeadAttention") == fused
    report = verify(path, provider="cpu", sizes=SIZES[:3], batch_sizes=(3,))
    assert report, [(c.height, c.width, c.max_abs) for c in report.failures]

# ---------------------------------------------------------------------------
# checkpoint formats: a hub folder and a timm training checkpoint name the architecture
# ---------------------------------------------------------------------------
def model_kwargs(name: str) -> dict[str, Any]:
    """The size overrides a user would have passed to timm (--model-kwargs / hub model_args)."""
    return {k: v for k, v in family_args(name).items() if k not in ("num_classes", "in_chans")}


@pytest.mark.parametrize("name", FAMILY_NAMES)
@torch.no_grad()
def test_family_loads_from_hub_folder_and_training_checkpoint(name: str, tmp_path: Path) -> None:
    ours, ref = pair(name, seed=5)
    family = next(f for f in FAMILIES if f.name == name)
    cfg = ours.config
    sd = ours.state_dict()
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({
        "architecture": family.representative,
        "num_classes": cfg.num_classes,
        "model_args": {k: v for k, v in model_kwargs(name).items() if k != "img_size"},
        "pretrained_cfg": {"input_size": [cfg.in_chans, *cfg.img_hw], "mean": [0.5] * 3, "std": [0.5] * 3},
    }))
    train = tmp_path / "last.pth.tar"
    torch.save({
        "arch": family.representative,
        "state_dict": {f"module.{k}": v for k, v in sd.items()},
        "args": argparse.Namespace(model=family.representative, model_kwargs=model_kwargs(name), gp=None),
    }, train)
    x = torch.randn(2, cfg.in_chans, 17, 45, generator=torch.Generator().manual_seed(4))
    for path, source in ((hub, "config.json"), (train, "arch")):
        loaded = load_model(path)
        assert loaded.meta["source"]["config_source"] == source
        assert family_of(loaded.config) == name and loaded.config == cfg, (source, loaded.config)
        assert rel_err(loaded(x), ref(x)) <= TOL, source


# What shape inference does per family: None = builds timm's model; else the options it refuses without.
INFERENCE: dict[str, tuple[str, ...] | None] = {
    "vit": None, "parallel-scaling": None, "parallel-things": None, "res-post": None, "diff-attention": None,
    "diff-parallel": None,
    "siglip2-gap": ("act_layer",),  # looks exactly like a plain ViT: builds GELU with a warning (documented)
    "clip": ("norm_eps", "act_layer"), "clip-quickgelu": ("norm_eps", "act_layer"), "siglip": ("act_layer",),
    "siglip2": ("act_layer",), "aimv2": ("norm_eps", "act_layer"), "beit3": ("norm_eps",),
    "xp": ("norm_eps", "act_layer"), "swiglu-packed": ("act_layer", "mlp_layer"),
}


@pytest.mark.parametrize("name", FAMILY_NAMES)
@torch.no_grad()
def test_family_shape_inference_builds_exactly_or_refuses(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import timm

    family = next(f for f in FAMILIES if f.name == name)
    # square native grid; heads not stored in the weights: embed_dim / 64 (1), as inference assumes
    args = {**FAMILY_BASE, "img_size": 32, "embed_dim": 64, "num_heads": 1}
    if name in ("diff-attention", "diff-parallel", "xp"):
        args["num_heads"] = 2  # stored (lambda / qk-norm width)
    if name == "swiglu-packed":
        args["embed_dim"] = 48  # int(64 * 5.33334) is odd: timm refuses a gated MLP of that width too
    torch.manual_seed(0)
    ours = perturb_(VisionTransformer(get_preset(family.representative, **args)), 6).eval()
    path = tmp_path / "weights.pth"
    torch.save(ours.state_dict(), path)  # keeps module order (res-post blocks are told apart by it)
    expected = INFERENCE[name]
    if expected is not None and name != "siglip2-gap":
        with pytest.raises(ConfigError, match="not stored in the weights") as err:
            load_model(path)
        assert all(opt in str(err.value) for opt in expected), str(err.value)
        return
    with caplog.at_level(logging.WARNING):
        loaded = load_model(path)
    assert loaded.meta["source"]["config_source"] == "inferred"
    ref = timm.create_model(family.representative, dynamic_img_size=True, dynamic_img_pad=True, **args).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 19, 40, generator=torch.Generator().manual_seed(8))
    if name == "siglip2-gap":  # the documented limitation: warned, and really different
        assert "gelu_tanh" in caplog.text and loaded.config.act_layer == "gelu"
        assert rel_err(loaded(x), ref(x)) > TOL
        return
    assert family_of(loaded.config) == name
    assert rel_err(loaded(x), ref(x)) <= TOL


def test_refusal_names_the_matching_architectures() -> None:
    with torch.device("meta"):
        sd = VisionTransformer(get_preset("aimv2_large_patch14_224")).state_dict()
    with pytest.raises(ConfigError, match=r"norm_eps, act_layer .*aimv2_large_patch14_224.*\"act_layer\": \"silu\""):
        infer_config_args(sd)
    with torch.device("meta"):
        sd = VisionTransformer(get_preset("vit_base_patch16_clip_224")).state_dict()
    with pytest.raises(ConfigError, match=r"vit_base_patch16_clip_224.*vit_base_patch16_clip_quickgelu_224"):
        infer_config_args(sd)


def test_sorted_keys_cannot_show_residual_post_norm(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    args = {**FAMILY_BASE, "img_size": 32, "embed_dim": 64, "num_heads": 1}
    sd = VisionTransformer(get_preset("vit_base_patch16_rpn_224", **args)).state_dict()
    save_file({k: v.contiguous() for k, v in sorted(sd.items())}, str(tmp_path / "model.safetensors"))
    with caplog.at_level(logging.WARNING):
        loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.config.block_fn == "block" and "*_rpn_*" in caplog.text


# ---------------------------------------------------------------------------
# options that cannot be built exactly are refused by name
# ---------------------------------------------------------------------------
SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
REFUSED: list[tuple[dict[str, Any], str]] = [
    (dict(norm_layer="batchnorm"), "norm_layer 'batchnorm' is not supported"),
    (dict(embed_norm_layer="groupnorm"), "embed_norm_layer 'groupnorm' is not supported"),
    (dict(act_layer="relu"), "act_layer 'relu' is not supported"),
    (dict(mlp_layer="gated"), "mlp_layer 'gated' is not supported"),
    (dict(block_fn="ParallelBlock"), "block_fn 'ParallelBlock' is not supported"),
    (dict(attn_layer="rope"), "attn_layer 'rope' is not supported"),
    (dict(global_pool="prr"), "global_pool 'prr' is not supported"),
    (dict(pos_embed="none"), "pos_embed='none' is not supported"),
    (dict(pool_include_prefix=True), "pool_include_prefix=True is not supported"),
    (dict(norm_eps=0), "norm_eps must be a small positive number"),
    (dict(block_fn="parallel_scaling", scale_attn_norm=True), "has no scale_attn_norm"),
    (dict(block_fn="parallel_scaling", mlp_layer="swiglu"), "has its own fused MLP and attention"),
    (dict(mlp_layer="swiglu_packed", mlp_ratio=1.5, embed_dim=30, num_heads=2), "needs an even hidden width"),
    (dict(attn_layer="diff", num_heads=32), "divisible by 2 * num_heads"),
]


@pytest.mark.parametrize("extra, message", REFUSED, ids=[m.split()[0] for _, m in REFUSED])
def test_options_that_cannot_be_built_exactly_are_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ViTConfig.from_dict({**SMALL, **extra})


def test_layer_choices_round_trip_and_defaults_keep_old_configs() -> None:
    cfg = get_preset("aimv2_large_patch14_224", depth=2)
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["embed_norm_layer"] == "rmsnorm"
    back_to_default = get_preset("vit_so400m_patch16_siglip_256", act_layer="gelu")  # the preset says gelu_tanh
    assert ViTConfig.from_dict(back_to_default.to_dict()).act_layer == "gelu"
    old = ViTConfig(**SMALL).to_dict()  # a plain ViT's config reads as before the layer fields existed
    assert not {"norm_layer", "norm_eps", "act_layer", "mlp_layer", "block_fn", "proj_bias"} & set(old)
    assert ViTConfig.from_dict({**SMALL, "norm_layer": None, "act_layer": None, "attn_layer": ""}) == ViTConfig(
        **SMALL
    )  # timm's None / '' mean its default layers
