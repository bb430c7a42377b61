"""How an artifact is written, in one object: opset, attention, resampling form, dtype, and the tolerance an
artifact of that dtype is held to.

`ExportOptions` decides the defaults that depend on other options (the opset from the attention form,
the attention form from ``--optimize``) and checks the options together, for the library and the CLI
alike; the constants are in `vitexport.export.defaults`. Light: no torch, no numpy, no onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitexport._util.errors import ExportOptionError
from vitexport.export.attention import ATTENTION_CHOICES, ATTENTION_MIN_OPSET
from vitexport.export.defaults import (
    DEFAULT_ATTENTION,
    DEFAULT_DTYPE,
    DEFAULT_OPSET,
    EXPORT_DTYPES,
    MAX_OPSET,
    MIN_OPSET,
    TOLERANCES,
)
from vitexport.model.names import DEFAULT_RESAMPLE, RESAMPLE_FORMS


def tolerance_for(dtype: str) -> tuple[float, float]:
    """(atol, rtol) for an artifact of this vitexport ``dtype`` (float32's for unknown ones).

    Args:
        dtype: the artifact's ``dtype`` metadata (``float32``, ``float16``, ``int8-dynamic``, ...).
    """
    return TOLERANCES.get(dtype, TOLERANCES["float32"])


def default_attention(optimize: str | None = None) -> str:
    """The attention form when none is asked for: ``mha`` when optimizing for the CPU (measured faster
    there), else ``chunked`` (linear memory, portable: `vitexport.export.attention`)."""
    return "mha" if optimize == "cpu" else DEFAULT_ATTENTION


def default_opset(attention: str) -> int:
    """The lowest opset ``attention`` needs, and at least `DEFAULT_OPSET`."""
    return max(DEFAULT_OPSET, ATTENTION_MIN_OPSET.get(attention, DEFAULT_OPSET))


@dataclass(frozen=True)
class ExportOptions:
    """How an ONNX graph is written, checked together on creation (`ExportError` for a bad combination).

    ``opset`` None takes `default_opset` of the attention form; ``attention`` None takes
    `default_attention` of ``optimize`` (the provider an offline optimization will target, if any; the
    pipeline checks it can run here, `vitexport.export.optimize.check_optimize_provider`).
    """

    attention: str | None = None
    opset: int | None = None
    resample: str = DEFAULT_RESAMPLE
    dtype: str = DEFAULT_DTYPE
    optimize: str | None = None

    def __post_init__(self) -> None:
        attention = self.attention or default_attention(self.optimize)
        object.__setattr__(self, "attention", attention)
        if attention not in ATTENTION_CHOICES:
            raise ExportOptionError(
                f"attention {attention!r} is not supported; use one of {', '.join(ATTENTION_CHOICES)}")
        opset = self.opset if self.opset is not None else default_opset(attention)
        object.__setattr__(self, "opset", opset)
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ExportOptionError(
                f"opset {opset} is not supported: antialiased bicubic Resize needs opset >= {MIN_OPSET} "
                f"(the exporter goes up to {MAX_OPSET}); use --opset {DEFAULT_OPSET}"
            )
        if opset < ATTENTION_MIN_OPSET[attention]:
            raise ExportOptionError(
                f"attention={attention!r} needs opset >= {ATTENTION_MIN_OPSET[attention]}; pass --opset "
                f"{ATTENTION_MIN_OPSET[attention]} (its Resize-19 runs on CUDA only in recent onnxruntime-gpu) "
                "or use --attention mha"
            )
        if self.resample not in RESAMPLE_FORMS:
            raise ExportOptionError(
                f"resample form {self.resample!r} is not supported; use {' or '.join(RESAMPLE_FORMS)} "
                f"(default {DEFAULT_RESAMPLE}: right on every runtime)"
            )
        if self.dtype not in EXPORT_DTYPES:
            raise ExportOptionError(f"dtype {self.dtype!r} is not supported; use {' or '.join(EXPORT_DTYPES)}")

    def export_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `vitexport.export.onnx_export.export_onnx` these options stand for."""
        return {"attention": self.attention, "opset": self.opset, "resample": self.resample, "dtype": self.dtype}

    @property
    def tolerance(self) -> tuple[float, float]:
        """(atol, rtol) that verify holds an export with these options to (`TOLERANCES` of its dtype)."""
        return tolerance_for(self.dtype)


__all__ = ["ExportOptions", "default_attention", "default_opset", "tolerance_for"]
