"""OpenAI CLIP and open_clip image towers (``visual.*``) -> timm's ``VisionTransformer``.

Two layouts, told apart by the keys timm's ``checkpoint_filter_fn`` tests:

- ``visual.class_embedding``: the ViT of OpenAI's ``clip`` package, which open_clip's own ViT tower
  keeps key for key (full CLIP, ``CustomTextCLIP`` and hf-text variants alike: only ``visual.*`` is
  read). Mapped by timm's ``_convert_openai_clip`` (`openai_clip_to_timm`). The file does not store
  the activation, the head count, the norms' eps or the pooling (OpenAI's ``clip`` uses QuickGELU,
  width/64 heads, eps 1e-5, class token; open_clip takes them from its model config), so they come
  from open_clip's config (``open_clip_config.json`` beside the weights) or from ``--config``.
- ``visual.trunk.*``: an open_clip tower that is a timm model (``timm_model_name``): the trunk is
  timm's own layout and ``visual.head.proj.weight`` becomes ``head`` with a zero bias, as timm does.

At the native size vitexport's forward equals open_clip's ``CLIP.encode_image(x)`` (unnormalised):
the head is the tower's projection (`Converted.head` ``"projection"``), and ``forward_head(x,
pre_logits=True)`` is the pooled output before it. open_clip resamples nothing at other sizes (the
positional table is fixed); vitexport follows timm's dynamic-pad resampling there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vitexport.checkpoint.foreign import common
from vitexport.checkpoint.foreign.common import (
    Converted,
    block_count,
    grid_args,
    matching_presets,
    need,
    patch_args,
    patch_pair,
    refuse,
    shape,
    square_side,
)
from vitexport.checkpoint.infer import mlp_ratio_for
from vitexport.model.config import preset_args
from vitexport.model.presets import PRESETS

OPENAI = "openai-clip"
OPEN_CLIP = "open_clip"
OPEN_CLIP_TIMM = "open_clip-timm"
REFERENCE = "open_clip CLIP.encode_image(x) (OpenAI clip: model.encode_image(x))"
# timm.models.vision_transformer._convert_openai_clip: (old, new) substring swaps, applied in this order.
_OPENAI_SWAPS = (
    ("conv1", "patch_embed.proj"),
    ("positional_embedding", "pos_embed"),
    ("transformer.resblocks.", "blocks."),
    ("ln_pre", "norm_pre"),
    ("ln_post", "norm"),
    ("ln_", "norm"),
    ("in_proj_", "qkv."),
    ("out_proj", "proj"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
)
_BLOCK_KEYS = frozenset(f"{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                        for p in ("weight", "bias"))
_TOP_KEYS = frozenset({"cls_token", "pos_embed", "patch_embed.proj.weight", "norm_pre.weight", "norm_pre.bias",
                       "norm.weight", "norm.bias", "head.weight", "head.bias"})
# open_clip CLIPVisionCfg fields at the values vitexport builds; anything else is refused by name.
_VISION_DEFAULTS: dict[str, Any] = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "final_ln_after_pool": False,
    "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False,
}
_VISION_IGNORED = frozenset({
    "layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "pool_type", "act_kwargs",
    "norm_kwargs", "pos_embed_type", "patch_dropout", "output_tokens", "attn_pooler_queries", "attn_pooler_heads",
    "timm_model_name", "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop",
    "timm_drop_path",
})
_TIMM_POOLS_REFUSED = ("abs_attn", "rot_attn")


def is_openai_clip(keys: Iterable[str]) -> bool:
    """The OpenAI ``clip`` / open_clip ViT layout (timm's test: ``visual.class_embedding``)."""
    return "visual.class_embedding" in set(keys)


def is_open_clip_timm(keys: Iterable[str]) -> bool:
    """An open_clip tower holding a timm model (timm's test: ``visual.trunk.pos_embed`` or block 0's norm)."""
    keys = set(keys)
    return "visual.trunk.pos_embed" in keys or "visual.trunk.blocks.0.norm1.weight" in keys


def openai_clip_to_timm(state_dict: dict[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """timm's key mapping for OpenAI CLIP / open_clip ViT towers.

    Ported from timm ``models/vision_transformer.py`` ``_convert_openai_clip`` (Apache-2.0, Ross Wightman),
    key for key: the projection becomes ``head.weight`` (transposed) with a zero ``head.bias``.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if not k.startswith(prefix):
            continue
        k = k.replace(prefix, "")
        for old, new in _OPENAI_SWAPS:
            k = k.replace(old, new)
        if k == "proj":
            k = "head.weight"
            v = v.transpose(0, 1)
            out["head.bias"] = torch.zeros(v.shape[0])
        elif k == "class_embedding":
            k = "cls_token"
            v = v.unsqueeze(0).unsqueeze(1)
        elif k == "pos_embed":
            v = v.unsqueeze(0)
        out[k] = v
    return out


# ---------------------------------------------------------------------------
# open_clip's model config
# ---------------------------------------------------------------------------
def model_cfg_of(data: dict[str, Any]) -> dict[str, Any]:
    """open_clip's model config from ``open_clip_config.json`` (``{"model_cfg": ...}``) or a model-config JSON."""
    cfg = data.get("model_cfg", data)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("vision_cfg"), dict):
        raise refuse(OPEN_CLIP, "its config has no model_cfg.vision_cfg object",
                     "pass open_clip's open_clip_config.json (or a model config with vision_cfg)")
    return cfg


def preprocess_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """``preprocess_cfg`` of ``open_clip_config.json`` as vitexport's preprocessing (scale 1/255, mean, std)."""
    pcfg = data.get("preprocess_cfg")
    if not isinstance(pcfg, dict) or pcfg.get("mean") is None or pcfg.get("std") is None:
        return None
    out: dict[str, Any] = {"scale": 1 / 255, "mean": pcfg["mean"], "std": pcfg["std"]}
    if isinstance(pcfg.get("interpolation"), str):
        out["interpolation"] = pcfg["interpolation"]
    return out


def _act_layer(cfg: dict[str, Any], vision: dict[str, Any]) -> str:
    kwargs = vision.get("act_kwargs") or {}
    quick = bool(cfg.get("quick_gelu", False))
    approximate = kwargs.get("approximate", "none") if isinstance(kwargs, dict) else None
    if not isinstance(kwargs, dict) or set(kwargs) - {"approximate"} or approximate not in ("none", "tanh") \
            or (quick and kwargs):
        raise refuse(OPEN_CLIP, f"vision act_kwargs {kwargs!r} (quick_gelu={quick}) is an activation vitexport "
                     "does not build", "only GELU, GELU-tanh and QuickGELU are supported")
    if quick:
        return "quick_gelu"
    return "gelu_tanh" if approximate == "tanh" else "gelu"


def _norm_eps(vision: dict[str, Any]) -> float:
    kwargs = vision.get("norm_kwargs") or {}
    if not isinstance(kwargs, dict) or set(kwargs) - {"eps"}:
        raise refuse(OPEN_CLIP, f"vision norm_kwargs {kwargs!r} change the LayerNorm beyond its eps",
                     "only norm_kwargs={'eps': ...} is supported")
    return float(kwargs.get("eps", 1e-5))  # open_clip's LayerNorm: torch's default eps


def _check_vision_options(vision: dict[str, Any]) -> None:
    odd = sorted(k for k in vision if k not in _VISION_DEFAULTS and k not in _VISION_IGNORED)
    if odd:
        raise refuse(OPEN_CLIP, f"vision_cfg has options vitexport does not know: {', '.join(odd)}",
                     "this open_clip tower cannot be mapped exactly")
    changed = [f"{k}={vision[k]!r}" for k, v in _VISION_DEFAULTS.items() if vision.get(k, v) not in (v, None, False)]
    if changed:
        raise refuse(OPEN_CLIP, f"vision_cfg {', '.join(changed)} builds a tower timm's VisionTransformer does not "
                     "have (attentional pooler, layer scale, custom blocks, no ln_pre, LN after pooling)",
                     "only plain open_clip ViT towers are supported")
    if isinstance(vision.get("layers"), (list, tuple)):
        raise refuse(OPEN_CLIP, "vision_cfg layers is a list: a ModifiedResNet tower, not a ViT",
                     "vitexport exports Vision Transformers only")


def native_config_args(cfg: dict[str, Any]) -> dict[str, Any]:
    """timm keyword arguments an open_clip model config states for its own ViT tower."""
    vision = cfg["vision_cfg"]
    _check_vision_options(vision)
    width, head_width = vision.get("width", 768), vision.get("head_width", 64)
    if not isinstance(width, int) or not isinstance(head_width, int) or head_width < 1 or width % head_width:
        raise refuse(OPEN_CLIP, f"vision width {width!r} is not a multiple of head_width {head_width!r}",
                     "fix the open_clip config")
    pool = vision.get("pool_type", "tok")
    if pool not in ("tok", "avg"):
        raise refuse(OPEN_CLIP, f"vision pool_type {pool!r} returns every token, not an embedding",
                     "use an open_clip tower with pool_type 'tok' or 'avg'")
    args: dict[str, Any] = {
        "num_heads": width // head_width,
        "act_layer": _act_layer(cfg, vision),
        "norm_eps": _norm_eps(vision),
        "global_pool": "token" if pool == "tok" else "avg",
    }
    if pool == "avg":
        args["fc_norm"] = False  # ln_post normalises every token before the mean (timm: norm, not fc_norm)
    return args


# ---------------------------------------------------------------------------
# the OpenAI / open_clip ViT layout
# ---------------------------------------------------------------------------
def _refuse_variants(sd: dict[str, torch.Tensor], fmt: str) -> None:
    keys = list(sd)
    if any(k.startswith(("visual.layer1.", "visual.attnpool.")) for k in keys):
        raise refuse(fmt, "its image tower is a ModifiedResNet (visual.layer1, visual.attnpool), not a ViT",
                     "vitexport exports Vision Transformers only")
    if any(k.startswith(("visual.attn_pool.", "visual.attn_pool_contrastive.")) for k in keys):
        raise refuse(fmt, "its tower ends in an attentional pooler (CoCa, visual.attn_pool)",
                     "vitexport builds the class-token, average and MAP pools only")
    if "visual.ln_pre.weight" not in sd:
        raise refuse(fmt, "its tower has no ln_pre (open_clip no_ln_pre): a bias-free patch embedding timm builds "
                     "only together with a pre-norm", "this tower cannot be mapped exactly")


def _unmapped(converted: dict[str, torch.Tensor]) -> list[str]:
    out = []
    for key in converted:
        m = re.match(r"blocks\.\d+\.(.+)$", key)
        if (m and m.group(1) not in _BLOCK_KEYS) or (not m and key not in _TOP_KEYS):
            out.append(key)
    return out


def _native_args(sd: dict[str, torch.Tensor], fmt: str) -> tuple[dict[str, Any], list[str]]:
    """What the ``visual.*`` weights state: geometry, depth, MLP width, projection width; and what they do not."""
    conv = tuple(need(sd, "visual.conv1.weight", fmt, rank=4).shape)
    args = patch_args(conv)
    dim = args["embed_dim"]
    args["depth"] = block_count(sd, r"visual\.transformer\.resblocks\.(\d+)\.", fmt)
    fc = shape(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight")
    if fc is None or len(fc) != 2 or fc[1] != dim:
        raise refuse(fmt, "block 0 has no mlp.c_fc weight of width embed_dim", "the file is of another layout")
    proj = tuple(need(sd, "visual.proj", fmt, rank=2).shape)
    pos = tuple(need(sd, "visual.positional_embedding", fmt, rank=2).shape)
    args.update(mlp_ratio=mlp_ratio_for(dim, fc[0]), num_classes=proj[1], class_token=True, pre_norm=True,
                qkv_bias="visual.transformer.resblocks.0.attn.in_proj_bias" in sd, reg_tokens=0,
                no_embed_class=False, final_norm=True)
    unknown = ["act_layer", "num_heads", "norm_eps", "global_pool"]
    grid_args(pos[0] - 1, conv[2:], args, unknown)
    return args, unknown


def _check_against_config(args: dict[str, Any], cfg: dict[str, Any]) -> None:
    vision = cfg["vision_cfg"]
    stated = {"width": args["embed_dim"], "layers": args["depth"]}
    odd = [f"{k} {vision[k]} (weights: {v})" for k, v in stated.items() if k in vision and vision[k] != v]
    if "embed_dim" in cfg and cfg["embed_dim"] != args["num_classes"]:
        odd.append(f"embed_dim {cfg['embed_dim']} (weights: {args['num_classes']})")
    if odd:
        raise refuse(OPEN_CLIP, f"its config disagrees with the weights: {', '.join(odd)}",
                     "pass the open_clip config these weights were trained with")


def _config_img_size(vision: dict[str, Any], sd: dict[str, torch.Tensor], patch: tuple[int, int]) -> Any:
    size = vision.get("image_size", 224)
    hw = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (list, tuple)) else (0, 0)
    rows = sd["visual.positional_embedding"].shape[0] - 1
    if len(hw) != 2 or (hw[0] // patch[0]) * (hw[1] // patch[1]) != rows:
        raise refuse(OPEN_CLIP, f"vision image_size {size!r} does not give the {rows} positions the weights have",
                     "pass the open_clip config these weights were trained with")
    return hw[0] if hw[0] == hw[1] else hw


def openai_suggestion(args: dict[str, Any]) -> dict[str, Any] | None:
    """What OpenAI's ``clip`` builds for these weights: the QuickGELU CLIP preset that matches them (at their
    native size when one does), else its rule written out (QuickGELU, width/64 heads, eps 1e-5, class token)."""
    presets = [n for n in matching_presets(args, limit=None) if PRESETS[n].get("act_layer") == "quick_gelu"]
    native = [n for n in presets if _same_size(PRESETS[n].get("img_size"), args.get("img_size"))]
    if presets:
        return {"architecture": (native or presets)[0]}
    if args["embed_dim"] % 64:
        return None
    return {"act_layer": "quick_gelu", "num_heads": args["embed_dim"] // 64, "norm_eps": 1e-5, "global_pool": "token"}


def _same_size(a: Any, b: Any) -> bool:
    return a is not None and b is not None and patch_pair(a) == patch_pair(b)


def convert_openai_clip(sd: dict[str, torch.Tensor], open_clip_config: dict[str, Any] | None = None) -> Converted:
    """A ``visual.*`` OpenAI CLIP / open_clip ViT state dict in timm's layout (see the module doc).

    ``open_clip_config``: the parsed ``open_clip_config.json`` (or an open_clip model-config JSON); it states
    what the weights do not. Without it those names are `Converted.unknown`.
    """
    fmt = OPEN_CLIP if open_clip_config is not None else OPENAI
    _refuse_variants(sd, fmt)
    args, unknown = _native_args(sd, fmt)
    out = openai_clip_to_timm(sd)
    odd = _unmapped(out)
    if odd:
        raise refuse(fmt, f"timm's CLIP conversion leaves {', '.join(odd[:4])} unmapped (open_clip layer scale, "
                     "qk-norm or scaled attention)", "only plain open_clip ViT towers are supported")
    preprocess = None
    if open_clip_config is not None:
        cfg = model_cfg_of(open_clip_config)
        _check_against_config(args, cfg)
        args.update(native_config_args(cfg))
        if "img_size" in unknown:  # a non-square grid: open_clip's image_size says which
            args["img_size"] = _config_img_size(cfg["vision_cfg"], sd, patch_pair(args["patch_size"]))
        unknown = [k for k in unknown if k not in args]
        preprocess = preprocess_of(open_clip_config)
    converted = Converted(fmt, out, args, "projection", REFERENCE, tuple(unknown), preprocess=preprocess)
    if unknown:
        converted.suggest = openai_suggestion(args)
        converted.suggest_for = ("OpenAI's CLIP weights (open_clip's: pass their folder with open_clip_config.json, "
                                 "or that file as --config)")
    return converted


# ---------------------------------------------------------------------------
# open_clip towers that are timm models
# ---------------------------------------------------------------------------
def _timm_tower_args(vision: dict[str, Any], head_rows: int | None) -> dict[str, Any]:
    name = vision.get("timm_model_name")
    if not isinstance(name, str) or name not in PRESETS:
        raise refuse(OPEN_CLIP_TIMM, f"timm_model_name {name!r} is not one of timm's VisionTransformer "
                     "architectures vitexport builds", "see `vitexport presets` for the supported names")
    pool, proj = vision.get("timm_pool", "avg"), vision.get("timm_proj", "linear")
    if pool in _TIMM_POOLS_REFUSED or proj == "mlp" or (proj == "linear" and vision.get("timm_proj_bias")):
        raise refuse(OPEN_CLIP_TIMM, f"timm_pool={pool!r}, timm_proj={proj!r}, timm_proj_bias="
                     f"{vision.get('timm_proj_bias', False)!r} is a head timm's conversion does not map",
                     "only timm_proj 'linear' (no bias), 'none' or '' with the trunk's own pooling are supported")
    args: dict[str, Any] = {"architecture": name}
    if proj == "linear":  # open_clip: reset_classifier(0, global_pool=pool) when pool is set, else the default
        if pool:
            preset = PRESETS[name]
            built = preset.get("fc_norm")  # reset_classifier keeps the norms the model was built with
            args["global_pool"] = pool
            args["fc_norm"] = preset.get("global_pool", "token") in ("avg", "avgmax", "max") if built is None else built
    else:  # timm.create_model(name, num_classes=0 or embed_dim, global_pool=pool)
        args["global_pool"] = pool
    args["num_classes"] = head_rows or 0
    return args


def _trunk_grid(sd: dict[str, torch.Tensor], args: dict[str, Any]) -> None:
    """``img_size`` from the trunk's positional table when the architecture's prefix rows are known."""
    base = {**preset_args(args["architecture"]), **args}
    pos, conv = shape(sd, "pos_embed"), shape(sd, "patch_embed.proj.weight")
    if pos is None or conv is None or len(pos) != 3 or len(conv) != 4:
        return
    prefix = 0 if base.get("no_embed_class") else int(base.get("class_token", True)) + base.get("reg_tokens", 0)
    side = square_side(pos[1] - prefix)
    if side is not None:
        ph, pw = conv[2:]
        args["img_size"] = side * ph if ph == pw else (side * ph, side * pw)


def convert_open_clip_timm(sd: dict[str, torch.Tensor], open_clip_config: dict[str, Any] | None = None) -> Converted:
    """An open_clip tower holding a timm ViT (``visual.trunk.*``) in timm's layout.

    Ported from timm ``checkpoint_filter_fn`` (Apache-2.0): the ``visual.trunk.`` prefix is removed and
    ``visual.head.proj.weight`` becomes ``head.weight`` with a zero ``head.bias``. The architecture comes
    from open_clip's config (``timm_model_name``) or ``--config``.
    """
    if any(k.startswith("visual.head.mlp.") for k in sd) or "visual.head.proj.bias" in sd:
        raise refuse(OPEN_CLIP_TIMM, "its projection is an MLP or has a bias, which timm's conversion drops",
                     "only a bias-free linear projection (timm_proj 'linear') is supported")
    out: dict[str, torch.Tensor] = {}
    if "visual.head.proj.weight" in sd:
        out["head.weight"] = sd["visual.head.proj.weight"]
        out["head.bias"] = torch.zeros(sd["visual.head.proj.weight"].shape[0])
    prefix = "visual.trunk."
    out.update({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    head = shape(out, "head.weight")
    if open_clip_config is None:
        args = {"num_classes": head[0] if head else 0}
        return Converted(OPEN_CLIP_TIMM, out, args, "projection" if head else "none", REFERENCE, ("architecture",))
    cfg = model_cfg_of(open_clip_config)
    args = _timm_tower_args(cfg["vision_cfg"], head[0] if head else None)
    _trunk_grid(out, args)
    return Converted(OPEN_CLIP_TIMM, out, args, "projection" if head else "none", REFERENCE,
                     preprocess=preprocess_of(open_clip_config))


OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def read_open_clip_config(path: str | Path) -> dict[str, Any]:
    """``open_clip_config.json`` (or an open_clip model-config JSON) through the bounded JSON reader."""
    data = common.read_json(Path(path), OPEN_CLIP, "pass open_clip's open_clip_config.json")
    model_cfg_of(data)  # refuses a file without model_cfg.vision_cfg
    return data


def open_clip_weights_file(folder: Path) -> Path:
    """The weights of an open_clip folder (``open_clip_model.safetensors``, else ``open_clip_pytorch_model.bin``)."""
    return common.folder_file(folder, OPEN_CLIP_WEIGHTS, OPEN_CLIP)


def convert_open_clip(sd: dict[str, torch.Tensor], data: dict[str, Any]) -> Converted:
    """An open_clip state dict with its ``open_clip_config.json`` (``data``): its image tower in timm's layout."""
    if is_open_clip_timm(sd):
        return convert_open_clip_timm(sd, data)
    if is_openai_clip(sd):
        return convert_openai_clip(sd, data)
    raise refuse(OPEN_CLIP, "its weights have no visual.class_embedding or visual.trunk.* image tower",
                 "this open_clip model's image tower is not a ViT vitexport builds")


def read_open_clip_folder(folder: str | Path) -> Converted:
    """An open_clip hub folder (``open_clip_config.json`` + ``open_clip_model.safetensors`` or
    ``open_clip_pytorch_model.bin``): its image tower in timm's layout, with its preprocessing."""
    folder = Path(folder)
    data = read_open_clip_config(folder / OPEN_CLIP_CONFIG)
    return convert_open_clip(common.read_weights(open_clip_weights_file(folder)), data)


__all__ = [
    "OPENAI", "OPEN_CLIP", "OPEN_CLIP_CONFIG", "OPEN_CLIP_TIMM", "convert_open_clip", "convert_open_clip_timm",
    "convert_openai_clip", "is_open_clip_timm", "is_openai_clip", "model_cfg_of", "native_config_args",
    "open_clip_weights_file", "openai_clip_to_timm", "preprocess_of", "read_open_clip_config", "read_open_clip_folder",
]
