"""Padding and positional-embedding resampling against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitexport.model.layers import pad_to_patch, padded_size, resample_abs_pos_embed


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(
        x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0)
    )


def aa_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of PIL-style antialiased bicubic (a=-0.5, half-pixel centres, normalised)."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1 else 2.0
    inv = 1.0 / scale if scale >= 1 else 1.0
    mat = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        w = keys_cubic((j - center + 0.5) * inv)
        mat[i, lo:hi] = w / w.sum()
    return mat


def reference_resample(posemb: np.ndarray, new: tuple[int, int], old: tuple[int, int], prefix: int) -> np.ndarray:
    d = posemb.shape[-1]
    grid = posemb[0, prefix:].reshape(old[0], old[1], d).astype(np.float64)
    out = np.einsum("ij,jkd->ikd", aa_weights(old[0], new[0]), grid)
    out = np.einsum("ij,kjd->kid", aa_weights(old[1], new[1]), out)
    return np.concatenate([posemb[0, :prefix], out.reshape(-1, d)], 0)[None]


@pytest.mark.parametrize(
    "old, new, prefix",
    [((3, 3), (4, 4), 1), ((3, 5), (7, 2), 5), ((4, 4), (2, 8), 0), ((14, 14), (5, 31), 1), ((6, 3), (1, 1), 2)],
)
def test_resample_matches_independent_antialiased_bicubic(old, new, prefix) -> None:
    gen = torch.Generator().manual_seed(0)
    posemb = torch.randn(1, prefix + old[0] * old[1], 16, generator=gen)
    out = resample_abs_pos_embed(posemb, list(new), list(old), prefix)
    ref = reference_resample(posemb.numpy(), new, old, prefix)
    assert out.shape == (1, prefix + new[0] * new[1], 16)
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-6, rtol=0)
    assert torch.equal(out[:, :prefix], posemb[:, :prefix])  # prefix tokens untouched


def test_resample_matches_timm_and_differs_from_plain_bicubic() -> None:
    from timm.layers import resample_abs_pos_embed as timm_resample

    posemb = torch.randn(1, 1 + 15, 8)
    ours = resample_abs_pos_embed(posemb, [6, 4], [3, 5], 1)
    assert torch.allclose(ours, timm_resample(posemb, [6, 4], old_size=[3, 5], num_prefix_tokens=1), atol=1e-7)
    grid = posemb[:, 1:].reshape(1, 3, 5, 8).permute(0, 3, 1, 2)
    plain = F.interpolate(grid, size=(6, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, 8)
    assert (ours[:, 1:] - plain).abs().max() > 1e-2  # antialias matters for upsampling too


def test_resample_same_grid_is_identity() -> None:
    posemb = torch.randn(1, 1 + 12, 8)
    assert torch.allclose(resample_abs_pos_embed(posemb, [3, 4], [3, 4], 1), posemb, atol=1e-6, rtol=0)


def test_resample_keeps_dtype_and_computes_in_float32() -> None:
    posemb = torch.randn(1, 10, 8).half()
    out = resample_abs_pos_embed(posemb, [4, 4], [3, 3], 1)
    assert out.dtype == torch.float16
    ref = resample_abs_pos_embed(posemb.float(), [4, 4], [3, 3], 1).half()
    assert torch.equal(out, ref)


@pytest.mark.parametrize("hw", [(28, 28), (1, 1), (7, 9), (16, 17), (32, 8)])
def test_pad_to_patch_right_bottom_zeros(hw) -> None:
    x = torch.randn(2, 3, *hw)
    out = pad_to_patch(x, 8, 8)
    assert tuple(out.shape[-2:]) == padded_size(*hw, (8, 8))
    assert out.shape[-2] % 8 == 0 and out.shape[-1] % 8 == 0
    assert torch.equal(out[..., : hw[0], : hw[1]], x)
    assert out[..., hw[0] :, :].abs().sum() == 0 and out[..., :, hw[1] :].abs().sum() == 0
    assert padded_size(28, 28, (8, 8)) == (32, 32)
