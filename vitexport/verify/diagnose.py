"""Likely causes of a failed verification, read from the pattern of its failed cases. No torch.

A runtime that mishandles the positional-embedding resampling fails exactly where the
embeddings are resampled, i.e. at every input whose patch grid differs from the model's
native grid, and passes wherever the grid is the native one (resampling to the same grid is
the identity, which every runtime gets right). When an engine's failures follow that pattern
and the graph resamples with one antialiased cubic `Resize`, the runtime is not honouring
that op's attributes (OpenVINO 2026.4's CPU plugin ignores ``antialias``: docs/numerics.md);
the fix is the portable form, which has no Resize.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RESIZE_CAUSE = (
    "this runtime does not honour the attributes of the graph's Resize (antialiased cubic: antialias=1, "
    "cubic_coeff_a=-0.5, exclude_outside=1), which the --resample resize form relies on; export with "
    "--resample portable (elementary ops, no Resize: right on every runtime)"
)
RESAMPLING_CAUSE = (
    "the positional-embedding resampling goes wrong (in the export or in this runtime) while everything on "
    "the native grid matches; report it with the model and this output"
)


def _fmt(grid: Sequence[int]) -> str:
    return f"{grid[0]}x{grid[1]}"


def antialiased_resize(graph: Any) -> bool:
    """Does the graph (a `vitexport.onnx.graph.GraphReport`) resample with Resizes that are exactly PyTorch's
    antialiased bicubic (so that a runtime running them wrongly, not the graph, is to blame)?"""
    from vitexport.onnx.graph import resize_mismatches

    return graph is not None and bool(graph.resize) and not any(resize_mismatches(r) for r in graph.resize)


def grid_pattern(cases: Sequence[Any], native: Sequence[int]) -> tuple[list[Any], list[Any]] | None:
    """(failed, native-grid cases) when every failed case has a grid other than ``native`` and every case on
    the native grid passed (at least one ran); None otherwise. ``cases``: one engine's compared cases."""
    failed = [c for c in cases if not c.passed]
    on_native = [c for c in cases if list(c.grid) == list(native)]
    if not failed or not on_native or any(not c.passed for c in on_native):
        return None
    return failed, on_native


def diagnose_failures(report: Any, graph: Any, native: Sequence[int]) -> list[str]:
    """One line per engine whose failures point at the embedding resampling: the cause and the fix."""
    out = []
    for session in report.sessions:
        name = session["name"]
        compared = [c for c in report.cases if c.provider == name and c.error is None and c.max_abs is not None]
        found = grid_pattern(compared, native)
        if found is None:
            continue
        failed, on_native = found
        grids = list(dict.fromkeys(_fmt(c.grid) for c in failed))
        shown = ", ".join(grids[:4]) + (", ..." if len(grids) > 4 else "")
        cause = RESIZE_CAUSE if antialiased_resize(graph) else RESAMPLING_CAUSE
        out.append(f"{name}: all {len(failed)} failing cases resample the positional embeddings from the native "
                   f"{_fmt(native)} grid (to {shown}) and all {len(on_native)} cases on the native grid pass: {cause}")
    return out


def native_grid(metadata: dict[str, Any], config: Any) -> list[int]:
    """The model's native patch grid: from the artifact's metadata, else its config."""
    grid = metadata.get("native_grid")
    return [int(grid[0]), int(grid[1])] if grid else list(config.grid_size)


__all__ = ["RESAMPLING_CAUSE", "RESIZE_CAUSE", "antialiased_resize", "diagnose_failures", "grid_pattern",
           "native_grid"]
