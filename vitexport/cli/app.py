"""The `vitexport` group: global flags, and library errors mapped to one line and an exit code.

Library errors become one-line messages here and only here; exit codes (docs/design.md):
0 success, 1 the work failed, 2 usage or environment.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from vitexport import __version__
from vitexport._util.errors import VitexportError, one_line
from vitexport._util.text import safe_lines, safe_text


def echo(message: Any = "", *, err: bool = False, nl: bool = True, block: bool = False, rewind: bool = False) -> None:
    """Print the CLI's output: one line, every control character in it escaped (`safe_text`: labels, metadata values,
    config names and paths come from files we did not write), so a file cannot set the window title, clear the
    screen, move the cursor or forge a line. ``block``: a document of several lines (YAML, indented JSON) keeps its
    own newlines; ``rewind``: a progress line, written over the previous one."""
    text = "" if message is None else str(message)
    text = safe_lines(text) if block else safe_text(text)
    click.echo("\r" + text if rewind else text, err=err, nl=nl)


def _setup_logging(level_name: str) -> None:
    """Log to stderr at ``level_name``, lines as `echo` prints: the message escaped (`safe_text`); a traceback
    (--debug) is left as it is. (logging is imported here, not at startup: `vitexport --help` never logs.)"""
    import logging

    class SafeFormatter(logging.Formatter):
        def formatMessage(self, record: logging.LogRecord) -> str:
            return safe_text(super().formatMessage(record))

    level = getattr(logging, level_name)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # Library warnings (e.g. an assumed head count) reach the user; third-party chatter does not.
    logging.getLogger("vitexport").setLevel(level)


class CliError(click.ClickException):
    """A one-line error with the exit code of the library error behind it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def format_message(self) -> str:
        return safe_text(self.message)  # "Error: ..." is one line, whatever a file put into the message


# Each command: the module of vitexport.cli that defines it, and its line in `vitexport --help`. The listing is
# printed from here, so `vitexport --help` imports no command's module, and running a command imports only its own
# (startup is part of the interface: `benchmarks/startup_bench.py`). A command missing here cannot be defined.
COMMANDS: dict[str, tuple[str, str]] = {
    "batch": ("batch", "Run a model over a dataset into Parquet shards (resumable)."),
    "bench": ("bench", "Latency and images/s per size and batch, per engine."),
    "info": ("info", "Describe a checkpoint or an exported ONNX/TorchScript model."),
    "onnx": ("export", "Export a checkpoint or preset to ONNX (dynamic batch, H, W)."),
    "predict": ("predict", "Classify images of any size with an exported ONNX model."),
    "presets": ("export", "List the named architectures (timm's model names)."),
    "quantize": ("export", "Quantize an exported model's MatMul weights to int8 (CPU)."),
    "serve": ("serve", "Serve a model over HTTP (Open Inference Protocol) on Ray Serve."),
    "torchscript": ("export", "Export a checkpoint or preset to TorchScript (dynamic shapes)."),
    "triton": ("triton", "Write a Triton model repository for an exported ONNX model."),
    "verify": ("verify", "Prove a runtime matches PyTorch at many resolutions."),
}


class VitexportGroup(click.Group):
    """The command group: commands listed from `COMMANDS` and imported when used; library errors as one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(f"vitexport.cli.{COMMANDS[name][0]}")  # its decorator registers it
        return super().get_command(ctx, name)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        """`click.Group.command`, with the command's line in the listing taken from `COMMANDS`."""
        decorate = super().command(*args, **kwargs)

        def register(fn: Any) -> click.Command:
            cmd = decorate(fn)
            if cmd.name not in COMMANDS:
                self.commands.pop(cmd.name, None)
                raise RuntimeError(f"command {cmd.name!r} is not in vitexport.cli.app.COMMANDS; add it there")
            cmd.short_help = COMMANDS[cmd.name][1]
            return cmd

        return register

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context) -> Any:
        from vitexport._util.interrupt import signals_as_exit

        try:
            with signals_as_exit():  # Ctrl-C, SIGTERM, SIGHUP: staging folders removed, one line, exit 128 + N
                return super().invoke(ctx)
        except VitexportError as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(str(exc), exc.exit_code) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ImportError as exc:  # a module of an extra the base install lacks: name the install command
            from vitexport._util.extras import missing_extra

            problem = None if ctx.params.get("debug") else missing_extra(exc, f"`vitexport {ctx.invoked_subcommand}`")
            if problem is None:
                raise
            raise CliError(str(problem), problem.exit_code) from exc
        except BrokenPipeError:  # whoever read stdout stopped (`vitexport info m.onnx | head -1`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
            raise SystemExit(141) from None  # 128 + SIGPIPE, as a shell tool killed by the pipe
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(*_map_unexpected(exc)) from exc


def _map_unexpected(exc: Exception) -> tuple[str, int]:
    """(message, exit code) for an exception no library function turned into a VitexportError."""
    from vitexport._util.files import DISK_FULL_ERRNOS

    if isinstance(exc, MemoryError):
        return "out of memory; use smaller inputs or batch sizes (see --max-memory-gb)", 1
    if isinstance(exc, RecursionError):
        return "an input is nested too deeply to process (RecursionError); check the files given", 1
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return f"{seen.strerror or 'no space left on device'}; free some space and run again", 1
        seen = seen.__cause__ or seen.__context__
    return f"unexpected {one_line(exc, kind=True)}; rerun with --debug for the traceback and report it", 1




@click.group(cls=VitexportGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vitexport")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Export dynamic-pad Vision Transformers to ONNX/TorchScript, verify and serve them."""
    _setup_logging("DEBUG" if debug else "INFO" if verbose else "WARNING")
    ctx.obj = {"debug": debug}

