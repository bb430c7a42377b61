"""Regenerate vitexport/model/presets.py from the installed timm (a developer tool;
tests/unit/model/test_presets.py runs `preset_table` again and compares).

Every entrypoint of timm's ``vision_transformer`` module (``test_*`` excluded) is called with
``VisionTransformer`` replaced by a recorder, so the keyword arguments are exactly those timm
would build with (its pretrained config's image size and classes included). Layer classes
become vitexport's layer names; an argument or layer this script does not know stops it, so a
new timm option is never dropped silently.

    python -m scripts.gen_presets > vitexport/model/presets.py
"""

from __future__ import annotations

import functools
import inspect
import pprint
from typing import Any

import timm
import torch
from timm.layers import GluMlp, LayerNorm, Mlp, QuickGELU, RmsNorm, SwiGLU
from timm.layers.activations import GELU, GELUTanh
from timm.models import vision_transformer as tv

# The keyword arguments every preset spells out (resolved to timm's defaults), in this order.
CORE_KEYS = (
    "img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
    "mlp_ratio", "qkv_bias", "qk_norm", "init_values", "class_token", "reg_tokens", "no_embed_class",
    "pre_norm", "final_norm", "fc_norm",
)
# Accepted and left out: vitexport models are always dynamic (and pad); training-only options.
IGNORED_KEYS = frozenset({
    "dynamic_img_size", "dynamic_img_pad", "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate",
    "attn_drop_rate", "drop_path_rate", "weight_init", "fix_init",
})
LAYER_DEFAULTS: dict[str, Any] = {
    "norm_layer": "layernorm", "norm_eps": 1e-6, "embed_norm_layer": None, "embed_norm_eps": 1e-6,
    "act_layer": "gelu", "mlp_layer": "mlp", "block_fn": "block", "attn_layer": "attn",
    "scale_attn_norm": False, "scale_mlp_norm": False, "proj_bias": True,
}
NORMS = {LayerNorm: "layernorm", torch.nn.LayerNorm: "layernorm", RmsNorm: "rmsnorm"}
ACTS = {torch.nn.GELU: "gelu", GELU: "gelu", GELUTanh: "gelu_tanh", QuickGELU: "quick_gelu", torch.nn.SiLU: "silu"}
ACT_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu", "silu": "silu", "swish": "silu"}
BLOCKS = {
    tv.Block: "block", tv.ResPostBlock: "res_post", tv.ParallelScalingBlock: "parallel_scaling",
    tv.DiffParallelScalingBlock: "diff_parallel_scaling", tv.ParallelThingsBlock: "parallel_things",
}


class _Recorded(Exception):
    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("recorded")
        self.kwargs = kwargs


def entrypoint_names() -> list[str]:
    """timm's registered architectures defined in vision_transformer.py, ``test_*`` excluded."""
    registered = set(timm.list_models())
    return sorted(
        name for name, fn in vars(tv).items()
        if callable(fn) and getattr(fn, "__module__", "") == tv.__name__ and name in registered
        and not name.startswith("test_")
    )


def recorded_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments timm's entrypoint ``name`` passes to ``VisionTransformer``."""

    def record(**kwargs: Any) -> None:
        raise _Recorded(kwargs)

    original = tv.VisionTransformer
    tv.VisionTransformer = record
    try:
        timm.create_model(name, pretrained=False)
    except _Recorded as rec:
        return rec.kwargs
    finally:
        tv.VisionTransformer = original
    raise RuntimeError(f"{name} did not build a VisionTransformer")


def _class_and_kwargs(value: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(value, functools.partial):
        return value.func, dict(value.keywords)
    return value, {}


def _norm(value: Any) -> tuple[str, float]:
    if value is None:
        return "layernorm", 1e-6
    if isinstance(value, str):
        if value not in ("layernorm", "rmsnorm"):
            raise ValueError(f"unknown norm layer name {value!r}")
        return value, 1e-6
    cls, kw = _class_and_kwargs(value)
    if cls not in NORMS or set(kw) - {"eps"}:
        raise ValueError(f"unknown norm layer {value!r}")
    eps = kw.get("eps", inspect.signature(cls).parameters["eps"].default)
    return NORMS[cls], float(eps)


def _act(value: Any) -> str:
    if value is None:
        return "gelu"
    if isinstance(value, str):
        return ACT_NAMES[value]
    return ACTS[value]


def _mlp(value: Any) -> str:
    cls, kw = _class_and_kwargs(value)
    if cls is Mlp and not kw:
        return "mlp"
    if cls is SwiGLU and not kw:
        return "swiglu"
    if cls is GluMlp and set(kw) <= {"act_layer", "gate_last"}:
        # the block passes its act_layer to the MLP, overriding the partial's
        return "glu" if kw.get("gate_last", True) else "swiglu_packed"
    raise ValueError(f"unknown mlp layer {value!r}")


def _pair(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        h, w = (int(v) for v in value)
        return h if h == w else (h, w)
    return int(value)


def translate(kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm ``VisionTransformer`` keyword arguments -> a vitexport preset (``ViTConfig`` fields)."""
    defaults = {k: p.default for k, p in inspect.signature(tv.VisionTransformer.__init__).parameters.items()}
    kw = {**{k: defaults[k] for k in CORE_KEYS}, **kwargs}
    args: dict[str, Any] = {k: kw[k] for k in CORE_KEYS}
    args["img_size"], args["patch_size"] = _pair(kw["img_size"]), _pair(kw["patch_size"])
    args["mlp_ratio"] = float(kw["mlp_ratio"])
    args["init_values"] = None if kw["init_values"] is None else float(kw["init_values"])
    use_fc_norm = kw["global_pool"] in ("avg", "avgmax", "max") if kw["fc_norm"] is None else kw["fc_norm"]
    args["fc_norm"] = bool(kw["final_norm"] and use_fc_norm)
    layers = dict(LAYER_DEFAULTS)
    layers["norm_layer"], layers["norm_eps"] = _norm(kw.get("norm_layer"))
    if kw.get("embed_norm_layer") is not None:
        layers["embed_norm_layer"], layers["embed_norm_eps"] = _norm(kw["embed_norm_layer"])
    layers["act_layer"] = _act(kw.get("act_layer"))
    layers["mlp_layer"] = _mlp(kw.get("mlp_layer", Mlp))
    block = kw.get("block_fn", tv.Block)
    layers["block_fn"] = BLOCKS[block]
    attn = kw.get("attn_layer", "attn")
    layers["attn_layer"] = {"": "attn", "attn": "attn", "diff": "diff", tv.Attention: "attn"}[attn]
    for key in ("scale_attn_norm", "scale_mlp_norm", "proj_bias"):
        layers[key] = bool(kw.get(key, defaults[key]))
    args.update({k: v for k, v in layers.items() if v != LAYER_DEFAULTS[k]})
    handled = set(CORE_KEYS) | set(LAYER_DEFAULTS) | {"embed_norm_layer"} | IGNORED_KEYS
    unknown = sorted(set(kwargs) - handled)
    if unknown:
        raise ValueError(f"timm option(s) this script does not know: {unknown}")
    return args


def preset_table() -> dict[str, dict[str, Any]]:
    return {name: translate(recorded_kwargs(name)) for name in entrypoint_names()}


def main() -> None:
    body = pprint.pformat(preset_table(), width=110, sort_dicts=False)
    print('"""Named architectures: timm keyword arguments, generated by scripts/gen_presets.py from timm '
          f'{timm.__version__}."""\n\nfrom __future__ import annotations\n\nfrom typing import Any\n\n'
          f"PRESETS: dict[str, dict[str, Any]] = {body}")


if __name__ == "__main__":
    main()
