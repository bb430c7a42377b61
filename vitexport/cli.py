"""The `vitexport` command line: parse, call one library function, format, map errors.

Library errors become one-line messages here and only here; exit codes follow
DESIGN.md: 0 success, 1 the work failed, 2 usage or environment.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import click

from vitexport import __version__
from vitexport.errors import VitexportError

SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


class CliError(click.ClickException):
    """A one-line error with the exit code of the library error behind it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class VitexportGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VitexportError as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(str(exc), exc.exit_code) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except MemoryError as exc:
            raise CliError("out of memory; use smaller inputs or batch sizes", 1) from exc
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            text = " ".join(str(exc).split())[:300]
            raise CliError(
                f"unexpected {type(exc).__name__}: {text}; rerun with --debug for the traceback and report it", 1
            ) from exc


def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '200x333' -> (200, 333)."""
    m = SIZE_RE.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size; write HxW, e.g. 224x224 or 200x333")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if h < 1 or w < 1:
        raise click.BadParameter(f"{text!r}: height and width must be at least 1")
    return h, w


class SizeType(click.ParamType):
    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_size(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


SIZE = SizeType()


@click.group(cls=VitexportGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vitexport")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Export dynamic-pad Vision Transformers to ONNX/TorchScript, verify and serve them."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Library warnings (e.g. an assumed head count) reach the user; third-party chatter does not.
    logging.getLogger("vitexport").setLevel(level)
    ctx.obj = {"debug": debug}


# ---------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------
def _fmt_hw(hw: Any) -> str:
    return f"{hw[0]}x{hw[1]}"


def _checkpoint_info(path: str, config: str | None, use_ema: bool, sizes: tuple[tuple[int, int], ...]) -> dict:
    from vitexport.checkpoint import check_state_dict, describe_checkpoint, read_checkpoint
    from vitexport.model import VisionTransformer, count_parameters, infer_grid

    ckpt = read_checkpoint(path, config=config, use_ema=use_ema)
    model = VisionTransformer(ckpt.config)
    check_state_dict(model, ckpt.state_dict, repr(str(ckpt.path)))
    cfg = ckpt.config
    info = describe_checkpoint(ckpt)
    info.update(
        kind="checkpoint",
        config=cfg.to_dict(),
        parameters=count_parameters(model),
        patch_size=list(cfg.patch_hw),
        native_grid=list(cfg.grid_size),
        prefix_tokens={"class": int(cfg.class_token), "registers": cfg.reg_tokens, "total": cfg.num_prefix_tokens},
        pos_embed_rows=int(ckpt.state_dict["pos_embed"].shape[1]),
        sizes=[infer_grid(model, h, w) for h, w in sizes],
    )
    return info


def _print_checkpoint_info(info: dict) -> None:
    cfg = info["config"]
    prefix = info["prefix_tokens"]
    click.echo(f"checkpoint     {info['path']}")
    click.echo(f"format         {info['format']} (config from {info['config_source']})")
    click.echo(f"sha256         {info['sha256']}")
    if cfg.get("architecture"):
        click.echo(f"architecture   {cfg['architecture']}")
    click.echo(f"parameters     {info['parameters']:,}")
    img = cfg["img_size"] if isinstance(cfg["img_size"], list) else [cfg["img_size"]] * 2
    click.echo(
        f"native size    {_fmt_hw(img)}, patch {_fmt_hw(info['patch_size'])}, grid {_fmt_hw(info['native_grid'])}"
    )
    click.echo(
        f"prefix tokens  {prefix['total']} (class token: {'yes' if prefix['class'] else 'no'}, "
        f"registers: {prefix['registers']}); pos_embed rows: {info['pos_embed_rows']}"
    )
    click.echo(
        f"dynamic        img_size={cfg['dynamic_img_size']}, img_pad={cfg['dynamic_img_pad']}"
    )
    if info.get("preprocess"):
        p = info["preprocess"]
        click.echo(f"preprocess     scale {p.get('scale')}, mean {p.get('mean')}, std {p.get('std')}")
    if info.get("labels"):
        labels = info["labels"]
        shown = ", ".join(labels[:10]) + (f", ... ({len(labels)})" if len(labels) > 10 else "")
        click.echo(f"labels         {shown}")
    for note in info.get("notes", []):
        click.echo(f"note           {note}")
    click.echo("config         " + json.dumps({k: v for k, v in cfg.items() if k != "architecture"}))
    for s in info["sizes"]:
        click.echo(
            f"size {_fmt_hw(s['input_size'])}: padded {_fmt_hw(s['padded_size'])}, grid {_fmt_hw(s['grid'])}, "
            f"{s['num_patches']} patches, sequence length {s['seq_len']} "
            f"(pos-embed resampled {_fmt_hw(s['resampled_from'])} -> {_fmt_hw(s['grid'])})"
        )


@cli.command()
@click.argument("model_path", metavar="CHECKPOINT|MODEL", type=click.Path(dir_okay=True, path_type=str))
@click.option("--config", "config", type=str, help="JSON file of timm keyword arguments (or a timm config.json).")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--size", "sizes", type=SIZE, multiple=True, help="Show padding, grid and sequence length for HxW.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(model_path: str, config: str | None, use_ema: bool, sizes: tuple, as_json: bool) -> None:
    """Describe a checkpoint or an exported model."""
    data = _checkpoint_info(model_path, config, use_ema, sizes)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _print_checkpoint_info(data)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON.")
def presets(as_json: bool) -> None:
    """List the named architectures a checkpoint's `arch` or a config's `architecture` may use."""
    from vitexport.presets import PRESETS

    if as_json:
        click.echo(json.dumps(PRESETS, indent=2))
        return
    for name, args in PRESETS.items():
        img = args["img_size"]
        click.echo(
            f"{name:40s} img {img if isinstance(img, int) else _fmt_hw(img)}  patch {args['patch_size']}  "
            f"dim {args['embed_dim']}  depth {args['depth']}  heads {args['num_heads']}  "
            f"registers {args['reg_tokens']}  pool {args['global_pool'] or 'none'}"
        )


def main() -> None:
    cli(prog_name="vitexport")


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["cli", "main", "parse_size"]
