"""Options and parameter types shared by several commands; defaults are read from the library."""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from vitexport.engines import PROVIDER_CHOICES
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS

ONE_ENGINE = [p for p in PROVIDER_CHOICES if p != "all"]  # predict and serve run one engine
SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '200x333' -> (200, 333)."""
    m = SIZE_RE.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size; write HxW, e.g. 224x224 or 200x333")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if h < 1 or w < 1:
        raise click.BadParameter(f"{text!r}: height and width must be at least 1")
    return h, w


class SizeType(click.ParamType):
    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_size(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


SIZE = SizeType()


class FiniteRange(click.FloatRange):
    """A float range that refuses nan and inf (``click.FloatRange`` takes both: nan passes every comparison, inf
    every lower bound): a usage error, exit 2."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def limit_options(fn: Any) -> Any:
    """--max-tokens and --max-memory-gb (vitexport.security.limits), shared by every command that runs a model."""
    fn = click.option("--max-memory-gb", type=FiniteRange(min=0, min_open=True), default=DEFAULT_MAX_MEMORY_GB,
                      show_default=True, help="Refuse work whose estimated memory for one forward pass is larger.")(fn)
    return click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True,
                        help="Refuse sizes with more tokens per image (attention memory grows with its square).")(fn)


class BatchType(click.ParamType):
    name = "dynamic|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or value == "dynamic":
            return None
        try:
            n = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not 'dynamic' or a positive integer", param, ctx)
        if n < 1:
            self.fail(f"{value!r}: the batch size must be at least 1", param, ctx)
        return n



def parse_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[tuple[int, int]] | None:
    if value is None:
        return None
    try:
        return [parse_size(part) for part in value.split(",") if part.strip()]
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, ctx=ctx, param=param) from exc



def parse_batches(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of integers, e.g. 1,3", ctx=ctx, param=param) from None
    if not batches or min(batches) < 1:
        raise click.BadParameter(f"{value!r}: batch sizes must be positive integers, e.g. 1,3", ctx=ctx, param=param)
    return batches



def batches_text(batches: tuple[int, ...]) -> str:
    """A library's default batch sizes as the CLI writes them: (1, 3) -> '1,3'."""
    return ",".join(str(b) for b in batches)


def sweep_options(batches: tuple[int, ...], sizes: str) -> Callable[[Any], Any]:
    """--sizes HxW,... and --batch-sizes N,... for the commands that sweep a model (verify, bench): ``batches``
    is the library's default, ``sizes`` says what runs without --sizes."""

    def add(fn: Any) -> Any:
        fn = click.option("--batch-sizes", default=batches_text(batches), show_default=True,
                          callback=parse_batches)(fn)
        return click.option("--sizes", callback=parse_sizes, help=f"Comma-separated HxW list (default: {sizes}).")(fn)

    return add


def tolerance_text(value: float) -> str:
    """A tolerance as help text writes it, in scientific notation: 2e-05 -> '2e-5', 0.005 -> '5e-3'."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def fmt_hw(hw: Any) -> str:
    return f"{hw[0]}x{hw[1]}"


def command_line(*args: Any) -> str:
    """A vitexport command line to print for the user to run, each argument quoted for the shell."""
    import shlex

    return " ".join(["vitexport", *(shlex.quote(str(a)) for a in args)])


def preset_options(fn: Any) -> Any:
    """--preset NAME and --random-weights: a named architecture instead of a file (`vitexport presets` lists them)."""
    fn = click.option("--random-weights", is_flag=True,
                      help="With --preset: build it with random weights (seed 0), recorded in the metadata; "
                           "vitexport downloads no weights.")(fn)
    return click.option("--preset", metavar="NAME",
                        help="Build this architecture (see `vitexport presets`) instead of reading a file; "
                             "needs --random-weights.")(fn)


def check_source(file: str | None, preset: str | None, random_weights: bool, what: str, **exclusive: Any) -> None:
    """Exactly one of the file argument (``what``) or --preset; --random-weights only with --preset; the options
    in ``exclusive`` (name -> value) apply to files only."""
    if (file is None) == (preset is None):
        raise click.UsageError(f"pass {what}, or --preset NAME --random-weights (not both)")
    if random_weights and preset is None:
        raise click.UsageError("--random-weights applies to --preset; a file brings its own weights")
    if preset is not None:
        for name, value in exclusive.items():
            if value:
                raise click.UsageError(f"--{name.replace('_', '-')} applies to {what}, not to --preset")


@contextlib.contextmanager
def model_source(model_path: str | None, preset: str | None, random_weights: bool, config: str | None,
                 **options: Any) -> Iterator[str]:
    """The model ``verify``/``bench`` run: ``model_path`` as given, or with ``--preset NAME --random-weights`` the
    preset exported to ONNX (``export_preset``, with ``config`` as overrides of its options) in a temporary folder,
    removed when the command ends; its path."""
    if preset is None:
        yield model_path
        return
    import tempfile

    from vitexport.export.pipeline import export_preset
    from vitexport.model.config import preset_key

    with tempfile.TemporaryDirectory(prefix="vitexport-preset-") as folder:
        started = time.monotonic()
        result = export_preset(preset, Path(folder) / f"{preset_key(preset)}.onnx", to="onnx",
                               random_weights=random_weights, config=config, **options)
        keep = command_line("onnx", "--preset", preset, "--random-weights", *(("--config", config) if config else ()))
        click.echo(f"exported       {preset} with random weights (seed {result.metadata['random_weights']['seed']}) "
                   f"to a temporary ONNX file ({result.bytes / 1e6:.2f} MB, {time.monotonic() - started:.1f} s), "
                   f"removed at the end; to keep it: {keep}", err=True)
        yield str(result.path)
