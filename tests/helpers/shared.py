"""Artifacts built once per test run, shared by every pytest-xdist worker.

The README's test command runs the suite on several workers (`-n auto`); each worker is its own process with its
own session fixtures, so an export every test module uses would be made once per worker. `build_once` makes it
once for the whole run: the first worker to ask builds it under a file lock in the run's base folder (the parent
of each worker's own), the others wait and read it. Without xdist it is a plain per-session cache.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from filelock import FileLock


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this run shares (a worker's base temp is a child of the run's)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]) -> Any:
    """``build(folder)``'s value, computed by one worker of the run in ``folder`` (pickled beside it: the tests'
    own values, written and read in this run only)."""
    root = run_folder(tmp_path_factory) / "shared"
    root.mkdir(exist_ok=True)
    folder, done = root / name, root / f"{name}.pkl"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            value = build(folder)
            staged = done.with_suffix(".tmp")
            staged.write_bytes(pickle.dumps(value))
            staged.replace(done)
        return pickle.loads(done.read_bytes())


def export_once(tmp_path_factory: pytest.TempPathFactory, key: str, model: Any, filename: str) -> Path:
    """``model`` exported to ONNX with the defaults, once per run (``key`` names it in the run's shared folder)."""
    from vitexport.export.onnx_export import export_onnx

    def build(folder: Path) -> Path:
        export_onnx(model, folder / filename)
        return folder / filename
    return build_once(tmp_path_factory, key, build)


RGB_PREPROCESS = {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def rgb_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A 3-channel classifier (``reg_noembed``: 24x40 native, patch 8, registers, 7 classes) exported with its
    own mean/std and labels ``c0``..``c6``, which preprocessing and top-k must use; made once per run for the
    Predictor, batch and server tests. Returns the .onnx path and the model."""
    from tests.helpers.models import CONFIGS, make_model

    model = make_model(CONFIGS["reg_noembed"], seed=3)
    model.meta = {"preprocess": RGB_PREPROCESS, "labels": [f"c{i}" for i in range(7)]}
    return export_once(tmp_path_factory, "rgb-classifier", model, "rgb.onnx"), model


NO_PREFIX = dict(img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=2, class_token=False)


def no_prefix_model(tmp_path_factory: pytest.TempPathFactory, pool: str = "avg") -> tuple[Path, Any]:
    """A model without prefix tokens (``pool``: "avg", or "map", a SigLIP-style attention-pool head), so one
    patch is one token: the first-request and cold-start tests' model, exported once per run. Returns the .onnx
    path and the model."""
    from tests.helpers.models import make_model

    model = make_model({**NO_PREFIX, "global_pool": pool}, seed=1)
    return export_once(tmp_path_factory, f"no-prefix-{pool}", model, f"{pool}.onnx"), model


def verify_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The spec model's good export and its checkpoint (``onnx_edits.spec_export``), made once per run."""
    from tests.helpers.onnx_edits import spec_export

    return build_once(tmp_path_factory, "verify-good", spec_export)


def verify_resize_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`verify_exports`' checkpoint exported with resample="resize", once per run in a folder of its own (the
    good export's folder is shared: a second worker writing beside it would find the file there)."""
    from tests.helpers.onnx_edits import resize_export

    def build(folder: Path) -> Path:
        original = verify_exports(tmp_path_factory)[1]
        checkpoint = folder / original.name
        shutil.copyfile(original, checkpoint)
        return resize_export(checkpoint)
    return build_once(tmp_path_factory, "verify-resize", build)


def hostile_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The crafted checkpoints of ``hostile.crafted_checkpoints``, written once per run (tests only read them)."""
    from tests.helpers.hostile import crafted_checkpoints

    return build_once(tmp_path_factory, "hostile-crafted", crafted_checkpoints)


def pooled_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``reg_noembed`` without a head (``num_classes=0``): a pooled embedding per image, exported once per run."""
    from tests.helpers.models import CONFIGS, make_model

    model = make_model({**CONFIGS["reg_noembed"], "num_classes": 0}, seed=4)
    return export_once(tmp_path_factory, "pooled", model, "pooled.onnx")
