"""The small exception hierarchy users see.

Every error carries a one-line message that names the problem and the fix.
The CLI maps ``exit_code`` to the process exit status: 1 when the work failed
(bad checkpoint, verification mismatch), 2 for usage or environment problems.
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


class OutputExistsError(VitexportError):
    """An output file exists and replacing it was not asked for."""

    exit_code = 2


class VerificationError(VitexportError):
    """Verification could not be carried out (not: a mismatch, which is a report)."""


class EnvironmentProblem(VitexportError):
    """The environment lacks something the request needs (a provider, a package)."""

    exit_code = 2


class InputError(VitexportError):
    """An input image or tensor is unusable (shape, dtype, channels, size)."""
