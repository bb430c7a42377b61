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
    cmd = cli.get_command(click.Context(cli), command)
    return next(p for p in cmd.params if p.name == name)


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


def test_serve_options_are_the_app_args_fields() -> None:
    """Each `vitexport serve` option that sets an `AppArgs` field takes that field's default and help: a Ray
    config written by hand and the command line start from the same values and say the same about them."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(AppArgs) if f.metadata.get("help")}
    assert set(fields) == {"provider", "threads", "max_batch", "batch_wait_ms", "max_tokens", "max_body_mb",
                           "token_file", "max_images"}
    for name, spec in fields.items():
        opt = option("serve", name)
        assert (opt.default, opt.help) == (spec.default, spec.metadata["help"]), name
        assert opt.show_default == (spec.default is not None), name


def test_batch_and_predict_files_take_the_options_of_what_they_run(tmp_path) -> None:
    """`vitexport.batch.run(**options)` takes `BatchOptions`'s fields and `predict_files(**options)` the
    Predictor's, by name: an unknown name is a one-line usage error naming the known ones, before any work."""
    from vitexport._util.errors import UsageError
    from vitexport.batch import run
    from vitexport.serving.batch.infer import BatchOptions
    from vitexport.serving.predictor import predict_files

    with pytest.raises(UsageError, match=r"unknown batch option\(s\) max_bach; the options are top_k, logits"):
        run("missing.onnx", str(tmp_path), str(tmp_path / "out"), max_bach=4)
    assert not (tmp_path / "out").exists()
    assert BatchOptions.from_kwargs({"max_batch": 4, "run_tokens": 0}) == BatchOptions(max_batch=4, run_tokens=0)
    with pytest.raises(UsageError, match=r"unknown Predictor option\(s\) topk; the options are provider, threads"):
        predict_files("missing.onnx", [str(tmp_path)], topk=3)
