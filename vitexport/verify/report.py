"""What verify returns: one `CaseResult` per case and engine, the cross-engine checks, and the whole
`VerifyReport` (truthy when everything passed), written as JSON by `VerifyReport.write_json`
(schema: docs/verify-report.md). Plain data: the CLI renders it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitexport._util.files import write_text

REPORT_SCHEMA_VERSION = 1


@dataclass
class CaseResult:
    """One case (size, batch, input) on one engine against the PyTorch reference."""

    height: int
    width: int
    batch: int
    input_kind: str
    padded_size: list[int]
    grid: list[int]
    seq_len: int
    provider: str
    passed: bool
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None  # element by element (kept for the report's readers; not shown in rows)
    cosine: float | None = None
    top1_agreement: float | None = None
    nonfinite: bool = False
    runtime_ms: float | None = None
    torch_ms: float | None = None
    error: str | None = None
    ref_scale: float | None = None  # max |ref|: the output's scale
    rel_to_scale: float | None = None  # max_abs / ref_scale: the relative error the rows show
    fresh_compile: bool = False  # run on a fresh compile, in order: smallest size first (`Engine.cold_start`)


@dataclass
class CrossCheck:
    """With several engines: one engine's output against the first engine's, on one case both ran."""

    height: int
    width: int
    batch: int
    providers: list[str]
    max_abs: float
    passed: bool


@dataclass
class VerifyReport:
    """The whole verification: static checks, providers really used, every case; truthy when all passed.

    ``sessions`` are the engines' report entries (`vitexport.engines.Engine.describe` plus ``requested``:
    ``name``, ``providers``, ``version``, ``notes``, ``warnings``, and what an engine adds, e.g. ``placement``).
    """

    model: str
    format: str
    reference: str
    dtype: str
    atol: float
    rtol: float
    seed: int
    output: str = "logits"  # what was compared: logits, features (pooled embedding) or tokens
    static_problems: list[str] = field(default_factory=list)
    static_notes: list[str] = field(default_factory=list)
    static_checks: list[str] = field(default_factory=list)  # what the static checks verified (resampling, Pad)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    cases: list[CaseResult] = field(default_factory=list)
    cross_provider: list[CrossCheck] = field(default_factory=list)
    weight_diff: dict[str, float] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    skipped_providers: list[str] = field(default_factory=list)
    skipped_cases: list[str] = field(default_factory=list)  # default-sweep sizes over max_tokens
    diagnoses: list[str] = field(default_factory=list)  # likely causes of failed cases, per engine
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            not self.static_problems
            and bool(self.cases)
            and all(c.passed for c in self.cases)
            and all(x.passed for x in self.cross_provider)
        )

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    @property
    def worst_max_abs(self) -> float:
        """The largest max |difference| over the compared cases (0 when none was compared)."""
        return max((c.max_abs for c in self.cases if c.max_abs is not None), default=0.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema_version"] = REPORT_SCHEMA_VERSION
        data["passed"] = self.passed
        return data

    def write_json(self, path: str | Path, force: bool = False) -> Path:
        """Write `to_json` atomically (schema: docs/verify-report.md)."""
        return write_text(path, json.dumps(self.to_json(), indent=2, default=str), force=force)


@dataclass
class HeatmapSweep:
    """A verify report over every (height, width) of ``heights`` x ``widths``, batch 1."""

    heights: list[int]
    widths: list[int]
    report: VerifyReport


__all__ = ["REPORT_SCHEMA_VERSION", "CaseResult", "CrossCheck", "HeatmapSweep", "VerifyReport"]
