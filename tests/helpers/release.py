"""Checkpoints in the layouts their authors release them, written from models built locally with random weights.

- `dinov2_repository_layout`: a transformers DINOv2 as the DINOv2 repository (facebookresearch/dinov2) names it;
- `siglip_as_big_vision`, `vit_as_original`: transformers' ports of the JAX models as big_vision and
  google-research/vision_transformer save them (``.npz`` arrays);
- `save_open_clip`: an open_clip CLIP saved by open_clip's own hub writer (``save_for_hf``).

The repositories that write DINOv2 and ``.npz`` files are not installed; the transformers ports compute what they
compute (checked against them upstream), so they are the forward reference.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.helpers import foreign  # noqa: F401 - sets HF_HUB_OFFLINE before transformers / open_clip import


def dinov2_repository_layout(model: Any) -> dict[str, torch.Tensor]:
    """A transformers DINOv2 (with or without registers) as the DINOv2 repository's state dict: ``blocks.N.attn.qkv``
    (q, k, v rows), ``ls1.gamma``, ``mlp.fc1`` or the fused SwiGLU ``mlp.w12`` (gate rows first) / ``mlp.w3``,
    ``mask_token``, ``register_tokens``."""
    sd = model.state_dict()
    out = {"cls_token": sd["embeddings.cls_token"], "mask_token": sd["embeddings.mask_token"],
           "pos_embed": sd["embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    if "embeddings.register_tokens" in sd:
        out["register_tokens"] = sd["embeddings.register_tokens"]
    for i in range(model.config.num_hidden_layers):
        h, b = f"encoder.layer.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            out[f"{b}norm1.{p}"], out[f"{b}norm2.{p}"] = sd[f"{h}norm1.{p}"], sd[f"{h}norm2.{p}"]
            out[f"{b}attn.qkv.{p}"] = torch.cat([sd[f"{h}attention.{n}_proj.{p}"] for n in "qkv"])
            out[f"{b}attn.proj.{p}"] = sd[f"{h}attention.o_proj.{p}"]
            if f"{h}mlp.gate_proj.{p}" in sd:  # SwiGLUFFNFused: w12 = [x1 (silu); x2], w3
                out[f"{b}mlp.w12.{p}"] = torch.cat([sd[f"{h}mlp.gate_proj.{p}"], sd[f"{h}mlp.up_proj.{p}"]])
                out[f"{b}mlp.w3.{p}"] = sd[f"{h}mlp.down_proj.{p}"]
            else:
                out[f"{b}mlp.fc1.{p}"], out[f"{b}mlp.fc2.{p}"] = sd[f"{h}mlp.fc1.{p}"], sd[f"{h}mlp.fc2.{p}"]
        out[f"{b}ls1.gamma"], out[f"{b}ls2.gamma"] = sd[f"{h}layer_scale1.lambda1"], sd[f"{h}layer_scale2.lambda1"]
    return out


# ---------------------------------------------------------------------------
# JAX/Flax .npz layouts
# ---------------------------------------------------------------------------
def _flax_dense(weight: torch.Tensor) -> np.ndarray:
    return weight.T.numpy()


def _flax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qb: torch.Tensor, kb: torch.Tensor,
                    vb: torch.Tensor, o: torch.Tensor, ob: torch.Tensor, where: str, heads: int
                    ) -> dict[str, np.ndarray]:
    dim = q.shape[0]
    out = {}
    for n, weight, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
        out[f"{where}{n}/kernel"] = weight.T.reshape(dim, heads, dim // heads).numpy()
        out[f"{where}{n}/bias"] = bias.reshape(heads, dim // heads).numpy()
    out[f"{where}out/kernel"] = o.T.reshape(heads, dim // heads, dim).numpy()
    out[f"{where}out/bias"] = ob.numpy()
    return out


def _flax_block(sd: dict[str, torch.Tensor], h: str, attn: str, out: str, norms: tuple[tuple[int, str], ...],
                mha_sub: int, mlp_sub: int, heads: int) -> dict[str, np.ndarray]:
    """One transformers encoder layer ``h`` as a Flax encoder block's arrays (names relative to the block)."""
    a = [sd[f"{h}{attn}{n}_proj.weight"] for n in "qkv"] + [sd[f"{h}{attn}{n}_proj.bias"] for n in "qkv"]
    block = _flax_attention(*a, sd[f"{h}{attn}{out}_proj.weight"], sd[f"{h}{attn}{out}_proj.bias"],
                            f"MultiHeadDotProductAttention_{mha_sub}/", heads)
    for j, n in norms:
        block[f"LayerNorm_{j}/scale"], block[f"LayerNorm_{j}/bias"] = sd[f"{h}{n}.weight"].numpy(), sd[
            f"{h}{n}.bias"].numpy()
    for j, n in ((0, "fc1"), (1, "fc2")):
        block[f"MlpBlock_{mlp_sub}/Dense_{j}/kernel"] = _flax_dense(sd[f"{h}mlp.{n}.weight"])
        block[f"MlpBlock_{mlp_sub}/Dense_{j}/bias"] = sd[f"{h}mlp.{n}.bias"].numpy()
    return block


def siglip_as_big_vision(model: Any, scan: bool) -> dict[str, np.ndarray]:
    """A transformers SiglipVisionModel as big_vision saves a two-tower SigLIP's image tower (``params/img/``),
    per block or stacked (``scan``)."""
    sd, p = {k: v.detach() for k, v in model.state_dict().items()}, "params/img/"
    dim, heads, depth = model.config.hidden_size, model.config.num_attention_heads, model.config.num_hidden_layers
    w = {f"{p}embedding/kernel": sd["embeddings.patch_embedding.weight"].permute(2, 3, 1, 0).numpy(),
         f"{p}embedding/bias": sd["embeddings.patch_embedding.bias"].numpy(),
         f"{p}pos_embedding": sd["embeddings.position_embedding.weight"][None].numpy(),
         f"{p}Transformer/encoder_norm/scale": sd["post_layernorm.weight"].numpy(),
         f"{p}Transformer/encoder_norm/bias": sd["post_layernorm.bias"].numpy()}
    norms = ((0, "layer_norm1"), (1, "layer_norm2"))
    blocks = [_flax_block(sd, f"encoder.layers.{i}.", "self_attn.", "out", norms, 0, 0, heads) for i in range(depth)]
    if scan:
        w.update({f"{p}Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
    else:
        w.update({f"{p}Transformer/encoderblock_{i}/{k}": v for i, b in enumerate(blocks) for k, v in b.items()})
    q, k, v = sd["head.attention.in_proj_weight"].split(dim)
    qb, kb, vb = sd["head.attention.in_proj_bias"].split(dim)
    m = f"{p}MAPHead_0/"
    w.update(_flax_attention(q, k, v, qb, kb, vb, sd["head.attention.out_proj.weight"],
                             sd["head.attention.out_proj.bias"], f"{m}MultiHeadDotProductAttention_0/", heads))
    w |= {f"{m}probe": sd["head.probe"].numpy(), f"{m}LayerNorm_0/scale": sd["head.layernorm.weight"].numpy(),
          f"{m}LayerNorm_0/bias": sd["head.layernorm.bias"].numpy()}
    for j, n in ((0, "fc1"), (1, "fc2")):
        w[f"{m}MlpBlock_0/Dense_{j}/kernel"] = _flax_dense(sd[f"head.mlp.{n}.weight"])
        w[f"{m}MlpBlock_0/Dense_{j}/bias"] = sd[f"head.mlp.{n}.bias"].numpy()
    return w


def vit_as_original(model: Any) -> dict[str, np.ndarray]:
    """A transformers ViTForImageClassification as google-research/vision_transformer saves a ViT."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    heads, depth = model.config.num_attention_heads, model.config.num_hidden_layers
    w = {"embedding/kernel": sd["vit.embeddings.patch_embeddings.projection.weight"].permute(2, 3, 1, 0).numpy(),
         "embedding/bias": sd["vit.embeddings.patch_embeddings.projection.bias"].numpy(),
         "cls": sd["vit.embeddings.cls_token"].numpy(),
         "Transformer/posembed_input/pos_embedding": sd["vit.embeddings.position_embeddings"].numpy(),
         "Transformer/encoder_norm/scale": sd["vit.layernorm.weight"].numpy(),
         "Transformer/encoder_norm/bias": sd["vit.layernorm.bias"].numpy(),
         "head/kernel": _flax_dense(sd["classifier.weight"]), "head/bias": sd["classifier.bias"].numpy()}
    norms = ((0, "layernorm_before"), (2, "layernorm_after"))
    for i in range(depth):
        block = _flax_block(sd, f"vit.layers.{i}.", "attention.", "o", norms, 1, 3, heads)
        w.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in block.items()})
    return w


# ---------------------------------------------------------------------------
# open_clip
# ---------------------------------------------------------------------------
class _NoTokenizer:
    def save_pretrained(self, folder: Any) -> None:  # open_clip's writer saves the text tokenizer too
        pass


def save_open_clip(model: Any, model_cfg: dict[str, Any], folder: Path, mean: tuple[float, ...] = (0.5, 0.4, 0.3),
                   std: tuple[float, ...] = (0.2, 0.25, 0.3)) -> Path:
    """``model`` (an open_clip CLIP) as open_clip's ``push_to_hf_hub`` writes it, by open_clip's own writer:
    ``open_clip_config.json`` (model and preprocessing config), ``open_clip_model.safetensors`` and
    ``open_clip_pytorch_model.bin``."""
    writer = importlib.import_module("open_clip.push_to_hf_hub")
    model.visual.image_mean, model.visual.image_std = mean, std
    model.visual.preprocess_cfg = {"interpolation": "bicubic"}
    writer.save_for_hf(model, _NoTokenizer(), model_cfg, str(folder))
    return folder
