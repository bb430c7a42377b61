"""Names of the model's choices that light code reads (the CLI's option lists, artifact metadata checks)
without loading the presets table or torch."""

from __future__ import annotations

# How the positional-embedding resampling is computed in an exported graph (ONNX metadata key "resample"):
# "portable" computes the antialiased-bicubic weights from elementary ops and applies them with MatMul
# (right on every runtime); "resize" is one antialiased cubic Resize (right on ONNX Runtime CPU and the
# ONNX reference; OpenVINO 2026.4 runs it wrongly, TensorRT refuses it). Eager and TorchScript use F.interpolate.
RESAMPLE_FORMS = ("portable", "resize")
DEFAULT_RESAMPLE = "portable"
