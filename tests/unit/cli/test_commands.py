"""The command registry (`vitexport.cli.app.COMMANDS`): `vitexport --help` lists every command from it without
importing any command's module, and each module defines exactly the commands the registry says it does."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from vitexport.cli import COMMANDS, cli

MODULES = sorted({module for module, _ in COMMANDS.values()})


def test_help_lists_every_command_without_importing_them() -> None:
    snippet = ("import sys; from vitexport.cli import main; sys.argv = ['vitexport', '--help']\n"
               "try:\n    main()\nexcept SystemExit:\n    pass\n"
               "print('LOADED', sorted(m for m in sys.modules if m.startswith('vitexport.cli.') and m != "
               "'vitexport.cli.app'))")
    r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "LOADED []", r.stdout
    listing = r.stdout.split("Commands:\n")[1]
    listed = [line.split()[0] for line in listing.splitlines() if line.startswith("  ") and line[2] != " "]
    assert listed == sorted(COMMANDS)
    for name, (_, summary) in COMMANDS.items():
        assert " ".join(summary.split()) in " ".join(listing.split()), name


@pytest.mark.parametrize("module", MODULES)
def test_each_module_defines_the_commands_registered_for_it(module: str) -> None:
    """The registry's module for a command is where it is defined: a wrong module name would make the command
    vanish (click reports "No such command") only when a user runs it."""
    before = set(cli.commands)
    importlib.import_module(f"vitexport.cli.{module}")
    expected = {name for name, (mod, _) in COMMANDS.items() if mod == module}
    assert expected <= set(cli.commands), expected - set(cli.commands)
    assert set(cli.commands) - before <= expected  # a module registers nothing it is not listed for
    for name in expected:
        cmd = cli.get_command(click.Context(cli), name)
        assert cmd.short_help == COMMANDS[name][1] and cmd.help and cmd.callback is not None


def test_every_registered_command_runs_its_help() -> None:
    from click.testing import CliRunner

    for name in COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and result.output.startswith(f"Usage: cli {name} "), (name, result.output)


def test_a_command_missing_from_the_registry_cannot_be_defined() -> None:
    with pytest.raises(RuntimeError, match=r"'shiny' is not in vitexport\.cli\.app\.COMMANDS; add it there"):
        @cli.command("shiny")
        def shiny() -> None:
            """Not registered."""
    assert "shiny" not in COMMANDS and "shiny" not in cli.commands


def test_an_unknown_command_is_a_usage_error() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["expor"])
    assert result.exit_code == 2 and "No such command 'expor'" in result.output


def test_info_on_an_onnx_file_loads_only_what_it_reads(sample_onnx) -> None:
    """`vitexport info model.onnx` imports neither the generated preset tables (17 ms) nor the TorchScript policy
    (12 ms) nor another command's module: what kept it as fast as before the stage folders
    (benchmarks/RESULTS.md, "Startup")."""
    snippet = ("import sys; from vitexport.cli import main; sys.argv = ['vitexport', 'info', sys.argv[1]]\n"
               "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
               "print('LOADED', sorted(m for m in sys.modules if m in ('vitexport.model.presets', "
               "'vitexport.model.family_presets', 'vitexport.security.torchscript_policy', 'torch', 'onnx') "
               "or (m.startswith('vitexport.cli.') and m not in ('vitexport.cli.app', 'vitexport.cli.info', "
               "'vitexport.cli.options'))))")
    r = subprocess.run([sys.executable, "-c", snippet, str(sample_onnx)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "resampling" in r.stdout and r.stdout.splitlines()[-1] == "LOADED []", r.stdout
