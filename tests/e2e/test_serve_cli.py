"""`vitexport serve` on the command line without starting Ray: a missing Ray names its install command, bad
options are usage errors (exit 2), --print-config writes what the library's config holds, and the start, log and
readiness lines come in order."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vitexport.cli import cli


def _serve(*args: str):
    return CliRunner().invoke(cli, ["serve", *args])


def test_serve_without_ray_exits_2_with_the_install_command(sample_onnx: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as when not installed
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    for extra in ([], ["--print-config"]):
        result = _serve(str(sample_onnx), *extra)
        assert result.exit_code == 2, result.output
        assert "pip install 'vitexport[serve]'" in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2", "--autoscale", "1:3"], "not both"),
    (["--autoscale", "3:1"], "MIN:MAX"),
    (["--autoscale", "two"], "MIN:MAX"),
    (["--name", "a/b"], "cannot be a model name"),
    (["--port", "0"], "0"),
    (["--max-batch", "0"], "0"),
    (["--provider", "tpu"], "tpu"),
])
def test_serve_usage_errors_exit_2(sample_onnx: Path, args: list[str], message: str) -> None:
    result = _serve(str(sample_onnx), *args)
    assert result.exit_code == 2 and message in result.stderr, (result.exit_code, result.stderr)


def test_print_config_holds_the_library_defaults(sample_onnx: Path) -> None:
    """The printed Ray config is the library's `serve_config` of the CLI's options: defaults read from one place."""
    pytest.importorskip("yaml", reason="PyYAML is not installed (pip install 'vitexport[serve]')")
    pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'vitexport[serve]')")
    import yaml

    from vitexport.engines import DEFAULT_PROVIDER
    from vitexport.serving.defaults import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_MB

    result = _serve(str(sample_onnx), "--print-config")
    assert result.exit_code == 0, result.output
    args = yaml.safe_load(result.stdout)["applications"][0]["args"]
    assert args["name"] == Path(sample_onnx).name.split(".")[0] and args["model"] == str(Path(sample_onnx).resolve())
    assert (args["provider"], args["max_batch"], args["batch_wait_ms"], args["max_body_mb"]) == (
        DEFAULT_PROVIDER, DEFAULT_MAX_BATCH, DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BODY_MB)


@pytest.mark.parametrize("verbose", [False, True])
def test_serve_says_it_is_starting_at_once_and_ready_with_the_time(sample_onnx: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  verbose: bool) -> None:
    """The start line is out before Ray is started (a stand-in for `serve_local` reads what was printed), the log
    file for Ray's own output is named (none with --verbose), and readiness comes with the time it took."""
    pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'vitexport[serve]')")
    from vitexport.serving.http import launch

    seen: dict = {}

    def serve_local(options, on_ready, stop=None, log=None) -> None:
        sys.stdout.flush()
        seen["printed"], seen["log"] = sys.stdout.buffer.getvalue().decode(), log
        on_ready(launch.Started("http://127.0.0.1:8000", options.app.name, options.app.model, "cpu"))

    monkeypatch.setattr(launch, "serve_local", serve_local)
    result = _serve(str(sample_onnx), "--provider", "cpu", *(["--verbose"] if verbose else []))
    assert result.exit_code == 0, result.output
    first, second = seen["printed"].splitlines()
    assert first == f"starting  Ray Serve for {sample_onnx} on a new local Ray instance (10 s to a minute) ..."
    if verbose:
        assert seen["log"] is None and second == "ray log   here (--verbose)"
    else:
        assert second.startswith(f"ray log   {seen['log']} ") and Path(seen["log"]).name.startswith("vitexport-serve-")
        assert not Path(seen["log"]).exists()  # made when Ray starts: a start that fails before leaves no file
    assert re.search(r"^started   in \d+\.\d s, ready for requests$", result.stdout, re.M), result.stdout
    assert result.stdout.index("started ") < result.stdout.index("serving ")
