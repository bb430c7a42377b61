"""Validate weights against a config before anything is allocated; build the model only then.

A 27 KB state dict with one key ``blocks.199999.norm1.weight``, a ``--config`` with 30 million
classes, tensors expanded with stride 0 to declare a width of 16,384, a training checkpoint whose
``arch`` names the largest preset: each used to allocate gigabytes in ``VisionTransformer(config)``
before the weights were compared with it. Here, in this order, nothing of that size is made:

1. `check_tensors`: every tensor is a dense, strided, floating-point tensor backed by its own
   bytes (no stride-0 expansion, no storage shared to declare more than the file holds); sparse,
   quantized, complex, bool and integer weights are refused by name instead of being cast.
2. `check_fits`: the config's parameter count (computed on the ``meta`` device for one block,
   which allocates nothing) must not exceed the values the weights hold; then every key and
   shape the config implies (also from ``meta``) is compared with the weights.
3. `build_model`: only now ``VisionTransformer(config)`` is allocated and loaded.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vitexport._util.errors import CheckpointError
from vitexport.model.config import ViTConfig

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_BLOCK_KEY = re.compile(r"^blocks\.0\.")


def _listing(items: list[str], shown: int = 6) -> str:
    return ", ".join(items[:shown]) + (f", ... ({len(items)} in all)" if len(items) > shown else "")


def _kind(t: torch.Tensor) -> str:
    if t.layout != torch.strided:
        return f"sparse ({str(t.layout).replace('torch.', '')})"
    if t.is_quantized:
        return f"quantized ({str(t.dtype).replace('torch.', '')})"
    if t.dtype not in FLOAT_DTYPES:
        return str(t.dtype).replace("torch.", "")
    return ""


def _backed_bytes(t: torch.Tensor) -> int:
    """The bytes of ``t``'s storage (0 when it has none the loader can see)."""
    try:
        return t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return 0


def check_tensors(sd: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights that are not dense floating point, or that declare more elements than their bytes hold."""
    odd = [f"{k} {kind}" for k, t in sd.items() if (kind := _kind(t))]
    if odd:
        raise CheckpointError(
            f"weights in {where} are not dense floating-point tensors: {_listing(odd)}; vitexport does not cast "
            "them silently: convert them to float32 (dequantize, to_dense) and re-save")
    storages: dict[tuple[int, int], int] = {}
    declared = 0
    for key, t in sd.items():
        need = t.numel() * t.element_size()
        if t.numel() > 1 and any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape, strict=True)):
            raise CheckpointError(
                f"weights in {where}: {key} {tuple(t.shape)} is expanded with stride 0 (it declares {t.numel():,} "
                "values backed by far fewer bytes); the file is crafted: re-save real weights")
        have = _backed_bytes(t)
        if need > have:
            raise CheckpointError(
                f"weights in {where}: {key} {tuple(t.shape)} declares {need:,} bytes but its storage holds {have:,}; "
                "the file is corrupt or crafted: re-save it")
        declared += need
        if have:
            storages[(t.untyped_storage().data_ptr(), have)] = have
    if storages and declared > sum(storages.values()):
        raise CheckpointError(
            f"weights in {where} declare {declared / 1e6:,.1f} MB through views of {sum(storages.values()) / 1e6:,.1f} "
            "MB of shared storage; the file is crafted: re-save it with torch.save(model.state_dict(), path)")


def meta_model(cfg: ViTConfig) -> torch.nn.Module:
    """``VisionTransformer(cfg)`` on the ``meta`` device: shapes without memory."""
    from vitexport.model.vit import VisionTransformer

    try:
        with torch.device("meta"):
            return VisionTransformer(cfg)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"the model config's sizes are out of range ({str(exc).splitlines()[0][:120]}); "
                              "pass the right --config") from exc


def parameter_count(cfg: ViTConfig) -> int:
    """The config's parameter count, from a one-block model on the ``meta`` device (nothing allocated)."""
    one = cfg.replace(depth=1, img_size=cfg.patch_hw)  # one block, a 1x1 grid
    model = meta_model(one)
    block = sum(p.numel() for p in model.blocks[0].parameters())
    rest = sum(p.numel() for p in model.parameters()) - block - model.pos_embed.numel()
    gh, gw = cfg.grid_size
    rows = gh * gw + (0 if cfg.no_embed_class else cfg.num_prefix_tokens)
    return rest + cfg.depth * block + rows * cfg.embed_dim


def expected_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of ``cfg``'s model and its shape, from ``meta`` (one block built, the rest named)."""
    sd = meta_model(cfg.replace(depth=1)).state_dict()
    out: dict[str, tuple[int, ...]] = {}
    for key, value in sd.items():
        if _BLOCK_KEY.match(key):
            for i in range(cfg.depth):
                out[f"blocks.{i}.{key[len('blocks.0.'):]}"] = tuple(value.shape)
        else:
            out[key] = tuple(value.shape)
    return out


def _count_problem(cfg: ViTConfig, sd: dict[str, Any], where: str) -> str:
    need, have = parameter_count(cfg), sum(t.numel() for t in sd.values())
    if need <= have:
        return ""
    return (f"the model config needs {need:,} parameters ({need * 4 / 1e9:,.2f} GB in float32) but the weights in "
            f"{where} hold {have:,} values")


def check_count(cfg: ViTConfig, sd: dict[str, Any], where: str) -> None:
    """Refuse a config that needs more parameters than the weights hold values (before any key is listed)."""
    problem = _count_problem(cfg, sd, where)
    if problem:
        raise CheckpointError(f"{problem}: they do not fit; pass the right --config (or fix the checkpoint)")


def check_fits(cfg: ViTConfig, sd: dict[str, Any], where: str) -> None:
    """The weights must be exactly what ``cfg`` needs. Keys and shapes are compared (and listed) when the
    config's depth is within reach of the weights; a config far deeper is refused by its parameter count."""
    count = _count_problem(cfg, sd, where)
    if count and cfg.depth > len(sd) + 64:  # listing 200,000 blocks' keys would itself be the attack
        check_count(cfg, sd, where)
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs model {expected[k]}" for k in expected
                  if k in sd and tuple(sd[k].shape) != expected[k]]
    parts = [f"{title}: {_listing(items)}" for title, items in
             (("shape mismatch", mismatched), ("missing", missing), ("unexpected", unexpected)) if items]
    if parts:
        raise CheckpointError(f"weights in {where} do not fit the model config: " + "; ".join(parts)
                              + "; pass the right --config (or fix the checkpoint)")
    check_count(cfg, sd, where)


def build_model(cfg: ViTConfig, sd: dict[str, torch.Tensor], where: str) -> torch.nn.Module:
    """``VisionTransformer(cfg)`` in eval mode with ``sd`` loaded, after `check_tensors` and `check_fits`."""
    from vitexport.model.vit import VisionTransformer

    check_tensors(sd, where)
    check_fits(cfg, sd, where)
    model = VisionTransformer(cfg)
    model.load_state_dict(sd, strict=True)
    return model.eval()


__all__ = [
    "FLOAT_DTYPES", "build_model", "check_count", "check_fits", "check_tensors", "expected_shapes", "meta_model",
    "parameter_count",
]
