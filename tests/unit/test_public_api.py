"""The public API in `vitexport/__init__.py`: every name resolves, lazily, to the library's own object, and every
function says what its arguments are."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import vitexport
from tests.helpers.models import ROOT


@pytest.mark.parametrize("name", [n for n in vitexport.__all__ if n != "__version__"])
def test_every_public_name_resolves_with_a_docstring(name: str) -> None:
    value = getattr(vitexport, name)
    doc = inspect.getdoc(value) or ""
    assert doc, f"vitexport.{name} has no docstring"
    if inspect.isfunction(value):
        params = [p for p in inspect.signature(value).parameters if p not in ("self", "cls")]
        assert "Args:" in doc, f"vitexport.{name} has no Args: section"
        missing = [p for p in params if f"{p}:" not in doc.split("Args:")[1]]
        assert not missing, f"vitexport.{name}'s Args: leaves out {missing}"
    elif callable(value) and not inspect.isclass(value):  # the verify stage, callable as its function
        assert "Args:" in (inspect.getdoc(type(value).__call__) or ""), name
    if name in vitexport._LAZY:  # a lazy name is the stage's own object, not a copy
        assert value is getattr(importlib.import_module(vitexport._LAZY[name]), name)


def test_verify_is_the_stage_and_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """`vitexport.verify` is the verify package (a submodule import binds it) and calling it runs `verify`."""
    import vitexport.verify.sweep as sweep

    calls: list[tuple] = []
    monkeypatch.setattr(sweep, "verify", lambda path, **options: calls.append((path, options)) or "report")
    assert vitexport.verify("m.onnx", provider="cpu", sizes=[(28, 28)]) == "report"
    assert calls == [("m.onnx", {"provider": "cpu", "sizes": [(28, 28)]})]
    from vitexport.verify import verify  # the old public path still names the function itself

    assert verify is sweep.verify


def test_import_loads_no_heavy_module() -> None:
    """`import vitexport` (what every CLI start does) loads neither torch, numpy nor onnxruntime."""
    code = ("import sys, vitexport\n"
            "heavy = [m for m in ('torch', 'numpy', 'onnxruntime', 'onnx', 'PIL') if m in sys.modules]\n"
            "loaded = [m for m in sys.modules if m.startswith('vitexport.') and not m.startswith('vitexport._util')]\n"
            "print(heavy, loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[] []", out.stdout + out.stderr


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'export_tflite'"):
        vitexport.export_tflite  # noqa: B018 - the lookup is the test
