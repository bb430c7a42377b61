"""Every engine runs only inputs whose graph fits --max-memory-gb (vitexport.onnx.budget through load_engines and the
Engine base class), and ONNX Runtime's arena cap holds even where that check were bypassed."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.models import needs_openvino
from tests.helpers.onnx_bombs import folded
from vitexport._util.errors import CheckpointError, LimitError
from vitexport.engines import create_engine, graph_budget, load_engines


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("engine", ["cpu", "openvino", "reference"])
def test_every_engine_refuses_a_bomb_before_its_runtime_reads_it(sample_onnx: Path, tmp_path: Path,
                                                                  engine: str) -> None:
    """The issue's model (Expand to 1000^3 folded into the logits): refused at the native size by load_engines,
    before ONNX Runtime, OpenVINO or the reference evaluator parse it; a graph that cannot be inferred likewise."""
    if engine == "openvino":
        needs_openvino()
    before = _rss_mb()
    with pytest.raises(LimitError, match="node 'x0' \\(Expand\\)"):
        load_engines(str(folded(sample_onnx, tmp_path / "b.onnx", "expand")), engine)
    with pytest.raises(CheckpointError, match="node 'u_mystery'"):
        load_engines(str(folded(sample_onnx, tmp_path / "u.onnx", "custom_op")), engine)
    assert _rss_mb() - before < 500


@pytest.mark.parametrize("engine", ["cpu", "openvino", "reference"])
def test_every_run_is_checked_at_its_own_shape(sample_onnx: Path, tmp_path: Path, engine: str) -> None:
    """A bomb that grows with the input runs at 28x28 and is refused at 300x300 by the engine's run itself (the
    same wrapper for every engine), before the runtime allocates anything."""
    if engine == "openvino":
        needs_openvino()
    [(loaded, _)], _ = load_engines(str(folded(sample_onnx, tmp_path / "g.onnx", "size_dependent")), engine)
    assert loaded.run(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 10)
    before = _rss_mb()
    with pytest.raises(LimitError, match=r"1x1x300x300: the graph holds 32.* node 'b_grow'"):
        loaded.run(np.zeros((1, 1, 300, 300), np.float32))
    assert _rss_mb() - before < 200


def test_onnx_runtime_arena_caps_a_run_the_check_let_through(sample_onnx: Path, tmp_path: Path) -> None:
    """The second line: a session made under a 0.1 GB budget runs in an arena capped at twice that plus the
    file; a 4 GB Expand run with the check bypassed fails in ONNX Runtime instead of taking the memory."""
    path = str(folded(sample_onnx, tmp_path / "b.onnx", "expand"))
    engine = create_engine("cpu")
    engine.budget = graph_budget(str(sample_onnx), 0.1)  # the sample's budget: the bomb's own check is bypassed
    engine.load(path)
    before = _rss_mb()
    with pytest.raises(Exception, match=r"Available memory of \d+ is smaller than requested bytes"):
        type(engine).run.__wrapped__(engine, np.zeros((1, 1, 28, 28), np.float32))
    assert _rss_mb() - before < 500
