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
