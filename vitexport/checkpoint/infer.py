"""The model config a state dict's keys and shapes imply, and what they cannot say: the one place of shape inference.

Geometry (width, depth, patch, tokens, grid, classes, pooling) and the layer layout of a timm ViT (block type,
attention, MLP, norms, biases, pooling head) come from the keys and shapes (`infer_config_args`); a preset's
arguments are corrected by what the weights state unambiguously (`merge_shape_facts`).

The weights store neither a norm's eps nor the activation. Inference assumes timm's defaults
(eps 1e-6, GELU) only for layouts whose timm architectures use them; where timm's own
architectures with that layout use other values (CLIP: eps 1e-5 and maybe QuickGELU; SigLIP's
MAP head: GELU or GELU-tanh; AIMv2: RMSNorm eps 1e-5, SiLU; BEiT3: eps 1e-5), it refuses and
names the options and the matching architectures instead of building something close.
Weights of timm's other classes (Eva: DINOv3, EVA-02, PE, RoPE-ViT; distilled DeiT; NaFlexViT) are refused by the
keys that show the class, naming the presets of that class they fit (`vitexport.checkpoint.classes`).
Torch-free: it reads ``{key: shape}`` (a state dict's tensors are read for their shapes only; only a refusal of
another class builds its presets on the ``meta`` device).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from vitexport._util.errors import ConfigError
from vitexport.checkpoint.classes import class_shown, matching_presets_of_class, refuse_other_class
from vitexport.model.config import ViTConfig, presets_of_class
from vitexport.model.families import LAYOUT_FIELDS
from vitexport.model.names import FUSED, GATED, PACKED, has_trait, with_trait

Shapes = dict[str, tuple[int, ...]]
# Layout fields the weights do not store: the families with a given visible layout decide them. (Which half of a
# packed MLP is the gate is not stored either: the packed MLPs look alike, `_visible_mlp`.)
UNSTORED_FIELDS = ("norm_eps", "embed_norm_eps", "act_layer", "mlp_layer")
VISIBLE_FIELDS = tuple(f for f in LAYOUT_FIELDS if f not in UNSTORED_FIELDS)
PACKED_MLP = with_trait("mlp", PACKED)[0]  # what inference calls any packed MLP
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ViTConfig)}


def shapes_of(sd: Mapping[str, Any]) -> Shapes:
    """``{key: shape}`` of a state dict (tensors or anything with a ``shape``), or of ``{key: shape}`` itself."""
    return {k: tuple(getattr(v, "shape", v)) for k, v in sd.items()}


def mlp_ratio_for(dim: int, hidden: int) -> float:
    """The smallest float ratio with ``int(dim * ratio) == hidden`` (timm sizes the MLP that way)."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _block_kind(shapes: Shapes) -> str:
    if any(k.startswith("blocks.0.attns.") for k in shapes):
        return "parallel_things"
    if "blocks.0.in_proj.weight" in shapes:
        return "diff_parallel_scaling" if "blocks.0.lambda_q1" in shapes else "parallel_scaling"
    if _res_post_order(shapes):
        return "res_post"
    return "block"


def _res_post_order(shapes: Shapes) -> bool:
    """ResPostBlock has Block's keys and shapes; only the order modules were registered in differs
    (``attn`` before ``norm1``), which a state dict saved by torch keeps and a sorted one loses."""
    keys = list(shapes)
    first, second = "blocks.0.attn.qkv.weight", "blocks.0.norm1.weight"
    if first not in shapes or second not in shapes or keys == sorted(keys):
        return False
    return keys.index(first) < keys.index(second)


def ambiguous_block_note(shapes: Shapes, block_fn: str) -> str | None:
    """A note when pre-norm and residual-post-norm blocks cannot be told apart (sorted keys, no LayerScale)."""
    keys = list(shapes)
    if block_fn == "block" and "blocks.0.ls1.gamma" not in shapes and keys == sorted(keys):
        return (
            "the weights' keys are sorted, so pre-norm blocks (assumed) cannot be told from residual-post-norm "
            "blocks (timm's *_rpn_*); pass --config with the architecture for those"
        )
    return None


def _mlp_args(shapes: Shapes, prefix: str, dim: int) -> dict[str, Any]:
    """MLP kind and ratio from ``{prefix}fc1*``/``fc2`` shapes; `PACKED_MLP` stands for any packed MLP."""
    if f"{prefix}fc1_g.weight" in shapes:
        kind, hidden = "swiglu", shapes[f"{prefix}fc1_g.weight"][0]
    else:
        fc1, fc2 = shapes.get(f"{prefix}fc1.weight"), shapes.get(f"{prefix}fc2.weight")
        if fc1 is None or fc2 is None:
            raise ConfigError(f"cannot infer the model config: no {prefix}fc1/fc2 weights; pass --config")
        kind = PACKED_MLP if fc2[1] * 2 == fc1[0] else "mlp"
        hidden = fc1[0]
    return {
        "mlp_layer": kind,
        "mlp_ratio": mlp_ratio_for(dim, hidden),
        "scale_mlp_norm": f"{prefix}norm.weight" in shapes,
    }


def _attn_args(shapes: Shapes, prefix: str, dim: int) -> dict[str, Any]:
    """Biases, qk-norm, scale norm, differential attention and (when stored) heads of ``{prefix}``."""
    diff = f"{prefix}lambda_q1" in shapes
    out: dict[str, Any] = {
        "attn_layer": "diff" if diff else "attn",
        "qkv_bias": f"{prefix}qkv.bias" in shapes,
        "proj_bias": f"{prefix}proj.bias" in shapes,
        "scale_attn_norm": f"{prefix}norm.weight" in shapes,
        "qk_norm": f"{prefix}q_norm.weight" in shapes,
    }
    head_dim = shapes.get(f"{prefix}lambda_q1", shapes.get(f"{prefix}q_norm.weight"))
    if head_dim:
        out["num_heads"] = dim // (head_dim[0] * (2 if diff else 1))
    return out


def _parallel_scaling_args(shapes: Shapes, dim: int, kind: str) -> dict[str, Any]:
    in_proj = shapes["blocks.0.in_proj.weight"]
    out_key = "blocks.0.out_proj" if kind == "diff_parallel_scaling" else "blocks.0.attn_out_proj"
    diff = kind == "diff_parallel_scaling"
    out: dict[str, Any] = {
        "mlp_ratio": mlp_ratio_for(dim, in_proj[0] - 3 * dim),
        "qkv_bias": "blocks.0.in_proj.bias" in shapes,
        "proj_bias": f"{out_key}.bias" in shapes,
        "qk_norm": "blocks.0.q_norm.weight" in shapes,
    }
    head_dim = shapes.get("blocks.0.lambda_q1", shapes.get("blocks.0.q_norm.weight"))
    if head_dim:
        out["num_heads"] = dim // (head_dim[0] * (2 if diff else 1))
    if "blocks.0.ls.gamma" in shapes:
        out["init_values"] = 1e-5  # only enables LayerScale; gamma comes from the weights
    return out


def _norm_kind(shapes: Shapes, key: str) -> str:
    return "layernorm" if f"{key}.bias" in shapes else "rmsnorm"


def infer_block_args(shapes: Shapes, dim: int) -> dict[str, Any]:
    """Block-level timm keyword arguments that the keys and shapes of ``blocks.0`` determine."""
    kind = _block_kind(shapes)
    args: dict[str, Any] = {"block_fn": kind}
    if has_trait("block", kind, FUSED):
        args.update(_parallel_scaling_args(shapes, dim, kind))
        norm_key = "blocks.0.in_norm"
    else:
        if kind == "parallel_things":
            branches = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.0\.attns\.(\d+)\.", k))}
            if branches != {0, 1}:
                raise ConfigError(
                    f"cannot build parallel blocks with {len(branches)} branches: timm's VisionTransformer "
                    "always has 2; these weights are not from that class"
                )
            attn, mlp, norm_key, ls = "blocks.0.attns.0.attn.", "blocks.0.ffns.0.mlp.", "blocks.0.attns.0.norm", (
                "blocks.0.attns.0.ls.gamma"
            )
        else:
            attn, mlp, norm_key, ls = "blocks.0.attn.", "blocks.0.mlp.", "blocks.0.norm1", "blocks.0.ls1.gamma"
        args.update(_attn_args(shapes, attn, dim))
        args.update(_mlp_args(shapes, mlp, dim))
        if ls in shapes:
            args["init_values"] = 1e-5  # only enables LayerScale; gamma comes from the weights
    args["norm_layer"] = _norm_kind(shapes, norm_key)
    if "patch_embed.norm.weight" in shapes:
        args["embed_norm_layer"] = _norm_kind(shapes, "patch_embed.norm")
    return args


def assumed_act_note(args: dict[str, Any]) -> str | None:
    """The plain layout whose timm architectures disagree on the activation: no class token, avg pool."""
    plain = all(args.get(k, _DEFAULTS[k]) == _DEFAULTS[k] for k in ("norm_layer", "mlp_layer", "block_fn", "pre_norm"))
    if plain and not args.get("class_token") and args.get("global_pool") == "avg" and not args.get("fc_norm"):
        return (
            "act_layer is not stored in the weights: GELU assumed (timm's default); SigLIP 2 *_siglip_gap_* "
            "weights use gelu_tanh: pass --config with their architecture"
        )
    return None


def _unstored_options(args: dict[str, Any]) -> list[str]:
    """The options the weights do not store whose value timm's architectures with this layout disagree on
    or set away from timm's defaults."""
    needed: list[str] = []
    if args.get("norm_layer") == "rmsnorm" or args.get("embed_norm_layer") or args.get("pre_norm") or (
        args.get("scale_attn_norm") or args.get("scale_mlp_norm")
    ):
        needed.append("norm_eps")
    mlp = args.get("mlp_layer")
    if has_trait("mlp", mlp, GATED) or args.get("global_pool") == "map" or args.get("pre_norm"):
        needed.append("act_layer")
    if has_trait("mlp", mlp, PACKED):
        needed.append(f"mlp_layer ({' or '.join(map(repr, with_trait('mlp', PACKED)))}: which half is the gate)")
    return needed


def matching_presets(args: dict[str, Any], limit: int = 4) -> list[str]:
    """Presets with the same visible layout and the same width, depth and patch."""

    def visible(a: dict[str, Any]) -> tuple[Any, ...]:
        cfg = ViTConfig.from_dict(a)
        mlp = PACKED_MLP if has_trait("mlp", cfg.mlp_layer, PACKED) else cfg.mlp_layer  # the packing order is unseen
        return (*(getattr(cfg, f) for f in VISIBLE_FIELDS), mlp, cfg.global_pool == "map", cfg.embed_dim,
                cfg.depth, cfg.patch_hw)

    target = visible(args)
    presets = presets_of_class("vit")  # timm's vision_transformer.py and deit.py's plain DeiTs
    same = [name for name, preset in presets.items() if visible(preset) == target]
    grid = ViTConfig.from_dict(args).grid_size
    same.sort(key=lambda name: ViTConfig.from_dict(presets[name]).grid_size != grid)  # same grid first
    return same[:limit]


def refuse_unstored(args: dict[str, Any], shapes: Shapes | None = None, file: str | None = None) -> None:
    """Raise when the layout needs options the weights do not store (see the module docstring). With the weights'
    ``shapes``, Eva presets they fit exactly are named too (PE's keys look like a ViT's with a MAP head)."""
    needed = _unstored_options(args)
    if not needed:
        return
    names = matching_presets(args)
    hint = (
        "pass --config '{\"architecture\": \"" + names[0] + "\"}'" + (f" (or one of {', '.join(names[1:])})"
                                                                      if len(names) > 1 else "")
        if names else "pass --config with these options"
    )
    eva = matching_presets_of_class(shapes, "eva") if shapes is not None else []
    if eva:
        config = json.dumps({"architecture": eva[0][0], **eva[0][1]})
        hint += (f"; they also fit timm's Eva {', '.join(n for n, _ in eva)} (rotary embeddings are not stored): "
                 f"vitexport onnx {file or 'WEIGHTS'} --config '{config}'")
    elif shapes is not None and (eva := matching_presets_of_class(shapes, "eva", exact=False)):
        hint += (f"; their keys are also those of timm's Eva {', '.join(n for n, _ in eva)} (rotary embeddings "
                 "are not stored): for those, pass --config with the architecture and its size overrides")
    kinds = ", ".join(
        f"{k}={args[k]!r}" for k in ("norm_layer", "mlp_layer", "block_fn", "global_pool", "pre_norm")
        if k in args
    )
    verb = "is" if len(needed) == 1 else "are"
    raise ConfigError(
        f"cannot infer the model config: {', '.join(needed)} {verb} not stored in the weights ({kinds}), "
        f"and timm's architectures with this layout do not all use timm's defaults for it; {hint}"
    )


# ---------------------------------------------------------------------------
# the whole config
# ---------------------------------------------------------------------------
def infer_config_args(sd: Mapping[str, Any], check_layout: bool = True,
                      file: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """timm keyword arguments implied by a state dict's keys and shapes, and notes on what was guessed.

    With ``check_layout``, layouts whose eps/activation the weights do not store are refused
    (`refuse_unstored`), and weights of another model class with the presets they fit (``file`` names the
    weights in the command it suggests); without, only the geometry is to be trusted.
    """
    shapes = shapes_of(sd)
    if class_shown(shapes) is not None:
        if check_layout:
            refuse_other_class(shapes, file)
        raise ConfigError("cannot infer the model config of another class than a plain ViT")
    notes: list[str] = []
    proj = shapes.get("patch_embed.proj.weight")
    if proj is None or len(proj) != 4:
        raise ConfigError(
            "cannot infer the model config: the weights have no patch_embed.proj.weight of a ViT; "
            "pass --config with timm keyword arguments"
        )
    embed_dim, in_chans, ph, pw = proj
    block_ids = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not block_ids:
        raise ConfigError("cannot infer the model config: no blocks.N.* weights; pass --config")
    args: dict[str, Any] = {
        "embed_dim": embed_dim,
        "in_chans": in_chans,
        "patch_size": ph if ph == pw else (ph, pw),
        "depth": max(block_ids) + 1,
        "class_token": "cls_token" in shapes,
        "pre_norm": "norm_pre.weight" in shapes,
    }
    args.update(infer_block_args(shapes, embed_dim))
    notes += [n for n in [ambiguous_block_note(shapes, args["block_fn"])] if n]
    reg = shapes.get("reg_token")
    args["reg_tokens"] = reg[1] if reg else 0
    head = shapes.get("head.weight")
    args["num_classes"] = head[0] if head else 0
    if "num_heads" not in args:  # stored only with qk-norm or differential attention
        args["num_heads"] = max(1, embed_dim // 64)
        notes.append(f"num_heads is not stored in the weights; assumed embed_dim/64 = {args['num_heads']}")
    args.update(_infer_pooling(shapes, args["class_token"], notes))
    args.update(_infer_grid(shapes, int(args["class_token"]) + args["reg_tokens"], (ph, pw), notes))
    if check_layout:
        refuse_unstored(args, shapes, file)
        notes += [n for n in [assumed_act_note(args)] if n]
    return args, notes


def _infer_pooling(shapes: Shapes, class_token: bool, notes: list[str]) -> dict[str, Any]:
    """Final norm, fc_norm and global_pool from which norms (and pooling head) the weights hold."""
    has_fc_norm = "fc_norm.weight" in shapes
    args: dict[str, Any] = {"final_norm": has_fc_norm or "norm.weight" in shapes}
    if "attn_pool.latent" in shapes:
        args.update(global_pool="map", fc_norm=has_fc_norm)
    elif has_fc_norm:
        args.update(global_pool="avg", fc_norm=True)
        notes.append("global_pool assumed 'avg' (fc_norm present; max/avgmax are not distinguishable by shape)")
    elif class_token:
        args["global_pool"] = "token"
    else:
        args.update(global_pool="avg", fc_norm=False)
    return args


def _infer_grid(shapes: Shapes, num_prefix: int, patch: tuple[int, int], notes: list[str]) -> dict[str, Any]:
    """``no_embed_class`` and ``img_size`` from the rows of ``pos_embed``: a square grid, with prefix rows or not."""
    pos = shapes.get("pos_embed")
    if pos is None:
        raise ConfigError("cannot infer the model config: no pos_embed; pass --config")
    candidates = []
    for no_embed_class in (False, True):
        n = pos[1] - (0 if no_embed_class else num_prefix)
        side = math.isqrt(max(n, 0))
        if n > 0 and side * side == n:
            candidates.append((no_embed_class, side))
    if num_prefix == 0:
        candidates = candidates[:1]
    if len(candidates) != 1:
        raise ConfigError(
            f"cannot infer the positional-embedding grid from pos_embed of {pos[1]} rows "
            f"with {num_prefix} prefix tokens (non-square or ambiguous); pass --config with img_size and no_embed_class"
        )
    no_embed_class, side = candidates[0]
    if no_embed_class:
        notes.append("pos_embed has no rows for the prefix tokens: no_embed_class=True, square grid assumed")
    ph, pw = patch
    notes.append(f"native grid inferred as {side}x{side} (img_size {side * ph}x{side * pw})")
    return {"no_embed_class": no_embed_class, "img_size": (side * ph, side * pw) if ph != pw else side * ph}


def merge_shape_facts(base: dict[str, Any], sd: Mapping[str, Any]) -> dict[str, Any]:
    """A preset's args corrected by what the weights state unambiguously (classes, channels, grid)."""
    shapes = shapes_of(sd)
    merged = dict(base)
    head = shapes.get("head.weight")
    merged["num_classes"] = head[0] if head else 0
    proj = shapes.get("patch_embed.proj.weight")
    if proj and len(proj) == 4:
        merged["in_chans"] = proj[1]
    try:
        inferred, _ = infer_config_args(shapes, check_layout=False)
    except ConfigError:
        return merged

    def grid(args: dict[str, Any]) -> tuple[int, int]:
        return ViTConfig.from_dict({k: args[k] for k in ("img_size", "patch_size") if k in args}).grid_size

    # a grid guessed as square (and so perhaps without prefix rows) only replaces one that does not fit
    same_rows = inferred["no_embed_class"] == bool(merged.get("no_embed_class"))
    if grid(merged) != grid(inferred) and same_rows and not _pos_embed_fits(merged, shapes):
        merged["img_size"] = inferred["img_size"]
    return merged


def _pos_embed_fits(args: dict[str, Any], shapes: Shapes) -> bool:
    from vitexport.model.family_config import config_from_dict

    pos = shapes.get("pos_embed")
    try:
        cfg = config_from_dict(args)
    except ConfigError:
        return False
    gh, gw = cfg.grid_size
    return pos is not None and pos[1] == gh * gw + (0 if cfg.no_embed_class else cfg.num_prefix_tokens)


__all__ = ["infer_block_args", "infer_config_args", "matching_presets", "merge_shape_facts", "refuse_unstored",
           "shapes_of"]
