"""JSON from files and metadata we did not write: bounded size and depth, finite numbers only.

Configs (`--config`, a hub ``config.json``), ONNX ``metadata_props`` and TorchScript's
``vitexport.json`` all go through `parse_json`. It raises `ValueError` with a short reason
(callers wrap it in their own error class with the fix): over ``limit`` bytes, not JSON,
``NaN``/``Infinity`` or a number that overflows to infinity, an integer with thousands of
digits, or nesting deeper than `MAX_DEPTH`. No recursion: a hostile file cannot raise
`RecursionError` in the code that reads the result either.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_JSON_BYTES = 16_000_000  # a timm config.json is a few KB; 21k labels are ~0.5 MB
MAX_DEPTH = 32  # a config or metadata object nests 3-4 levels


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number vitexport accepts")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows to infinity")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of lists and dicts, iteratively (stops counting past MAX_DEPTH)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            values = item.values() if isinstance(item, dict) else item  # scalars are not pushed: a list of
            stack.extend((v, depth + 1) for v in values if isinstance(v, (list, dict)))  # 16M numbers stays cheap
    return deepest


def parse_json(text: str | bytes, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON value of ``text``; `ValueError` whose text completes "the file is ..." with the reason."""
    if len(text) > limit:
        raise ValueError(f"over the {limit / 1e6:.0f} MB limit for JSON ({len(text) / 1e6:.1f} MB)")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:  # NaN/Infinity, 1e999, a 5000-digit integer
        raise ValueError(f"not usable JSON: {' '.join(str(exc).split())[:120]}") from None
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return value


__all__ = ["MAX_DEPTH", "MAX_JSON_BYTES", "parse_json"]
