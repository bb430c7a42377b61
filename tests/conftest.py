"""Fixtures shared by every test: seeded randomness, the exported sample, one export per test config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.models import CONFIGS, SAMPLES, make_model


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same random state, so that no input depends on which tests ran before."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def sample_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits sample exported once per session with the library defaults (tests copy it, never write it)."""
    from vitexport import load_model
    from vitexport.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("sample") / "digits-vit.onnx"
    export_onnx(load_model(SAMPLES / "digits-vit.pt"), path)
    return path


@pytest.fixture(params=sorted(CONFIGS), ids=sorted(CONFIGS))
def config_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """One default ONNX export (portable resampling) per config, shared by the test modules: exports take seconds."""
    from vitexport.export.onnx_export import export_onnx

    out = {}
    folder = tmp_path_factory.mktemp("onnx")
    for name, args in CONFIGS.items():
        model = make_model(args, seed=7)
        path = folder / f"{name}.onnx"
        result = export_onnx(model, path)
        out[name] = (model, path, result)
    return out
