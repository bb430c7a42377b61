"""Bounded JSON (`vitexport._util.safejson.parse_json`): size, depth, finite numbers; one short reason each."""

from __future__ import annotations

import time

import pytest

from vitexport._util.safejson import MAX_DEPTH, parse_json


def nested(depth: int) -> str:
    """``depth`` levels of lists and objects, alternating."""
    text = "1"
    for level in range(depth):
        text = f"[{text}]" if level % 2 else f'{{"k": {text}}}'
    return text


def test_ordinary_json_is_parsed() -> None:
    assert parse_json('{"img_size": [28, 30], "mlp_ratio": 2.5, "name": "vit", "x": null}') == {
        "img_size": [28, 30], "mlp_ratio": 2.5, "name": "vit", "x": None}
    assert parse_json(b'\xef\xbb\xbf{"a": 1e308}') == {"a": 1e308}  # bytes, a BOM, the largest finite float


def test_size_is_checked_before_parsing() -> None:
    text = '{"a": "' + "x" * 90 + '"}'
    assert parse_json(text, limit=len(text))["a"] == "x" * 90
    with pytest.raises(ValueError, match=r"over the 0 MB limit for JSON \(0\.0 MB\)"):
        parse_json(text, limit=len(text) - 1)


def test_depth_is_bounded_exactly() -> None:
    assert parse_json(nested(MAX_DEPTH)) is not None
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_json(nested(MAX_DEPTH + 1))


def test_deep_nesting_is_refused_without_recursion() -> None:
    """100,000 levels: the json module's recursion limit, turned into the same one-line reason, at once."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        parse_json("[" * 100_000 + "]" * 100_000)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("text, reason", [
    ('{"a": NaN}', "NaN is not a number vitexport accepts"),
    ('{"a": Infinity}', "Infinity is not a number vitexport accepts"),
    ('{"a": -Infinity}', "-Infinity is not a number vitexport accepts"),
    ('{"a": 1e999}', "1e999 overflows to infinity"),
    ('{"a": -1e400}', "-1e400 overflows to infinity"),
    ('{"a": 1' + "0" * 5000 + "}", "not usable JSON"),  # Python refuses integers of over 4,300 digits
    ('{"a": 1,}', "not valid JSON"),
    (b'{"a": "\xff"}', "not usable JSON"),  # not UTF-8
], ids=["nan", "infinity", "minus-infinity", "overflow", "minus-overflow", "5000-digits", "syntax", "not-utf8"])
def test_non_finite_huge_and_malformed_values_are_refused(text: str | bytes, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_json(text)
    assert reason in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 200
