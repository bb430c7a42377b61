"""Export: ONNX and TorchScript artifacts with dynamic batch, height and width; ORT optimization and int8.

- `options`: opset, attention, resampling form, dtype and the tolerance per dtype, checked together (light);
- `onnx_export`, `torchscript_export`: the exporters, which only export;
- `pipeline`: a checkpoint (or a preset with random weights) to an artifact (the CLI's commands), export then
  ONNX Runtime optimization;
- `optimize`: ONNX Runtime's offline optimization and dynamic int8 of an exported file (no torch);
- `attention`: how attention is written into the graph; `artifact`: the result and metadata of every export.

The public names are resolved lazily, so the light modules can be imported without torch.
"""

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    "ExportResult": "vitexport.export.artifact",
    "artifact_metadata": "vitexport.export.artifact",
    "default_example_size": "vitexport.export.artifact",
    "export_onnx": "vitexport.export.onnx_export",
    "export_torchscript": "vitexport.export.torchscript_export",
    "export_checkpoint": "vitexport.export.pipeline",
    "export_optimized": "vitexport.export.pipeline",
    "export_preset": "vitexport.export.pipeline",
    "ExportOptions": "vitexport.export.options",
    "TOLERANCES": "vitexport.export.defaults",
    "tolerance_for": "vitexport.export.options",
    "optimize_onnx": "vitexport.export.optimize",
    "quantize_onnx": "vitexport.export.optimize",
})
