"""The `vitexport` command line: parse, call one library function, render its typed result, map errors.

Startup is part of the interface: importing this package loads click and vitexport's light modules
only; a command's module is imported when that command runs (`vitexport.cli.app.COMMANDS` lists them for
--help), and each command imports its library modules (numpy, onnxruntime, torch, ...) inside its function,
so `--help`, `info` on an exported model and `predict` never import torch
(`benchmarks/startup_bench.py`, `tests/e2e/test_install.py::test_startup_imports_nothing_heavy`).

Nothing in vitexport imports this package.
"""

from __future__ import annotations

from vitexport.cli.app import COMMANDS, CliError, cli


def main() -> None:
    cli(prog_name="vitexport")


__all__ = ["COMMANDS", "CliError", "cli", "main"]
