"""`vitexport.verify.reference`: the PyTorch model rebuilt from an exported file is the exported model (verify
and bench both use it), and files it cannot be rebuilt from are refused with the way out."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from vitexport._util.errors import UsageError, VerificationError
from vitexport.onnx.graph import read_metadata, set_metadata
from vitexport.verify.reference import reference_from_onnx, weight_difference


@pytest.fixture
def reg(exported) -> tuple[torch.nn.Module, Path]:
    """The session's export of the registers model (`tests/conftest.py`): 3x5 native grid, registers."""
    model, path, _ = exported["reg_noembed"]
    return model, path


def test_the_rebuilt_model_is_the_exported_one(reg) -> None:
    model, path = reg
    rebuilt = reference_from_onnx(str(path), read_metadata(path))
    assert rebuilt.config == model.config and weight_difference(rebuilt, model) == {}
    x = torch.randn(2, 3, 17, 45, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_weight_difference_names_the_changed_tensors(reg) -> None:
    model, path = reg
    rebuilt = reference_from_onnx(str(path), read_metadata(path))
    with torch.no_grad():
        rebuilt.pos_embed.add_(1e-3)
    assert list(weight_difference(rebuilt, model)) == ["pos_embed"]


def test_files_without_the_weights_by_name_are_refused(reg, tmp_path: Path) -> None:
    _, path = reg
    with pytest.raises(VerificationError, match="pass --checkpoint"):
        reference_from_onnx(str(path), {})
    optimized = tmp_path / "opt.onnx"
    onnx.save(onnx.load(str(path)), str(optimized))
    set_metadata(optimized, {"optimized": {"provider": "cpu", "level": "extended"}})
    with pytest.raises(UsageError, match="--checkpoint"):
        reference_from_onnx(str(optimized), read_metadata(optimized))
