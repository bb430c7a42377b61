"""Checkpoints and the model through the command line: exit codes and one-line errors (the library behaviour is
tested in tests/unit/checkpoint and tests/unit/model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.checkpoints import FORMATS, write_format
from tests.helpers.models import CONFIGS, make_model, needs_openvino
from vitexport.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "plain_compiled"])  # its --config is a dict
def test_ema_on_a_file_without_ema_weights_exits_1_with_one_line(fmt: str, tmp_path: Path) -> None:
    args = CONFIGS["spec_cls"]
    path, config = write_format(fmt, make_model(args), args, tmp_path)
    cli_config = ["--config", config] if isinstance(config, str) else []
    result = run("info", str(path), "--ema", *cli_config)
    assert result.exit_code == 1 and "has no EMA weights" in result.stderr and result.stderr.count("\n") == 1
    assert run("info", str(path), *cli_config).exit_code == 0  # without --ema the same file loads


@pytest.mark.parametrize(("field", "value"), [("norm_layer", "batchnorm"), ("block_fn", "ParallelBlock")])
def test_an_unknown_layer_name_in_config_exits_1_naming_the_choices(field: str, value: str, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    from vitexport.checkpoint import save_checkpoint

    save_checkpoint(make_model(CONFIGS["spec_cls"]), path)
    result = run("info", str(path), "--config", f'{{"{field}": "{value}", "embed_dim": 32, "num_heads": 2}}')
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert f"{field} {value!r} is not supported" in result.stderr


@pytest.mark.slow  # an export, then verify compiling it on OpenVINO at three sizes
def test_verify_on_openvino_names_the_resize_form_as_the_cause(tmp_path: Path) -> None:
    """`verify --provider openvino` on the resize form: exit 1; the diagnosis names the resampled grids, the
    error the cause and the fix (--resample portable)."""
    needs_openvino()
    from vitexport.export import export_onnx

    path = tmp_path / "resize.onnx"
    export_onnx(make_model(CONFIGS["spec_cls"], seed=3), path, resample="resize")
    result = run("verify", str(path), "--provider", "openvino", "--sizes", "24x24,28x28,8x8")
    assert result.exit_code == 1, result.output
    # 4 cases of the sweep and 2 of the fresh compile (smallest size first, then native, then largest) resample
    assert "diagnosis      openvino: all 6 failing cases resample the positional embeddings" in result.stdout
    assert "likely cause on openvino" in result.stderr and "does not honour the attributes" in result.stderr
    assert "export with --resample portable" in result.stderr and result.stderr.count("\n") == 1
