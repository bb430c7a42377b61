"""The layer registry: every declared name has exactly one class and every class a declared name; configs accept
only those names; the model builds the registered class; the declared traits are what the classes do."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import nn

from tests.helpers.models import ROOT
from vitexport._util.errors import ConfigError
from vitexport.model import registry
from vitexport.model.config import ViTConfig
from vitexport.model.family_config import EvaConfig
from vitexport.model.family_models import model_for
from vitexport.model.names import (
    DIFFERENTIAL,
    FUSED,
    GATED,
    LAYER_FIELDS,
    LAYERS,
    PACKED,
    ROTARY,
    has_trait,
    layer_names,
    vit_layer_names,
)
from vitexport.model.registry import entries, layer_class, register
from vitexport.model.vit import VisionTransformer

SMALL = dict(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3)
# How an Eva config chooses each ROTARY layer (attention by attn_type, the block by use_post_norm).
EVA_CHOICES: dict[str, dict[str, dict[str, Any]]] = {
    "attn": {"eva": dict(attn_type="eva"), "rope": dict(attn_type="rope")},
    "block": {"eva": {}, "eva_post_norm": dict(use_post_norm=True)},
}


def test_every_declared_name_has_exactly_one_class_and_every_class_a_name() -> None:
    for kind in LAYERS:
        found = entries(kind)
        assert tuple(found) == layer_names(kind), kind  # nothing declared and missing, nothing undeclared
        classes = [entry.cls for entry in found.values()]
        assert len(set(classes)) == len(classes), kind  # one class per name
        assert all(isinstance(c, type) and issubclass(c, nn.Module) for c in classes), kind
    assert set(LAYER_FIELDS.values()) == set(LAYERS)  # every kind is chosen by a config field


def test_register_refuses_undeclared_and_repeated_names() -> None:
    with pytest.raises(ValueError, match=r"not declared in vitexport\.model\.names\.LAYERS"):
        register("norm", "batchnorm")
    with pytest.raises(ValueError, match="registered twice"):
        register("norm", "layernorm")(nn.BatchNorm1d)
    assert layer_class("norm", "layernorm") is nn.LayerNorm  # the refused one did not replace it


def test_the_timm_classes_each_layer_stands_for_exist() -> None:
    """scripts/gen_presets.py translates timm's arguments with these; a typo would stop it on the next timm."""
    for kind in LAYERS:
        for name, entry in entries(kind).items():
            qualified = [t for t in entry.timm if "." in t]
            assert qualified, (kind, name)
            for target in qualified:
                module, _, attr = target.rpartition(".")
                assert isinstance(getattr(importlib.import_module(module), attr), type), target


@pytest.mark.parametrize("field", sorted(LAYER_FIELDS))
def test_config_refuses_an_unknown_layer_name_in_one_line_naming_the_choices(field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ViTConfig(**SMALL, **{field: "made_up"})
    message = str(info.value)
    assert "\n" not in message and field in message and "'made_up'" in message
    assert all(repr(name) in message for name in vit_layer_names(LAYER_FIELDS[field])), message


@pytest.mark.parametrize("kind", sorted(EVA_CHOICES))
def test_a_plain_vit_refuses_evas_rotary_layers_by_name(kind: str) -> None:
    field = next(f for f, k in LAYER_FIELDS.items() if k == kind)
    for name in layer_names(kind):
        if has_trait(kind, name, ROTARY):
            with pytest.raises(ConfigError, match=f"{field} '{name}' is not supported by a plain ViT .*Eva"):
                ViTConfig(**SMALL, **{field: name})


def test_names_are_known_without_torch() -> None:
    """ViTConfig and the names import no torch (the CLI, limits and metadata checks read them)."""
    code = ("import sys; from vitexport.model.config import ViTConfig; from vitexport.model import names, registry; "
            "ViTConfig(norm_layer='rmsnorm', mlp_layer='swiglu'); assert 'torch' not in sys.modules, 'torch loaded'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def _one_of_each(kind: str) -> list[tuple[str, Any]]:
    """A config per registered name of ``kind`` that uses it (a fused block keeps the default MLP and attention;
    Eva's rotary layers in an `EvaConfig`)."""
    field = next(f for f, k in LAYER_FIELDS.items() if k == kind and f != "embed_norm_layer")
    return [(name, EvaConfig(**SMALL, use_rot_pos_emb=True, **EVA_CHOICES[kind][name])
             if has_trait(kind, name, ROTARY) else ViTConfig(**SMALL, **{field: name})) for name in layer_names(kind)]


def _built(model: nn.Module, kind: str) -> nn.Module:
    block = model.blocks[0]
    return {"norm": model.norm, "block": block, "attn": getattr(block, "attn", None),
            "mlp": getattr(block, "mlp", None), "act": getattr(getattr(block, "mlp", None), "act", None)}[kind]


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_the_model_builds_the_registered_class(kind: str) -> None:
    for name, cfg in _one_of_each(kind):
        model = model_for(cfg)
        assert type(_built(model, kind)) is layer_class(kind, name), (kind, name)


@torch.no_grad()
def test_declared_traits_are_what_the_classes_do() -> None:
    for name, cfg in _one_of_each("block"):
        block = model_for(cfg).blocks[0]
        assert hasattr(block, "in_proj") == has_trait("block", name, FUSED), name  # one projection feeds both
        assert any(n.endswith("lambda_q1") for n, _ in block.named_parameters()) == has_trait(
            "block", name, DIFFERENTIAL), name
        # rotary: the block takes the rotary table and hands it to its attention
        assert ("rope" in inspect.signature(block.forward).parameters) == has_trait("block", name, ROTARY), name
    for name, cfg in _one_of_each("attn"):
        attn = model_for(cfg).blocks[0].attn
        assert hasattr(attn, "lambda_q1") == has_trait("attn", name, DIFFERENTIAL), name
        assert ("rope" in inspect.signature(attn.forward).parameters) == has_trait("attn", name, ROTARY), name
    x = torch.randn(1, 4, SMALL["embed_dim"], generator=torch.Generator().manual_seed(0)) * 1e-3
    for name, cfg in _one_of_each("mlp"):
        args = cfg.to_dict()
        mlp = VisionTransformer(ViTConfig.from_dict({**args, "act_layer": "silu"})).blocks[0].mlp  # biases at 0
        assert (mlp.fc2.in_features * 2 == cfg.mlp_hidden) == has_trait("mlp", name, PACKED), name
        # gated: the activation multiplies another projection, so near 0 doubling the input quadruples the
        # output; through a plain MLP (silu(u) ~ u/2 there) it doubles it
        ratio = (mlp(2 * x).norm() / mlp(x).norm()).item()
        assert (ratio > 3) == has_trait("mlp", name, GATED), (name, ratio)


def test_a_new_layer_is_one_declared_name_and_one_registered_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a later family does: declare a name, register its class; configs, the model and timm names follow."""
    with pytest.raises(ConfigError, match="act_layer 'relu' is not supported"):
        ViTConfig(**SMALL, act_layer="relu")
    monkeypatch.setitem(LAYERS, "act", {**LAYERS["act"], "relu": frozenset()})
    monkeypatch.setitem(registry._ENTRIES, "act", dict(registry._ENTRIES["act"]))
    register("act", "relu", "torch.nn.ReLU", "relu")(nn.ReLU)
    model = VisionTransformer(ViTConfig(**SMALL, act_layer="relu"))
    assert type(model.blocks[0].mlp.act) is nn.ReLU and type(model.blocks[1].mlp.act) is nn.ReLU
