"""Names of the model's choices that light code reads (`ViTConfig`, the CLI's option lists, artifact metadata
checks, shape inference) without loading the presets table or torch.

Layer choices are names, as in a config (``norm_layer='rmsnorm'``); `LAYERS` declares every name of every
kind of layer, with the traits that code other than the layer itself needs to know. Each declared name is
registered by exactly one class in `vitexport.model.layers` (`vitexport.model.registry`; tests check both
ways), so adding a layer is one line here, one registered class, and its presets' rows.
"""

from __future__ import annotations

# How the positional-embedding resampling is computed in an exported graph (ONNX metadata key "resample"):
# "portable" computes the antialiased-bicubic weights from elementary ops and applies them with MatMul
# (right on every runtime); "resize" is one antialiased cubic Resize (right on ONNX Runtime CPU and the
# ONNX reference; OpenVINO 2026.4 runs it wrongly, TensorRT refuses it). Eager and TorchScript use F.interpolate.
RESAMPLE_FORMS = ("portable", "resize")
DEFAULT_RESAMPLE = "portable"
# How the model itself computes it (`VisionTransformer.resample_form`, set with `VisionTransformer.resampling`):
# "interpolate" is F.interpolate (eager and TorchScript; exported, the "resize" form); "portable" as above.
MODEL_RESAMPLE_FORMS = ("interpolate", "portable")
EXPORTED_RESAMPLE = {"interpolate": "resize", "portable": "portable"}  # model form -> the graph's form

# What an exported model returns (`vitexport.model.base.ModelBase.producing`; the ONNX output's name and the metadata
# key "output"): the head's logits, the pooled embedding before the head, or every token after the final norm.
OUTPUTS = ("logits", "features", "tokens")


# The weights each output never reads (state_dict key prefixes): an ONNX export of it holds none of them.
UNUSED_BY_OUTPUT: dict[str, tuple[str, ...]] = {
    "logits": (),
    "features": ("head.", "head_dist."),
    "tokens": ("head.", "head_dist.", "fc_norm.", "attn_pool."),
}


def default_output(num_classes: int) -> str:
    """``logits`` for a model with a head, else ``features`` (the pooled embedding)."""
    return "logits" if num_classes > 0 else "features"


# The model classes vitexport builds, by the name configs record (``model_class``), and timm's class of each.
MODEL_CLASSES: dict[str, str] = {"vit": "VisionTransformer", "deit_distilled": "VisionTransformerDistilled",
                                 "eva": "Eva", "naflexvit": "NaFlexVit"}

# Traits of a layer that other code reads (a config check, shape inference), declared with its name:
FUSED = "fused"  # a block whose one in_proj feeds its own MLP and attention: no mlp_layer, attn_layer, scale norms
GATED = "gated"  # an MLP whose activation gates a second projection: timm's use SiLU, not its default GELU
PACKED = "packed"  # a gated MLP whose fc1 packs value and gate halves: an even hidden width; the weights do not
#                    say which half is the gate
DIFFERENTIAL = "differential"  # differential attention: two softmax maps per head (embed_dim % (2 heads) == 0)
ROTARY = "rotary"  # an attention that rotates q and k by the rotary table, or a block that passes the table on:
#                    timm's Eva class only (`vitexport.model.family_config.EvaConfig`), never a plain ViT's choice

# kind -> {name: traits}, in the order errors list them.
LAYERS: dict[str, dict[str, frozenset[str]]] = {
    "norm": {"layernorm": frozenset(), "rmsnorm": frozenset()},
    "act": {"gelu": frozenset(), "gelu_tanh": frozenset(), "quick_gelu": frozenset(), "silu": frozenset()},
    "mlp": {"mlp": frozenset(), "swiglu": frozenset({GATED}), "glu": frozenset({GATED, PACKED}),
            "swiglu_packed": frozenset({GATED, PACKED})},
    "block": {"block": frozenset(), "res_post": frozenset(), "parallel_scaling": frozenset({FUSED}),
              "diff_parallel_scaling": frozenset({FUSED, DIFFERENTIAL}), "parallel_things": frozenset(),
              "eva": frozenset({ROTARY}), "eva_post_norm": frozenset({ROTARY})},
    "attn": {"attn": frozenset(), "diff": frozenset({DIFFERENTIAL}), "eva": frozenset({ROTARY}),
             "rope": frozenset({ROTARY})},
}
# The ViTConfig fields that name a layer, and the kind each names (timm's keyword names).
LAYER_FIELDS: dict[str, str] = {
    "norm_layer": "norm", "embed_norm_layer": "norm", "act_layer": "act", "mlp_layer": "mlp", "block_fn": "block",
    "attn_layer": "attn",
}


def model_resample_form(form: str) -> str:
    """The model's resampling form that exports as the graph's ``form`` (one of `RESAMPLE_FORMS`)."""
    return next(model for model, graph in EXPORTED_RESAMPLE.items() if graph == form)


def layer_names(kind: str) -> tuple[str, ...]:
    """The declared names of one kind of layer (``"norm"``, ``"act"``, ``"mlp"``, ``"block"``, ``"attn"``)."""
    return tuple(LAYERS[kind])


def vit_layer_names(kind: str) -> tuple[str, ...]:
    """The names of ``kind`` a plain ViT (`ViTConfig`) may choose: all but the `ROTARY` ones (Eva's)."""
    return tuple(name for name, traits in LAYERS[kind].items() if ROTARY not in traits)


def with_trait(kind: str, trait: str) -> tuple[str, ...]:
    """The names of ``kind`` that have ``trait`` (`FUSED`, `GATED`, `PACKED`, `DIFFERENTIAL`, `ROTARY`)."""
    return tuple(name for name, traits in LAYERS[kind].items() if trait in traits)


def has_trait(kind: str, name: str | None, trait: str) -> bool:
    return name is not None and trait in LAYERS[kind].get(name, frozenset())
