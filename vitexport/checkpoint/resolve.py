"""Where a checkpoint's model config comes from, first match wins: a release format's own statement completed by
``--config`` (`vitexport.checkpoint.release`); a ``--config`` that names an architecture, states the width or is a
hub ``config.json`` (the whole config); then, completed by a ``--config`` of other options (its options win), the
config a vitexport checkpoint carries, a timm training checkpoint's ``arch`` (its preset, with the
``--model-kwargs`` and ``--gp`` of its saved ``args``, corrected by the weights' shapes), a hub ``config.json``
beside the weights, or inference from the shapes alone (`vitexport.checkpoint.infer`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vitexport._util.errors import ConfigError
from vitexport.checkpoint.formats import Contents
from vitexport.checkpoint.hub import hub_config, is_hub_layout
from vitexport.checkpoint.infer import infer_config_args, merge_shape_facts
from vitexport.model.config import ViTConfig, load_config_arg, preset_args
from vitexport.model.family_config import config_from_dict

# Options that make a --config the whole config (it replaces what the file says instead of completing it).
WHOLE_CONFIG = frozenset({"architecture", "arch", "model_class", "embed_dim"})


def _train_model_kwargs(train_args: Any) -> dict[str, Any]:
    """What timm's train.py passed to create_model besides ``arch``: ``--model-kwargs`` and ``--gp``."""
    if not isinstance(train_args, argparse.Namespace):
        return {}
    kwargs = getattr(train_args, "model_kwargs", None)
    out = dict(kwargs) if isinstance(kwargs, dict) else {}
    if isinstance(getattr(train_args, "gp", None), str):
        out["global_pool"] = train_args.gp
    return out


def _beside(file: Path) -> dict[str, Any] | None:
    """The ``config.json`` beside the weights, unless it is a transformers config (those weights were converted
    by `vitexport.checkpoint.release`; a timm state dict beside one is read from its shapes)."""
    from vitexport.checkpoint.foreign.hf import is_transformers_config

    if not (file.parent / "config.json").is_file():
        return None
    data = load_config_arg(str(file.parent / "config.json"))
    return None if is_transformers_config(data) else data


def resolve_config(found: Contents, file: Path, explicit: dict[str, Any] | None, path: str | None = None
                   ) -> list[str]:
    """Fill ``found.args``/``source`` (and preprocess/labels) from the release format, --config, arch, config.json
    or the shapes; the notes on what shape inference guessed. ``path``: the checkpoint as the user named it.

    A ``--config`` that names an architecture, states the width (``embed_dim``: a whole config of timm keyword
    arguments, whose omitted options are timm's defaults) or is a hub config.json replaces what the file says;
    one of other options completes it: the file's own config, its ``arch``, the config.json beside it or what the
    shapes show, with the options given winning (and, for shape inference, never guessed or refused)."""
    if found.release is not None:
        from vitexport.checkpoint.release import release_config

        release_config(found, explicit, path or str(file))
        return []
    if explicit is not None and (is_hub_layout(explicit) or WHOLE_CONFIG & set(explicit)):
        if is_hub_layout(explicit):
            found.args, preprocess_hub, labels_hub = hub_config(explicit)
            found.preprocess, found.labels = preprocess_hub or found.preprocess, labels_hub or found.labels
        else:
            found.args = explicit
        found.source = "--config"
        return []
    if explicit is not None:
        _check_option_names(explicit)
    notes = _from_the_file(found, file, explicit, path or str(file))
    if explicit is not None:
        found.args, found.source = {**found.args, **explicit}, f"{found.source}+--config"
    return notes


def _from_the_file(found: Contents, file: Path, given: dict[str, Any] | None, path: str) -> list[str]:
    """``found.args``/``source`` from what the file says: its own config, ``arch``, config.json or the shapes."""
    if found.source:  # the checkpoint carries its config
        pass
    elif found.arch is not None and (given is None or _is_preset(found.arch)):  # a custom arch: --config says it
        preset = preset_args(found.arch) | _train_model_kwargs(found.train_args) | {"architecture": found.arch}
        found.args, found.source = merge_shape_facts(preset, found.state_dict), "arch"
    elif (data := _beside(file)) is not None:
        found.args, found.preprocess, found.labels = hub_config(data) if is_hub_layout(data) else (data, None, None)
        found.source = "config.json"
    else:
        found.args, notes = infer_config_args(found.state_dict, file=path, given=given)
        found.source = "inferred"
        return notes
    return []


def _check_option_names(options: dict[str, Any]) -> None:
    """An option vitexport does not know is refused first, with the closest name, before the weights are read for
    the rest (its other values are checked with the completed config)."""
    try:
        ViTConfig.from_dict(options)
    except ConfigError as exc:
        if str(exc).startswith("unsupported model option"):
            raise


def _is_preset(name: str) -> bool:
    try:
        preset_args(name)
    except ConfigError:
        return False
    return True


def config_from_args(args: dict[str, Any], where: str) -> Any:
    """The config of any model class (`config_from_dict`), its error prefixed with where the arguments came from."""
    try:
        return config_from_dict(args)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


__all__ = ["config_from_args", "resolve_config"]
