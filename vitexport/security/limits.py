"""How much work a request asks for, before any of it is done: tokens and memory of one forward pass.

One estimator for every place that runs a model at a size the user chose: `verify` (its
sizes and batch sizes), `bench`, `onnx --static` / `--img-size` (the traced example and the
resampled positional embeddings) and the `Predictor` (each image, and how many images it
batches together). A request over a limit is refused up front with the estimate and the
option that raises the limit, instead of exhausting memory half-way.

The memory estimate is an upper-bound sketch of one forward pass in float32, not a
measurement: the input (and its padded copy), the token activations of one block (x, q, k,
v, the attention output, the MLP's hidden layer and activation) and the attention scores
with their softmax (batch x heads x tokens^2, twice for differential attention), plus the
positional-embedding grid; the total is doubled for the runtime's workspace and allocator
(ONNX Runtime's arena keeps its peak). Checked against measured peaks in
``tests/e2e/test_hostile_args.py``. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitexport._util.errors import LimitError
from vitexport._util.geometry import grid_size, padded_size

if TYPE_CHECKING:  # the CLI imports this module for its defaults: keep it light
    from vitexport.model.config import ViTConfig

DEFAULT_MAX_TOKENS = 4096  # patches + prefix tokens of one image (attention memory grows with its square)
DEFAULT_MAX_MEMORY_GB = 4.0  # estimated activation memory of one forward pass
FLOAT_BYTES = 4
WORKSPACE_FACTOR = 2


@dataclass(frozen=True)
class Limits:
    """The two limits; ``None`` for either means unlimited."""

    max_tokens: int | None = DEFAULT_MAX_TOKENS
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise LimitError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.max_memory_gb is not None and not self.max_memory_gb > 0:
            raise LimitError(f"max_memory_gb must be positive, got {self.max_memory_gb}")

    @property
    def max_bytes(self) -> float | None:
        return None if self.max_memory_gb is None else self.max_memory_gb * 1e9


@dataclass(frozen=True)
class Estimate:
    """Tokens per image and estimated peak bytes of one forward pass at (batch, height, width)."""

    height: int
    width: int
    batch: int
    tokens: int
    bytes: int

    @property
    def gb(self) -> float:
        return self.bytes / 1e9

    def describe(self) -> str:
        return f"{self.height}x{self.width} batch {self.batch:,}: {self.tokens:,} tokens per image, ~{self.gb:,.1f} GB"


def estimate(cfg: ViTConfig, height: int, width: int, batch: int = 1) -> Estimate:
    """The cost of running ``cfg``'s model on a (batch, C, height, width) input (see the module doc)."""
    pad = cfg.dynamic_img_pad
    gh, gw = grid_size(height, width, cfg.patch_hw, pad)
    tokens = gh * gw + cfg.num_prefix_tokens
    ph, pw = padded_size(height, width, cfg.patch_hw, pad)
    dim, heads = cfg.embed_dim, cfg.num_heads
    hidden = int(dim * cfg.mlp_ratio) * (2 if cfg.mlp_layer in ("swiglu", "glu", "swiglu_packed") else 1)
    scores = (2 if cfg.differential else 1) * 2 * heads * tokens * tokens
    per_image = (
        cfg.in_chans * (height * width + ph * pw)  # input, padded input
        + tokens * (6 * dim + 2 * hidden)  # x, q, k, v, attention output, residual; MLP hidden and activation
        + scores
        + 2 * gh * gw * dim  # resampled positional embeddings (and their grid)
    )
    total = WORKSPACE_FACTOR * FLOAT_BYTES * per_image * batch
    return Estimate(height, width, batch, tokens, total)


def over_limit(est: Estimate, limits: Limits) -> str:
    """Why ``est`` is over ``limits`` (empty when it is not)."""
    reasons = []
    if limits.max_tokens is not None and est.tokens > limits.max_tokens:
        reasons.append(f"{est.tokens:,} tokens per image, over the limit of {limits.max_tokens:,} (--max-tokens)")
    if limits.max_bytes is not None and est.bytes > limits.max_bytes:
        reasons.append(f"~{est.gb:,.1f} GB estimated for one forward pass, over the limit of "
                       f"{limits.max_memory_gb:g} GB (--max-memory-gb)")
    return " and ".join(reasons)


def check(cfg: ViTConfig, cases: list[tuple[int, int, int]], limits: Limits, what: str) -> None:
    """Refuse, up front, a request whose costliest (height, width, batch) case is over ``limits``."""
    worst = None
    for h, w, b in cases:
        est = estimate(cfg, h, w, b)
        if over_limit(est, limits) and (worst is None or est.bytes > worst.bytes):
            worst = est
    if worst is not None:
        raise LimitError(
            f"{what} at {worst.height}x{worst.width}, batch {worst.batch:,}: {over_limit(worst, limits)}; "
            "use smaller sizes or batches, or raise the limit (max_tokens / max_memory_gb in Python)"
        )


def largest_batch(cfg: ViTConfig, height: int, width: int, limits: Limits) -> int:
    """The largest batch of (height, width) images whose estimate stays within the memory limit (at least 1)."""
    if limits.max_bytes is None:
        return 1 << 30
    one = estimate(cfg, height, width, 1).bytes
    return max(1, int(limits.max_bytes // max(one, 1)))


__all__ = [
    "DEFAULT_MAX_MEMORY_GB", "DEFAULT_MAX_TOKENS", "Estimate", "LimitError", "Limits", "check", "estimate",
    "largest_batch", "over_limit",
]
