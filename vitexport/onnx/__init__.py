"""The exported artifact's format: names, axes and metadata (`spec`), metadata checks, static graph checks.

No torch and no onnxruntime; the onnx package only where a full ModelProto is loaded.
"""
