"""What `vitexport serve` runs, as data: the application's arguments, its Ray Serve deployment options,
and the config file that ``serve deploy`` and a KubeRay RayService (``serveConfigV2``) accept.

One function, `deployment_options`, decides replicas, autoscaling, concurrency and resources; the
local server, ``--address`` and the printed config all use it, so they deploy the same thing.
No Ray import (PyYAML only for `config_yaml`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vitexport._util.errors import EnvironmentProblem
from vitexport._util.extras import install_command
from vitexport.engines import DEFAULT_PROVIDER
from vitexport.security.limits import DEFAULT_MAX_TOKENS
from vitexport.serving.defaults import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_MAX_IMAGES,
    DEFAULT_PORT,
)

IMPORT_PATH = "vitexport.serving.http.app:build_app"
GRPC_SERVICER = "vitexport.serving.grpc.service.add_servicer"  # no import here: tritonclient[grpc] is not light
DEPLOYMENT_NAME = "VitexportModel"
INSTALL_HINT = install_command("serve")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a model name is one path segment of the URLs


def check_model_name(name: str) -> str:
    """``name`` when it can be the model's name in URLs (``/v2/models/NAME``), else `ValueError` saying what can.

    Args:
        name: the model name (`vitexport serve --name`, a Ray config's ``args.name``).
    """
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
        raise ValueError(f"{name!r} cannot be a model name in URLs; use letters, digits, '.', '_', '-'")
    return name


def default_model_name(model_path: str) -> str:
    """The model name when none is given: the file name up to its first dot (``digits-vit.onnx``: ``digits-vit``)."""
    return Path(model_path).name.split(".")[0]


def _arg(default: Any, help_text: str) -> Any:
    """An `AppArgs` field: its default and the help of the `vitexport serve` option that sets it."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class AppArgs:
    """What each replica needs (the config file's ``args``): the model and the service's limits; checked on
    creation (`ValueError`), so a hand-written Ray config is held to what `vitexport serve` checks."""

    model: str
    name: str
    # each field's default and help are `vitexport serve`'s (its --provider, --threads, ... options read them)
    provider: str = _arg(DEFAULT_PROVIDER, "Engine of each replica, as for predict (auto: CUDA when usable, else cpu).")
    threads: int | None = _arg(None, "Engine intra-op threads per replica.")
    max_batch: int = _arg(DEFAULT_MAX_BATCH, "Most images of one size in one engine run, across concurrent requests.")
    batch_wait_ms: float = _arg(DEFAULT_BATCH_WAIT_MS, "How long a batch waits for more requests.")
    max_tokens: int = _arg(DEFAULT_MAX_TOKENS, "Refuse images with more patches than this (also caps the pixels of "
                                               "an encoded image).")
    max_body_mb: float = _arg(DEFAULT_MAX_BODY_MB, "Refuse request bodies (after gzip/deflate) over this size.")
    token_file: str | None = _arg(None, "Require 'Authorization: Bearer <token>' (the file's content) except on "
                                        "/v2/health.")
    max_images: int = _arg(DEFAULT_MAX_IMAGES, "Refuse requests with more images (pixel_values batch or encoded "
                                               "images) than this.")

    def __post_init__(self) -> None:
        check_model_name(self.name)
        numbers = {"max_batch": self.max_batch, "max_tokens": self.max_tokens, "max_images": self.max_images,
                   "max_body_mb": self.max_body_mb, "batch_wait_ms": self.batch_wait_ms}
        for key, value in numbers.items():  # nan passes every comparison, inf every lower bound
            number = isinstance(value, int | float) and not isinstance(value, bool) and (
                isinstance(value, int) or math.isfinite(value))  # math.isfinite(10**5000) is an OverflowError
            if not number or not (value >= 0 if key == "batch_wait_ms" else value > 0):
                got = "a huge integer" if isinstance(value, int) and value.bit_length() > 64 else repr(value)[:40]
                rule = "must be finite and not negative" if key == "batch_wait_ms" else "must be positive and finite"
                raise ValueError(f"{key} {rule}, got {got}; fix it in the config's args")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    def to_args(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> AppArgs:
        known = {f.name for f in fields(cls)}
        if unknown := set(args) - known:
            raise ValueError(f"unknown vitexport serve argument(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**args)


@dataclass(frozen=True)
class Scaling:
    """A fixed replica count, or autoscaling between ``autoscale = (min, max)`` replicas."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        if self.autoscale and not (0 <= self.autoscale[0] <= self.autoscale[1] and self.autoscale[1] >= 1):
            raise ValueError(f"autoscale {self.autoscale}: need 0 <= MIN <= MAX and MAX >= 1")

    @property
    def most(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


@dataclass(frozen=True)
class ServeOptions:
    app: AppArgs
    scaling: Scaling = field(default_factory=Scaling)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    address: str | None = None
    grpc_port: int | None = None  # also serve the protocol over gRPC on this port


def grpc_options(options: ServeOptions) -> dict[str, Any] | None:
    """Ray Serve's gRPC options for ``options.grpc_port`` (the protocol's inference service), or None."""
    if options.grpc_port is None:
        return None
    return {"port": options.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]}


def parse_autoscale(text: str) -> tuple[int, int]:
    """'1:4' -> (1, 4)."""
    lo, sep, hi = text.partition(":")
    try:
        bounds = (int(lo), int(hi)) if sep else None
    except ValueError:
        bounds = None
    if bounds is None or not 0 <= bounds[0] <= bounds[1] or bounds[1] < 1:
        raise ValueError(f"{text!r} is not MIN:MAX replicas; write e.g. 1:4 (0 <= MIN <= MAX, MAX >= 1)")
    return bounds


def with_absolute_paths(options: ServeOptions) -> tuple[ServeOptions, bool]:
    """(options with the model and token paths made absolute where they exist here, whether the model does).

    Replicas run in other folders (or on other machines), so relative paths would not find the files.
    """
    app = options.app
    here = Path(app.model).is_file()
    model = os.path.abspath(app.model) if here else app.model
    token = app.token_file
    if token and os.path.exists(token):
        token = os.path.abspath(token)
    return replace(options, app=replace(app, model=model, token_file=token)), here


def deployment_options(args: AppArgs, scaling: Scaling) -> dict[str, Any]:
    """The Ray Serve options of the model's deployment (for ``Deployment.options`` and the config file)."""
    actor: dict[str, Any] = {"num_cpus": 1}
    if args.provider in ("cuda", "tensorrt"):
        actor["num_gpus"] = 1
    options: dict[str, Any] = {
        # a replica holds one batch running and the next one filling
        "max_ongoing_requests": max(8, 2 * args.max_batch),
        "graceful_shutdown_wait_loop_s": 0.5,
        "graceful_shutdown_timeout_s": 5.0,
        "ray_actor_options": actor,
    }
    if scaling.autoscale:
        lo, hi = scaling.autoscale
        options["autoscaling_config"] = {"min_replicas": lo, "max_replicas": hi, "initial_replicas": max(lo, 1),
                                         "target_ongoing_requests": args.max_batch}
    else:
        options["num_replicas"] = scaling.replicas
    return options


def serve_config(options: ServeOptions) -> dict[str, Any]:
    """The Ray Serve config (``serve deploy``, KubeRay ``serveConfigV2``) of one vitexport application."""
    config: dict[str, Any] = {
        "proxy_location": "EveryNode",
        "http_options": {"host": options.host, "port": options.port},
        **({"grpc_options": grpc} if (grpc := grpc_options(options)) else {}),
        "applications": [{
            "name": options.app.name,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": options.app.to_args(),
            "deployments": [{"name": DEPLOYMENT_NAME, **deployment_options(options.app, options.scaling)}],
        }],
    }
    return config


def config_yaml(options: ServeOptions) -> str:
    try:
        import yaml
    except ImportError as exc:
        raise EnvironmentProblem(f"PyYAML is not installed; {INSTALL_HINT}") from exc
    head = ("# Ray Serve config for `serve deploy` or a KubeRay RayService (spec.serveConfigV2), "
            "written by `vitexport serve --print-config`.\n"
            "# The model file and the token file must exist at these paths on every Ray node.\n")
    return head + yaml.safe_dump(serve_config(options), sort_keys=False)


__all__ = [
    "DEPLOYMENT_NAME", "GRPC_SERVICER", "IMPORT_PATH", "INSTALL_HINT", "MODEL_NAME_RE", "AppArgs", "Scaling",
    "ServeOptions", "check_model_name", "config_yaml", "default_model_name", "deployment_options", "grpc_options",
    "parse_autoscale", "serve_config", "with_absolute_paths",
]
