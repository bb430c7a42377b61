"""Weights of timm's other ViT classes (Eva, distilled DeiT, NaFlexViT), told from a plain ViT's by their keys, and the
presets of that class whose keys and shapes they match: what shape inference refuses them with.

Shape inference (`vitexport.checkpoint.infer`) builds a plain ViT. These classes keep what decides their output
outside the weights (Eva's rotary embeddings: their kind, temperature, grid; NaFlexViT's table resampling; a
distilled DeiT's two heads), so their weights are never built from shapes: they are refused by the keys that show
the class, naming the presets of that class the weights fit exactly and the command that loads them, or else a
preset of that layout resized to the weights (`resized_presets`: checked against their shapes before it is offered).
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
from collections.abc import Mapping
from typing import Any

from vitexport._util.errors import ConfigError
from vitexport.model.names import MODEL_CLASSES

Shapes = Mapping[str, tuple[int, ...]]
# Keys only a class other than timm's VisionTransformer writes (in its block 0, or outside the blocks), and what
# they show.
CLASS_KEYS: tuple[tuple[str, str, str], ...] = (
    ("naflexvit", "embeds.proj.weight", "NaFlexViT's embedding"),
    ("deit_distilled", "dist_token", "the distillation token"),
    ("deit_distilled", "head_dist.weight", "the distillation head"),
    ("eva", "rope.freqs", "learned rotary frequencies"),
    ("eva", "blocks.0.gamma_1", "Eva's layer scale"),
    ("eva", "blocks.0.attn.q_bias", "Eva's query/value biases"),
    ("eva", "blocks.0.attn.q_proj.weight", "separate q/k/v projections"),
)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_HEAD = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")


def class_shown(shapes: Shapes) -> tuple[str, str] | None:
    """(model class, what shows it) when the keys are not a plain ViT's; None when they may be one.

    Weights with a patch embedding and blocks but no ``pos_embed`` are an Eva with rotary embeddings only (DINOv3,
    PE, RoPE-ViT): a plain ViT always has the table.
    """
    for kind, key, what in CLASS_KEYS:
        if key in shapes:
            return kind, f"{what} ({key})"
    if "patch_embed.proj.weight" in shapes and "pos_embed" not in shapes and any(_BLOCK.match(k) for k in shapes):
        return "eva", "no pos_embed: rotary position embeddings, computed, not stored"
    return None


def _signature(shapes: Shapes, depth: int | None = None) -> tuple[Any, ...]:
    """What must agree between weights and a preset: depth, the keys outside the blocks (but the head, which a
    fine-tune or a features-only save changes), block 0's keys and shapes, the patch embedding and class token."""
    if depth is None:
        depth = 1 + max((int(m.group(1)) for k in shapes if (m := _BLOCK.match(k))), default=-1)
    top = frozenset(k for k in shapes if not _BLOCK.match(k) and k not in _HEAD)
    block = frozenset((k, tuple(v)) for k, v in shapes.items() if k.startswith("blocks.0."))
    fixed = tuple(shapes.get(k, ()) for k in ("patch_embed.proj.weight", "embeds.proj.weight", "cls_token"))
    return depth, top, block, fixed


@functools.lru_cache(maxsize=4)
def _preset_shapes(kind: str) -> tuple[tuple[str, Any, dict[str, tuple[int, ...]]], ...]:
    """(name, config, {key: shape}) of every preset of ``kind``, block 0 only (from the ``meta`` device)."""
    from vitexport.checkpoint.weights import meta_model
    from vitexport.model.config import get_preset, presets_of_class

    out = []
    for name in presets_of_class(kind):
        cfg = get_preset(name)
        kv = getattr(cfg, "num_kv_heads", None)
        one = cfg.replace(depth=1, **({"num_kv_heads": kv[:1]} if isinstance(kv, tuple) else {}))
        out.append((name, cfg, {k: tuple(v.shape) for k, v in meta_model(one).state_dict().items()}))
    return tuple(out)


def _names(signature: tuple[Any, ...]) -> tuple[frozenset[str], frozenset[str]]:
    return signature[1], frozenset(k for k, _ in signature[2])


def matching_presets_of_class(shapes: Shapes, kind: str, limit: int = 4,
                              exact: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """Presets of ``kind`` the weights fit, with the overrides they need (the classes): the same position table
    first. Without ``exact``, the presets with the same keys whatever their sizes (the same layout)."""
    want = _signature(shapes)
    head = shapes.get("head.weight")
    found = []
    for name, cfg, preset in _preset_shapes(kind):
        have = _signature(preset, cfg.depth)
        if have != want if exact else _names(have) != _names(want):
            continue
        extra: dict[str, Any] = {}
        classes = head[0] if head else 0
        if classes != cfg.num_classes:
            extra["num_classes"] = classes
        same_table = all(preset.get(k) == shapes.get(k) for k in ("pos_embed", "embeds.pos_embed"))
        found.append((not same_table, name, extra))
    found.sort(key=lambda item: item[0])
    return [(name, extra) for _, name, extra in found[:limit]]


def _mlp_widths(shapes: Shapes) -> list[int]:
    """What block 0's MLP hidden width may be: its first projection's outputs, the last one's inputs (half of a
    packed first projection), or half of a packed ``w12``."""
    widths = []
    for prefix in ("blocks.0.mlp.", "blocks.0.ffn."):
        for key, part, share in (("fc1", 0, 1), ("fc1_g", 0, 1), ("w1", 0, 1), ("w12", 0, 2), ("fc2", 1, 1),
                                 ("w3", 1, 1)):
            weight = shapes.get(f"{prefix}{key}.weight")
            if weight and len(weight) == 2 and weight[part] // share not in widths:
                widths.append(weight[part] // share)
    return widths


def resized_presets(shapes: Shapes, kind: str, limit: int = 3) -> list[tuple[str, dict[str, Any]]]:
    """Presets of ``kind`` with the weights' keys (the same layout) but other sizes, with the size overrides that
    make them fit the weights exactly: depth, width (heads keep the preset's head width), MLP ratio, patch, grid,
    classes. Each is checked against the weights' shapes on ``meta`` before it is offered (a test model of depth 2
    and width 64 gets a command that loads it)."""
    from vitexport.checkpoint.weights import expected_shapes
    from vitexport.model.family_config import config_from_dict

    want = {k: tuple(v) for k, v in shapes.items()}
    depth = 1 + max((int(m.group(1)) for k in shapes if (m := _BLOCK.match(k))), default=-1)
    proj = shapes.get("patch_embed.proj.weight", ())
    dim = proj[0] if len(proj) == 4 else None
    head = shapes.get("head.weight")
    widths = _mlp_widths(shapes)
    found: list[tuple[str, dict[str, Any]]] = []
    for name, cfg, preset in _preset_shapes(kind):
        if len(found) == limit:
            break
        if _names(_signature(preset, cfg.depth)) != _names(_signature(shapes)) or dim is None:
            continue
        head_width = cfg.embed_dim // cfg.num_heads
        overrides: dict[str, Any] = {"depth": depth, "embed_dim": dim, "num_heads": max(1, dim // head_width),
                                     "patch_size": proj[2] if proj[2] == proj[3] else [proj[2], proj[3]],
                                     "in_chans": proj[1], "num_classes": head[0] if head else 0}
        kv = getattr(cfg, "num_kv_heads", None)
        if isinstance(kv, tuple):
            overrides["num_kv_heads"] = [min(h, overrides["num_heads"]) for h in (kv * depth)[:depth]]
        gh, gw = cfg.grid_size
        overrides["img_size"] = [gh * proj[2], gw * proj[3]]  # the preset's grid, in these patches
        pos = shapes.get("pos_embed")
        if pos is not None:
            rows = pos[1] - (0 if getattr(cfg, "no_embed_class", False) else cfg.num_prefix_tokens)
            side = math.isqrt(max(rows, 0))
            if side * side == rows and side:
                overrides["img_size"] = [side * proj[2], side * proj[3]]
        ratios = [r for w in widths for r in (mlp_ratio_for(dim, w), w / dim)] or [None]
        for ratio in ratios:
            config = {"architecture": name, **overrides, **({"mlp_ratio": ratio} if ratio else {})}
            try:
                fits = expected_shapes(config_from_dict(config)) == want
            except (ConfigError, ValueError, TypeError, RuntimeError):
                fits = False
            if fits:
                found.append((name, {k: v for k, v in config.items() if k != "architecture"}))
                break
    return found


def mlp_ratio_for(dim: int, hidden: int) -> float:
    """The smallest float ratio with ``int(dim * ratio) == hidden`` (timm sizes the MLP that way)."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def refuse_other_class(shapes: Shapes, file: str | None = None) -> None:
    """Raise `ConfigError` when the keys show a class shape inference does not build (`class_shown`), naming the
    presets of that class these weights fit and a command that loads them (at their own sizes, or resized)."""
    shown = class_shown(shapes)
    if shown is None:
        return
    kind, why = shown
    title = MODEL_CLASSES[kind]
    where = shlex.quote(file) if file else "WEIGHTS"
    names = matching_presets_of_class(shapes, kind)
    if names:
        name, extra = names[0]
        config = shlex.quote(json.dumps({"architecture": name, **extra}))
        others = f" (or {', '.join(n for n, _ in names[1:])})" if len(names) > 1 else ""
        hint = f"load them with its architecture: vitexport onnx {where} --config {config}{others}"
    elif resized := resized_presets(shapes, kind):
        name, extra = resized[0]
        config = shlex.quote(json.dumps({"architecture": name, **extra}))
        others = f" (or {', '.join(n for n, _ in resized[1:])}, resized alike)" if len(resized) > 1 else ""
        hint = (f"no {title} preset has these sizes; as {name} resized to them (the head count keeps its head "
                f"width, which the weights do not store): vitexport onnx {where} --config {config}{others}")
    else:
        hint = (f"no {title} preset has these sizes: pass --config with the architecture they were trained as "
                f"(`vitexport presets` lists the {title} ones) and its size overrides")
    raise ConfigError(f"cannot infer the model config: these weights are timm's {title}, not a plain ViT ({why}); "
                      f"shape inference builds plain ViTs only, and the weights do not store what else {title} "
                      f"computes; {hint}")


__all__ = ["CLASS_KEYS", "class_shown", "matching_presets_of_class", "mlp_ratio_for", "refuse_other_class",
           "resized_presets"]
