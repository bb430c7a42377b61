"""`vitexport.export.options`: the defaults that depend on other options are decided once (opset from attention,
attention from --optimize), bad combinations are refused before any work, and the options hold the tolerance."""

from __future__ import annotations

import pytest

from vitexport._util.errors import ExportError
from vitexport.export.attention import ATTENTION_CHOICES, ATTENTION_MIN_OPSET
from vitexport.export.defaults import DEFAULT_OPSET, MAX_OPSET, TOLERANCES
from vitexport.export.options import ExportOptions, default_attention


def test_defaults_follow_the_other_options() -> None:
    assert ExportOptions() == ExportOptions("chunked", DEFAULT_OPSET, "portable", "float32")
    assert ExportOptions(attention="onnx").opset == ATTENTION_MIN_OPSET["onnx"] == 23
    assert ExportOptions(optimize="cpu").attention == "mha" and ExportOptions(optimize="cuda").attention == "chunked"
    assert ExportOptions(attention="sdpa", optimize="cpu").attention == "sdpa"  # an explicit choice wins
    assert ExportOptions(attention="mha", opset=MAX_OPSET).opset == MAX_OPSET
    assert default_attention(None) == "chunked"
    for attention in ATTENTION_CHOICES:
        assert ExportOptions(attention=attention).opset == max(DEFAULT_OPSET, ATTENTION_MIN_OPSET[attention])


@pytest.mark.parametrize("options, message", [
    ({"opset": 17}, "needs opset >= 18"),
    ({"opset": MAX_OPSET + 1}, "is not supported"),
    ({"attention": "onnx", "opset": 18}, "needs opset >= 23"),
    ({"attention": "flash"}, "attention 'flash' is not supported"),
    ({"resample": "bilinear"}, "resample form 'bilinear' is not supported"),
    ({"dtype": "bfloat16"}, "dtype 'bfloat16' is not supported"),
])
def test_bad_options_are_refused_together(options: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        ExportOptions(**options)


def test_the_options_hold_the_tolerance_of_their_dtype() -> None:
    assert ExportOptions().tolerance == TOLERANCES["float32"]
    assert ExportOptions(dtype="float16").tolerance == TOLERANCES["float16"]
    assert ExportOptions(attention="onnx").export_kwargs() == {"attention": "onnx", "opset": 23,
                                                               "resample": "portable", "dtype": "float32"}


def test_options_and_defaults_are_light() -> None:
    """The CLI reads the defaults at startup and checks options before slow work: no torch, numpy or onnx."""
    import subprocess
    import sys

    from tests.helpers.models import ROOT

    code = ("import sys, vitexport.export.options, vitexport.export.defaults, vitexport.verify.defaults\n"
            "import vitexport.serving.defaults\n"
            "print([m for m in ('torch', 'numpy', 'onnx') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
