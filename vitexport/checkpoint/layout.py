"""What a state dict's keys and shapes say about the layer layout of a timm ViT (block type, MLP,
norms, biases, pooling head), and what they cannot say.

The weights store neither a norm's eps nor the activation. Inference assumes timm's defaults
(eps 1e-6, GELU) only for layouts whose timm architectures use them; where timm's own
architectures with that layout use other values (CLIP: eps 1e-5 and maybe QuickGELU; SigLIP's
MAP head: GELU or GELU-tanh; AIMv2: RMSNorm eps 1e-5, SiLU; BEiT3: eps 1e-5), it refuses and
names the options and the matching architectures instead of building something close.
Torch-free: it reads ``{key: shape}``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from vitexport._util.errors import ConfigError
from vitexport.model.presets import PRESETS

Shapes = dict[str, tuple[int, ...]]
# Layout fields the weights show; the families with a given visible layout decide the rest.
VISIBLE_FIELDS = (
    "norm_layer", "embed_norm_layer", "block_fn", "attn_layer", "scale_attn_norm", "scale_mlp_norm",
    "proj_bias", "pre_norm",
)


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
    """MLP kind and ratio from ``{prefix}fc1*``/``fc2`` shapes; ``glu`` stands for either gated packing."""
    if f"{prefix}fc1_g.weight" in shapes:
        kind, hidden = "swiglu", shapes[f"{prefix}fc1_g.weight"][0]
    else:
        fc1, fc2 = shapes.get(f"{prefix}fc1.weight"), shapes.get(f"{prefix}fc2.weight")
        if fc1 is None or fc2 is None:
            raise ConfigError(f"cannot infer the model config: no {prefix}fc1/fc2 weights; pass --config")
        kind = "glu" if fc2[1] * 2 == fc1[0] else "mlp"
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
    if kind in ("parallel_scaling", "diff_parallel_scaling"):
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
    plain = all(args.get(k, d) == d for k, d in (
        ("norm_layer", "layernorm"), ("mlp_layer", "mlp"), ("block_fn", "block"), ("pre_norm", False),
    ))
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
    if args.get("mlp_layer") in ("swiglu", "glu") or args.get("global_pool") == "map" or args.get("pre_norm"):
        needed.append("act_layer")
    if args.get("mlp_layer") == "glu":
        needed.append("mlp_layer ('glu' or 'swiglu_packed': which half is the gate)")
    return needed


def matching_presets(args: dict[str, Any], limit: int = 4) -> list[str]:
    """Presets with the same visible layout and the same width, depth and patch."""
    from vitexport.model.config import ViTConfig

    def visible(a: dict[str, Any]) -> tuple[Any, ...]:
        cfg = ViTConfig.from_dict(a)
        mlp = "glu" if cfg.mlp_layer in ("glu", "swiglu_packed") else cfg.mlp_layer  # the packing order is unseen
        return (*(getattr(cfg, f) for f in VISIBLE_FIELDS), mlp, cfg.global_pool == "map", cfg.embed_dim,
                cfg.depth, cfg.patch_hw)

    target = visible(args)
    same = [name for name, preset in PRESETS.items() if visible(preset) == target]
    grid = ViTConfig.from_dict(args).grid_size
    same.sort(key=lambda name: ViTConfig.from_dict(PRESETS[name]).grid_size != grid)  # same grid first
    return same[:limit]


def refuse_unstored(args: dict[str, Any]) -> None:
    """Raise when the layout needs options the weights do not store (see the module docstring)."""
    needed = _unstored_options(args)
    if not needed:
        return
    names = matching_presets(args)
    hint = (
        "pass --config '{\"architecture\": \"" + names[0] + "\"}'" + (f" (or one of {', '.join(names[1:])})"
                                                                      if len(names) > 1 else "")
        if names else "pass --config with these options"
    )
    kinds = ", ".join(
        f"{k}={args[k]!r}" for k in ("norm_layer", "mlp_layer", "block_fn", "global_pool", "pre_norm")
        if k in args
    )
    verb = "is" if len(needed) == 1 else "are"
    raise ConfigError(
        f"cannot infer the model config: {', '.join(needed)} {verb} not stored in the weights ({kinds}), "
        f"and timm's architectures with this layout do not all use timm's defaults for it; {hint}"
    )
