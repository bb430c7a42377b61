"""DINOv3 and EVA / EVA-02 (EVA-02 CLIP's image tower) as their authors release them: converted onto timm's Eva.

Neither original library is installed (facebookresearch/dinov3 and BAAI's EVA code are not packages): the
original files are written here from a timm Eva model at depth 2 by the inverse of timm's
``checkpoint_filter_fn`` (eva.py), in the repositories' names (``storage_tokens``, ``ls1.gamma``, ``qkv.bias``
with its ``bias_mask``, ``rope_embed.periods``, ``mask_token``; BAAI's ``q_bias``/``v_bias``,
``inner_attn_ln``, ``ffn_ln``, ``w1``/``w2``/``w3``/``w12``, ``rope.freqs_cos/sin`` as
``VisionRotaryEmbeddingFast`` computes them, the ``visual.`` prefix beside a text tower, a MIM ``lm_head``).
Each synthetic file is proven faithful by timm's own ``checkpoint_filter_fn`` mapping it back to the timm model's
exact state dict; timm's forward is then the reference (the stand-in for the original library, whose forward
timm's port reproduces). For DINOv3 a second, independent reference: transformers' DINOv3 port (checked
against the repository upstream), its weights written in the repository's names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.helpers.foreign import TOL, assert_same_state_dict, images, rel_err
from tests.helpers.models import perturb_
from vitexport._util.errors import CheckpointError, ConfigError
from vitexport.checkpoint.foreign.common import complete_args
from vitexport.checkpoint.foreign.detect import convert_state_dict, detect_format
from vitexport.checkpoint.foreign.eva import convert_dinov3, convert_eva
from vitexport.checkpoint.weights import build_model
from vitexport.cli import cli
from vitexport.model.family_config import config_from_dict

timm = pytest.importorskip("timm", reason="timm is a test dependency")
from timm.models.eva import checkpoint_filter_fn  # noqa: E402

# name -> (timm entrypoint, its overrides at depth 2, the --config the file needs, native size)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any], int]] = {
    "dinov3-qkvb": ("vit_small_patch16_dinov3_qkvb", dict(img_size=64, global_pool="token"), {"img_size": 64}, 64),
    "dinov3-zero-bias": ("vit_small_patch16_dinov3", dict(img_size=64, global_pool="token"), {"img_size": 64}, 64),
    "dinov3-swiglu": ("vit_huge_plus_patch16_dinov3", dict(img_size=48, global_pool="token", embed_dim=64,
                                                           num_heads=4), {"img_size": 48}, 48),
    "eva02-clip": ("eva02_base_patch16_clip_224", dict(img_size=112, ref_feat_shape=8, embed_dim=64, num_heads=4,
                                                       num_classes=16), {"use_post_norm": False}, 112),
    "eva02-mim": ("eva02_tiny_patch14_224", dict(img_size=56, ref_feat_shape=16), {}, 56),
}


def timm_eva(name: str, seed: int) -> torch.nn.Module:
    arch, kwargs, _, _ = CASES[name]
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, depth=2, dynamic_img_size=True, dynamic_img_pad=True, **kwargs)
    perturb_(model, seed, 0.2)
    if name == "dinov3-zero-bias":
        assert not any(k.endswith("q_bias") for k in model.state_dict())  # timm's form for all-zero q/v biases
    return model.eval()


# ---- the originals, written by inverting timm's checkpoint_filter_fn ---------------------------------------
def dinov3_periods(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """facebookresearch/dinov3 RopePositionEmbedding._init_weights (base form)."""
    return base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


def dinov3_original(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The DINOv3 repository's state_dict of the same weights (DinoVisionTransformer, LinearKMaskedBias qkv)."""
    sd = model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    dim = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    swiglu = any(".mlp.fc1_g." in k for k in sd)
    out: dict[str, torch.Tensor] = {"cls_token": sd["cls_token"], "storage_tokens": sd["reg_token"],
                                    "mask_token": torch.randn(1, dim, generator=gen),
                                    "rope_embed.periods": dinov3_periods(dim // heads)}
    for k, v in sd.items():
        if k in ("cls_token", "reg_token") or k.endswith("attn.v_bias"):
            continue
        if k.endswith("attn.qkv.weight") and k.replace("qkv.weight", "q_bias") not in sd:  # zero q/v biases
            zero = torch.zeros(3 * dim)
            zero[dim:2 * dim] = torch.randn(dim, generator=gen)  # the key bias, masked in the original
            out[k.replace("weight", "bias")] = zero
            out[k.replace("weight", "bias_mask")] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
        if k.endswith("attn.q_bias"):
            k_bias = torch.randn(dim, generator=gen)  # masked out: any value
            out[k.replace("q_bias", "qkv.bias")] = torch.cat([v, k_bias, sd[k.replace("q_bias", "v_bias")]])
            out[k.replace("q_bias", "qkv.bias_mask")] = torch.cat([torch.ones(dim), torch.zeros(dim),
                                                                   torch.ones(dim)])
            continue
        k = k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        if swiglu:
            k = k.replace("mlp.fc1_g", "mlp.w1").replace("mlp.fc1_x", "mlp.w2").replace("mlp.fc2", "mlp.w3")
        out[k] = v
    return out


def eva_rope_buffers(head_dim: int, pt: int, ft: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """EVA-02's VisionRotaryEmbeddingFast(dim=head_dim // 2, pt_seq_len=pt, ft_seq_len=ft) buffers."""
    dim = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    t = torch.arange(ft) / ft * pt
    freqs = torch.einsum("..., f -> ... f", t, freqs).repeat_interleave(2, dim=-1)  # '... n -> ... (n r)', r=2
    grid = torch.cat([freqs[:, None, :].expand(ft, ft, dim), freqs[None, :, :].expand(ft, ft, dim)], dim=-1)
    return grid.cos().reshape(-1, head_dim), grid.sin().reshape(-1, head_dim)


def eva_original(model: torch.nn.Module, name: str, seed: int, theta: float = 10000.0) -> dict[str, torch.Tensor]:
    """BAAI's state_dict of the same weights: EVA-02 CLIP (``visual.`` beside a text tower) or MIM pretraining."""
    sd = model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    clip = name == "eva02-clip"
    prefix = "visual." if clip else ""
    separate = any(".mlp.fc1_g." in k for k in sd)
    packed = not separate and sd["blocks.0.mlp.fc1.weight"].shape[0] == 2 * sd["blocks.0.mlp.fc2.weight"].shape[1]
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        k = k.replace("attn.q_proj.bias", "attn.q_bias").replace("attn.v_proj.bias", "attn.v_bias")
        k = k.replace("attn.norm.", "attn.inner_attn_ln.").replace("mlp.norm.", "mlp.ffn_ln.")
        k = k.replace("mlp.fc1_g", "mlp.w1").replace("mlp.fc1_x", "mlp.w2")
        if packed:
            k = k.replace("mlp.fc1.", "mlp.w12.")
        if packed or separate:
            k = k.replace("mlp.fc2", "mlp.w3")
        if not clip:
            k = k.replace("fc_norm.", "norm.")  # MIM: timm moves the final norm to fc_norm
        out[prefix + k] = v
    head_dim = model.embed_dim // model.blocks[0].attn.num_heads
    cos, sin = eva_rope_buffers(head_dim, model.rope.ref_feat_shape[0], model.patch_embed.grid_size[0], theta)
    for where in ["", *(f"blocks.{i}.attn." for i in range(len(model.blocks)))]:  # shared module: every copy
        out[f"{prefix}{where}rope.freqs_cos"], out[f"{prefix}{where}rope.freqs_sin"] = cos, sin
    if clip:
        out.update({"text.token_embedding.weight": torch.randn(10, 8, generator=gen), "logit_scale": torch.ones(())})
    else:
        out.update({"mask_token": torch.randn(1, 1, model.embed_dim, generator=gen),
                    "lm_head.weight": torch.randn(32, model.embed_dim, generator=gen), "lm_head.bias": torch.zeros(32)})
    return out


def original(name: str, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = timm_eva(name, seed)
    sd = dinov3_original(model, seed) if name.startswith("dinov3") else eva_original(model, name, seed)
    return model, sd


def ours_of(sd: dict[str, torch.Tensor], name: str) -> torch.nn.Module:
    converted = convert_state_dict(sd)
    assert converted is not None
    cfg = config_from_dict(complete_args(converted, CASES[name][2]))
    return build_model(cfg, converted.state_dict, "converted")


# ---- tests -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
@torch.no_grad()
def test_synthetic_original_is_faithful_and_converts_as_timm(name: str) -> None:
    """timm's checkpoint_filter_fn maps the synthetic original back to the timm model's exact state dict (so the
    file is the original layout of those weights); vitexport's conversion gives the same dict and forward."""
    model, sd = original(name, seed=1)
    expected = model.state_dict()
    assert_same_state_dict(checkpoint_filter_fn(dict(sd), model), expected)
    fmt = detect_format(sd)
    assert fmt == ("dinov3" if name.startswith("dinov3") else "eva")
    converted = convert_state_dict(sd)
    assert converted is not None
    assert_same_state_dict(converted.state_dict, expected)
    ours = ours_of(sd, name)
    native = CASES[name][3]
    for size in ((native, native), (native - 9, native + 21), (5, 7)):
        x = images(2, *size)
        assert rel_err(ours(x), model(x)) <= TOL, size


def _onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.slow  # two RoPE models exported through the CLI
@pytest.mark.parametrize("name", ["dinov3-qkvb", "eva02-clip"])
@torch.no_grad()
def test_original_file_exports_with_the_cli_and_matches_timm(name: str, tmp_path: Path) -> None:
    model, sd = original(name, seed=2)
    path = tmp_path / f"{name}.pth"
    torch.save({"module": sd} if name == "eva02-clip" else sd, path)  # BAAI's DeepSpeed wrapper
    bare = CliRunner().invoke(cli, ["info", str(path)])  # what the weights do not state: one line, with the fix
    assert bare.exit_code == 1 and bare.stderr.count("\n") == 1 and "--config '{" in bare.stderr, bare.stderr
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(cli, ["onnx", str(path), "-o", str(out), "--config", json.dumps(CASES[name][2])])
    assert result.exit_code == 0, result.output
    native = CASES[name][3]
    for size in ((native, native), (native + 13, native - 21)):
        x = images(2, *size)
        np.testing.assert_allclose(_onnx(out, x), model(x).numpy(), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_dinov3_states_heads_and_rope_base_and_asks_for_the_size() -> None:
    _, sd = original("dinov3-qkvb", seed=3)
    converted = convert_dinov3(sd)
    assert converted.args["num_heads"] == 6 and converted.args["rope_temperature"] == 100.0
    assert converted.args["num_reg_tokens"] == 4 and converted.args["qkv_bias"]
    assert converted.unknown == ("img_size",) and converted.head == "none"
    with pytest.raises(ConfigError, match=r"""run `vitexport onnx w.pth --config '\{"img_size": 256\}'`""") as err:
        complete_args(converted, None, "w.pth")
    assert "\n" not in str(err.value)
    assert complete_args(converted, {"img_size": 256})["img_size"] == 256  # the printed --config is enough
    _, zero = original("dinov3-zero-bias", seed=3)
    assert not convert_dinov3(zero).args["qkv_bias"]  # all-zero q/v biases: timm's vit_*_dinov3 form


def test_eva_states_heads_reference_grid_and_head() -> None:
    _, sd = original("eva02-clip", seed=4)
    converted = convert_eva(sd)
    assert converted.args["num_heads"] == 4 and converted.args["ref_feat_shape"] == 8
    assert converted.args["img_size"] == 112 and converted.head == "projection"
    assert converted.unknown == ("use_post_norm",)  # width 64 is none of BAAI's
    _, mim = original("eva02-mim", seed=4)
    converted = convert_eva(mim)
    assert converted.head == "none" and converted.args["global_pool"] == "avg" and not converted.unknown
    assert converted.args["ref_feat_shape"] == 16 and converted.args["num_heads"] == 3
    assert detect_format(mim) == "eva"  # a mask token, yet not DINOv2's layout


def _drop(sd: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if part not in k}


DINOV3_REFUSALS = [
    (lambda sd: {**sd, "cls_norm.weight": torch.ones(384)}, "cls_norm"),
    (lambda sd: {**sd, "rope_embed.periods": torch.linspace(0.1, 4.0, 16)}, "min_period/max_period"),
    (lambda sd: {**sd, "pos_embed": torch.zeros(1, 17, 384)}, "absolute position table"),
    (lambda sd: {**sd, "blocks.1.attn.qkv.bias_mask": torch.zeros(3 * 384)}, "masks query or value biases"),
    (lambda sd: _drop(sd, "storage_tokens"), "no storage_tokens"),
    (lambda sd: {**sd, "blocks.0.attn.wq.weight": torch.zeros(384, 384),
                 "blocks.0.ffn.w12.weight": torch.zeros(8, 384)},
     "Sapiens2 checkpoint: its original layout"),
    (lambda sd: {**_drop(sd, "mlp.fc1"), **{k.replace("fc1", "w0"): v for k, v in sd.items() if "fc1" in k}},
     "unknown FFN"),
]


@pytest.mark.parametrize(("edit", "message"), DINOV3_REFUSALS)
def test_dinov3_layouts_timm_does_not_map_are_refused(edit: Any, message: str) -> None:
    _, sd = original("dinov3-qkvb", seed=5)
    sd = edit(sd)
    with pytest.raises(CheckpointError, match=message) as err:  # the file as detected, or as a DINOv3 one
        convert_dinov3(sd) if "storage_tokens" in sd and "blocks.0.ffn.w12.weight" not in sd else convert_state_dict(sd)
    assert "\n" not in str(err.value)


EVA_REFUSALS = [
    (lambda sd: {**sd, "visual.blocks.0.attn.relative_position_bias_table": torch.zeros(10, 4)},
     "relative position biases"),
    (lambda sd: {**sd, "visual.rope.freqs_cos": eva_rope_buffers(16, 8, 7, theta=100.0)[0],
                 "visual.rope.freqs_sin": eva_rope_buffers(16, 8, 7, theta=100.0)[1]}, "not EVA-02's axial RoPE"),
    (lambda sd: {**sd, "visual.fc_norm.weight": torch.ones(64), "visual.fc_norm.bias": torch.zeros(64)},
     "both a final norm and fc_norm"),
]


@pytest.mark.parametrize(("edit", "message"), EVA_REFUSALS)
def test_eva_layouts_timm_does_not_map_are_refused(edit: Any, message: str) -> None:
    _, sd = original("eva02-clip", seed=6)
    with pytest.raises(CheckpointError, match=message) as err:
        convert_state_dict(edit(sd))
    assert "\n" not in str(err.value)


def test_timm_layout_eva_weights_are_not_taken_for_originals() -> None:
    """timm's own Eva state dicts (already converted) stay timm's layout: the shape inference refuses them."""
    for name in ("dinov3-qkvb", "eva02-clip", "eva02-mim"):
        assert detect_format(timm_eva(name, seed=7).state_dict()) is None, name


def test_dinov3_periods_fit_the_rope_base() -> None:
    """The base is read back from the periods for any head width (one band: any base is the same model)."""
    for head_dim, base in ((64, 100.0), (16, 100.0), (32, 1000.0), (4, 100.0)):
        _, sd = original("dinov3-qkvb", seed=8)
        heads = 384 // head_dim
        sd["rope_embed.periods"] = dinov3_periods(head_dim, base)
        args = convert_dinov3(sd).args
        assert args["num_heads"] == heads, head_dim
        assert head_dim == 4 or math.isclose(args["rope_temperature"], base), (head_dim, args["rope_temperature"])


def dinov3_from_transformers(model: Any, seed: int) -> dict[str, torch.Tensor]:
    """transformers' DINOv3ViTModel weights in the DINOv3 repository's names (the inverse of transformers'
    convert_dinov3_vit_to_hf.py): fused qkv with a masked (zero) key bias, ls1/ls2, storage tokens."""
    sd = model.state_dict()
    dim = model.config.hidden_size
    gen = torch.Generator().manual_seed(seed)
    out = {"cls_token": sd["embeddings.cls_token"], "storage_tokens": sd["embeddings.register_tokens"],
           "mask_token": sd["embeddings.mask_token"][0],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.bias"], "norm.weight": sd["norm.weight"],
           "norm.bias": sd["norm.bias"],
           "rope_embed.periods": dinov3_periods(dim // model.config.num_attention_heads, model.config.rope_theta)}
    mlp = ({"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"} if model.config.use_gated_mlp
           else {"up_proj": "fc1", "down_proj": "fc2"})
    for i in range(model.config.num_hidden_layers):
        src, dst = f"model.layer.{i}.", f"blocks.{i}."
        a = src + "attention."
        out[dst + "attn.qkv.weight"] = torch.cat([sd[a + "q_proj.weight"], sd[a + "k_proj.weight"],
                                                  sd[a + "v_proj.weight"]])
        out[dst + "attn.qkv.bias"] = torch.cat([sd[a + "q_proj.bias"], torch.randn(dim, generator=gen),
                                                sd[a + "v_proj.bias"]])
        out[dst + "attn.qkv.bias_mask"] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
        out[dst + "attn.proj.weight"], out[dst + "attn.proj.bias"] = sd[a + "o_proj.weight"], sd[a + "o_proj.bias"]
        for n in ("norm1", "norm2"):
            out[f"{dst}{n}.weight"], out[f"{dst}{n}.bias"] = sd[f"{src}{n}.weight"], sd[f"{src}{n}.bias"]
        out[dst + "ls1.gamma"] = sd[src + "layer_scale1.lambda1"]
        out[dst + "ls2.gamma"] = sd[src + "layer_scale2.lambda1"]
        for theirs, ours in mlp.items():
            for p in ("weight", "bias"):
                out[f"{dst}mlp.{ours}.{p}"] = sd[f"{src}mlp.{theirs}.{p}"]
    return out


@pytest.mark.parametrize("gated", [False, True])
@torch.no_grad()
def test_dinov3_equals_transformers_port_of_the_repository(gated: bool) -> None:
    """A second reference besides timm: transformers' DINOv3 port (checked against the repository upstream), its
    weights in the repository's layout; pooler_output is the repository's x_norm_clstoken."""
    T = pytest.importorskip("transformers", reason="transformers is a test dependency")
    torch.manual_seed(9)
    cfg = T.DINOv3ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            image_size=32, patch_size=8, num_register_tokens=4, use_gated_mlp=gated,
                            hidden_act="silu" if gated else "gelu")
    ref = perturb_(T.DINOv3ViTModel(cfg), 9).eval()
    sd = dinov3_from_transformers(ref, seed=9)
    converted = convert_state_dict(sd)
    assert converted is not None and converted.format == "dinov3"
    ours = build_model(config_from_dict(complete_args(converted, {"img_size": 32})), converted.state_dict, "dinov3")
    for size in ((32, 32), (48, 24), (16, 64)):  # whole patches: transformers' patch conv drops a remainder
        x = images(2, *size)
        expected = ref(pixel_values=x)
        assert rel_err(ours(x), expected.pooler_output) <= TOL, size
        assert rel_err(ours.forward_features(x), expected.last_hidden_state) <= TOL, size


def test_dinov3_periods_saved_in_half_precision_give_the_base() -> None:
    _, sd = original("dinov3-qkvb", seed=10)
    sd["rope_embed.periods"] = dinov3_periods(64).to(torch.bfloat16)
    args = convert_dinov3(sd).args
    assert args["rope_temperature"] == 100.0 and args["num_heads"] == 6
