"""Activations, LayerScale and the MLP variants of timm's ViT blocks, registered by name, with timm's
state_dict keys.

The activation of every MLP is the model's ``act_layer``, as in timm (its blocks pass
``act_layer`` to ``mlp_layer``, overriding a ``partial``'s own). Kinds:

- ``mlp``: ``fc1 -> act -> [norm] -> fc2`` (timm ``Mlp``);
- ``swiglu``: ``act(fc1_g(x)) * fc1_x(x) -> [norm] -> fc2`` (timm ``SwiGLU``, split input projections);
- ``glu``: ``fc1`` packs both halves, ``x1 * act(x2)`` (timm ``GluMlp``, ``gate_last=True``);
- ``swiglu_packed``: ``act(x1) * x2`` (timm ``SwiGLUPacked`` = ``GluMlp(gate_last=False)``).

Activations by name: ``gelu``, ``gelu_tanh`` (tanh approximation), ``quick_gelu`` (CLIP), ``silu``.
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from typing import Optional

import torch
from torch import nn

from vitexport.model.layers.norm import NormFactory
from vitexport.model.registry import build, register

register("act", "gelu", "torch.nn.GELU", "timm.layers.activations.GELU", "gelu")(nn.GELU)
register("act", "silu", "torch.nn.SiLU", "silu", "swish")(nn.SiLU)


@register("act", "gelu_tanh", "timm.layers.activations.GELUTanh", "gelu_tanh")
class GELUTanh(nn.GELU):
    """GELU with the tanh approximation: ``nn.GELU(approximate="tanh")`` (timm ``GELUTanh``)."""

    def __init__(self) -> None:
        super().__init__(approximate="tanh")


@register("act", "quick_gelu", "timm.layers.QuickGELU", "quick_gelu")
class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the activation of OpenAI's CLIP weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


@register("mlp", "mlp", "timm.layers.Mlp")
class Mlp(nn.Module):
    """timm ``Mlp``: ``fc1 -> act -> norm -> fc2`` (``norm`` only with ``scale_mlp_norm``)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        act_layer: str = "gelu",
        bias: bool = True,
        norm_layer: Optional[NormFactory] = None,
        inner: Optional[int] = None,
    ) -> None:
        super().__init__()
        inner = hidden if inner is None else inner  # the width after the activation (gated: hidden / 2)
        self._input_projections(dim, hidden, bias)
        self.act = build("act", act_layer)
        self.norm = norm_layer(inner) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(inner, dim, bias=bias)

    def _input_projections(self, dim: int, hidden: int, bias: bool) -> None:
        """The layers before the activation (timm's keys): ``fc1``."""
        self.fc1 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1(x))))


@register("mlp", "glu", "timm.layers.GluMlp", gate_last=True)
class GluMlp(Mlp):
    """timm ``GluMlp``: ``fc1`` holds value and gate halves; ``fc2`` takes ``hidden // 2``."""

    gate_last: torch.jit.Final[bool]

    def __init__(self, dim: int, hidden: int, act_layer: str = "silu", bias: bool = True,
                 norm_layer: Optional[NormFactory] = None, gate_last: bool = True) -> None:
        if hidden % 2:
            raise ValueError(f"a gated MLP needs an even hidden width, got {hidden}")
        super().__init__(dim, hidden, act_layer, bias, norm_layer, inner=hidden // 2)
        self.gate_last = gate_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]  # (..., hidden/2) each; chunk would export as sequence ops
        x = x1 * self.act(x2) if self.gate_last else self.act(x1) * x2
        return self.fc2(self.norm(x))


@register("mlp", "swiglu", "timm.layers.SwiGLU")
class SwiGLU(Mlp):
    """timm ``SwiGLU``: separate ``fc1_g`` (gate) and ``fc1_x`` projections."""

    def __init__(self, dim: int, hidden: int, act_layer: str = "silu", bias: bool = True,
                 norm_layer: Optional[NormFactory] = None) -> None:
        super().__init__(dim, hidden, act_layer, bias, norm_layer)

    def _input_projections(self, dim: int, hidden: int, bias: bool) -> None:
        self.fc1_g = nn.Linear(dim, hidden, bias=bias)
        self.fc1_x = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1_g(x)) * self.fc1_x(x)))


@register("mlp", "swiglu_packed", "timm.layers.GluMlp", gate_last=False)
class SwiGLUPacked(GluMlp):
    """timm ``SwiGLUPacked``: ``GluMlp`` with the gate first, ``act(x1) * x2``."""

    def __init__(self, dim: int, hidden: int, act_layer: str = "silu", bias: bool = True,
                 norm_layer: Optional[NormFactory] = None) -> None:
        super().__init__(dim, hidden, act_layer, bias, norm_layer, gate_last=False)
