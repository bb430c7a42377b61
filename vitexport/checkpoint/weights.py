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
3. `build_model`: only now the model (``VisionTransformer(config)``, or the class of the config) is allocated
   and loaded.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from vitexport._util.errors import CheckpointError

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


def meta_model(cfg: Any) -> torch.nn.Module:
    """The model of ``cfg`` (any class, `vitexport.model.family_models.model_for`) on the ``meta`` device: shapes
    without memory."""
    from vitexport.model.family_models import model_for

    try:
        with torch.device("meta"):
            return model_for(cfg)
    except (RuntimeError, ValueError, OverflowError, TypeError) as exc:
        raise CheckpointError(f"the model config's sizes are out of range ({str(exc).splitlines()[0][:120]}); "
                              "pass the right --config") from exc


def _with_blocks(cfg: Any, first: int, count: int) -> Any:
    """``cfg`` with ``count`` blocks, the first being ``cfg``'s block ``first`` (Eva's per-block key/value heads)."""
    kv = getattr(cfg, "num_kv_heads", None)
    return cfg.replace(depth=count, **({"num_kv_heads": kv[first:first + count]} if isinstance(kv, tuple) else {}))


def _shapes(cfg: Any, parameters_only: bool) -> dict[str, tuple[int, ...]]:
    model = meta_model(cfg)
    items = model.named_parameters() if parameters_only else model.state_dict().items()
    return {k: tuple(v.shape) for k, v in items}


def _outside_blocks(cfg: Any, parameters_only: bool) -> dict[str, tuple[int, ...]]:
    """The shapes outside the blocks, from one- and two-block models: a shape that grows with the depth (RoPE-mixed's
    per-block frequencies) grows linearly."""
    one = {k: v for k, v in _shapes(_with_blocks(cfg, 0, 1), parameters_only).items() if not _BLOCK_KEY.match(k)}
    if cfg.depth == 1:
        return one
    two = _shapes(_with_blocks(cfg, 0, 2), parameters_only)
    return {k: tuple(a + (cfg.depth - 1) * (b - a) for a, b in zip(v, two[k], strict=True)) for k, v in one.items()}


def _block_groups(cfg: Any) -> dict[Any, range | list[int]]:
    """One-block configs and the block indices each stands for (one for all blocks, unless heads vary per block)."""
    if not isinstance(getattr(cfg, "num_kv_heads", None), tuple):
        return {_with_blocks(cfg, 0, 1): range(cfg.depth)}
    groups: dict[Any, list[int]] = {}
    for i in range(cfg.depth):
        groups.setdefault(_with_blocks(cfg, i, 1), []).append(i)
    return groups


def _block_shapes(one_block: Any, parameters_only: bool) -> dict[str, tuple[int, ...]]:
    """``blocks.0.``'s shapes of a one-block config, by their name inside the block."""
    shapes = _shapes(one_block, parameters_only)
    return {k[len("blocks.0."):]: v for k, v in shapes.items() if _BLOCK_KEY.match(k)}


def parameter_count(cfg: Any) -> int:
    """The config's parameter count, from one- and two-block models on the ``meta`` device (nothing allocated)."""
    total = sum(math.prod(s) for s in _outside_blocks(cfg, True).values())
    for one, indices in _block_groups(cfg).items():
        total += len(indices) * sum(math.prod(s) for s in _block_shapes(one, True).values())
    return total


def expected_shapes(cfg: Any) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of ``cfg``'s model and its shape, from ``meta`` (one block built per distinct block,
    the rest named), in the model's order."""
    top = _outside_blocks(cfg, False)
    blocks: dict[int, dict[str, tuple[int, ...]]] = {}
    for one, indices in _block_groups(cfg).items():
        inner = _block_shapes(one, False)
        blocks.update({i: inner for i in indices})
    order = list(_shapes(_with_blocks(cfg, 0, 1), False))  # where the blocks sit among the other keys
    out: dict[str, tuple[int, ...]] = {}
    for key in order:
        if not _BLOCK_KEY.match(key):
            out[key] = top[key]
        elif key == next(k for k in order if _BLOCK_KEY.match(k)):
            out.update({f"blocks.{i}.{name}": shape for i in range(cfg.depth) for name, shape in blocks[i].items()})
    return out


def unused_weights(cfg: Any, output: str, sd: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The weights ``cfg``'s model does not read for ``output`` (`vitexport.model.names.UNUSED_BY_OUTPUT`: the head
    of a features export, the pooling too for tokens) that ``sd`` lacks, and their shapes (an ONNX export of that
    output holds none of them)."""
    from vitexport.model.names import UNUSED_BY_OUTPUT

    prefixes = UNUSED_BY_OUTPUT[output]
    return {k: v for k, v in _outside_blocks(cfg, False).items() if k.startswith(prefixes) and k not in sd}


def _count_problem(cfg: Any, sd: dict[str, Any], where: str) -> str:
    need, have = parameter_count(cfg), sum(t.numel() for t in sd.values())
    if need <= have:
        return ""
    return (f"the model config needs {need:,} parameters ({need * 4 / 1e9:,.2f} GB in float32) but the weights in "
            f"{where} hold {have:,} values")


def check_count(cfg: Any, sd: dict[str, Any], where: str) -> None:
    """Refuse a config that needs more parameters than the weights hold values (before any key is listed)."""
    problem = _count_problem(cfg, sd, where)
    if problem:
        raise CheckpointError(f"{problem}: they do not fit; pass the right --config (or fix the checkpoint)")


def check_fits(cfg: Any, sd: dict[str, Any], where: str) -> None:
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


def build_model(cfg: Any, sd: dict[str, torch.Tensor], where: str) -> torch.nn.Module:
    """The model of ``cfg`` (any class) in eval mode with ``sd`` loaded, after `check_tensors` and `check_fits`."""
    from vitexport.model.family_models import model_for

    check_tensors(sd, where)
    check_fits(cfg, sd, where)
    model = model_for(cfg)
    model.load_state_dict(sd, strict=True)
    return model.eval()


__all__ = [
    "FLOAT_DTYPES", "build_model", "check_count", "check_fits", "check_tensors", "expected_shapes", "meta_model",
    "parameter_count", "unused_weights",
]
