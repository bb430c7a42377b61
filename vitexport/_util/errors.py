"""The small exception hierarchy users see.

Every error carries a one-line message that names the problem and the fix.
The CLI maps ``exit_code`` to the process exit status (README, "Exit codes"): 1 when the work failed
(a file whose contents are unusable, an export or verification that failed), 2 for usage or environment
problems found before any work (a bad option, an input path that does not exist or cannot be opened, a file
of another kind, an output in the way, a missing package or provider, a request over the work limits).
"""

from __future__ import annotations


class VitexportError(Exception):
    """Base class of every error vitexport raises on purpose."""

    exit_code = 1


class CheckpointError(VitexportError):
    """A checkpoint (or exported model) could not be read or does not fit the config."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would need to execute code to load; it is refused."""


class ConfigError(VitexportError):
    """A model configuration is invalid, inconsistent or cannot be inferred."""


class ExportError(VitexportError):
    """An export failed or produced a graph that failed its checks."""


class OutputError(VitexportError):
    """An output cannot be written where it was asked for (missing or unwritable folder)."""


class OutputPathError(OutputError):
    """An output's folder does not exist (or is a file): usage, found before any work."""

    exit_code = 2


class OutputExistsError(OutputError):
    """An output file exists and replacing it was not asked for (or the path is a directory)."""

    exit_code = 2


class FileKindError(VitexportError):
    """A file of another kind than the argument takes (a checkpoint where an exported model goes, an image
    where the model goes, ...); the message names the kind and the command or flag that takes it."""

    exit_code = 2


class InputPathError(VitexportError):
    """An input path that does not exist or cannot be opened: missing, a directory where a file goes, not a
    regular file, no permission (usage, exit 2). The stages raise it as their own error class too
    (`CheckpointPathError`, ...), so ``except CheckpointError`` still catches a missing checkpoint."""

    exit_code = 2


class UsageError(VitexportError):
    """A request that cannot work as given: an argument out of its range, a missing option it needs (the CLI's
    usage errors, for Python callers); the message names the option."""

    exit_code = 2


class VerificationError(VitexportError):
    """Verification could not be carried out (not: a mismatch, which is a report)."""


class EnvironmentProblem(VitexportError):
    """The environment lacks something the request needs (a provider, a package)."""

    exit_code = 2


class EngineUnavailable(EnvironmentProblem):
    """An engine (or execution provider) cannot run here; ``reason`` says why, without the advice."""

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(f"{reason}; {advice}" if advice else reason)
        self.reason = reason


class LimitError(VitexportError):
    """A request needs more tokens or memory than allowed; the message names the option that raises the limit."""

    exit_code = 2


class IsolationError(VitexportError):
    """Work on an untrusted file crashed, hung or ran out of memory in its child process."""


class InputError(VitexportError):
    """An input image or tensor is unusable (shape, dtype, channels, size)."""


class EngineError(VitexportError):
    """An inference engine could not load or run a model (for verify and serving alike)."""


class ServingError(VitexportError):
    """The serving path (`Predictor`) cannot use a model: missing file, no vitexport metadata."""


class ExportOptionError(ExportError, UsageError):
    """Export options out of range or that cannot work together (an opset below 18, ...): usage, exit 2."""


class CheckpointPathError(InputPathError, CheckpointError):
    """A checkpoint or exported model path that does not exist or cannot be opened."""


class ConfigPathError(InputPathError, ConfigError):
    """A ``--config`` file that does not exist or cannot be opened."""


class ImagePathError(InputPathError, InputError):
    """An image path that does not exist or cannot be opened."""


class ServingPathError(InputPathError, ServingError):
    """A model (or token) file given to the serving path that does not exist or cannot be opened."""


def one_line(exc: BaseException | str, limit: int = 300, kind: bool = False) -> str:
    """An exception (or its text) as one line of at most ``limit`` characters, whitespace folded.

    ``kind=True`` prefixes the exception's class name (``RuntimeError: ...``).
    """
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return f"{type(exc).__name__}: {text}" if kind else text
