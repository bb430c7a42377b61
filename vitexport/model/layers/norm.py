"""Normalization layers, registered by name: timm's ``LayerNorm`` and ``RmsNorm`` with their state_dict keys.

Both are written with standard ops only, so that an exported graph at opset 18 holds no
``RMSNormalization`` (opset 23) or contrib op: RMSNorm is ``x * rsqrt(mean(x^2) + eps) * weight``.
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from functools import partial
from typing import Callable

import torch
from torch import nn

from vitexport.model.registry import layer_class, register

LAYER_NORM_EPS = 1e-6  # timm.layers.LayerNorm and RmsNorm default

NormFactory = Callable[[int], nn.Module]

register("norm", "layernorm", "timm.layers.LayerNorm", "torch.nn.LayerNorm", "layernorm")(nn.LayerNorm)


@register("norm", "rmsnorm", "timm.layers.RmsNorm", "rmsnorm")
class RmsNorm(nn.Module):
    """timm's ``RmsNorm`` (key ``weight``): ``x * rsqrt(mean(x^2, -1) + eps) * weight``.

    timm calls ``F.rms_norm``, whose ONNX form at opset 23 is ``RMSNormalization`` (and which
    sums in another order: results differ from this in the last float32 bit, ~1e-7). This
    is the same arithmetic as elementwise ops, the same graph at every opset. It is computed
    in float32 and cast back, so fp16 exports keep the reduction in float32.
    """

    eps: torch.jit.Final[float]

    def __init__(self, dim: int, eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., D)
        return (y * self.weight.float()).to(dtype)


def norm_factory(kind: str, eps: float = LAYER_NORM_EPS) -> NormFactory:
    """``dim -> norm module`` of the registered norm ``kind``, the shape of timm's ``norm_layer`` argument."""
    return partial(layer_class("norm", kind), eps=eps)
