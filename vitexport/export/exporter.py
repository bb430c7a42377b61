"""The old module path of the exporters (before `onnx_export`, `torchscript_export` and `pipeline`);
new code imports from `vitexport.export`."""

from vitexport.export.artifact import ExportResult, artifact_metadata, default_example_size
from vitexport.export.onnx_export import export_onnx
from vitexport.export.pipeline import export_checkpoint, export_optimized
from vitexport.export.torchscript_export import export_torchscript

__all__ = ["ExportResult", "artifact_metadata", "default_example_size", "export_checkpoint", "export_onnx",
           "export_optimized", "export_torchscript"]
