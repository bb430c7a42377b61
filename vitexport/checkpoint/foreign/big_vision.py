"""JAX/Flax ``.npz`` checkpoints (big_vision: SigLIP image towers, ViTs; google-research/vision_transformer)
-> timm's ``VisionTransformer``.

The arrays are read by `vitexport.security.safenpz.read_npz` (bounded, ``allow_pickle=False``) and mapped
as timm's ``_load_weights`` copies them into its model (`big_vision_to_timm`): the root prefix
(``opt/target/``, ``params/``, ``params/img/`` for a two-tower SigLIP), the big_vision names
(``pos_embedding``, ``MultiHeadDotProductAttention_0``, ``MlpBlock_0``, ``MAPHead_0``) or the original ViT
ones (``Transformer/posembed_input``, ``..._1``, ``MlpBlock_3``), stacked (``scan``) or per-block layers.

The file states every shape, the head count (in the attention kernels) and the pooling when it has a class
token (``tok``) or a MAP head (``map``); without either the pooling (``gap`` or ``0``) is unknown. What the
Flax code fixes: LayerNorm eps 1e-6 and ``nn.gelu``, whose default is the tanh approximation
(``gelu_tanh``, as transformers' SigLIP port uses; timm's base SigLIP presets use exact GELU).
A big_vision model adds the positional table before the class token is prepended: timm's
``no_embed_class`` form.

At the native size vitexport's forward equals the Flax model's output: ``logits`` with a head, else
``pre_logits`` (the MAP head's, the class token's or the mean's output): for SigLIP the image embedding
before normalisation (transformers ``SiglipVisionModel(...).pooler_output``). big_vision resamples the
table only when fine-tuning (``scipy.ndimage.zoom``, order 1); vitexport follows timm's dynamic-pad
resampling at every size.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vitexport.checkpoint.foreign.common import Converted, grid_args, refuse, square_side
from vitexport.checkpoint.infer import mlp_ratio_for

FORMAT = "big_vision"
REFERENCE = "the Flax model's logits, else out['pre_logits'] (SigLIP: transformers SiglipVisionModel pooler_output)"
# timm's order of root prefixes (``_load_weights``).
_PREFIXES = ("", "opt/target/", "params/", "params/img/")


def find_prefix(w: dict[str, Any]) -> str | None:
    """The root prefix of a ViT inside an ``.npz`` (timm's test: ``<prefix>embedding/kernel``), or None."""
    for prefix in _PREFIXES[1:]:  # timm looks for a prefixed root first
        if f"{prefix}embedding/kernel" in w:
            return prefix
    return "" if "embedding/kernel" in w else None


def is_big_vision(w: dict[str, Any]) -> bool:
    return find_prefix(w) is not None


def _n2p(w: Any, t: bool = True, idx: int | None = None) -> torch.Tensor:
    """timm ``_load_weights._n2p``: a Flax array as a torch tensor (kernels transposed to torch's order)."""
    if idx is not None:
        w = w[idx]
    if w.ndim == 4 and w.shape[0] == w.shape[1] == w.shape[2] == 1:
        w = w.flatten()
    if t:
        if w.ndim == 4:
            w = w.transpose([3, 2, 0, 1])
        elif w.ndim == 3:
            w = w.transpose([2, 0, 1])
        elif w.ndim == 2:
            w = w.transpose([1, 0])
    return torch.from_numpy(w)


def _is_big_vision_layout(w: dict[str, Any], prefix: str) -> bool:
    return (prefix.startswith("params/") or f"{prefix}pos_embedding" in w
            or f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in w)


def _mha(w: dict[str, Any], mha: str, idx: int | None, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated ``(D, H, hd)`` kernels as a torch ``(len(names) * D, D)`` weight, and their biases."""
    weight = torch.cat([_n2p(w[f"{mha}{n}/kernel"], t=False, idx=idx).flatten(1).T for n in names])
    bias = torch.cat([_n2p(w[f"{mha}{n}/bias"], t=False, idx=idx).reshape(-1) for n in names])
    return weight, bias


def _map_head(w: dict[str, Any], prefix: str, sd: dict[str, torch.Tensor]) -> None:
    block, mha = f"{prefix}MAPHead_0/", f"{prefix}MAPHead_0/MultiHeadDotProductAttention_0/"
    sd["attn_pool.latent"] = _n2p(w[f"{block}probe"], t=False)
    sd["attn_pool.q.weight"], sd["attn_pool.q.bias"] = _mha(w, mha, None, ("query",))
    sd["attn_pool.kv.weight"], sd["attn_pool.kv.bias"] = _mha(w, mha, None, ("key", "value"))
    sd["attn_pool.proj.weight"] = _n2p(w[f"{mha}out/kernel"]).flatten(1)
    sd["attn_pool.proj.bias"] = _n2p(w[f"{mha}out/bias"])
    sd["attn_pool.norm.weight"] = _n2p(w[f"{block}LayerNorm_0/scale"])
    sd["attn_pool.norm.bias"] = _n2p(w[f"{block}LayerNorm_0/bias"])
    for r in range(2):
        sd[f"attn_pool.mlp.fc{r + 1}.weight"] = _n2p(w[f"{block}MlpBlock_0/Dense_{r}/kernel"])
        sd[f"attn_pool.mlp.fc{r + 1}.bias"] = _n2p(w[f"{block}MlpBlock_0/Dense_{r}/bias"])


def _blocks(w: dict[str, Any], prefix: str, depth: int, big_vision: bool, sd: dict[str, torch.Tensor]) -> None:
    mha_sub, b_sub, ln1_sub = (0, 0, 1) if big_vision else (1, 3, 2)
    scan = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in w
    for i in range(depth):
        bp, idx = (f"{prefix}Transformer/encoderblock/", i) if scan else \
            (f"{prefix}Transformer/encoderblock_{i}/", None)
        mha, out = f"{bp}MultiHeadDotProductAttention_{mha_sub}/", f"blocks.{i}."
        sd[f"{out}norm1.weight"] = _n2p(w[f"{bp}LayerNorm_0/scale"], idx=idx)
        sd[f"{out}norm1.bias"] = _n2p(w[f"{bp}LayerNorm_0/bias"], idx=idx)
        sd[f"{out}attn.qkv.weight"], sd[f"{out}attn.qkv.bias"] = _mha(w, mha, idx, ("query", "key", "value"))
        sd[f"{out}attn.proj.weight"] = _n2p(w[f"{mha}out/kernel"], idx=idx).flatten(1)
        sd[f"{out}attn.proj.bias"] = _n2p(w[f"{mha}out/bias"], idx=idx)
        sd[f"{out}norm2.weight"] = _n2p(w[f"{bp}LayerNorm_{ln1_sub}/scale"], idx=idx)
        sd[f"{out}norm2.bias"] = _n2p(w[f"{bp}LayerNorm_{ln1_sub}/bias"], idx=idx)
        for r in range(2):
            sd[f"{out}mlp.fc{r + 1}.weight"] = _n2p(w[f"{bp}MlpBlock_{b_sub}/Dense_{r}/kernel"], idx=idx)
            sd[f"{out}mlp.fc{r + 1}.bias"] = _n2p(w[f"{bp}MlpBlock_{b_sub}/Dense_{r}/bias"], idx=idx)


def big_vision_to_timm(w: dict[str, Any], prefix: str, depth: int) -> dict[str, torch.Tensor]:
    """The ViT of an ``.npz`` as a timm state dict.

    Ported from timm ``models/vision_transformer.py`` ``_load_weights`` (Apache-2.0, Ross Wightman), the
    plain-ViT branch, writing a state dict instead of copying into a model built beforehand: the class
    token, the head and the MAP head are taken when the file has them (timm takes them when its model
    has them); nothing is resampled (the model is built at the file's own patch size and grid).
    """
    big_vision = _is_big_vision_layout(w, prefix)
    sd: dict[str, torch.Tensor] = {
        "patch_embed.proj.weight": _n2p(w[f"{prefix}embedding/kernel"]),
        "patch_embed.proj.bias": _n2p(w[f"{prefix}embedding/bias"]),
    }
    if f"{prefix}cls" in w:
        sd["cls_token"] = _n2p(w[f"{prefix}cls"], t=False)
    pos_key = f"{prefix}pos_embedding" if big_vision else f"{prefix}Transformer/posembed_input/pos_embedding"
    sd["pos_embed"] = _n2p(w[pos_key], t=False)
    sd["norm.weight"] = _n2p(w[f"{prefix}Transformer/encoder_norm/scale"])
    sd["norm.bias"] = _n2p(w[f"{prefix}Transformer/encoder_norm/bias"])
    if f"{prefix}head/bias" in w:
        sd["head.weight"] = _n2p(w[f"{prefix}head/kernel"])
        sd["head.bias"] = _n2p(w[f"{prefix}head/bias"])
    if f"{prefix}MAPHead_0/probe" in w:
        _map_head(w, prefix, sd)
    _blocks(w, prefix, depth, big_vision, sd)
    return sd


# ---------------------------------------------------------------------------
# what the file states
# ---------------------------------------------------------------------------
def _refuse_variants(w: dict[str, Any], prefix: str, big_vision: bool) -> None:
    if f"{prefix}conv_root/kernel" in w:
        raise refuse(FORMAT, "it is a hybrid ResNet-ViT (conv_root)", "vitexport builds plain patch embeddings only")
    if w[f"{prefix}embedding/kernel"].ndim != 4:
        raise refuse(FORMAT, "its patch embedding is a dense layer over flattened patches (NaFlex)",
                     "NaFlex checkpoints need timm's NaFlexVit class, which this vitexport does not build yet")
    if any(k.startswith(f"{prefix}pre_logits/") for k in w):
        raise refuse(FORMAT, "it has a representation layer (pre_logits, dense + tanh before the head), which timm "
                     "drops", "use a checkpoint without it (fine-tuned ViTs have none)")
    pos_key = f"{prefix}pos_embedding" if big_vision else f"{prefix}Transformer/posembed_input/pos_embedding"
    if pos_key not in w:
        raise refuse(FORMAT, f"it stores no positional table ({pos_key}): a fixed sin-cos embedding",
                     "vitexport builds learned positional tables only")


def _depth(w: dict[str, Any], prefix: str) -> int:
    stacked = w.get(f"{prefix}Transformer/encoderblock/LayerNorm_0/scale")
    if stacked is not None:
        return int(stacked.shape[0])
    found = {int(m.group(1)) for k in w if (m := re.match(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/", k))}
    if not found or found != set(range(len(found))):
        raise refuse(FORMAT, f"its encoder blocks are missing or not numbered 0..N-1 ({sorted(found)[:5]})",
                     "the file is incomplete: re-download it")
    return len(found)


def _block_shapes(w: dict[str, Any], prefix: str, big_vision: bool) -> tuple[int, int]:
    """(num_heads, MLP width) of block 0, from its query and first dense kernels."""
    mha_sub, b_sub = (0, 0) if big_vision else (1, 3)
    scan = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in w
    bp = f"{prefix}Transformer/encoderblock/" if scan else f"{prefix}Transformer/encoderblock_0/"
    query = w.get(f"{bp}MultiHeadDotProductAttention_{mha_sub}/query/kernel")
    dense = w.get(f"{bp}MlpBlock_{b_sub}/Dense_0/kernel")
    if query is None or dense is None or query.ndim != 3 + scan or dense.ndim != 2 + scan:
        raise refuse(FORMAT, "block 0 has no (D, heads, head_dim) query kernel and dense MLP",
                     "the file is of another layout")
    return int(query.shape[-2]), int(dense.shape[-1])


def _map_head_fits(w: dict[str, Any], prefix: str, heads: int, hidden: int) -> None:
    query = w[f"{prefix}MAPHead_0/MultiHeadDotProductAttention_0/query/kernel"]
    dense = w[f"{prefix}MAPHead_0/MlpBlock_0/Dense_0/kernel"]
    if query.shape[-2] != heads or dense.shape[-1] != hidden:
        raise refuse(FORMAT, f"its MAP head has {query.shape[-2]} heads and an MLP of {dense.shape[-1]} (the blocks: "
                     f"{heads}, {hidden})", "timm's MAP head shares the blocks' head count and MLP ratio")


def _args(w: dict[str, Any], prefix: str, big_vision: bool) -> tuple[dict[str, Any], list[str]]:
    ph, pw, chans, dim = (int(v) for v in w[f"{prefix}embedding/kernel"].shape)
    depth = _depth(w, prefix)
    heads, hidden = _block_shapes(w, prefix, big_vision)
    cls, attn_pool = f"{prefix}cls" in w, f"{prefix}MAPHead_0/probe" in w
    head = w.get(f"{prefix}head/kernel")
    args: dict[str, Any] = {
        "embed_dim": dim, "in_chans": chans, "patch_size": ph if ph == pw else (ph, pw), "depth": depth,
        "num_heads": heads, "mlp_ratio": mlp_ratio_for(dim, hidden), "class_token": cls, "reg_tokens": 0,
        "num_classes": int(head.shape[-1]) if head is not None and f"{prefix}head/bias" in w else 0,
        "qkv_bias": True, "pre_norm": False, "final_norm": True, "fc_norm": False, "act_layer": "gelu_tanh",
        "norm_eps": 1e-6,
    }
    unknown: list[str] = []
    if attn_pool:
        _map_head_fits(w, prefix, heads, hidden)
        args["global_pool"] = "map"
    elif cls:
        args["global_pool"] = "token"
    else:
        unknown.append("global_pool")  # big_vision 'gap' (mean) or '0' (first patch): not stored
    pos_key = f"{prefix}pos_embedding" if big_vision else f"{prefix}Transformer/posembed_input/pos_embedding"
    rows = int(w[pos_key].shape[-2])
    # big_vision adds the table before prepending the class token (a square table, no row for the token);
    # the original ViT code and old big_vision files prepend first (one row more than a square)
    args["no_embed_class"] = cls and square_side(rows) is not None
    grid_args(rows - (1 if cls and not args["no_embed_class"] else 0), (ph, pw), args, unknown)
    return args, unknown


def convert_big_vision(w: dict[str, Any]) -> Converted:
    """The ViT in a Flax ``.npz`` (arrays from `read_npz`) in timm's layout, with what the file states."""
    prefix = find_prefix(w)
    if prefix is None:
        raise refuse(FORMAT, "it has no embedding/kernel (under '', opt/target/, params/ or params/img/)",
                     "this .npz is not a ViT checkpoint timm's loader reads")
    big_vision = _is_big_vision_layout(w, prefix)
    _refuse_variants(w, prefix, big_vision)
    args, unknown = _args(w, prefix, big_vision)
    try:
        sd = big_vision_to_timm(w, prefix, args["depth"])
    except KeyError as exc:
        raise refuse(FORMAT, f"{exc.args[0]!r} is missing", "the file is incomplete or of another layout") from exc
    head = "classifier" if args["num_classes"] else "none"
    notes = ["act_layer gelu_tanh: Flax's nn.gelu is the tanh approximation"]
    converted = Converted(FORMAT, sd, args, head, REFERENCE, tuple(unknown), notes=notes)
    if unknown == ["global_pool"]:
        converted.suggest = {"global_pool": "avg"}
        converted.suggest_for = "big_vision's default pool_type 'gap' (the mean of the patch tokens)"
    return converted


__all__ = ["FORMAT", "big_vision_to_timm", "convert_big_vision", "find_prefix", "is_big_vision"]
