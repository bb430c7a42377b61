"""Heatmap of the worst error over a grid of input heights x widths (matplotlib, optional extra)."""

from __future__ import annotations

import math
from pathlib import Path

from vitexport.errors import EnvironmentProblem


def heatmap_sizes(native: tuple[int, int], patch: tuple[int, int], steps: int = 8) -> tuple[list[int], list[int]]:
    """Heights and widths from 1 to 4x native, including non-multiples of the patch."""
    def axis(n: int, p: int) -> list[int]:
        values = {1, max(1, p - 1), n, n + 1, 4 * n}
        values.update(max(1, round(4 * n * i / (steps - 1))) for i in range(steps))
        return sorted(values)[: steps + 3]
    return axis(native[0], patch[0]), axis(native[1], patch[1])


def render_heatmap(report, path: str | Path, heights: list[int], widths: list[int]) -> None:
    """Write a PNG of max |difference| per (height, width) from a verify report of those sizes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm
    except ImportError as exc:
        raise EnvironmentProblem("--plot needs matplotlib; pip install 'vitexport[plot]'") from exc
    import numpy as np

    from vitexport.checkpoint import atomic_output

    grid = np.full((len(heights), len(widths)), np.nan)
    failed = np.zeros_like(grid, dtype=bool)
    for c in report.cases:
        if c.height in heights and c.width in widths:
            i, j = heights.index(c.height), widths.index(c.width)
            value = c.max_abs if c.max_abs is not None and math.isfinite(c.max_abs) else np.nan
            grid[i, j] = np.nanmax([grid[i, j], value]) if not np.isnan(grid[i, j]) else value
            failed[i, j] |= not c.passed
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(widths), 1.0 + 0.6 * len(heights)))
    positive = grid[np.isfinite(grid) & (grid > 0)]
    norm = LogNorm(vmin=max(positive.min(), 1e-12), vmax=max(positive.max(), 1e-11)) if positive.size else None
    image = ax.imshow(np.where(grid > 0, grid, np.nan), cmap="viridis", norm=norm, origin="lower")
    ax.set_xticks(range(len(widths)), [str(w) for w in widths], rotation=45)
    ax.set_yticks(range(len(heights)), [str(h) for h in heights])
    ax.set_xlabel("input width (px)")
    ax.set_ylabel("input height (px)")
    for i in range(len(heights)):
        for j in range(len(widths)):
            if failed[i, j]:
                ax.text(j, i, "x", ha="center", va="center", color="red", fontsize=12, fontweight="bold")
    fig.colorbar(image, ax=ax, label="max |runtime - PyTorch|")
    verdict = "passed" if report.passed else f"{len(report.failures)} failing (x)"
    ax.set_title(f"{Path(report.model).name}: {report.sessions[0]['name'] if report.sessions else ''} vs PyTorch, "
                 f"{verdict}", fontsize=9)
    fig.tight_layout()
    with atomic_output(path, force=True, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
