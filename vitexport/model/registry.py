"""Layers by name: the one place a layer choice (``norm_layer='rmsnorm'``) becomes a class.

The layer modules register each class under a name `vitexport.model.names.LAYERS` declares::

    @register("mlp", "swiglu", "timm.layers.SwiGLU")
    class SwiGLU(nn.Module): ...

and the model builds what its config names with `layer_class`. The classes of one kind share a constructor:

- ``norm``: ``cls(dim, eps)``;
- ``act``: ``cls()``;
- ``mlp``: ``cls(dim, hidden, act_layer, bias, norm_layer)`` (``act_layer`` a name, ``norm_layer`` ``dim -> module``
  or None);
- ``attn`` and ``block``: ``cls(config, depth)`` (the model's `ViTConfig`, the block's index).

The strings after the name say what timm's ``VisionTransformer`` is given for this layer: qualified class names
(``timm.layers.SwiGLU``) or timm's own names for it (``"swish"``); keyword arguments are the values the timm
class must be given (``gate_last=False``). scripts/gen_presets.py translates timm's arguments with them.

Torch-free itself: the classes are registered when `vitexport.model.layers` is imported, which `layer_class`
does first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vitexport.model.names import LAYERS

T = TypeVar("T")
LAYERS_PACKAGE = "vitexport.model.layers"


@dataclass(frozen=True)
class Entry:
    """One registered layer: its class, and what timm is given for it (see the module docstring)."""

    kind: str
    name: str
    cls: type
    timm: tuple[str, ...] = ()
    timm_kwargs: dict[str, Any] = field(default_factory=dict)


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in LAYERS}


def register(kind: str, name: str, *timm: str, **timm_kwargs: Any) -> Callable[[T], T]:
    """Class decorator (or a call on a torch class): ``cls`` is the layer ``name`` of ``kind``.

    The name must be declared in `vitexport.model.names.LAYERS` and registered once.
    """
    if kind not in LAYERS or name not in LAYERS[kind]:
        raise ValueError(f"{kind} layer {name!r} is not declared in vitexport.model.names.LAYERS; add it there")

    def add(cls: T) -> T:
        if name in _ENTRIES[kind]:
            raise ValueError(f"{kind} layer {name!r} is registered twice ({_ENTRIES[kind][name].cls.__qualname__}, "
                             f"{getattr(cls, '__qualname__', cls)})")
        _ENTRIES[kind][name] = Entry(kind, name, cls, timm, dict(timm_kwargs))  # type: ignore[arg-type]
        return cls

    return add


def entries(kind: str) -> dict[str, Entry]:
    """Every registered layer of ``kind``, by name, in the order `LAYERS` declares them."""
    importlib.import_module(LAYERS_PACKAGE)  # registers the classes (once; then a dictionary lookup)
    found = _ENTRIES[kind]
    return {name: found[name] for name in LAYERS[kind] if name in found}


def layer_class(kind: str, name: str) -> type:
    """The class registered as ``name``; a `ViTConfig` has checked the name, so a miss is a programming error."""
    found = entries(kind)
    if name not in found:
        raise ValueError(f"unknown {kind} layer {name!r}; expected one of {', '.join(map(repr, LAYERS[kind]))}")
    return found[name].cls


def build(kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """An instance of the layer ``name``: ``layer_class(kind, name)(*args, **kwargs)`` (constructors above)."""
    return layer_class(kind, name)(*args, **kwargs)


__all__ = ["Entry", "build", "entries", "layer_class", "register"]
