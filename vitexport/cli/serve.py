"""`vitexport serve`: the Open Inference Protocol on Ray Serve."""

from __future__ import annotations

import sys
import time
from dataclasses import fields
from typing import Any

import click

from vitexport.cli.app import cli, echo
from vitexport.cli.options import ONE_ENGINE, FiniteRange
from vitexport.serving.defaults import DEFAULT_HOST, DEFAULT_PORT
from vitexport.serving.http.config import AppArgs


def app_option(name: str, **kwargs: Any) -> Any:
    """The option that sets `AppArgs`'s field ``name``, with that field's default and help (one place for both)."""
    spec = {f.name: f for f in fields(AppArgs)}[name]
    return click.option(f"--{name.replace('_', '-')}", default=spec.default, show_default=spec.default is not None,
                        help=spec.metadata["help"], **kwargs)


def _print_started(started, options, began: float) -> None:
    app, scaling = options.app, options.scaling
    echo(f"started   in {time.monotonic() - began:.1f} s, ready for requests")
    replicas = (f"{scaling.autoscale[0]}-{scaling.autoscale[1]} replicas (autoscaling)" if scaling.autoscale
                else f"{scaling.replicas} replica{'s' if scaling.replicas > 1 else ''}")
    echo(f"serving   {started.name} ({started.model}) on {started.provider}, {replicas}, "
               f"batches of up to {app.max_batch} images within {app.batch_wait_ms:g} ms")
    if started.provider_note:
        echo(f"note      {started.provider_note}")
    for label, path in (("live", "/v2/health/live"), ("ready", "/v2/health/ready"),
                        ("metadata", f"/v2/models/{started.name}"), ("infer", f"/v2/models/{started.name}/infer")):
        echo(f"{label:9s} {started.url}{path}")
    if started.grpc:
        echo(f"grpc      {started.grpc} (inference.GRPCInferenceService; tritonclient.grpc)")
    echo(f"example   {started.curl_example()}")
    if started.local:
        echo("stop      Ctrl-C or SIGTERM")
    else:
        echo(f"deployed  to the Ray cluster at {options.address}; it keeps running there "
                   f"(remove it with: serve delete {started.name} --address http://HEAD:8265)")
    sys.stdout.flush()


@cli.command("serve")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("--name", help="Model name in the URLs (default: the file's stem).")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the server to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--replicas", type=click.IntRange(min=1), help="Replicas of the model (default 1).")
@click.option("--autoscale", metavar="MIN:MAX", help="Autoscale between MIN and MAX replicas instead of --replicas.")
@app_option("provider", type=click.Choice(ONE_ENGINE))
@app_option("threads", type=click.IntRange(min=1))
@app_option("max_batch", type=click.IntRange(min=1))
@app_option("batch_wait_ms", type=FiniteRange(min=0))
@app_option("max_tokens", type=click.IntRange(min=1))
@app_option("max_body_mb", type=FiniteRange(min=0, min_open=True))
@app_option("max_images", type=click.IntRange(min=1))
@app_option("token_file")
@click.option("--address", help="Deploy to this Ray cluster (e.g. 10.0.0.5:6379, auto) and leave it running there.")
@click.option("--grpc-port", type=click.IntRange(1, 65535),
              help="Also serve the protocol over gRPC (inference.GRPCInferenceService) on this port.")
@click.option("--print-config", type=click.Choice(["ray", "kserve"]), is_flag=False, flag_value="ray",
              help="Print the Ray Serve config (serve deploy, KubeRay), or with 'kserve' a KServe InferenceService "
                   "for the Triton repository of `vitexport triton` (needs --storage-uri), and exit.")
@click.option("--storage-uri", metavar="URI", help="--print-config kserve: where that repository is (s3://, gs://, "
                                                    "pvc://...).")
@click.option("--verbose", is_flag=True, help="Show Ray's own messages here (its warnings, the processes it starts, "
                                             "its shutdown lines) instead of in the log file whose path is printed.")
def serve_cmd(model_path, name, host, port, replicas, autoscale, provider, threads, max_batch, batch_wait_ms,
              max_tokens, max_body_mb, max_images, token_file, address, grpc_port, print_config, storage_uri,
              verbose) -> None:
    """Serve a model over HTTP (Open Inference Protocol / KServe v2) on Ray Serve."""
    import logging

    from vitexport.serving.http.config import (
        Scaling,
        ServeOptions,
        check_model_name,
        config_yaml,
        default_model_name,
        parse_autoscale,
        with_absolute_paths,
    )
    from vitexport.serving.http.launch import deploy_to_cluster, ray_modules, serve_local

    began = time.monotonic()
    try:
        name = check_model_name(name or default_model_name(model_path))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    if replicas and autoscale:
        raise click.BadParameter("pass --replicas or --autoscale, not both", param_hint="--autoscale")
    try:
        bounds = parse_autoscale(autoscale) if autoscale else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--autoscale") from None
    if grpc_port is not None and grpc_port == port:
        raise click.BadParameter(f"--grpc-port must differ from --port ({port})", param_hint="--grpc-port")
    if (print_config == "kserve") != (storage_uri is not None):
        raise click.BadParameter("--storage-uri goes with --print-config kserve (where the Triton repository is)",
                                 param_hint="--storage-uri")
    app = AppArgs(model_path, name, provider, threads, max_batch, batch_wait_ms, max_tokens, max_body_mb, token_file,
                  max_images)
    options = ServeOptions(app, Scaling(replicas or 1, bounds), host, port, address, grpc_port)
    if print_config == "kserve":
        from vitexport.serving.triton.kserve import kserve_yaml

        echo(kserve_yaml(options, storage_uri), nl=False, block=True)
        return
    if not print_config:  # at once: loading the model and starting Ray take a while
        where = f"the Ray cluster at {address}" if address else "a new local Ray instance (10 s to a minute)"
        echo(f"starting  Ray Serve for {model_path} on {where} ...")
        sys.stdout.flush()
    ray_modules()  # exit 2 with the install command before anything else
    if print_config:
        echo(config_yaml(with_absolute_paths(options)[0]), nl=False, block=True)
        return
    verbose = verbose or logging.getLogger("vitexport").isEnabledFor(logging.INFO)  # also `vitexport -v serve`
    if not verbose:
        for noisy in ("ray", "ray.serve"):  # Ray's progress lines are not for this terminal
            logging.getLogger(noisy).setLevel(logging.WARNING)
    log = None if verbose else ray_log_file()
    echo(f"ray log   {log} (Ray's own messages; --verbose shows them here)" if log else
               "ray log   here (--verbose)")
    sys.stdout.flush()
    run = deploy_to_cluster if address else serve_local
    run(options, lambda started: _print_started(started, options, began), log=log)


def ray_log_file() -> str:
    """Where Ray's own output goes: a new name in the temporary folder, made when Ray starts (`ray_output`; a failed
    start before Ray leaves no file) and kept after the server stops, as a log."""
    import os
    import secrets
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"vitexport-serve-{os.getpid()}-{secrets.token_hex(4)}.log")
