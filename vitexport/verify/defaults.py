"""Verify defaults, in one place: `verify`, its cases and the CLI's help read them. Plain constants: the CLI
imports this at startup. (The tolerance per dtype is an export option: `vitexport.export.defaults.TOLERANCES`.)"""

from __future__ import annotations

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 3)  # every size of the sweep at each of these batches
DEFAULT_SEED = 0  # of the random inputs

__all__ = ["DEFAULT_BATCH_SIZES", "DEFAULT_SEED"]
