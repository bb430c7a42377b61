"""The numerics of the other ViT classes against timm's own functions: rotary tables, rotation, table resampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitexport.model.interp import linear_weights, resample_1d, resample_2d
from vitexport.model.rope import AxialRope, DinoV3Rope, MixedRope, apply_rope

GRIDS = [(1, 1), (1, 4), (3, 5), (7, 2), (16, 16), (13, 29)]


@pytest.mark.parametrize("kwargs", [
    dict(temperature=10000.0, grid_indexing="ij", ref_feat_shape=(16, 16)),  # EVA-02
    dict(temperature=10000.0, grid_offset=1.0, grid_indexing="xy", ref_feat_shape=(24, 16)),  # PE (non-square ref)
    dict(temperature=100.0, grid_indexing="xy"),  # RoPE-ViT axial
    dict(temperature=10000.0, rotate_half=True),
], ids=["eva02", "pe", "rope-vit", "half"])
def test_axial_table_is_timms(kwargs: dict) -> None:
    from timm.layers.pos_embed_sincos import RotaryEmbeddingCat

    ours = AxialRope(16, **kwargs)
    ref = RotaryEmbeddingCat(16, in_pixels=False, feat_shape=None, **kwargs)
    for gh, gw in GRIDS:
        assert torch.equal(ours(gh, gw), ref.get_embed(shape=[gh, gw])), (kwargs, gh, gw)


@pytest.mark.parametrize("kwargs", [dict(), dict(grid_indexing="xy", grid_offset=0.5), dict(rotate_half=False)],
                         ids=["dinov3", "xy-offset", "pairs"])
def test_dinov3_table_is_timms(kwargs: dict) -> None:
    from timm.layers.pos_embed_sincos import RotaryEmbeddingDinoV3

    ours = DinoV3Rope(32, temperature=100.0, **kwargs)
    ref = RotaryEmbeddingDinoV3(32, temperature=100.0, **kwargs)
    for gh, gw in GRIDS:
        assert torch.equal(ours(gh, gw), ref.get_embed(shape=[gh, gw])), (kwargs, gh, gw)


@pytest.mark.parametrize("indexing", ["xy", "ij"])
def test_mixed_table_is_timms(indexing: str) -> None:
    from timm.layers.pos_embed_sincos import RotaryEmbeddingMixed

    torch.manual_seed(0)
    ours = MixedRope(64, depth=3, num_heads=4, temperature=10.0, grid_indexing=indexing)
    ref = RotaryEmbeddingMixed(64, depth=3, num_heads=4, temperature=10.0, grid_indexing=indexing)
    with torch.no_grad():
        ref.freqs.copy_(ours.freqs)
    for gh, gw in GRIDS:
        assert torch.equal(ours(gh, gw), ref.get_embed(shape=[gh, gw])), (indexing, gh, gw)


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rotation_is_timms(half: bool, dtype: torch.dtype) -> None:
    """Interleaved pairs or halves; a float16 input is rotated in float32 and cast back, as timm."""
    from timm.layers.pos_embed_sincos import apply_rot_embed_cat

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 15, 16, generator=gen).to(dtype)
    table = AxialRope(16, rotate_half=half)(3, 5)
    out = apply_rope(x, table, half)
    assert out.dtype == dtype and torch.equal(out, apply_rot_embed_cat(x, table, half=half))


MODES = [("bilinear", True, False), ("bilinear", False, False), ("bilinear", False, True), ("bilinear", True, True),
         ("bicubic", True, False)]
MODE_IDS = [f"{m}-aa{int(a)}-ac{int(c)}" for m, a, c in MODES]


@pytest.mark.parametrize("mode, antialias, align_corners", MODES, ids=MODE_IDS)
def test_portable_table_resampling_is_f_interpolate(mode: str, antialias: bool, align_corners: bool) -> None:
    """Every table size from 1 to 16, every output size up to 4x and down to 1 (float32 rounding only)."""
    gen = torch.Generator().manual_seed(0)
    for n_in in (1, 2, 3, 5, 16):
        table = torch.randn(1, 6, n_in, n_in + 2, generator=gen)
        for n_out in range(1, 4 * n_in + 2):
            size = [n_out, n_out + 1]
            expected = F.interpolate(table, size=size, mode=mode, antialias=antialias, align_corners=align_corners)
            got = resample_2d(table, size, mode, antialias, align_corners, portable_form=True)
            assert (got - expected).abs().max() <= 1e-5, (n_in, n_out)


def test_portable_linear_1d_and_weights() -> None:
    gen = torch.Generator().manual_seed(0)
    for n_in in (1, 4, 16):
        table = torch.randn(1, 6, n_in, generator=gen)
        for n_out in range(1, 4 * n_in + 2):
            expected = F.interpolate(table, size=n_out, mode="linear", align_corners=False)
            assert (resample_1d(table, n_out, portable_form=True) - expected).abs().max() <= 1e-5, (n_in, n_out)
    same = linear_weights(7, 7, antialias=False, align_corners=False)  # the table's own size: the identity
    assert torch.equal(same, torch.eye(7))
