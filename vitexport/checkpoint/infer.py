"""The model config a state dict's keys and shapes imply, and what they cannot say: the one place of shape inference.

Geometry (width, depth, patch, tokens, grid, classes, pooling) and the layer layout of a timm ViT (block type,
attention, MLP, norms, biases, pooling head) come from the keys and shapes (`infer_config_args`); a preset's
arguments are corrected by what the weights state unambiguously (`merge_shape_facts`).

The weights store neither a norm's eps nor the activation. Inference assumes timm's defaults
(eps 1e-6, GELU) only for layouts whose timm architectures use them; where timm's own
architectures with that layout use other values (CLIP: eps 1e-5 and maybe QuickGELU; SigLIP's
MAP head: GELU or GELU-tanh; AIMv2: RMSNorm eps 1e-5, SiLU; BEiT3: eps 1e-5), it refuses and
names the options, timm's architectures of that layout (any depth and width) and, for each set of
values they use, a command whose ``--config`` completes the inferred config with them (`unstored_hints`).
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
import shlex
from collections.abc import Mapping
from typing import Any

from vitexport._util.errors import ConfigError
from vitexport.checkpoint.classes import class_shown, matching_presets_of_class, mlp_ratio_for, refuse_other_class
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


def ambiguous_block_note(shapes: Shapes, block_fn: str, file: str | None = None) -> str | None:
    """A note when pre-norm and residual-post-norm blocks cannot be told apart (sorted keys, no LayerScale)."""
    keys = list(shapes)
    if block_fn == "block" and "blocks.0.ls1.gamma" not in shapes and keys == sorted(keys):
        return (
            "the weights' keys are sorted, so pre-norm blocks (assumed) cannot be told from residual-post-norm "
            f"blocks (timm's *_rpn_*); for those: {config_command(file, {'block_fn': 'res_post'})}"
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


def assumed_act_note(args: dict[str, Any], file: str | None = None) -> str | None:
    """The plain layout whose timm architectures disagree on the activation: no class token, avg pool."""
    plain = all(args.get(k, _DEFAULTS[k]) == _DEFAULTS[k] for k in ("norm_layer", "mlp_layer", "block_fn", "pre_norm"))
    if plain and not args.get("class_token") and args.get("global_pool") == "avg" and not args.get("fc_norm"):
        return (
            "act_layer is not stored in the weights: GELU assumed (timm's default); SigLIP 2 *_siglip_gap_* "
            f"weights use gelu_tanh: for those: {config_command(file, {'act_layer': 'gelu_tanh'})}"
        )
    return None


def _unstored_options(args: dict[str, Any]) -> list[str]:
    """The fields the weights do not store whose value timm's architectures with this layout disagree on
    or set away from timm's defaults."""
    needed: list[str] = []
    if args.get("norm_layer") == "rmsnorm" or args.get("embed_norm_layer") or args.get("pre_norm") or (
        args.get("scale_attn_norm") or args.get("scale_mlp_norm")
    ):
        needed.append("norm_eps")
    if args.get("embed_norm_layer"):
        needed.append("embed_norm_eps")
    mlp = args.get("mlp_layer")
    if has_trait("mlp", mlp, GATED) or args.get("global_pool") == "map" or args.get("pre_norm"):
        needed.append("act_layer")
    if has_trait("mlp", mlp, PACKED):
        needed.append("mlp_layer")
    return needed


def _shown(field: str) -> str:
    if field == "mlp_layer":
        return f"mlp_layer ({' or '.join(map(repr, with_trait('mlp', PACKED)))}: which half is the gate)"
    return field


def _visible_layout(cfg: ViTConfig) -> tuple[Any, ...]:
    """What the weights show of a layout (the packing order of a packed MLP is unseen), whatever the sizes."""
    mlp = PACKED_MLP if has_trait("mlp", cfg.mlp_layer, PACKED) else cfg.mlp_layer
    return (*(getattr(cfg, f) for f in VISIBLE_FIELDS), mlp, cfg.global_pool == "map")


def layout_presets(args: dict[str, Any]) -> list[tuple[str, ViTConfig]]:
    """The plain-ViT presets (timm's vision_transformer.py and deit.py's plain DeiTs) with the layout ``args``
    show, whatever their depth, width and patch."""
    target = _visible_layout(ViTConfig.from_dict(args))
    found = ((name, ViTConfig.from_dict(preset)) for name, preset in presets_of_class("vit").items())
    return [(name, cfg) for name, cfg in found if _visible_layout(cfg) == target]


def matching_presets(args: dict[str, Any], limit: int = 4) -> list[str]:
    """Presets with the same visible layout and the same width, depth and patch (the same grid first)."""
    cfg = ViTConfig.from_dict(args)
    same = [(name, p) for name, p in layout_presets(args)
            if (p.embed_dim, p.depth, p.patch_hw) == (cfg.embed_dim, cfg.depth, cfg.patch_hw)]
    same.sort(key=lambda item: item[1].grid_size != cfg.grid_size)
    return [name for name, _ in same[:limit]]


def unstored_hints(args: dict[str, Any], needed: list[str], heads_guessed: bool = False
                   ) -> list[tuple[list[str], dict[str, Any]]]:
    """(preset names, the options that complete the inferred config) for each set of values of the unstored
    fields that timm's architectures with this layout use, whatever their depth and width: those of the weights'
    size first. The options hold ``needed`` and every unstored field those architectures set away from timm's
    defaults, and ``num_heads`` when it was guessed and their presets of this width agree on it. Without such an
    architecture, timm's defaults (one entry, no names)."""
    cfg = ViTConfig.from_dict(args)
    fields = [f for f in UNSTORED_FIELDS if f in needed or (f != "mlp_layer" and (
        f != "embed_norm_eps" or cfg.embed_norm_layer))]
    groups: dict[tuple[Any, ...], list[tuple[str, ViTConfig]]] = {}
    for name, preset in layout_presets(args):
        values = {f: getattr(preset, f) for f in fields if f in needed or getattr(preset, f) != _DEFAULTS[f]}
        groups.setdefault(tuple(values.items()), []).append((name, preset))
    if not groups:
        return [([], {f: getattr(cfg, f) if f == "mlp_layer" else _DEFAULTS[f] for f in needed})]

    def rank(members: list[tuple[str, ViTConfig]]) -> tuple[int, int, int]:
        exact = any((p.embed_dim, p.depth, p.patch_hw) == (cfg.embed_dim, cfg.depth, cfg.patch_hw) for _, p in members)
        width = any(p.embed_dim == cfg.embed_dim for _, p in members)
        return (not exact, not width, -len(members))

    out = []
    for key, members in sorted(groups.items(), key=lambda kv: rank(kv[1])):
        options = dict(key)
        heads = {p.num_heads for _, p in members if p.embed_dim == cfg.embed_dim}
        if heads_guessed and len(heads) == 1 and (h := heads.pop()) != cfg.num_heads:
            options["num_heads"] = h
        members.sort(key=lambda item: (item[1].embed_dim != cfg.embed_dim, item[1].depth != cfg.depth,
                                       item[1].patch_hw != cfg.patch_hw, item[1].grid_size != cfg.grid_size))
        out.append(([name for name, _ in members], options))
    return out


def config_command(file: str | None, options: dict[str, Any]) -> str:
    """The command a refusal prints: ``vitexport onnx FILE --config '{...}'`` (the file as the user named it)."""
    return f"vitexport onnx {shlex.quote(file) if file else 'WEIGHTS'} --config {shlex.quote(json.dumps(options))}"


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def refuse_unstored(args: dict[str, Any], shapes: Shapes | None = None, file: str | None = None,
                    given: Mapping[str, Any] | None = None, heads_guessed: bool = False) -> None:
    """Raise when the layout needs options the weights do not store and ``given`` (--config) does not give (see
    the module docstring), with a command for each set of values timm's architectures of this layout use. With the
    weights' ``shapes``, Eva presets they fit exactly are named too (PE's keys look like a ViT's with a MAP head)."""
    needed = [f for f in _unstored_options(args) if f not in (given or {})]
    if not needed:
        return
    commands: dict[str, list[str]] = {}  # a command (what is given wins) -> the presets it is for
    for names, options in unstored_hints(args, needed, heads_guessed):
        commands.setdefault(config_command(file, {**options, **(given or {})}), []).extend(names)
    parts = []
    for i, (command, names) in enumerate(list(commands.items())[:3]):
        if not names:
            parts.append(f"no timm architecture has this layout; with timm's defaults: {command} (check them "
                         "against how the weights were trained)")
        else:
            parts.append(f"{'or, as ' if i else 'as '}timm's {_names(names)} (this layout, any depth and width): "
                         f"{command}")
    hint = "; ".join(parts) + " (the same --config completes what the weights show for info, torchscript and " \
                              "verify --checkpoint)"
    eva = matching_presets_of_class(shapes, "eva") if shapes is not None else []
    if eva:
        config = {"architecture": eva[0][0], **eva[0][1]}
        hint += (f"; they also fit timm's Eva {', '.join(n for n, _ in eva)} (rotary embeddings are not stored): "
                 f"{config_command(file, config)}")
    elif shapes is not None and (eva := matching_presets_of_class(shapes, "eva", exact=False)):
        hint += (f"; their keys are also those of timm's Eva {', '.join(n for n, _ in eva)} (rotary embeddings "
                 "are not stored): for those, pass --config with the architecture and its size overrides")
    kinds = ", ".join(
        f"{k}={args[k]!r}" for k in ("norm_layer", "mlp_layer", "block_fn", "global_pool", "pre_norm")
        if k in args
    )
    verb = "is" if len(needed) == 1 else "are"
    raise ConfigError(
        f"cannot infer the model config: {', '.join(map(_shown, needed))} {verb} not stored in the weights "
        f"({kinds}), and timm's architectures with this layout do not all use timm's defaults for it; {hint}"
    )


# ---------------------------------------------------------------------------
# the whole config
# ---------------------------------------------------------------------------
def infer_config_args(sd: Mapping[str, Any], check_layout: bool = True, file: str | None = None,
                      given: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """timm keyword arguments implied by a state dict's keys and shapes, and notes on what was guessed.

    With ``check_layout``, layouts whose eps/activation the weights do not store are refused
    (`refuse_unstored`), and weights of another model class with the presets they fit (``file`` names the
    weights in the commands it suggests); without, only the geometry is to be trusted. ``given`` (``--config``
    without an architecture) completes what the weights show: its options win, what it gives is neither guessed
    (no note) nor refused, and it settles a grid the rows of ``pos_embed`` leave open.
    """
    given = dict(given or {})
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
    if "block_fn" not in given:
        notes += [n for n in [ambiguous_block_note(shapes, args["block_fn"], file)] if n]
    reg = shapes.get("reg_token")
    args["reg_tokens"] = reg[1] if reg else 0
    head = shapes.get("head.weight")
    args["num_classes"] = head[0] if head else 0
    heads_guessed = "num_heads" not in args  # stored only with qk-norm or differential attention
    if heads_guessed:
        args["num_heads"] = max(1, embed_dim // 64)
        if "num_heads" not in given:
            notes.append(f"num_heads is not stored in the weights; assumed embed_dim/64 = {args['num_heads']}")
    args.update(_infer_pooling(shapes, args["class_token"], notes if "global_pool" not in given else []))
    prefix = int(given.get("class_token", args["class_token"])) + given.get("reg_tokens", args["reg_tokens"])
    heads_guessed = heads_guessed and "num_heads" not in given
    layout_hint = None
    if check_layout and (needed := [f for f in _unstored_options({**args, **given}) if f not in given]):
        layout_hint = unstored_hints({**args, **given}, needed, heads_guessed)[0]
    args.update(_infer_grid(shapes, prefix, (ph, pw), notes, given, file, layout_hint))
    if check_layout:
        refuse_unstored({**args, **given}, shapes, file, given, heads_guessed)
        if "act_layer" not in given:
            notes += [n for n in [assumed_act_note(args, file)] if n]
    return {**args, **given}, notes


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


def _grid_candidates(rows: int, num_prefix: int) -> list[tuple[bool, int, int]]:
    """(no_embed_class, grid rows, grid columns) that ``rows`` of ``pos_embed`` can be: with the prefix tokens'
    rows and without (with prefix tokens); a square grid, else the factors closest to a square."""
    out = []
    for no_embed_class in ((False, True) if num_prefix else (False,)):
        n = rows - (0 if no_embed_class else num_prefix)
        if n <= 0:
            continue
        side = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
        out.append((no_embed_class, side, n // side))
    return out


def _infer_grid(shapes: Shapes, num_prefix: int, patch: tuple[int, int], notes: list[str],
                given: Mapping[str, Any] | None = None, file: str | None = None,
                layout_hint: tuple[list[str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """``no_embed_class`` and ``img_size`` from the rows of ``pos_embed``: a square grid, with prefix rows or not;
    what ``given`` states of them is taken, and settles the rest. A refusal's commands carry ``layout_hint``'s
    options too (what `refuse_unstored` would ask for next), so that each works as printed."""
    given = given or {}
    pos = shapes.get("pos_embed")
    if pos is None:
        raise ConfigError("cannot infer the model config: no pos_embed; pass --config")
    ph, pw = patch
    candidates = _grid_candidates(pos[1], num_prefix)
    if "img_size" in given:
        if "no_embed_class" in given:
            return {}
        size = given["img_size"]
        gh, gw = (size, size) if isinstance(size, int) else tuple(size)
        return {"no_embed_class": bool(num_prefix) and pos[1] == (gh // ph) * (gw // pw)}
    if "no_embed_class" in given:
        candidates = [c for c in candidates if c[0] == bool(given["no_embed_class"])]
    square = [c for c in candidates if c[1] == c[2]]
    if len(square) != 1:
        candidates = [c for c in candidates if c[2] <= 4 * c[1]] or candidates  # 1x19 only when nothing else fits
        names, extra = layout_hint or ([], {})
        commands = []
        for no_embed_class, side, cols in square or candidates:
            grid = {"img_size": side * ph if side == cols and ph == pw else [side * ph, cols * pw]}
            if num_prefix:
                grid["no_embed_class"] = no_embed_class
            why = f" ({'no rows' if no_embed_class else 'rows'} for the prefix tokens)" if num_prefix else ""
            commands.append(config_command(file, {**extra, **given, **grid}) + why)
        also = (f"; {', '.join(extra)} as timm's {names[0] if names else 'defaults'}: not stored in the weights "
                "either" if extra else "")
        raise ConfigError(
            f"cannot infer the positional-embedding grid from pos_embed of {pos[1]} rows with {num_prefix} prefix "
            f"tokens ({'ambiguous' if square else 'non-square'}); pass --config with img_size (the grid it was "
            f"trained at, in pixels){' and no_embed_class' if num_prefix else ''}"
            + (f", e.g. {' or '.join(commands)}{also}" if commands else "")
        )
    no_embed_class, side, _ = square[0]
    if no_embed_class:
        notes.append("pos_embed has no rows for the prefix tokens: no_embed_class=True, square grid assumed")
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


__all__ = ["config_command", "infer_block_args", "infer_config_args", "layout_presets", "matching_presets",
           "merge_shape_facts", "refuse_unstored", "shapes_of", "unstored_hints"]
