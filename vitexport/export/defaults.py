"""Export defaults and limits, in one place: the CLI's choices and help text and the library's options
(`vitexport.export.options.ExportOptions`) read them. Plain constants: the CLI imports this at startup."""

from __future__ import annotations

# ONNX opset 18 is the lowest with antialiased Resize, and the one whose Resize
# ONNX Runtime's CUDA provider implements in every onnxruntime-gpu since 1.18; Resize-19
# was registered on CUDA only in 2026 (older builds silently run it on the CPU).
DEFAULT_OPSET = 18
MIN_OPSET = 18
MAX_OPSET = 23
DEFAULT_ATTENTION = "chunked"  # linear memory, standard ops (vitexport.export.attention)
EXPORT_DTYPES = ("float32", "float16")
DEFAULT_DTYPE = "float32"
OPTIMIZE_PROVIDERS = ("cpu", "cuda")  # what ONNX Runtime's offline optimization can target

# What an artifact of each dtype is held to against eager PyTorch: |out - ref| <= atol + rtol * |ref|.
# From measurements (docs/numerics.md, "Tolerances"): fp32 graphs differ from eager by ~1e-7 (tiny ViTs)
# to ~5e-6 (ViT-S/16, 4-block digits model); fp16 graphs by ~1e-3 on logits of scale 1-10;
# int8-dynamic (`vitexport quantize`): max |d| 0.007-0.15 on the digits sample's logits (scale ~10),
# cosine >= 0.9987.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (2e-5, 1e-4),
    "float16": (5e-3, 1e-2),
    "int8-dynamic": (0.1, 5e-2),
    "int8-static": (0.1, 5e-2),
}

__all__ = ["DEFAULT_ATTENTION", "DEFAULT_DTYPE", "DEFAULT_OPSET", "EXPORT_DTYPES", "MAX_OPSET", "MIN_OPSET",
           "OPTIMIZE_PROVIDERS", "TOLERANCES"]
