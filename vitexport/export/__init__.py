"""Export: ONNX and TorchScript artifacts with dynamic batch, height and width; ORT optimization and int8.

``vitexport.export.export_onnx`` (a public path) is resolved lazily, so the light `attention` module
can be imported without torch.
"""

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    name: "vitexport.export.exporter"
    for name in ("ExportResult", "export_onnx", "export_torchscript", "export_checkpoint", "artifact_metadata",
                 "onnx_options", "default_example_size")
})
