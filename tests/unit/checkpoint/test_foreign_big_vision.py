"""JAX/Flax ``.npz`` checkpoints: timm's ``_load_weights`` on the same file, and transformers' ports as the
forward reference (big_vision and vision_transformer are JAX code, not installed).

Files are written here with ``numpy.savez`` in the layouts those repositories save: big_vision
(``params/img/`` two-tower SigLIP, ``pos_embedding``, ``MultiHeadDotProductAttention_0``, ``MAPHead_0``,
per-block or stacked ``scan`` layers) and the original ViT (``Transformer/posembed_input``, ``..._1``,
``MlpBlock_3``, ``LayerNorm_2``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers.foreign import TOL, assert_same_state_dict, build, images, rel_err, timm_model
from tests.helpers.models import perturb_
from tests.helpers.release import siglip_as_big_vision, vit_as_original
from vitexport._util.errors import CheckpointError, ConfigError
from vitexport.checkpoint.foreign.big_vision import convert_big_vision
from vitexport.checkpoint.foreign.common import complete_args
from vitexport.security.safenpz import read_npz

D, H, HIDDEN, DEPTH, PATCH, C = 32, 4, 48, 2, 8, 3


def _mha(rng: np.random.Generator, where: str, scan: int | None) -> dict[str, np.ndarray]:
    lead = (scan,) if scan else ()
    out = {}
    for n in ("query", "key", "value"):
        out[f"{where}{n}/kernel"] = rng.standard_normal((*lead, D, H, D // H))
        out[f"{where}{n}/bias"] = rng.standard_normal((*lead, H, D // H))
    out[f"{where}out/kernel"] = rng.standard_normal((*lead, H, D // H, D))
    out[f"{where}out/bias"] = rng.standard_normal((*lead, D))
    return out


def _norm(rng: np.random.Generator, where: str, lead: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    return {f"{where}/scale": 1 + 0.3 * rng.standard_normal((*lead, D)), f"{where}/bias": rng.standard_normal(
        (*lead, D))}


def _mlp(rng: np.random.Generator, where: str, lead: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    return {f"{where}Dense_0/kernel": rng.standard_normal((*lead, D, HIDDEN)),
            f"{where}Dense_0/bias": rng.standard_normal((*lead, HIDDEN)),
            f"{where}Dense_1/kernel": rng.standard_normal((*lead, HIDDEN, D)),
            f"{where}Dense_1/bias": rng.standard_normal((*lead, D))}


def random_npz(prefix: str = "params/img/", big_vision: bool = True, scan: bool = False, cls: bool = False,
               map_head: bool = True, classes: int = 0, grid: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays in one of the layouts (float32), scaled so that every one changes the output."""
    rng = np.random.default_rng(seed)
    w: dict[str, Any] = {f"{prefix}embedding/kernel": rng.standard_normal((PATCH, PATCH, C, D)) * 0.2,
                         f"{prefix}embedding/bias": rng.standard_normal(D)}
    rows = grid * grid + (0 if big_vision or not cls else 1)
    pos = f"{prefix}pos_embedding" if big_vision else f"{prefix}Transformer/posembed_input/pos_embedding"
    w[pos] = rng.standard_normal((1, rows, D))
    if cls:
        w[f"{prefix}cls"] = rng.standard_normal((1, 1, D))
    mha_sub, b_sub, ln1_sub = (0, 0, 1) if big_vision else (1, 3, 2)
    for i in range(1 if scan else DEPTH):
        bp = f"{prefix}Transformer/encoderblock/" if scan else f"{prefix}Transformer/encoderblock_{i}/"
        lead = (DEPTH,) if scan else ()
        w.update(_norm(rng, f"{bp}LayerNorm_0", lead) | _norm(rng, f"{bp}LayerNorm_{ln1_sub}", lead))
        w.update(_mha(rng, f"{bp}MultiHeadDotProductAttention_{mha_sub}/", DEPTH if scan else None))
        w.update(_mlp(rng, f"{bp}MlpBlock_{b_sub}/", lead))
    w.update(_norm(rng, f"{prefix}Transformer/encoder_norm"))
    if map_head:
        w[f"{prefix}MAPHead_0/probe"] = rng.standard_normal((1, 1, D))
        w.update(_mha(rng, f"{prefix}MAPHead_0/MultiHeadDotProductAttention_0/", None))
        w.update(_norm(rng, f"{prefix}MAPHead_0/LayerNorm_0") | _mlp(rng, f"{prefix}MAPHead_0/MlpBlock_0/"))
    if classes:
        w[f"{prefix}head/kernel"] = rng.standard_normal((D, classes))
        w[f"{prefix}head/bias"] = rng.standard_normal(classes)
    if prefix == "params/img/":  # the text tower of a two-tower SigLIP is left alone
        w["params/txt/Encoder_0/encoder_norm/scale"] = rng.standard_normal(D)
    return {k: (v * (0.3 if v.ndim > 1 else 1)).astype(np.float32) for k, v in w.items()}


def write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


LAYOUTS: dict[str, dict[str, Any]] = {
    "siglip": dict(),
    "siglip_scan": dict(scan=True),
    "big_vision_cls_head": dict(prefix="params/", cls=True, map_head=False, classes=5),
    "big_vision_gap": dict(prefix="", map_head=False),
    "original_vit": dict(prefix="", big_vision=False, cls=True, map_head=False, classes=7),
    "original_vit_opt_target": dict(prefix="opt/target/", big_vision=False, cls=True, map_head=False, grid=3),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@torch.no_grad()
def test_npz_mapping_is_timms(name: str, tmp_path: Path) -> None:
    """timm's _load_weights on the same file gives the same keys and tensors; the models agree at any size."""
    from timm.models.vision_transformer import _load_weights

    path = write(tmp_path / "w.npz", random_npz(seed=1, **LAYOUTS[name]))
    converted = convert_big_vision(read_npz(path))
    explicit = {"global_pool": "avg"} if name == "big_vision_gap" else None
    assert converted.unknown == (("global_pool",) if explicit else ())
    ref = timm_model(converted, explicit)
    _load_weights(ref, str(path))
    assert_same_state_dict(converted.state_dict, ref.state_dict())
    ours = build(converted, explicit)
    grid = LAYOUTS[name].get("grid", 4) * PATCH
    for size in ((grid, grid), (grid + 3, 2 * grid - 1), (5, 3), (3 * grid, grid)):
        x = images(2, *size)
        assert rel_err(ours(x), ref(x)) <= TOL, size


def test_big_vision_class_token_has_no_positional_row() -> None:
    """big_vision adds the table before the class token is prepended (timm's no_embed_class); the original
    ViT code prepends first (a row for the token)."""
    assert convert_big_vision(random_npz(**LAYOUTS["big_vision_cls_head"])).args["no_embed_class"] is True
    assert convert_big_vision(random_npz(**LAYOUTS["original_vit"])).args["no_embed_class"] is False


def test_pooling_is_unknown_without_class_token_or_map_head() -> None:
    with pytest.raises(ConfigError, match="global_pool not stored"):
        complete_args(convert_big_vision(random_npz(**LAYOUTS["big_vision_gap"])))


# ---------------------------------------------------------------------------
# transformers' ports of the JAX models as the forward reference
# ---------------------------------------------------------------------------
T = pytest.importorskip("transformers", reason="transformers is a test dependency (pip install transformers)")
SMALL = dict(hidden_size=D, num_hidden_layers=DEPTH, num_attention_heads=H, intermediate_size=HIDDEN, image_size=32,
             patch_size=PATCH)


@pytest.mark.parametrize("scan", [False, True], ids=["per_block", "scan"])
@torch.no_grad()
def test_siglip_npz_equals_transformers_siglip(scan: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = perturb_(T.SiglipVisionModel(T.SiglipVisionConfig(**SMALL)), 2).eval()
    path = write(tmp_path / "siglip.npz", siglip_as_big_vision(ref, scan))
    converted = convert_big_vision(read_npz(path))
    assert converted.head == "none" and converted.args["global_pool"] == "map"
    x = images(3, 32, 32)
    assert rel_err(build(converted)(x), ref(pixel_values=x).pooler_output) <= TOL


@torch.no_grad()
def test_original_vit_npz_equals_transformers_vit(tmp_path: Path) -> None:
    """Flax's nn.gelu is the tanh approximation and its LayerNorm eps 1e-6: the reference is built so."""
    torch.manual_seed(0)
    config = T.ViTConfig(**SMALL, num_labels=6, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    ref = perturb_(T.ViTForImageClassification(config), 3).eval()
    converted = convert_big_vision(read_npz(write(tmp_path / "vit.npz", vit_as_original(ref))))
    assert converted.head == "classifier" and converted.args["act_layer"] == "gelu_tanh"
    x = images(3, 32, 32)
    assert rel_err(build(converted)(x), ref(pixel_values=x).logits) <= TOL


# ---------------------------------------------------------------------------
# refused by name
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("edit", "message"), [
    (lambda w: w | {"pre_logits/kernel": np.zeros((D, D), np.float32)}, "representation layer"),
    (lambda w: {k: v for k, v in w.items() if "posembed_input" not in k}, "fixed sin-cos"),
    (lambda w: w | {"conv_root/kernel": np.zeros((7, 7, 3, 8), np.float32)}, "hybrid"),
    (lambda w: w | {"embedding/kernel": np.zeros((PATCH * PATCH * C, D), np.float32)}, "NaFlex"),
    (lambda w: {k: v for k, v in w.items() if "encoderblock_1/MlpBlock_3/Dense_1/bias" not in k}, "is missing"),
    (lambda w: {k: v for k, v in w.items() if "encoderblock_0/" not in k}, "not numbered 0..N-1"),
])
def test_npz_layouts_timm_does_not_map_are_refused(edit: Any, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as err:
        convert_big_vision(edit(random_npz(**LAYOUTS["original_vit"])))
    assert "\n" not in str(err.value)


def test_map_head_with_other_heads_is_refused() -> None:
    w = random_npz()
    w["params/img/MAPHead_0/MultiHeadDotProductAttention_0/query/kernel"] = np.zeros((D, 2, D // 2), np.float32)
    with pytest.raises(CheckpointError, match="MAP head has 2 heads"):
        convert_big_vision(w)


def test_not_a_vit_npz_is_refused() -> None:
    with pytest.raises(CheckpointError, match="no embedding/kernel"):
        convert_big_vision({"params/txt/Encoder_0/encoder_norm/scale": np.zeros(4, np.float32)})
