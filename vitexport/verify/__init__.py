"""Verify: resolution sweeps of an exported model against PyTorch on every engine, parity, diagnosis, reports.

``vitexport.verify.verify`` (a public path) is resolved lazily.
"""

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    name: "vitexport.verify.sweep"
    for name in ("verify", "VerifyReport", "CaseResult", "Case", "default_cases", "default_sizes", "heatmap_sweep",
                 "reference_from_onnx")
})
