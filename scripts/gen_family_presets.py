"""Regenerate vitexport/model/family_presets.py from the installed timm (a developer tool;
tests/unit/model/test_family_presets.py runs `preset_table` again and compares).

Every entrypoint of timm's ``eva``, ``deit`` and ``naflexvit`` modules (``test_*`` excluded) is called
with its model class replaced by a recorder, so the keyword arguments are exactly those timm would
build with (its pretrained config's image size and classes included). Each becomes a preset of the
class that builds it:

- ``eva``: timm's ``Eva`` keyword arguments, norm classes as names (`vitexport.model.family_config.EvaConfig`);
- ``deit_distilled``: ``VisionTransformerDistilled``'s, as scripts/gen_presets.py translates a ViT's
  (`DistilledConfig`);
- ``vit``: deit.py's plain DeiTs, which are ``VisionTransformer``s (`ViTConfig`);
- ``naflexvit``: the ``NaFlexVitCfg`` fields an entrypoint sets (the rest are timm's defaults), plus the
  pretrained ``input_size`` as ``img_size`` (`NaFlexConfig`).

A keyword argument or layer this script does not know stops it, so a new timm option is never dropped
silently.

    python -m scripts.gen_family_presets > vitexport/model/family_presets.py
"""

from __future__ import annotations

import dataclasses
import pprint
from typing import Any

import timm
from timm.models import deit, eva, get_pretrained_cfg, naflexvit

from scripts.gen_presets import _norm, _pair, translate
from vitexport.model.family_config import EVA_TRAINING_ONLY, NAFLEX_TRAINING_ONLY, EvaConfig, NaFlexConfig

# module -> the classes its entrypoints build, each with the preset class it becomes
RECORDED: dict[Any, dict[str, str]] = {
    eva: {"Eva": "eva"},
    deit: {"VisionTransformerDistilled": "deit_distilled", "VisionTransformer": "vit"},
    naflexvit: {"NaFlexVit": "naflexvit"},
}
ALWAYS_DYNAMIC = frozenset({"dynamic_img_size", "dynamic_img_pad"})  # vitexport models are dynamic and pad


class _Recorded(Exception):
    def __init__(self, cls_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("recorded")
        self.cls_name, self.args, self.kwargs = cls_name, args, kwargs


def entrypoint_names(module: Any) -> list[str]:
    """timm's registered architectures defined in ``module``, ``test_*`` excluded."""
    registered = set(timm.list_models())
    return sorted(
        name for name, fn in vars(module).items()
        if callable(fn) and getattr(fn, "__module__", "") == module.__name__ and name in registered
        and not name.startswith("test_")
    )


def recorded_call(module: Any, name: str) -> tuple[str, dict[str, Any]]:
    """(class name, keyword arguments) of the model class timm's entrypoint ``name`` builds."""
    originals = {cls: getattr(module, cls) for cls in RECORDED[module]}

    def recorder(cls_name: str):
        def record(*args: Any, **kwargs: Any) -> None:
            raise _Recorded(cls_name, args, kwargs)
        return record

    for cls in originals:
        setattr(module, cls, recorder(cls))
    try:
        timm.create_model(name, pretrained=False)
    except _Recorded as rec:
        if rec.args:
            raise RuntimeError(f"{name} passed positional arguments {rec.args!r}") from None
        return rec.cls_name, rec.kwargs
    finally:
        for cls, original in originals.items():
            setattr(module, cls, original)
    raise RuntimeError(f"{name} built none of {sorted(originals)}")


def translate_eva(kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm ``Eva`` keyword arguments -> an `EvaConfig` preset."""
    fields = {f.name for f in dataclasses.fields(EvaConfig)}
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in ALWAYS_DYNAMIC or key in EVA_TRAINING_ONLY:
            continue
        if key == "norm_layer":
            out["norm_layer"], out["norm_eps"] = _norm(value)
        elif key in ("img_size", "patch_size", "ref_feat_shape"):
            out[key] = _pair(value)
        elif key in ("mlp_ratio", "rope_temperature", "rope_grid_offset", "init_values", "attn_pool_mlp_ratio"):
            out[key] = None if value is None else float(value)
        elif key == "num_kv_heads":
            out[key] = value if value is None or isinstance(value, int) else [int(v) for v in value]
        elif key in fields:
            out[key] = value
        else:
            raise ValueError(f"timm Eva option this script does not know: {key!r}")
    return out


def translate_naflex(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm ``NaFlexVit(cfg=..., **kwargs)`` -> a `NaFlexConfig` preset: the cfg fields that differ from timm's."""
    cfg = kwargs.pop("cfg")
    default = type(cfg)()
    fields = {f.name for f in dataclasses.fields(NaFlexConfig)}
    out: dict[str, Any] = {"img_size": _pair(tuple(get_pretrained_cfg(name).input_size[1:]))}
    for key in ("in_chans", "num_classes"):
        out[key] = kwargs.pop(key)
    if kwargs:
        raise ValueError(f"timm NaFlexVit argument(s) this script does not know: {sorted(kwargs)}")
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name) or f.name in NAFLEX_TRAINING_ONLY:
            continue
        if f.name not in fields:
            raise ValueError(f"timm NaFlexVitCfg field this script does not build: {f.name}={value!r}")
        out[f.name] = _pair(value) if f.name == "patch_size" else (float(value) if isinstance(value, float)
                                                                    else value)
    return out


def preset_entry(module: Any, name: str) -> dict[str, Any]:
    cls_name, kwargs = recorded_call(module, name)
    kind = RECORDED[module][cls_name]
    if kind == "eva":
        args = translate_eva(kwargs)
    elif kind == "naflexvit":
        args = translate_naflex(name, kwargs)
    else:
        args = translate(kwargs)
    return {"class": kind, "args": args}


def preset_table() -> dict[str, dict[str, Any]]:
    return {name: preset_entry(module, name) for module in RECORDED for name in entrypoint_names(module)}


def main() -> None:
    body = pprint.pformat(preset_table(), width=110, sort_dicts=False)
    print('"""Named architectures of timm\'s eva.py, deit.py and naflexvit.py: the class that builds each and its '
          f'timm keyword\narguments, generated by scripts/gen_family_presets.py from timm {timm.__version__}."""'
          f"\n\nfrom __future__ import annotations\n\nfrom typing import Any\n\n"
          f"FAMILY_PRESETS: dict[str, dict[str, Any]] = {body}")


if __name__ == "__main__":
    main()
