"""`vitexport.verify.reference`: the PyTorch model rebuilt from an exported file is the exported model (verify
and bench both use it), and files it cannot be rebuilt from are refused with the way out."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from tests.helpers.models import CONFIGS, make_model
from vitexport._util.errors import UsageError, VerificationError
from vitexport.export.onnx_export import export_onnx
from vitexport.onnx.graph import read_metadata, set_metadata
from vitexport.verify.reference import reference_from_onnx, weight_difference


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = make_model(CONFIGS["reg_noembed"], seed=5)
    path = tmp_path_factory.mktemp("reference") / "m.onnx"
    export_onnx(model, path)
    return model, path


def test_the_rebuilt_model_is_the_exported_one(exported) -> None:
    model, path = exported
    rebuilt = reference_from_onnx(str(path), read_metadata(path))
    assert rebuilt.config == model.config and weight_difference(rebuilt, model) == {}
    x = torch.randn(2, 3, 17, 45, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_weight_difference_names_the_changed_tensors(exported) -> None:
    model, path = exported
    rebuilt = reference_from_onnx(str(path), read_metadata(path))
    with torch.no_grad():
        rebuilt.pos_embed.add_(1e-3)
    assert list(weight_difference(rebuilt, model)) == ["pos_embed"]


def test_files_without_the_weights_by_name_are_refused(exported, tmp_path: Path) -> None:
    _, path = exported
    with pytest.raises(VerificationError, match="pass --checkpoint"):
        reference_from_onnx(str(path), {})
    optimized = tmp_path / "opt.onnx"
    onnx.save(onnx.load(str(path)), str(optimized))
    set_metadata(optimized, {"optimized": {"provider": "cpu", "level": "extended"}})
    with pytest.raises(UsageError, match="--checkpoint"):
        reference_from_onnx(str(optimized), read_metadata(optimized))
