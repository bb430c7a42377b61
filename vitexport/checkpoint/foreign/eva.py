"""DINOv3 and EVA / EVA-02 (EVA-02 CLIP's image tower too) as their authors released them -> timm's ``Eva``.

timm converts both with one function, ``checkpoint_filter_fn`` of ``models/eva.py``; `eva_to_timm` is its key
mapping, ported. What each layout states, and what it does not:

- **DINOv3** (facebookresearch/dinov3, e.g. ``dinov3_vits16_pretrain_lvd1689m-*.pth``; timm recognises it by
  ``storage_tokens``): ``storage_tokens`` -> ``reg_token``, ``ls1/ls2.gamma`` -> ``gamma_1/2``, the SwiGLU
  ``mlp.w1/w2/w3`` -> ``fc1_g/fc1_x/fc2``, ``qkv.bias`` -> ``q_bias``/``v_bias`` (the key bias is dropped: the
  original masks it with ``qkv.bias_mask``, and a key bias shifts every score of a query alike, so softmax
  ignores it), and ``mask_token``, ``rope_embed.periods``, ``qkv.bias_mask``, ``local_cls_norm``,
  ``projectors.`` dropped. The rotary periods state the head width (``len(periods) * 4``) and the RoPE base
  (``base ** (4 i / head_dim)``, checked element by element); the repository fixes LayerNorm eps 1e-5, GELU
  for ``mlp``, SiLU for the SwiGLU FFN, rotate-half RoPE on ``separate``-normalised coordinates. The
  input size is not in the weights (no positional table): ``img_size`` comes from ``--config``.
  vitexport's forward (no head, ``global_pool='token'``) equals the repository's eval ``model(x)`` =
  ``forward_features(x)['x_norm_clstoken']`` at every size (rotary only, nothing resampled). Of the two
  timm forms of a model with q/v biases, the one without is built when the biases are all zero (timm's
  ``vit_*_dinov3`` presets for the distilled releases, whose biases are zero); both give the same output.
- **EVA / EVA-02** (BAAI's releases: ``module.``/``model.`` wrappers, the CLIP tower under ``visual.``):
  ``rope.freqs_cos/sin`` buffers dropped (timm recomputes them), ``attn.inner_attn_ln`` -> ``attn.norm``,
  ``mlp.ffn_ln`` -> ``mlp.norm``, ``mlp.w12`` -> ``fc1`` (packed SwiGLU), ``mlp.w1/w2/w3`` ->
  ``fc1_g/fc1_x/fc2``, ``q_bias``/``v_bias`` -> ``q_proj/v_proj.bias`` with separate projections; a MIM
  pretraining file (``mask_token``, ``lm_head``) loses both and its final norm becomes ``fc_norm``, mean
  pooled, as timm does. The rotary buffers state the head width and EVA's reference grid (the table is
  recomputed and compared); without them the model has no RoPE (EVA-01, EVA-02 CLIP enormous). EVA's
  LayerNorm eps is 1e-6. Post-norm blocks (only EVA-02 CLIP enormous, width 1792) have the keys of pre-norm
  ones: stated by the width of BAAI's releases, else ``use_post_norm`` comes from ``--config``.
  The EVA-02 CLIP tower's head is its projection (``encode_image`` without normalisation).

At other sizes the absolute table (EVA) is resampled as timm's dynamic-pad Eva does (antialiased bicubic to
the exact grid); EVA's own code interpolates its table bicubically by scale factor only when fine-tuning.
Sapiens2 (which timm also maps from this function) and DINOv3 without storage tokens are refused by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import torch

from vitexport.checkpoint.foreign.common import (
    Converted,
    block_count,
    grid_args,
    need,
    patch_args,
    refuse,
    shape,
    square_side,
)
from vitexport.checkpoint.infer import mlp_ratio_for

DINOV3 = "dinov3"
EVA = "eva"
DINOV3_REFERENCE = "dinov3 model(x) = forward_features(x)['x_norm_clstoken']"
EVA_REFERENCE = {
    "classifier": "EVA model(x) (logits)",
    "projection": "EVA-CLIP encode_image(x) (before normalisation)",
    "none": "EVA forward_features pooled as timm maps it (MIM pretraining weights have no inference forward)",
}
DINOV3_NATIVE = 256  # timm's DINOv3 presets' input size: the --config the refusal suggests
DINOV3_ROPE_BASE = 100.0  # the repository's pos_embed_rope_base of every release
DINOV3_HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1280: 20, 4096: 32}  # head width 64, for a file without periods
EVA_ROPE_THETA = 10000.0
MAX_REFERENCE_GRID = 1024  # the largest EVA reference (pretraining) grid searched for
# BAAI's architectures without rotary buffers (EVA-01 giant, EVA-02 CLIP enormous): width -> (heads, post-norm)
EVA_NO_ROPE_BY_WIDTH = {1408: (16, False), 1792: (16, True)}
EVA_PRE_NORM_WIDTHS = frozenset({192, 384, 768, 1024, 1408})  # EVA-02 Ti/S/B/L, EVA-01 g: pre-norm blocks
_EVA_ONLY = re.compile(r"(^|\.)rope\.freqs_(cos|sin)$|\.attn\.inner_attn_ln\.|\.mlp\.ffn_ln\.|\.mlp\.w[12]\.|"
                       r"^lm_head\.")
_ROPE_BUFFER = re.compile(r"(^|\.)rope\.freqs_cos$")


# ---- detection -------------------------------------------------------------
def _is_sapiens2(keys: set[str]) -> bool:
    return "blocks.0.attn.wq.weight" in keys and "blocks.0.ffn.w12.weight" in keys


def is_dinov3(keys: Iterable[str]) -> bool:
    """The DINOv3 repository's layout: timm's test (``storage_tokens``, not Sapiens2's attention names)."""
    keys = set(keys)
    return "storage_tokens" in keys and "patch_embed.proj.weight" in keys and not _is_sapiens2(keys)


def _prefix(keys: set[str]) -> str:
    """timm's prefix for EVA-CLIP weights: ``visual.`` when the tower's table is there (``visual.trunk.`` is an
    open_clip timm tower, `vitexport.checkpoint.foreign.clip`'s)."""
    return "visual." if "visual.pos_embed" in keys else ""


def is_eva(keys: Iterable[str]) -> bool:
    """An EVA / EVA-02 release: a class token and table (under ``visual.`` for EVA-CLIP), with the names only
    BAAI's code writes (rotary buffers, sub-LN norms, SwiGLU ``w1``/``w2``, a MIM ``lm_head``); EVA-01's other
    names are timm's own layout, read as such."""
    keys = set(keys)
    prefix = _prefix(keys)
    if not all(prefix + k in keys for k in ("pos_embed", "cls_token", "patch_embed.proj.weight")):
        return False
    return bool(prefix) or any(_EVA_ONLY.search(k) for k in keys)


def refuse_unmapped(keys: set[str]) -> None:
    """Layouts of this family timm's conversion does not map, refused by name (`detect`, after the tests)."""
    if _is_sapiens2(keys):
        raise refuse("Sapiens2", "its original layout (attn.wq, ffn.w12) is not converted by vitexport",
                     "load it with timm (timm.create_model(ARCH, pretrained=True, "
                     "pretrained_cfg_overlay=dict(file=PATH))), save model.state_dict() and pass that with --config "
                     "'{\"architecture\": ARCH}'")
    if any(k.startswith("rope_embed.") for k in keys) and "patch_embed.proj.weight" in keys:
        raise refuse(DINOV3, "it has rotary periods (rope_embed) but no storage_tokens, and timm's conversion "
                     "recognises DINOv3 by its storage tokens", "this model cannot be mapped exactly")


# ---- timm's mapping ----------------------------------------------------------
def eva_to_timm(state_dict: dict[str, torch.Tensor], qkv_bias: bool = True) -> dict[str, torch.Tensor]:
    """timm's key mapping for DINOv3 and EVA checkpoints.

    Ported from timm ``models/eva.py`` ``checkpoint_filter_fn`` (Apache-2.0, Ross Wightman), less its
    Perception Encoder and Sapiens2 branches and its resampling (the model is built from the file's own
    shapes, so its patch embedding and table always fit). ``qkv_bias``: whether the target model has q/v
    biases (timm asks the model); DINOv3's ``qkv.bias`` is dropped without them.
    """
    out: dict[str, torch.Tensor] = {}
    prefix = _prefix(set(state_dict))
    dinov3_weights = "storage_tokens" in state_dict
    mim_weights = not dinov3_weights and prefix + "mask_token" in state_dict
    no_qkv = prefix + "blocks.0.attn.q_proj.weight" in state_dict
    for k, v in state_dict.items():
        if prefix:
            if not k.startswith(prefix):
                continue
            k = k[len(prefix):]
        if "rope" in k and k != "rope.freqs":
            continue  # fixed embedding: recomputed
        if dinov3_weights:
            if k.endswith((".periods", ".bias_mask", "mask_token")) or k.startswith(("projectors.", "local_cls_norm")):
                continue  # non-persistent, pretraining-only or distillation heads
            if k.endswith("qkv.bias"):
                if qkv_bias:
                    q, _, value = v.chunk(3, dim=-1)  # the key bias is masked to zero in the original
                    out[k.replace("qkv.bias", "q_bias")] = q
                    out[k.replace("qkv.bias", "v_bias")] = value
                continue
            k = k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")
            k = k.replace("storage_tokens", "reg_token")
        elif mim_weights and k in ("mask_token", "lm_head.weight", "lm_head.bias", "norm.weight", "norm.bias"):
            if not k.startswith("norm"):
                continue  # pretraining mask token and head
            k = k.replace("norm", "fc_norm")
        k = k.replace("mlp.ffn_ln", "mlp.norm").replace("attn.inner_attn_ln", "attn.norm")
        k = k.replace("mlp.w12", "mlp.fc1").replace("mlp.w1", "mlp.fc1_g").replace("mlp.w2", "mlp.fc1_x")
        k = k.replace("mlp.w3", "mlp.fc2")
        if no_qkv:
            k = k.replace("q_bias", "q_proj.bias").replace("v_bias", "v_proj.bias")
        out[k] = v
    return out


# ---- what the weights state ----------------------------------------------------
def _swiglu_args(hidden: int, dim: int) -> dict[str, Any]:
    """Separate gate and value projections (timm's ``SwiGLU``): ``swiglu_align_to`` picks them in timm's Eva;
    any divisor of the width keeps it exact (64, DINOv3's alignment, where it divides)."""
    return {"swiglu_mlp": True, "swiglu_align_to": math.gcd(hidden, 64), "mlp_ratio": mlp_ratio_for(dim, hidden)}


def _dinov3_mlp(sd: dict[str, torch.Tensor], dim: int) -> dict[str, Any]:
    if "blocks.0.mlp.fc1.weight" in sd:
        fc1 = need(sd, "blocks.0.mlp.fc1.weight", DINOV3, rank=2)
        args: dict[str, Any] = {"swiglu_mlp": False, "mlp_ratio": mlp_ratio_for(dim, fc1.shape[0])}
    elif "blocks.0.mlp.w1.weight" in sd:
        args = _swiglu_args(need(sd, "blocks.0.mlp.w1.weight", DINOV3, rank=2).shape[0], dim)
    else:
        raise refuse(DINOV3, "block 0 has neither mlp.fc1 nor mlp.w1/w2/w3 (an unknown FFN)",
                     "only the repository's 'mlp' and 'swiglu' FFNs are supported")
    if "blocks.0.attn.proj.bias" not in sd or not ("blocks.0.mlp.fc2.bias" in sd or "blocks.0.mlp.w3.bias" in sd):
        raise refuse(DINOV3, "it was built with proj_bias=False or ffn_bias=False", "timm's Eva has those biases: "
                     "this model cannot be built exactly")
    return args


def _dinov3_qkv_bias(sd: dict[str, torch.Tensor], depth: int) -> bool:
    """Whether the model needs q/v biases: some are non-zero (the key third is masked out in the original)."""
    nonzero = False
    for i in range(depth):
        bias = sd.get(f"blocks.{i}.attn.qkv.bias")
        if bias is None:
            continue
        q, _, v = bias.float().chunk(3, dim=-1)
        nonzero = nonzero or bool(q.abs().max() > 0 or v.abs().max() > 0)
        mask = sd.get(f"blocks.{i}.attn.qkv.bias_mask")
        if mask is not None:
            mq, _, mv = mask.float().chunk(3, dim=-1)
            if not (bool((mq == 1).all()) and bool((mv == 1).all())):
                raise refuse(DINOV3, f"blocks.{i}.attn.qkv.bias_mask masks query or value biases",
                             "timm's conversion keeps them whole: this model cannot be mapped exactly")
    return nonzero


def _dinov3_rope(sd: dict[str, torch.Tensor], dim: int, unknown: list[str], suggest: dict[str, Any]
                 ) -> dict[str, Any]:
    """num_heads and rope_temperature from ``rope_embed.periods`` = ``base ** (2 i / (head_dim / 2))``."""
    periods = sd.get("rope_embed.periods")
    if periods is None:
        unknown += ["num_heads", "rope_temperature"]
        if dim in DINOV3_HEADS_BY_WIDTH:
            suggest.update(num_heads=DINOV3_HEADS_BY_WIDTH[dim], rope_temperature=DINOV3_ROPE_BASE)
        return {}
    if periods.dim() != 1 or not len(periods) or dim % (4 * len(periods)):
        raise refuse(DINOV3, f"rope_embed.periods has shape {tuple(periods.shape)}, which fits no head width of "
                     f"embed_dim {dim}", "the file is of another layout: re-save it")
    n = len(periods)
    p = periods.double()
    tol = 1e-3 if periods.dtype in (torch.float32, torch.float64) else 1e-2  # a half-precision save rounds them
    base = float(p[-1] ** (n / (n - 1))) if n > 1 else DINOV3_ROPE_BASE  # one band: period 1 whatever the base
    base = float(round(base)) if math.isclose(base, round(base), rel_tol=tol) else base
    expected = base ** (2.0 * torch.arange(n, dtype=torch.float32) / (2 * n))
    if not torch.allclose(periods.float(), expected, rtol=tol, atol=0):
        raise refuse(DINOV3, "its rotary periods are not base ** (4 i / head_dim) (the min_period/max_period "
                     "form)", "timm's Eva builds only the base form: this model cannot be mapped exactly")
    return {"num_heads": dim // (4 * n), "rope_temperature": base}


def convert_dinov3(sd: dict[str, torch.Tensor]) -> Converted:
    """A DINOv3 repository state dict (ViT backbones) in timm's Eva layout, with what it states."""
    if "cls_norm.weight" in sd:
        raise refuse(DINOV3, "it has a separate class-token norm (cls_norm: untie_cls_and_patch_norms)",
                     "timm's Eva has one final norm: this model cannot be mapped exactly")
    for key, what in (("pos_embed", "an absolute position table"), ("patch_embed.norm.weight", "a patch norm"),
                      ("head.weight", "a head in the backbone")):
        if key in sd:
            raise refuse(DINOV3, f"it has {what} ({key}), which no DINOv3 backbone has",
                         "this model cannot be mapped exactly")
    conv = tuple(need(sd, "patch_embed.proj.weight", DINOV3, rank=4).shape)
    args: dict[str, Any] = patch_args(conv)
    dim = args["embed_dim"]
    need(sd, "cls_token", DINOV3, rank=3)
    need(sd, "norm.weight", DINOV3, rank=1)
    storage = tuple(need(sd, "storage_tokens", DINOV3, rank=3).shape)
    depth = block_count(sd, r"blocks\.(\d+)\.", DINOV3)
    unknown = ["img_size"]
    suggest: dict[str, Any] = {"img_size": DINOV3_NATIVE}
    qkv_bias = _dinov3_qkv_bias(sd, depth)
    args.update(
        model_class="eva", depth=depth, num_classes=0, global_pool="token", class_token=True,
        num_reg_tokens=storage[1], qkv_bias=qkv_bias, qkv_fused=True, init_values=1e-5 if "blocks.0.ls1.gamma" in sd
        else None, use_abs_pos_emb=False, use_rot_pos_emb=True, rope_type="dinov3", rope_rotate_half=True,
        use_fc_norm=False, norm_layer="layernorm", norm_eps=1e-5,
        **_dinov3_mlp(sd, dim), **_dinov3_rope(sd, dim, unknown, suggest),
    )
    notes = [f"{storage[1]} storage tokens: built as timm's registers"]
    return Converted(DINOV3, eva_to_timm(sd, qkv_bias), args, "none", DINOV3_REFERENCE, tuple(unknown), notes=notes,
                     suggest=suggest, suggest_for=f"DINOv3's released ViTs (timm's presets run at {DINOV3_NATIVE})")


def _eva_rope_table(body: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    key = "rope.freqs_cos" if "rope.freqs_cos" in body else next((k for k in body if _ROPE_BUFFER.search(k)), None)
    if key is None:
        return None
    sin = body.get(key[: -len("cos")] + "sin")
    if sin is None or sin.shape != body[key].shape or body[key].dim() != 2:
        raise refuse(EVA, f"its rotary buffers ({key} and freqs_sin) are incomplete or not (positions, head_dim)",
                     "the file is incomplete or of another layout: re-save it")
    return body[key].float(), sin.float()


def _reference_grid(cos: torch.Tensor, sin: torch.Tensor, ft: int) -> int:
    """EVA's ``pt_seq_len``: the integer whose angles ``(ft - 1) / ft * pt * band`` (row 0, last column: the
    column half, one value per band) fit the table best; the whole table is compared afterwards."""
    n = cos.shape[0]
    bands = 1.0 / EVA_ROPE_THETA ** (torch.arange(n, dtype=torch.float64) / n)
    candidates = torch.arange(1, MAX_REFERENCE_GRID + 1, dtype=torch.float64)[:, None]
    angles = (ft - 1) / ft * candidates * bands
    err = torch.maximum((angles.cos() - cos.double()).abs(), (angles.sin() - sin.double()).abs()).amax(dim=1)
    return int(err.argmin()) + 1


def _eva_rope(body: dict[str, torch.Tensor], dim: int, grid: int | None) -> dict[str, Any]:
    """num_heads and the reference grid from EVA's ``rope.freqs_cos/sin`` (VisionRotaryEmbeddingFast: axial,
    theta 10000, positions ``arange(ft) / ft * pt``), the whole table recomputed as timm's and compared."""
    from vitexport.model.rope import AxialRope

    table = _eva_rope_table(body)
    if table is None:
        return {}
    cos, sin = table
    rows, hd = cos.shape
    ft = square_side(rows)
    if ft is None or ft < 2 or hd % 4 or dim % hd or (grid is not None and ft != grid):
        raise refuse(EVA, f"its rotary table is {rows} x {hd}, which is not a square grid of the positional "
                     f"table's size with a head width dividing {dim}", "this model cannot be mapped exactly")
    pt = _reference_grid(cos[ft - 1, hd // 2::2], sin[ft - 1, hd // 2::2], ft)
    ours = AxialRope(hd, EVA_ROPE_THETA, 0.0, "ij", (pt, pt), False)(ft, ft)
    if not (torch.allclose(ours[:, :hd], sin, atol=5e-3) and torch.allclose(ours[:, hd:], cos, atol=5e-3)):
        raise refuse(EVA, "its rotary table is not EVA-02's axial RoPE (theta 10000 on a reference grid)",
                     "timm's Eva builds only that: this model cannot be mapped exactly")
    return {"use_rot_pos_emb": True, "rope_type": "cat", "rope_temperature": EVA_ROPE_THETA, "rope_grid_offset": 0.0,
            "rope_rotate_half": False, "ref_feat_shape": pt, "num_heads": dim // hd}


def _eva_mlp(sd: dict[str, torch.Tensor], dim: int) -> dict[str, Any]:
    """The MLP from timm's keys (after `eva_to_timm`): GELU ``fc1``/``fc2``, packed SwiGLU ``fc1`` (twice the
    width ``fc2`` reads: BAAI's ``w12``), or separate ``fc1_g``/``fc1_x``; ``mlp.norm`` is EVA's ``ffn_ln``."""
    norm = "blocks.0.mlp.norm.weight" in sd
    if "blocks.0.mlp.fc1_g.weight" in sd:
        args = _swiglu_args(need(sd, "blocks.0.mlp.fc1_g.weight", EVA, rank=2).shape[0], dim)
        return {**args, "scale_mlp": norm, "swiglu_align_to": 0 if norm else args["swiglu_align_to"]}
    fc1 = need(sd, "blocks.0.mlp.fc1.weight", EVA, rank=2).shape[0]
    if fc1 != 2 * need(sd, "blocks.0.mlp.fc2.weight", EVA, rank=2).shape[1]:
        return {"swiglu_mlp": False, "scale_mlp": norm, "mlp_ratio": mlp_ratio_for(dim, fc1)}
    if norm:
        raise refuse(EVA, "its packed SwiGLU (mlp.w12) has a norm (ffn_ln)", "timm's Eva has none there: this model "
                     "cannot be mapped exactly")
    return {"swiglu_mlp": True, "scale_mlp": False, "mlp_ratio": mlp_ratio_for(dim, fc1 // 2)}


def _eva_pool(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    fc_norm, norm = "fc_norm.weight" in sd, "norm.weight" in sd
    if fc_norm == norm:
        raise refuse(EVA, "it has both a final norm and fc_norm" if norm else "it has neither norm nor fc_norm",
                     "this model cannot be mapped exactly")
    return {"global_pool": "avg"} if fc_norm else {"global_pool": "token"}


def convert_eva(sd: dict[str, torch.Tensor]) -> Converted:
    """An EVA / EVA-02 / EVA-02 CLIP release state dict in timm's Eva layout, with what it states."""
    prefix = _prefix(set(sd))
    body = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    relative = next((k for k in body if "relative_position" in k or k.startswith("rel_pos_bias")), None)
    if relative is not None:
        raise refuse(EVA, f"it has relative position biases ({relative})", "timm's Eva has none: this model cannot "
                     "be mapped exactly")
    mapped = eva_to_timm(sd)
    conv = tuple(need(mapped, "patch_embed.proj.weight", EVA, rank=4).shape)
    args: dict[str, Any] = patch_args(conv)
    dim = args["embed_dim"]
    pos = tuple(need(mapped, "pos_embed", EVA, rank=3).shape)
    need(mapped, "cls_token", EVA, rank=3)
    if "blocks.0.attn.qkv.weight" not in mapped and "blocks.0.attn.q_proj.weight" not in mapped:
        raise refuse(EVA, "block 0 has neither attn.qkv nor attn.q_proj/k_proj/v_proj", "the file is of another "
                     "layout: re-save it")
    unknown: list[str] = []
    grid_args(pos[1] - 1, conv[2:], args, unknown)
    rope = _eva_rope(body, dim, square_side(pos[1] - 1))
    head = shape(mapped, "head.weight")
    kind = "none" if head is None else "projection" if prefix else "classifier"
    args.update(
        model_class="eva", depth=block_count(mapped, r"blocks\.(\d+)\.", EVA), num_classes=head[0] if head else 0,
        class_token=True, qkv_fused="blocks.0.attn.qkv.weight" in mapped,
        qkv_bias="blocks.0.attn.q_bias" in mapped or "blocks.0.attn.q_proj.bias" in mapped,
        scale_attn_inner="blocks.0.attn.norm.weight" in mapped, init_values=1.0 if "blocks.0.gamma_1" in mapped
        else None, use_abs_pos_emb=True, norm_layer="layernorm", norm_eps=1e-6,
        **_eva_mlp(mapped, dim), **_eva_pool(mapped), **rope,
    )
    if not rope:  # EVA-01 and EVA-02 CLIP enormous: heads and block form by BAAI's widths
        args["use_rot_pos_emb"] = False
        heads, post = EVA_NO_ROPE_BY_WIDTH.get(dim, (None, None))
        if heads:
            args.update(num_heads=heads, use_post_norm=post)
        else:
            unknown += ["num_heads", "use_post_norm"]
    elif dim in EVA_PRE_NORM_WIDTHS:
        args["use_post_norm"] = False
    else:
        unknown.append("use_post_norm")
    reference = EVA_REFERENCE[kind]
    return Converted(EVA, mapped, args, kind, reference, tuple(unknown), suggest={"use_post_norm": False}
                     if unknown == ["use_post_norm"] else None, suggest_for="EVA-02's pre-norm blocks (every "
                     "release but EVA-02 CLIP enormous)")


__all__ = ["DINOV3", "EVA", "convert_dinov3", "convert_eva", "eva_to_timm", "is_dinov3", "is_eva", "refuse_unmapped"]
