"""`export_preset`: a named architecture (of any model class) with random weights exports and runs, its metadata
records the random weights (seed and preset) so the model can be rebuilt from them, and it is refused without
--random-weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vitexport._util.errors import ConfigError, ExportOptionError, LimitError, UsageError
from vitexport.export import pipeline
from vitexport.export.pipeline import export_preset
from vitexport.model.config import get_preset, preset_key
from vitexport.model.vit import create_model
from vitexport.security.torchscript_policy import read_metadata

SMALL = {"depth": 1, "embed_dim": 64, "num_heads": 2, "num_classes": 5}


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "timm/vit_base_patch16_siglip_224.webli",
                                  # the other model classes (eva.py, deit.py's distilled, naflexvit.py)
                                  "eva02_small_patch14_224", "deit_tiny_distilled_patch16_224",
                                  "naflexvit_base_patch16_gap"])
@torch.no_grad()
def test_preset_export_runs_and_records_its_random_weights(tmp_path: Path, name: str) -> None:
    out = tmp_path / "m.ts"
    result = export_preset(name, out, to="torchscript", random_weights=True, seed=3, config=json.dumps(SMALL))
    random = result.metadata["random_weights"]
    assert random["seed"] == 3 and preset_key(random["architecture"]) == name.split("/")[-1].split(".")[0]
    assert read_metadata(out)["random_weights"] == random
    torch.manual_seed(99)  # the recorded seed alone rebuilds the weights, whatever the global RNG holds
    rebuilt = create_model(get_preset(random["architecture"], **SMALL), seed=random["seed"])
    scripted = torch.jit.load(str(out))
    gen = torch.Generator().manual_seed(1)
    for h, w in [(224, 224), (37, 101), (9, 13), (300, 260)]:
        x = torch.randn(2, 3, h, w, generator=gen)
        got, want = scripted(x), rebuilt(x)
        assert got.shape == (2, 5)
        assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item()), (name, h, w)
        assert (got[0] - got[1]).abs().max() > 1e-6  # input-sensitive: two images, two answers


def test_preset_export_without_random_weights_says_how(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"add --random-weights.*CHECKPOINT --config .*vit_tiny_patch16_224"):
        export_preset("vit_tiny_patch16_224", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"config": '{"architecture": "vit_small_patch16_224"}'}, UsageError, "the architecture is --preset's"),
    ({"optimize": "cpu"}, ExportOptionError, "--optimize folds the weights"),
    ({"to": "tflite"}, ExportOptionError, "cannot export to 'tflite'"),
    ({"config": '{"depht": 2}'}, ConfigError, "depth"),
])
def test_preset_export_refuses_bad_options(tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        export_preset("vit_tiny_patch16_224", tmp_path / "m.onnx", random_weights=True, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_unknown_preset_is_a_usage_error_with_the_closest_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="did you mean 'vit_tiny_patch16_224'"):
        export_preset("vit_tiy_patch16_224", tmp_path / "m.onnx", random_weights=True)


def test_preset_too_big_for_the_memory_is_refused_before_it_is_built(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline.os, "sysconf", lambda key: 1000 if key == "SC_AVPHYS_PAGES" else 4096)
    built = []
    monkeypatch.setattr(pipeline, "_export_model", lambda *a, **k: built.append(a))
    with pytest.raises(LimitError, match=r"vit_huge_patch14_224 has .* parameters.*--config '\{\"depth\": 2\}'"):
        export_preset("vit_huge_patch14_224", tmp_path / "m.onnx", random_weights=True)
    assert built == []
