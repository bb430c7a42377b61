"""Which optional part of vitexport a module belongs to, and the exact command that installs it.

``pip install vitexport`` is the serving install (ONNX Runtime, numpy, Pillow, click): `info` on
exported files, `predict`, `bench` and `Predictor`. Building or running a PyTorch model needs the
``export`` extra; the heatmap the ``plot`` extra. A command that reaches a missing module is told
the extra to install instead of a ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib.util

from vitexport._util.errors import EnvironmentProblem

# top-level module -> (extra, what it is)
EXTRA_OF_MODULE: dict[str, tuple[str, str]] = {
    "torch": ("export", "PyTorch"),
    "onnx": ("export", "the onnx package"),
    "onnxscript": ("export", "onnxscript"),
    "onnx_ir": ("export", "onnx-ir"),
    "safetensors": ("export", "safetensors"),
    "matplotlib": ("plot", "matplotlib"),
    "sklearn": ("samples", "scikit-learn"),
    "openvino": ("openvino", "OpenVINO"),
    "ray": ("serve", "Ray Serve"),
    "tritonclient": ("serve", "the Triton client"),
    "pyarrow": ("batch", "pyarrow"),
}
EXTRA_MODULES: dict[str, tuple[str, ...]] = {}
for _module, (_extra, _) in EXTRA_OF_MODULE.items():
    EXTRA_MODULES.setdefault(_extra, ())
    EXTRA_MODULES[_extra] += (_module,)


def install_command(extra: str) -> str:
    """The command that installs an extra: ``pip install 'vitexport[export]'``."""
    return f"pip install 'vitexport[{extra}]'"


def _message(module: str, what: str) -> str:
    extra, name = EXTRA_OF_MODULE[module]
    base = " (the base install only runs exported ONNX models)" if extra == "export" else ""
    return f"{what} needs {name}, which is not installed here{base}; install it with: {install_command(extra)}"


def missing_extra(exc: ImportError, what: str) -> EnvironmentProblem | None:
    """The error to show for an ImportError of a module that an extra installs; None for any other module."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return EnvironmentProblem(_message(name, what)) if name in EXTRA_OF_MODULE else None


def require_extra(extra: str, what: str) -> None:
    """Raise `EnvironmentProblem` (exit 2) naming the install command when a module of ``extra`` is missing.

    Checked by `importlib.util.find_spec`, without importing anything."""
    for module in EXTRA_MODULES[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # an import hook refused it
            found = False
        if not found:
            raise EnvironmentProblem(_message(module, what))


__all__ = ["EXTRA_MODULES", "EXTRA_OF_MODULE", "install_command", "missing_extra", "require_extra"]
