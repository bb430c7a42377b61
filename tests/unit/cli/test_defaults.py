"""The CLI holds no defaults of its own: every option's default and the tolerances in its help are the library's
constants (one place, read by CLI help and library alike)."""

from __future__ import annotations

import inspect

import click
import pytest

from vitexport.cli import cli
from vitexport.engines import DEFAULT_PROVIDER
from vitexport.export.defaults import DEFAULT_DTYPE, TOLERANCES
from vitexport.serving import defaults
from vitexport.serving.bench import bench
from vitexport.serving.http.config import AppArgs, ServeOptions
from vitexport.serving.predictor import Predictor
from vitexport.verify.defaults import DEFAULT_BATCH_SIZES, DEFAULT_SEED
from vitexport.verify.sweep import verify


def option(command: str, name: str) -> click.Option:
    return next(p for p in cli.commands[command].params if p.name == name)


def default_of(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def batches(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


@pytest.mark.parametrize("command", ["verify", "bench", "predict", "serve"])
def test_every_engine_default_is_auto(command: str) -> None:
    assert option(command, "provider").default == DEFAULT_PROVIDER == "auto"


def test_cli_and_library_defaults_agree() -> None:
    assert batches(option("verify", "batch_sizes").default) == DEFAULT_BATCH_SIZES == default_of(verify, "batch_sizes")
    assert option("verify", "seed").default == DEFAULT_SEED == default_of(verify, "seed")
    assert batches(option("bench", "batch_sizes").default) == defaults.BENCH_BATCH_SIZES
    assert defaults.BENCH_BATCH_SIZES == default_of(bench, "batch_sizes")
    for flag in ("warmup", "iters"):
        assert option("bench", flag).default == default_of(bench, flag)
    assert option("predict", "top_k").default == defaults.DEFAULT_TOP_K == default_of(Predictor, "top_k")
    assert option("serve", "max_batch").default == defaults.DEFAULT_MAX_BATCH == default_of(Predictor, "max_batch")
    assert default_of(Predictor.from_engine, "max_batch") == defaults.DEFAULT_MAX_BATCH
    assert default_of(Predictor, "provider") == default_of(verify, "provider") == default_of(bench, "provider")
    app = AppArgs("m.onnx", "m")
    assert (app.provider, app.max_batch, app.batch_wait_ms, app.max_body_mb) == (
        DEFAULT_PROVIDER, option("serve", "max_batch").default, option("serve", "batch_wait_ms").default,
        option("serve", "max_body_mb").default)
    assert app.max_images == option("serve", "max_images").default == defaults.DEFAULT_MAX_IMAGES
    serve = ServeOptions(app)
    assert (serve.host, serve.port) == (option("serve", "host").default, option("serve", "port").default)
    assert option("onnx", "dtype").default == DEFAULT_DTYPE


def test_tolerance_help_is_read_from_the_table() -> None:
    from vitexport.cli.options import tolerance_text

    for flag, index in (("atol", 0), ("rtol", 1)):
        text = option("verify", flag).help
        assert (f"fp32 {tolerance_text(TOLERANCES['float32'][index])}, "
                f"fp16 {tolerance_text(TOLERANCES['float16'][index])})") in text, text
    assert option("verify", "atol").help == "Absolute tolerance (default by dtype: fp32 2e-5, fp16 5e-3)."
    assert [tolerance_text(v) for v in (2e-5, 1e-4, 5e-3, 2.5e-5, 0.1)] == ["2e-5", "1e-4", "5e-3", "2.5e-5", "1e-1"]
