"""`launch.ray_output`: while Ray runs, what reaches file descriptors 1 and 2 (Ray's C++ core, its Python loggers, the
processes it starts) goes to the log file, while vitexport's own lines (click, the root logger) still reach the
terminal. Run in a child interpreter, whose descriptors are its own (no Ray needed: the writers stand in for it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers.models import ROOT

CHILD = textwrap.dedent("""
    import contextlib, logging, os, subprocess, sys
    import click
    from vitexport.serving.http.launch import ray_output

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ray_logger = logging.getLogger("ray")  # as Ray does: its own handler on the stream of import time
    ray_logger.addHandler(logging.StreamHandler(sys.stderr))
    ray_logger.propagate = False
    with ray_output(sys.argv[1] if sys.argv[1] != "-" else None) as (out, err):
        os.write(2, b"Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled\\n")
        os.write(1, b"\\x1b[36m(ServeController pid=1)\\x1b[0m shutting down\\n")
        print("\\x1b[33m(raylet)\\x1b[0m Task ServeController.graceful_shutdown failed")  # Ray's driver prints
        subprocess.run(["sh", "-c", "echo child-out; echo child-err >&2"], check=True)
        ray_logger.warning("ray python warning")
        with contextlib.redirect_stdout(out):  # as serve_local calls on_ready
            click.echo("ours on stdout")
        logging.getLogger("vitexport").warning("ours on stderr")
    click.echo("ours after")
""")


def _run(log: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, log], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_rays_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "ray.log"
    result = _run(str(log))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ours on stdout\nours after\n", result.stdout
    assert result.stderr == "WARNING vitexport: ours on stderr\n", result.stderr
    text = log.read_text()
    for line in ("RAY_AUTH_MODE=disabled", "shutting down", "graceful_shutdown failed", "child-out", "child-err",
                 "ray python warning"):
        assert line in text, (line, text)
    assert "ours" not in text


def test_verbose_moves_nothing(tmp_path: Path) -> None:
    result = _run("-")
    assert result.returncode == 0, result.stderr
    assert "shutting down" in result.stdout and "child-out" in result.stdout and "ours on stdout" in result.stdout
    assert "graceful_shutdown failed" in result.stdout
    assert "RAY_AUTH_MODE" in result.stderr and "child-err" in result.stderr and "ours on stderr" in result.stderr
