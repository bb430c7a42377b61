"""How much work a request asks for, before any of it is done: tokens and memory of one forward pass.

One estimator for every place that runs a model at a size the user chose: `verify` (its
sizes and batch sizes), `bench`, `onnx --static` / `--img-size` (the traced example and the
resampled positional embeddings) and the `Predictor` (each image, and how many images it
batches together). A request over a limit is refused up front with the estimate and the
option that raises the limit, instead of exhausting memory half-way.

The memory estimate is a sketch of one forward pass in float32, not a measurement: the token
activations of one block (x, q, k, v, the attention output, the MLP's hidden layer and
activation) and the positional-embedding grid, doubled for the runtime's workspace and
allocator (ONNX Runtime's arena keeps its peak), the input and its padded copy, and the
attention scores, which depend on how the artifact computes attention:

- ``chunked`` (the default export, `vitexport.export.attention`) and ``mha`` hold the scores of
  one block of queries at a time, at most ``CHUNK_SCORES`` elements whatever the image size:
  memory is linear in the tokens;
- ``sdpa`` and ``onnx`` hold batch x heads x tokens^2 scores and their softmax (twice for
  differential attention), as ONNX Runtime does for them.

Calibrated on ONNX Runtime CPU's measured peak (the default engine): within 25% at 1k, 4k
and 16k tokens for ViT-S/16 and ViT-B/16 (``benchmarks/highres.py`` measures it;
``tests/e2e/test_hostile_args.py`` checks small sizes). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitexport._util.errors import LimitError
from vitexport._util.geometry import grid_size, padded_size

if TYPE_CHECKING:  # the CLI imports this module for its defaults: keep it light
    from vitexport.model.config import ViTConfig

# patches + prefix tokens of one image: a 2048x2048 image at patch 16 (16,384 patches) with up to 256 prefix
# tokens. Chunked attention keeps memory linear in the tokens, so memory (--max-memory-gb) is what binds.
DEFAULT_MAX_TOKENS = 16_640
DEFAULT_MAX_MEMORY_GB = 4.0  # estimated activation memory of one forward pass
FLOAT_BYTES = 4
WORKSPACE_FACTOR = 2
# Score elements of one block of queries in the chunked attention form, all images and heads together (64 MB
# in float32); the export (`vitexport.export.attention`) writes it into the graph, the estimate below models it.
# Smaller blocks cost time: each block re-reads (ONNX Runtime: re-packs) all keys and values, so at 16k tokens
# ONNX Runtime's attention slows down markedly below this size (benchmarks/highres.py; rough figures in
# docs/numerics.md).
CHUNK_SCORES = 1 << 24
LINEAR_ATTENTION = ("chunked", "mha")  # attention forms whose scores do not grow with tokens^2 (measured)


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


def block_rows(batch: int, heads: int, queries: int, keys: int, budget: int = CHUNK_SCORES) -> int:
    """Queries per block of the chunked attention form, as its graph computes them: the budget over
    (batch x heads x keys), within [1, queries], then spread evenly over the blocks that takes."""
    rows = min(max(budget // max(batch * heads * keys, 1), 1), queries)
    blocks = -(-queries // rows)
    return -(-queries // blocks)


def attention_elements(cfg: ViTConfig, tokens: int, batch: int, attention: str | None) -> int:
    """Score elements alive at once, the scores and their softmax, for the artifact's attention form (module doc):
    one block of queries (chunked) or every query (whole matrices)."""
    heads = cfg.num_heads
    if attention in LINEAR_ATTENTION or attention is None:
        return 2 * batch * heads * block_rows(batch, heads, tokens, tokens) * tokens
    return (2 if cfg.differential else 1) * 2 * batch * heads * tokens * tokens


def estimate(cfg: ViTConfig, height: int, width: int, batch: int = 1, attention: str | None = None) -> Estimate:
    """The cost of running ``cfg``'s model on a (batch, C, height, width) input (see the module doc).

    ``attention``: the artifact's attention form (its metadata's ``attention``); None is the default
    export's (``chunked``), which is also what eager PyTorch and TorchScript need (flash attention).
    """
    pad = cfg.dynamic_img_pad
    gh, gw = grid_size(height, width, cfg.patch_hw, pad)
    tokens = gh * gw + cfg.num_prefix_tokens
    ph, pw = padded_size(height, width, cfg.patch_hw, pad)
    dim = cfg.embed_dim
    hidden = int(dim * cfg.mlp_ratio) * (2 if cfg.mlp_layer in ("swiglu", "glu", "swiglu_packed") else 1)
    activations = (
        tokens * (6 * dim + 2 * hidden)  # x, q, k, v, attention output, residual; MLP hidden and activation
        + 2 * gh * gw * dim  # resampled positional embeddings (and their grid)
    )
    pixels = cfg.in_chans * (height * width + ph * pw)  # input, padded input
    elements = (WORKSPACE_FACTOR * activations + pixels) * batch + attention_elements(cfg, tokens, batch, attention)
    return Estimate(height, width, batch, tokens, FLOAT_BYTES * elements)


def over_limit(est: Estimate, limits: Limits) -> str:
    """Why ``est`` is over ``limits`` (empty when it is not)."""
    reasons = []
    if limits.max_tokens is not None and est.tokens > limits.max_tokens:
        reasons.append(f"{est.tokens:,} tokens per image, over the limit of {limits.max_tokens:,} (--max-tokens)")
    if limits.max_bytes is not None and est.bytes > limits.max_bytes:
        reasons.append(f"~{est.gb:,.1f} GB estimated for one forward pass, over the limit of "
                       f"{limits.max_memory_gb:g} GB (--max-memory-gb)")
    return " and ".join(reasons)


def check(cfg: ViTConfig, cases: list[tuple[int, int, int]], limits: Limits, what: str,
          attention: str | None = None) -> None:
    """Refuse, up front, a request whose costliest (height, width, batch) case is over ``limits``."""
    worst = None
    for h, w, b in cases:
        est = estimate(cfg, h, w, b, attention)
        if over_limit(est, limits) and (worst is None or est.bytes > worst.bytes):
            worst = est
    if worst is not None:
        raise LimitError(
            f"{what} at {worst.height}x{worst.width}, batch {worst.batch:,}: {over_limit(worst, limits)}; "
            "use smaller sizes or batches, or raise the limit (max_tokens / max_memory_gb in Python)"
        )


def largest_batch(cfg: ViTConfig, height: int, width: int, limits: Limits, attention: str | None = None) -> int:
    """The largest batch of (height, width) images whose estimate stays within the memory limit (at least 1)."""
    if limits.max_bytes is None:
        return 1 << 30
    one = estimate(cfg, height, width, 1, attention).bytes
    return max(1, int(limits.max_bytes // max(one, 1)))  # a batch of n costs at most n single images


__all__ = [
    "CHUNK_SCORES", "DEFAULT_MAX_MEMORY_GB", "DEFAULT_MAX_TOKENS", "Estimate", "LimitError", "Limits",
    "attention_elements", "block_rows", "check", "estimate", "largest_batch", "over_limit",
]
