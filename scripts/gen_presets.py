"""Regenerate vitexport/model/presets.py from the installed timm (a developer tool;
tests/unit/model/test_presets.py runs `preset_table` again and compares).

Every entrypoint of timm's ``vision_transformer`` module (``test_*`` excluded) is called with
``VisionTransformer`` replaced by a recorder, so the keyword arguments are exactly those timm
would build with (its pretrained config's image size and classes included). Layer classes
become vitexport's layer names through the layer registry (each registered layer names the timm
classes it stands for: vitexport/model/registry.py); an argument or layer this script does not
know stops it, so a new timm option is never dropped silently.

    python -m scripts.gen_presets > vitexport/model/presets.py
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pprint
from typing import Any

import timm
from timm.models import vision_transformer as tv

from vitexport.model.config import LAYER_OPTIONS, TRAINING_ONLY_KEYS, ViTConfig
from vitexport.model.layers import LAYER_NORM_EPS
from vitexport.model.registry import entries

# The keyword arguments every preset spells out (resolved to timm's defaults), in this order.
CORE_KEYS = (
    "img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
    "mlp_ratio", "qkv_bias", "qk_norm", "init_values", "class_token", "reg_tokens", "no_embed_class",
    "pre_norm", "final_norm", "fc_norm",
)
# Accepted and left out: vitexport models are always dynamic (and pad); training-only options.
IGNORED_KEYS = frozenset({"dynamic_img_size", "dynamic_img_pad"}) | TRAINING_ONLY_KEYS
LAYER_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ViTConfig) if f.name in LAYER_OPTIONS}


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


def _resolve(qualified: str) -> Any:
    module, _, name = qualified.rpartition(".")
    return getattr(importlib.import_module(module), name)


def timm_layer(kind: str, value: Any) -> tuple[str, type | None, dict[str, Any]]:
    """vitexport's registered name for what timm was given as a ``kind`` layer (timm's name for it, a class or a
    partial of one), the timm class, and the partial's keywords that the registry does not decide."""
    if isinstance(value, str):
        for name, entry in entries(kind).items():
            if value in entry.timm:
                return name, None, {}
        raise ValueError(f"unknown {kind} layer name {value!r}")
    cls, kw = _class_and_kwargs(value)
    for name, entry in entries(kind).items():
        if cls not in [_resolve(t) for t in entry.timm if "." in t]:
            continue
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        if all(kw.get(k, defaults.get(k)) == v for k, v in entry.timm_kwargs.items()):
            return name, cls, {k: v for k, v in kw.items() if k not in entry.timm_kwargs}
    raise ValueError(f"unknown {kind} layer {value!r}")


def _layer(kind: str, value: Any, field: str, allowed: frozenset[str] = frozenset()) -> str:
    """A layer given without options (but ``allowed``, which the block overrides); None or '' is timm's default."""
    if value is None or value == "":
        return LAYER_DEFAULTS[field]
    name, _, rest = timm_layer(kind, value)
    if set(rest) - allowed:
        raise ValueError(f"unknown {kind} layer {value!r}: options {sorted(set(rest) - allowed)}")
    return name


def _norm(value: Any) -> tuple[str, float]:
    if value is None:
        return LAYER_DEFAULTS["norm_layer"], LAYER_DEFAULTS["norm_eps"]
    name, cls, kw = timm_layer("norm", value)
    if set(kw) - {"eps"}:
        raise ValueError(f"unknown norm layer {value!r}")
    eps = kw.get("eps", LAYER_NORM_EPS if cls is None else inspect.signature(cls).parameters["eps"].default)
    return name, float(eps)


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
    layers["act_layer"] = _layer("act", kw.get("act_layer"), "act_layer")
    # the block passes its act_layer to the MLP, overriding a partial's
    layers["mlp_layer"] = _layer("mlp", kw.get("mlp_layer"), "mlp_layer", frozenset({"act_layer"}))
    layers["block_fn"] = _layer("block", kw.get("block_fn"), "block_fn")
    layers["attn_layer"] = _layer("attn", kw.get("attn_layer"), "attn_layer")
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
