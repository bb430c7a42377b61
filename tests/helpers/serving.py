"""Helpers for the serve tests: skip without Ray, PNG bytes, the checkout on the children's path; the server
itself runs through `vitexport.serving.http.background` (process trees tracked, never outliving the tests)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.helpers.models import ROOT
from vitexport._util.procs import ProcessTree, descendants, free_ports, kill_tracked  # noqa: F401 - for the tests
from vitexport.serving.http.background import (  # noqa: F401 - for the tests
    VITEXPORT,
    replica_pids,
    start_server,
    wait_ready,
    wait_replicas,
)
from vitexport.serving.http.background import child_env as _child_env


def require_ray() -> None:
    """Skip the calling test module without Ray Serve, tritonclient or /proc (where Ray's processes are tracked)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'vitexport[serve]')")
    pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install 'vitexport[serve]')")
    if not sys.platform.startswith("linux"):
        pytest.skip("the serve tests track Ray's processes through /proc (Linux only)", allow_module_level=True)


def env(**extra: str) -> dict[str, str]:
    """The test environment for subprocesses: this checkout first on the path, no inherited Ray address."""
    import os

    return _child_env(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), **extra)


def listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp* writes them) listening on ``port``."""
    from pathlib import Path

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def png_bytes(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def infer_inputs(module, inputs: dict[str, np.ndarray]) -> list:
    """tritonclient ``InferInput``s (``module``: tritonclient.http or tritonclient.grpc) for named arrays: object
    arrays (encoded images) as BYTES, the rest as FP32."""
    tensors = []
    for name, value in inputs.items():
        tensors.append(module.InferInput(name, list(value.shape), "BYTES" if value.dtype == object else "FP32"))
        tensors[-1].set_data_from_numpy(value)
    return tensors
