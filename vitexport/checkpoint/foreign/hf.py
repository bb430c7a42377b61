"""Hugging Face ``transformers`` folders (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``)
-> timm's ``VisionTransformer``.

timm has no converter for these; the mapping below is vitexport's own, proven by forward parity with
transformers (tests/unit/checkpoint/test_foreign_hf.py). Files are read in the layout transformers writes
(which v5 still writes: ``encoder.layer.N.attention.attention.query``, ...), with or without the base-model
prefix (``vit.``, ``deit.``, ``dinov2.``, ``vision_model.``). ``config.json`` goes through the bounded JSON
reader; the weights through vitexport's checkpoint reader (no ``torch.load`` here).

What vitexport's forward equals at the native size, per ``model_type``:

- ``vit`` (ViTModel, ViTForImageClassification): ``logits``; without a classifier ``last_hidden_state[:, 0]``
  (the tanh ``pooler`` is not built);
- ``deit`` (DeiTModel, DeiTForImageClassification): as ``vit``; the distillation token is a register token
  with its own positional row (timm's ``reg_tokens=1``);
- ``dinov2``, ``dinov2_with_registers`` (Dinov2Model, Dinov2WithRegistersModel): ``pooler_output``;
- ``clip_vision_model``, ``clip`` (CLIPVisionModel, CLIPVisionModelWithProjection, CLIPModel): ``image_embeds``
  (the projection is the head), without a projection ``pooler_output``;
- ``siglip_vision_model``, ``siglip`` (SiglipVisionModel, SiglipModel): ``pooler_output`` (the MAP head).

``forward_features`` (every token after the final norm) equals ``last_hidden_state`` for ViT, DeiT and
DINOv2; CLIP's ``last_hidden_state`` is before ``post_layernorm`` (timm normalises every token).
Refused by name: DeiT's teacher heads, DINOv2's and CLIP's classification heads (they pool differently),
SigLIP without its head, sharded weights, activations vitexport does not build, and every key left unmapped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from vitexport.checkpoint.foreign.common import (
    Converted,
    block_count,
    folder_file,
    need,
    patch_args,
    patch_pair,
    read_json,
    read_weights,
    refuse,
    shape,
)
from vitexport.checkpoint.foreign.dinov2 import dinov2_to_timm
from vitexport.checkpoint.infer import mlp_ratio_for

MODEL_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers", "clip_vision_model", "clip",
               "siglip_vision_model", "siglip")
# transformers' ACT2FN names -> vitexport's; "gelu_new" and "gelu_fast" are the tanh formula written out.
ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
               "quick_gelu": "quick_gelu", "silu": "silu", "swish": "silu"}
# transformers' config defaults for what a config.json may leave out (stable across versions).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit": {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "num_attention_heads": 12},
    "dinov2": {"hidden_act": "gelu", "layer_norm_eps": 1e-6, "num_attention_heads": 12},
    "clip": {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "num_attention_heads": 12},
    "siglip": {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "num_attention_heads": 12},
}
_FAMILY = {"vit": "vit", "deit": "vit", "dinov2": "dinov2", "dinov2_with_registers": "dinov2",
           "clip_vision_model": "clip", "clip": "clip", "siglip_vision_model": "siglip", "siglip": "siglip"}
_IGNORED_PREFIXES = ("text_model.", "text_projection.", "logit_scale", "logit_bias", "pooler.")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL codes in preprocessor_config.json


# ---------------------------------------------------------------------------
# the folder
# ---------------------------------------------------------------------------
def is_transformers_config(data: Any) -> bool:
    """A transformers ``config.json`` (a ``model_type`` string), as opposed to timm's hub config."""
    return isinstance(data, dict) and isinstance(data.get("model_type"), str) and "model_args" not in data


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path, "transformers", "fix the folder")


def weights_file(folder: Path, fmt: str = "transformers") -> Path:
    """The one weights file of a transformers folder (``model.safetensors``, else ``pytorch_model.bin``);
    sharded or missing weights are refused by name."""
    if any((folder / f"{name}.index.json").is_file() for name in _WEIGHT_FILES):
        raise refuse(fmt, "its weights are sharded (*.index.json)", "merge the shards into one "
                     "model.safetensors (model.save_pretrained(out, max_shard_size='100GB'))")
    return folder_file(folder, _WEIGHT_FILES, fmt)


def _vision_config(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    model_type = data["model_type"]
    if model_type not in MODEL_TYPES:
        raise refuse("transformers", f"model_type {model_type!r} is not a ViT vitexport maps",
                     f"supported: {', '.join(MODEL_TYPES)}")
    if model_type in ("clip", "siglip"):  # the full two-tower model: its image tower's config
        vision = data.get("vision_config")
        if not isinstance(vision, dict):
            raise refuse(f"transformers-{model_type}", "config.json has no vision_config object", "fix the file")
        return model_type, vision
    return model_type, data


def _preprocess(folder: Path) -> dict[str, Any] | None:
    """``preprocessor_config.json`` as vitexport's preprocessing (scale, mean, std, interpolation)."""
    from vitexport.onnx.metadata import preprocess_dict

    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    data = _read_json(path)
    out: dict[str, Any] = {"scale": data.get("rescale_factor", 1 / 255) if data.get("do_rescale", True) else 1.0}
    if data.get("do_normalize", True) and data.get("image_mean") is not None and data.get("image_std") is not None:
        out.update(mean=data["image_mean"], std=data["image_std"])
    if data.get("resample") in _RESAMPLE:
        out["interpolation"] = _RESAMPLE[data["resample"]]
    return preprocess_dict(out, "preprocessor_config.json")


def _labels(data: dict[str, Any], converted: Converted) -> list[str] | None:
    from vitexport.onnx.metadata import labels_list

    if converted.head != "classifier" or not data.get("id2label"):
        return None
    labels = labels_list(data["id2label"], "config.json id2label")
    if labels == [f"LABEL_{i}" for i in range(len(labels or []))]:  # transformers' placeholders, not names
        return None
    return labels if labels and len(labels) == converted.args.get("num_classes") else None


def read_config(folder: Path) -> dict[str, Any]:
    """A transformers folder's ``config.json`` (bounded JSON reader); refused when it has no ``model_type``."""
    data = _read_json(folder / "config.json")
    if not is_transformers_config(data):
        raise refuse("transformers", "config.json has no model_type", "this is not a transformers folder")
    return data


def convert_folder(sd: dict[str, torch.Tensor], data: dict[str, Any], folder: Path) -> Converted:
    """Weights read from a transformers folder, with its ``config.json`` (``data``), in timm's layout; the
    folder's ``preprocessor_config.json`` and ``id2label`` as preprocessing and labels."""
    model_type, cfg = _vision_config(data)
    converted = convert_transformers(sd, model_type, cfg)
    converted.preprocess = _preprocess(folder)
    converted.labels = _labels(data, converted)
    return converted


def folder_format(data: dict[str, Any]) -> str:
    """``transformers-<model_type>`` (the name refusals use) of a transformers ``config.json``."""
    return f"transformers-{data['model_type']}"


def read_transformers_folder(folder: str | Path) -> Converted:
    """A transformers folder (see the module doc) in timm's layout, with preprocessing and labels."""
    folder = Path(folder)
    data = read_config(folder)
    _vision_config(data)  # an unsupported model_type is named before any weights are read
    return convert_folder(read_weights(weights_file(folder, folder_format(data))), data, folder)


def convert_transformers(sd: dict[str, torch.Tensor], model_type: str, cfg: dict[str, Any]) -> Converted:
    """A transformers state dict of ``model_type`` (``cfg``: its vision config) in timm's layout."""
    family = _FAMILY[model_type]
    fmt = f"transformers-{model_type}"
    src = dict(sd)
    converter = {"vit": _convert_vit, "dinov2": _convert_dinov2, "clip": _convert_clip, "siglip": _convert_siglip}
    converted = converter[family](src, {**_DEFAULTS[family], **cfg}, fmt)
    leftover = sorted(k for k in src if not k.startswith(_IGNORED_PREFIXES))
    if leftover:
        raise refuse(fmt, f"keys vitexport does not map: {', '.join(leftover[:4])}"
                     + (f", ... ({len(leftover)} in all)" if len(leftover) > 4 else ""),
                     "this model class is not a plain ViT vitexport builds")
    if any(k.startswith("pooler.") for k in sd):
        converted.notes.append("the tanh pooler (pooler_output) is not built: the output is last_hidden_state[:, 0]")
    return converted


# ---------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------
def _strip(src: dict[str, torch.Tensor], prefix: str) -> None:
    """Drop the base-model prefix (``vit.``, ``vision_model.``) in place, when the file has it."""
    if any(k.startswith(prefix) for k in src):
        for key in [k for k in src if k.startswith(prefix)]:
            src[key[len(prefix):]] = src.pop(key)


def _move(src: dict[str, torch.Tensor], out: dict[str, torch.Tensor], old: str, new: str) -> None:
    """``old.weight``/``old.bias`` (whichever exist) -> ``new.*``."""
    for p in ("weight", "bias"):
        if f"{old}.{p}" in src:
            out[f"{new}.{p}"] = src.pop(f"{old}.{p}")


def _qkv(src: dict[str, torch.Tensor], out: dict[str, torch.Tensor], names: tuple[str, str, str], new: str,
         fmt: str) -> None:
    """Three projections -> one fused ``qkv`` (timm's layout: q rows, then k, then v)."""
    out[f"{new}.weight"] = torch.cat([need(src, f"{n}.weight", fmt, rank=2) for n in names])
    for n in names:
        src.pop(f"{n}.weight")
    biases = [f"{n}.bias" in src for n in names]
    if any(biases) and not all(biases):
        raise refuse(fmt, f"only some of {', '.join(names)} have a bias", "timm's fused qkv has one for all or none")
    if all(biases):
        out[f"{new}.bias"] = torch.cat([src.pop(f"{n}.bias") for n in names])


def _encoder(src: dict[str, torch.Tensor], out: dict[str, torch.Tensor], fmt: str, layer: str,
             qkv: tuple[str, str, str], renames: tuple[tuple[str, str], ...]) -> int:
    """Blocks ``<layer>N.`` -> ``blocks.N.``: the three projections fused, the other modules renamed."""
    depth = block_count(src, re.escape(layer) + r"(\d+)\.", fmt)
    for i in range(depth):
        old, new = f"{layer}{i}.", f"blocks.{i}."
        _qkv(src, out, tuple(old + n for n in qkv), f"{new}attn.qkv", fmt)
        for a, b in renames:
            _move(src, out, old + a, new + b)
    return depth


def _act(cfg: dict[str, Any], fmt: str) -> str:
    act = cfg["hidden_act"]
    if act not in ACTIVATIONS:
        raise refuse(fmt, f"hidden_act {act!r} is an activation vitexport does not build",
                     f"supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[act]


def _common_args(cfg: dict[str, Any], dim: int, fmt: str) -> dict[str, Any]:
    heads = cfg["num_attention_heads"]
    if cfg.get("hidden_size", dim) != dim:
        raise refuse(fmt, f"config.json hidden_size {cfg['hidden_size']} but the weights have {dim}",
                     "use the config.json these weights were saved with")
    if not isinstance(heads, int) or heads < 1 or dim % heads or cfg.get("head_dim", dim // heads) != dim // heads:
        raise refuse(fmt, f"num_attention_heads {heads!r} (head_dim {cfg.get('head_dim')!r}) does not divide "
                     f"hidden_size {dim} evenly", "timm's attention needs head_dim = hidden_size / heads")
    eps = cfg["layer_norm_eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise refuse(fmt, f"layer_norm_eps {eps!r} is not a small positive number", "fix config.json")
    return {"num_heads": heads, "norm_eps": float(eps), "act_layer": _act(cfg, fmt)}


def _image_size(cfg: dict[str, Any], rows: int, prefix_rows: int, patch: tuple[int, int], fmt: str) -> Any:
    """config.json ``image_size``, checked against the positional table's rows."""
    size = cfg.get("image_size", 224)
    hw = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (list, tuple)) else None
    if hw is None or len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
        raise refuse(fmt, f"config.json image_size {size!r} is not a size", "fix config.json")
    gh, gw = hw[0] // patch[0], hw[1] // patch[1]
    if gh * gw + prefix_rows != rows:
        raise refuse(fmt, f"config.json image_size {size} gives a {gh}x{gw} grid, but the positional table has "
                     f"{rows} rows", "use the config.json these weights were saved with")
    return hw[0] if hw[0] == hw[1] else hw


def _patch(src: dict[str, torch.Tensor], key: str, cfg: dict[str, Any], fmt: str) -> dict[str, Any]:
    args = patch_args(tuple(need(src, key, fmt, rank=4).shape))
    if cfg.get("num_channels", args["in_chans"]) != args["in_chans"]:
        raise refuse(fmt, f"config.json num_channels {cfg['num_channels']} but the patch embedding takes "
                     f"{args['in_chans']}", "use the config.json these weights were saved with")
    return args


# ---------------------------------------------------------------------------
# ViT and DeiT
# ---------------------------------------------------------------------------
_BERT_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
_VIT_LAYER = (("layernorm_before", "norm1"), ("attention.output.dense", "attn.proj"), ("layernorm_after", "norm2"),
              ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"))


def _vit_head(src: dict[str, torch.Tensor], out: dict[str, torch.Tensor], fmt: str) -> str:
    if "cls_classifier.weight" in src or "distillation_classifier.weight" in src:
        raise refuse(fmt, "it is DeiTForImageClassificationWithTeacher (class and distillation heads averaged)",
                     "the distilled DeiT class is not built yet; DeiTForImageClassification (one head) is")
    if "classifier.weight" in src:
        _move(src, out, "classifier", "head")
        return "classifier"
    return "none"


def _convert_vit(src: dict[str, torch.Tensor], cfg: dict[str, Any], fmt: str) -> Converted:
    _strip(src, "deit." if fmt.endswith("deit") else "vit.")
    out: dict[str, torch.Tensor] = {}
    args = _patch(src, "embeddings.patch_embeddings.projection.weight", cfg, fmt)
    dim = args["embed_dim"]
    out["cls_token"] = need(src, "embeddings.cls_token", fmt, rank=3)
    distilled = "embeddings.distillation_token" in src
    if distilled:  # DeiT: cls, distillation, patches, one positional table for all: a register with a row
        out["reg_token"] = src.pop("embeddings.distillation_token")
    pos = need(src, "embeddings.position_embeddings", fmt, rank=3)
    out["pos_embed"] = pos
    for key in ("embeddings.cls_token", "embeddings.position_embeddings", "embeddings.mask_token"):
        src.pop(key, None)  # the mask token only masks patches in training (ViTForMaskedImageModeling)
    _move(src, out, "embeddings.patch_embeddings.projection", "patch_embed.proj")
    depth = _encoder(src, out, fmt, "encoder.layer.", _BERT_QKV, _VIT_LAYER)
    _move(src, out, "layernorm", "norm")
    head = _vit_head(src, out, fmt)
    fc1 = need(out, "blocks.0.mlp.fc1.weight", fmt, rank=2)
    prefix = 1 + int(distilled)
    args.update(_common_args(cfg, dim, fmt), depth=depth, mlp_ratio=mlp_ratio_for(dim, fc1.shape[0]),
                img_size=_image_size(cfg, pos.shape[1], prefix, patch_pair(args["patch_size"]), fmt),
                num_classes=shape(out, "head.weight")[0] if head == "classifier" else 0, global_pool="token",
                class_token=True, reg_tokens=int(distilled), no_embed_class=False, qkv_bias="blocks.0.attn.qkv.bias"
                in out, pre_norm=False, final_norm=True, fc_norm=False)
    reference = "transformers logits" if head == "classifier" else "transformers last_hidden_state[:, 0]"
    return Converted(fmt, out, args, head, reference)


# ---------------------------------------------------------------------------
# DINOv2 (with and without registers): renamed to the repository's layout, then timm's DINOv2 conversion
# ---------------------------------------------------------------------------
_DINO_LAYER = (("norm1", "norm1"), ("attention.output.dense", "attn.proj"), ("norm2", "norm2"),
               ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"), ("mlp.weights_in", "mlp.w12"),
               ("mlp.weights_out", "mlp.w3"))


def _convert_dinov2(src: dict[str, torch.Tensor], cfg: dict[str, Any], fmt: str) -> Converted:
    _strip(src, "dinov2.")
    if "classifier.weight" in src:
        raise refuse(fmt, "it is Dinov2ForImageClassification, whose classifier reads the class token and the mean "
                     "patch token side by side", "export the backbone: Dinov2Model.from_pretrained(folder)"
                     ".save_pretrained(out)")
    repo: dict[str, torch.Tensor] = {}  # the DINOv2 repository's names
    args = _patch(src, "embeddings.patch_embeddings.projection.weight", cfg, fmt)
    dim = args["embed_dim"]
    for old, new in (("embeddings.cls_token", "cls_token"), ("embeddings.mask_token", "mask_token"),
                     ("embeddings.position_embeddings", "pos_embed"), ("embeddings.register_tokens",
                                                                        "register_tokens")):
        if old in src:
            repo[new] = src.pop(old)
    _move(src, repo, "embeddings.patch_embeddings.projection", "patch_embed.proj")
    depth = _encoder(src, repo, fmt, "encoder.layer.", _BERT_QKV, _DINO_LAYER)
    for i in range(depth):
        old, new = f"encoder.layer.{i}.", f"blocks.{i}."
        for n in (1, 2):
            repo[f"{new}ls{n}.gamma"] = need(src, f"{old}layer_scale{n}.lambda1", fmt, rank=1)
            src.pop(f"{old}layer_scale{n}.lambda1")
    _move(src, repo, "layernorm", "norm")
    pos = need(repo, "pos_embed", fmt, rank=3)
    reg = shape(repo, "register_tokens")
    fused = shape(repo, "blocks.0.mlp.w12.weight")
    hidden = fused[0] if fused else need(repo, "blocks.0.mlp.fc1.weight", fmt, rank=2).shape[0]
    args.update(_common_args(cfg, dim, fmt), depth=depth, mlp_ratio=mlp_ratio_for(dim, hidden),
                img_size=_image_size(cfg, pos.shape[1], 1, patch_pair(args["patch_size"]), fmt),
                num_classes=0, global_pool="token", class_token=True, reg_tokens=reg[1] if reg else 0,
                no_embed_class=bool(reg), init_values=1.0, qkv_bias="blocks.0.attn.qkv.bias" in repo,
                pre_norm=False, final_norm=True, fc_norm=False)
    if fused:  # Dinov2SwiGLUFFN: silu(first half) * second half, whatever hidden_act says
        args.update(mlp_layer="swiglu_packed", act_layer="silu")
    return Converted(fmt, dinov2_to_timm(repo), args, "none", "transformers pooler_output (last_hidden_state[:, 0])")


# ---------------------------------------------------------------------------
# CLIP and SigLIP image towers
# ---------------------------------------------------------------------------
_CLIP_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_CLIP_LAYER = (("layer_norm1", "norm1"), ("self_attn.out_proj", "attn.proj"), ("layer_norm2", "norm2"),
               ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))


def _convert_clip(src: dict[str, torch.Tensor], cfg: dict[str, Any], fmt: str) -> Converted:
    if "classifier.weight" in src:
        raise refuse(fmt, "it is CLIPForImageClassification (a classifier on the mean of unnormalised patch "
                     "tokens)", "export the image tower (CLIPVisionModelWithProjection)")
    out: dict[str, torch.Tensor] = {}
    if "visual_projection.weight" in src:
        out["head.weight"] = src.pop("visual_projection.weight")
        out["head.bias"] = torch.zeros(out["head.weight"].shape[0])
    _strip(src, "vision_model.")
    args = _patch(src, "embeddings.patch_embedding.weight", cfg, fmt)
    if "embeddings.patch_embedding.bias" in src:
        raise refuse(fmt, "its patch embedding has a bias", "CLIP's has none; the file is of another layout")
    dim = args["embed_dim"]
    out["patch_embed.proj.weight"] = src.pop("embeddings.patch_embedding.weight")
    out["cls_token"] = need(src, "embeddings.class_embedding", fmt, rank=1).reshape(1, 1, dim)
    pos = need(src, "embeddings.position_embedding.weight", fmt, rank=2)
    out["pos_embed"] = pos.unsqueeze(0)
    src.pop("embeddings.class_embedding")
    src.pop("embeddings.position_embedding.weight")
    _move(src, out, "pre_layrnorm", "norm_pre")
    depth = _encoder(src, out, fmt, "encoder.layers.", _CLIP_QKV, _CLIP_LAYER)
    _move(src, out, "post_layernorm", "norm")
    fc1 = need(out, "blocks.0.mlp.fc1.weight", fmt, rank=2)
    args.update(_common_args(cfg, dim, fmt), depth=depth, mlp_ratio=mlp_ratio_for(dim, fc1.shape[0]),
                img_size=_image_size(cfg, pos.shape[0], 1, patch_pair(args["patch_size"]), fmt),
                num_classes=shape(out, "head.weight")[0] if "head.weight" in out else 0, global_pool="token",
                class_token=True, reg_tokens=0, no_embed_class=False, qkv_bias="blocks.0.attn.qkv.bias" in out,
                pre_norm=True, final_norm=True, fc_norm=False)
    head = "projection" if "head.weight" in out else "none"
    reference = "transformers image_embeds" if head == "projection" else "transformers pooler_output"
    return Converted(fmt, out, args, head, reference)


def _map_head(src: dict[str, torch.Tensor], out: dict[str, torch.Tensor], dim: int, fmt: str) -> None:
    """SigLIP's MultiheadAttentionPoolingHead -> timm's AttentionPoolLatent (``in_proj`` split into q and kv)."""
    out["attn_pool.latent"] = need(src, "head.probe", fmt, rank=3)
    src.pop("head.probe")
    weight = need(src, "head.attention.in_proj_weight", fmt, rank=2)
    bias = need(src, "head.attention.in_proj_bias", fmt, rank=1)
    if tuple(weight.shape) != (3 * dim, dim):
        raise refuse(fmt, f"head.attention.in_proj_weight is {tuple(weight.shape)}, not ({3 * dim}, {dim})",
                     "the file is of another layout")
    out["attn_pool.q.weight"], out["attn_pool.kv.weight"] = weight[:dim], weight[dim:]
    out["attn_pool.q.bias"], out["attn_pool.kv.bias"] = bias[:dim], bias[dim:]
    src.pop("head.attention.in_proj_weight")
    src.pop("head.attention.in_proj_bias")
    for old, new in (("head.attention.out_proj", "attn_pool.proj"), ("head.layernorm", "attn_pool.norm"),
                     ("head.mlp.fc1", "attn_pool.mlp.fc1"), ("head.mlp.fc2", "attn_pool.mlp.fc2")):
        _move(src, out, old, new)


def _convert_siglip(src: dict[str, torch.Tensor], cfg: dict[str, Any], fmt: str) -> Converted:
    _strip(src, "vision_model.")
    if not cfg.get("vision_use_head", True) or "head.probe" not in src:
        raise refuse(fmt, "it has no attention-pooling head (vision_use_head=false): its output is every token",
                     "use a SigLIP vision tower with its head")
    out: dict[str, torch.Tensor] = {}
    args = _patch(src, "embeddings.patch_embedding.weight", cfg, fmt)
    dim = args["embed_dim"]
    _move(src, out, "embeddings.patch_embedding", "patch_embed.proj")
    pos = need(src, "embeddings.position_embedding.weight", fmt, rank=2)
    out["pos_embed"] = pos.unsqueeze(0)
    src.pop("embeddings.position_embedding.weight")
    depth = _encoder(src, out, fmt, "encoder.layers.", _CLIP_QKV, _CLIP_LAYER)
    _move(src, out, "post_layernorm", "norm")
    _map_head(src, out, dim, fmt)
    fc1 = need(out, "blocks.0.mlp.fc1.weight", fmt, rank=2)
    if shape(out, "attn_pool.mlp.fc1.weight") != tuple(fc1.shape):
        raise refuse(fmt, "its head's MLP is not as wide as the blocks'", "timm's MAP head shares the MLP ratio")
    args.update(_common_args(cfg, dim, fmt), depth=depth, mlp_ratio=mlp_ratio_for(dim, fc1.shape[0]),
                img_size=_image_size(cfg, pos.shape[0], 0, patch_pair(args["patch_size"]), fmt),
                num_classes=0, global_pool="map", class_token=False, reg_tokens=0, no_embed_class=False,
                qkv_bias="blocks.0.attn.qkv.bias" in out, pre_norm=False, final_norm=True, fc_norm=False)
    return Converted(fmt, out, args, "none", "transformers pooler_output (the MAP head)")


def is_transformers_keys(keys: Any) -> bool:
    """Keys only transformers writes (a folder's weights passed without their config.json)."""
    return any(re.match(r"(\w+\.)?(embeddings\.patch_embeddings?\.|encoder\.layers?\.\d+\.)", k) for k in keys)


__all__ = ["ACTIVATIONS", "MODEL_TYPES", "convert_folder", "convert_transformers", "folder_format",
           "is_transformers_config", "is_transformers_keys", "read_config", "read_transformers_folder", "weights_file"]
