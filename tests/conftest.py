"""Fixtures shared by every test: seeded randomness, the exported sample, one export per test config."""

from __future__ import annotations

import os

# One intra-op thread for PyTorch here and in the commands tests start: the test models are tiny, and OpenMP's
# spinning threads on a machine whose cores are all busy (pytest-xdist workers, servers) made the suite 2x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.models import CONFIGS, SAMPLES, make_model
from tests.helpers.shared import build_once


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same random state, so that no input depends on which tests ran before."""
    torch.set_num_threads(1)  # and a test that changed it does not change the next one's
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def sample_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits sample exported once per run with the library defaults (tests copy it, never write it)."""

    def build(folder: Path) -> Path:
        from vitexport import load_model
        from vitexport.export.onnx_export import export_onnx

        path = folder / "digits-vit.onnx"
        export_onnx(load_model(SAMPLES / "digits-vit.pt"), path)
        return path

    return build_once(tmp_path_factory, "sample", build)


@pytest.fixture(params=sorted(CONFIGS), ids=sorted(CONFIGS))
def config_name(request: pytest.FixtureRequest) -> str:
    return request.param


class Exports(Mapping):
    """One default ONNX export (portable resampling) per config, made on first use, once per run: exports take
    seconds. Each value is (the model, the .onnx path, the ExportResult); the model is rebuilt from its seed."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.factory, self.cache = tmp_path_factory, {}

    def __getitem__(self, name: str) -> tuple:
        if name in self.cache:
            return self.cache[name]
        state = np.random.get_state()
        with torch.random.fork_rng():  # made inside a test: the test's own random draws stay as seeded
            model = make_model(CONFIGS[name], seed=7)

            def build(folder: Path):
                from vitexport.export.onnx_export import export_onnx

                return export_onnx(model, folder / f"{name}.onnx")

            result = build_once(self.factory, f"onnx-{name}", build)
        np.random.set_state(state)
        self.cache[name] = (model, result.path, result)
        return self.cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(CONFIGS)

    def __len__(self) -> int:
        return len(CONFIGS)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def _warm_shared_exports(request: pytest.FixtureRequest) -> None:
    """On a run of many tests over pytest-xdist workers, each worker first builds the run's shared exports, each
    starting at another place in the list: the exports are made side by side, instead of one worker building
    one while another, needing it too, waits idle on its lock (a tenth of the quick subset's time on 2 cores)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or count < 2 or len(request.session.items) < 300:
        return
    from tests.helpers.shared import (
        hostile_checkpoints,
        no_prefix_model,
        pooled_features,
        rgb_classifier,
        verify_exports,
    )

    factory = request.getfixturevalue("tmp_path_factory")
    exports = request.getfixturevalue("exported")
    builds = [lambda: request.getfixturevalue("sample_onnx"), lambda: rgb_classifier(factory),
              lambda: no_prefix_model(factory, "avg"), lambda: no_prefix_model(factory, "map"),
              lambda: verify_exports(factory), lambda: hostile_checkpoints(factory), lambda: pooled_features(factory),
              *(lambda name=name: exports[name] for name in sorted(CONFIGS))]
    start = int(worker.removeprefix("gw")) * len(builds) // count
    for build in builds[start:] + builds[:start]:
        build()


SERVER_GROUPS = {"test_serve.py": "ray", "test_serve_cluster.py": "ray", "test_batch_ray.py": "ray",
                 "test_serve_grpc.py": "ray", "test_triton.py": "tritonserver"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``), the tests that start Ray run on one worker, one after another (two
    clusters at once would share the machine's few cores and ports), and so do those that start a tritonserver."""
    for item in items:
        if item.path.parent.name == "e2e" and item.path.name in SERVER_GROUPS:
            item.add_marker(pytest.mark.xdist_group(SERVER_GROUPS[item.path.name]))
