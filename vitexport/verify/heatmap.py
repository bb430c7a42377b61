"""Heatmap of the worst error over a grid of input heights x widths (matplotlib, optional extra)."""

from __future__ import annotations

import math
from pathlib import Path

from vitexport._util.errors import EnvironmentProblem
from vitexport._util.extras import install_command
from vitexport._util.files import atomic_file


def require_matplotlib() -> None:
    """Refuse early (before a slow sweep) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise EnvironmentProblem(f"--plot needs matplotlib; {install_command('plot')}") from exc


def render_heatmap(report, path: str | Path, heights: list[int], widths: list[int], force: bool = True) -> Path:
    """Write a PNG of max |difference| per (height, width) from a verify report of those sizes
    (`vitexport.verify.heatmap_sweep` makes one). Imports no torch."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

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
    try:
        with atomic_file(path, force=force) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return Path(path)
