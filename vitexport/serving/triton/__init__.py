"""Deploy on Triton Inference Server: a model repository `vitexport triton` writes, and the Python-backend model.

- `repository`: the repository writer (``config.pbtxt`` from the graph's names, dtypes and dims; the ONNX file;
  the labels file; for ``--backend python`` the model that runs `Predictor`), written atomically.
- `python_model`: ``TritonPythonModel`` for Triton's Python backend, on the same `ModelService` as `vitexport serve`
  (inputs, limits, batching by size), so both servers answer alike.
- `local`: the ``tritonserver`` that the ``nvidia-pytriton`` wheel ships, started on loopback (tests, benchmarks).

Nothing here imports torch, Ray or Triton's own Python modules at module level.
"""

from __future__ import annotations
