"""Verify: resolution sweeps of an exported model against PyTorch on every engine, parity, diagnosis, reports.

- `cases`: the sweep's cases and inputs (light); `artifact`: the file under test and its static checks;
- `reference`: the PyTorch reference rebuilt from an artifact or a checkpoint (shared with `bench`);
- `parity`: the comparison; `diagnose`: likely causes of failures; `report`: the typed results;
- `sweep`: `verify` itself and the heatmap sweep; `heatmap`: its plot.

``vitexport.verify.verify`` (a public path) is resolved lazily.
"""

import sys
import types
from typing import Any

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    "verify": "vitexport.verify.sweep",
    "heatmap_sweep": "vitexport.verify.sweep",
    "VerifyReport": "vitexport.verify.report",
    "CaseResult": "vitexport.verify.report",
    "CrossCheck": "vitexport.verify.report",
    "HeatmapSweep": "vitexport.verify.report",
    "Case": "vitexport.verify.cases",
    "default_cases": "vitexport.verify.cases",
    "default_sizes": "vitexport.verify.cases",
    "reference_from_onnx": "vitexport.verify.reference",
    "compare": "vitexport.verify.parity",
    "Comparison": "vitexport.verify.parity",
    "TOLERANCES": "vitexport.verify.parity",
    "tolerance_for": "vitexport.verify.parity",
})


class _VerifyStage(types.ModuleType):
    """This package, callable: ``vitexport.verify(model_path, ...)`` is `vitexport.verify.sweep.verify`.

    The stage and the public function share the name ``vitexport.verify``; importing any module of the stage
    binds the package there, so the package itself runs the function.
    """

    def __call__(self, model_path: Any, **options: Any) -> Any:
        """Verify an exported model against PyTorch at many sizes (`vitexport.verify.sweep.verify`).

        Args:
            model_path: the exported .onnx or TorchScript file.
            **options: `vitexport.verify.sweep.verify`'s keyword arguments (checkpoint, config, provider, sizes,
                batch_sizes, atol, rtol, seed, ...).
        """
        from vitexport.verify.sweep import verify

        return verify(model_path, **options)


sys.modules[__name__].__class__ = _VerifyStage
