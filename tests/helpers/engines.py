"""Engines made wrong on purpose, to see that checks catch them."""

from __future__ import annotations

from typing import Any

import pytest


def make_onnx_runtime_wrong(monkeypatch: pytest.MonkeyPatch, by: float = 1e-3) -> None:
    """Every ONNX Runtime engine's output gets ``by`` added to its first logit (OpenVINO stays right)."""
    from vitexport.engines.ort import OrtEngine

    run = OrtEngine.run

    def off_by_a_little(self: Any, x: Any) -> Any:
        out = run(self, x)
        out[:, 0] += by
        return out

    monkeypatch.setattr(OrtEngine, "run", off_by_a_little)
