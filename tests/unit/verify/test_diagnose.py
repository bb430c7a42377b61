"""`vitexport.verify.diagnose`: the likely cause of a failed verification, read from which cases failed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vitexport.onnx.spec import RESIZE_ATTRIBUTES
from vitexport.verify.diagnose import antialiased_resize, diagnose_failures, grid_pattern, native_grid
from vitexport.verify.report import CaseResult, VerifyReport


def _case(grid: list[int], passed: bool, provider: str = "openvino", **kw) -> CaseResult:
    return CaseResult(grid[0] * 8, grid[1] * 8, 1, "random", [grid[0] * 8, grid[1] * 8], grid,
                      grid[0] * grid[1] + 1, provider, passed, max_abs=0.0 if passed else 0.5, **kw)


@pytest.mark.parametrize("resize, cases, expected", [
    # every resampled grid fails, the native one passes, the Resize is PyTorch's own: the runtime is to blame
    (True, [([3, 3], True), ([4, 4], False), ([1, 5], False)], "does not honour the attributes"),
    # the same pattern on the portable form: the resampling, wherever it goes wrong
    (False, [([3, 3], True), ([4, 4], False), ([1, 5], False)], "goes wrong (in the export or in this runtime)"),
    # some resampled grids pass: still every failure is a resampled grid
    (True, [([3, 3], True), ([4, 4], False), ([2, 2], True)], "does not honour the attributes"),
    (True, [([3, 3], False), ([4, 4], False)], None),  # the native grid fails too: something else
    (True, [([4, 4], False), ([2, 2], False)], None),  # no native-grid case ran: no evidence
    (True, [([3, 3], True), ([4, 4], True)], None),  # nothing failed
])
def test_diagnosis_reads_the_pattern_of_failures(resize: bool, cases: list, expected: str | None) -> None:
    report = VerifyReport("m.onnx", "onnx", "weights", "float32", 2e-5, 1e-4, 0)
    report.sessions = [{"name": "cpu"}, {"name": "openvino"}]
    report.cases = [_case(grid, passed) for grid, passed in cases]
    report.cases.append(_case([5, 5], True, provider="cpu"))  # another engine's cases do not count
    report.cases.append(_case([3, 3], False, provider="openvino", error="refused"))  # nor refused inputs
    report.cases[-1].max_abs = None
    graph = SimpleNamespace(resize=[dict(RESIZE_ATTRIBUTES)] if resize else [])
    found = diagnose_failures(report, graph, [3, 3])
    if expected is None:
        assert found == []
    else:
        failing = sum(not passed for _, passed in cases)
        assert len(found) == 1 and found[0].startswith(f"openvino: all {failing} failing cases resample")
        assert expected in found[0] and "from the native 3x3 grid" in found[0]


def test_grid_pattern_needs_a_passing_native_case_and_only_resampled_failures() -> None:
    native = [3, 3]
    cases = [_case([3, 3], True), _case([4, 4], False), _case([3, 3], True)]
    failed, on_native = grid_pattern(cases, native)
    assert [c.grid for c in failed] == [[4, 4]] and len(on_native) == 2
    assert grid_pattern([_case([3, 3], True), _case([3, 3], False), _case([4, 4], False)], native) is None
    assert grid_pattern([], native) is None


def test_only_pytorchs_own_resize_blames_the_runtime() -> None:
    exact = SimpleNamespace(resize=[dict(RESIZE_ATTRIBUTES)])
    assert antialiased_resize(exact)
    assert not antialiased_resize(SimpleNamespace(resize=[{**RESIZE_ATTRIBUTES, "antialias": 0}]))
    assert not antialiased_resize(SimpleNamespace(resize=[])) and not antialiased_resize(None)


def test_native_grid_from_metadata_else_config() -> None:
    config = SimpleNamespace(grid_size=(3, 5))
    assert native_grid({"native_grid": [4, 4]}, config) == [4, 4]
    assert native_grid({}, config) == [3, 5]
