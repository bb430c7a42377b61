"""`ViTConfig` (timm keyword names) and named presets.

A config is a frozen dataclass whose field names and defaults are timm's
``VisionTransformer`` keyword arguments, except that models built by vitexport
default to ``dynamic_img_size=True, dynamic_img_pad=True``. Layer choices that timm
takes as classes are names here (``norm_layer='rmsnorm'``, ``block_fn='res_post'``),
and the norms' eps, which timm bakes into a ``partial``, are the fields ``norm_eps``
and ``embed_norm_eps``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vitexport._util.errors import ConfigError, ConfigPathError
from vitexport._util.safejson import MAX_JSON_BYTES, parse_json
from vitexport.model.names import (  # noqa: F401 - re-exported
    DEFAULT_RESAMPLE,
    DIFFERENTIAL,
    FUSED,
    LAYER_FIELDS,
    MODEL_CLASSES,
    PACKED,
    RESAMPLE_FORMS,
    ROTARY,
    has_trait,
    layer_names,
    vit_layer_names,
)

logger = logging.getLogger(__name__)


def _tables() -> tuple[dict[str, Any], dict[str, Any]]:
    """The generated preset tables (`vitexport.model.presets`, `vitexport.model.family_presets`), imported on first
    use: 17 ms of `vitexport info`'s startup otherwise, which reads a config but names no preset."""
    from vitexport.model.family_presets import FAMILY_PRESETS
    from vitexport.model.presets import PRESETS

    return PRESETS, FAMILY_PRESETS


def __getattr__(name: str) -> Any:
    """``PRESETS`` and ``FAMILY_PRESETS``, re-exported lazily (`_tables`)."""
    if name in ("PRESETS", "FAMILY_PRESETS"):
        return _tables()[name == "FAMILY_PRESETS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

GLOBAL_POOLS = ("token", "avg", "max", "avgmax", "map", "")
# Layer choices are names (timm passes classes), declared in vitexport.model.names.LAYERS and registered by the
# classes of vitexport.model.layers; these fields are the options of those layers. Together (`LAYER_OPTIONS`)
# they are left out of `to_dict` at their defaults, and they define a configuration family.
LAYER_ARGS = ("norm_eps", "embed_norm_eps", "scale_attn_norm", "scale_mlp_norm", "proj_bias")
# timm keyword arguments vitexport accepts only at timm's default (the value it builds);
# any other value is refused by name rather than built approximately.
DEFAULT_ONLY_KEYS: dict[str, tuple[Any, ...]] = {
    "pos_embed": ("learn",),
    "pool_include_prefix": (False,),
}

# timm keyword arguments that only matter for training (dropout, init); they are
# accepted and dropped because an inference graph does not depend on them.
TRAINING_ONLY_KEYS = frozenset(
    {
        "drop_rate",
        "pos_drop_rate",
        "patch_drop_rate",
        "proj_drop_rate",
        "attn_drop_rate",
        "drop_path_rate",
        "weight_init",
        "fix_init",
    }
)


# Integer options above this are refused as they are parsed (torch sizes are int64; no real ViT comes close).
MAX_INT_OPTION = 2**31 - 1
BOOL_FIELDS = (
    "qkv_bias", "qk_norm", "class_token", "no_embed_class", "pre_norm", "final_norm", "dynamic_img_size",
    "dynamic_img_pad", "scale_attn_norm", "scale_mlp_norm", "proj_bias",
)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an int or (height, width), got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{name} must be an int or (height, width), got {value!r}")
    if min(pair) < 1 or max(pair) > MAX_INT_OPTION:
        raise ConfigError(f"{name} must be positive (at most {MAX_INT_OPTION:,}), got {value!r}")
    return pair


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_INT_OPTION:
        kind = "positive" if low else "non-negative"
        raise ConfigError(f"{name} must be a {kind} integer (at most {MAX_INT_OPTION:,}), got {value!r}")


def _check_flags(config: Any, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Booleans that are booleans (JSON "false" is a string), and the ones that may also be null."""
    for name in names + optional:
        value = getattr(config, name)
        if not isinstance(value, bool) and not (name in optional and value is None):
            allowed = "true, false or null" if name in optional else "true or false"
            raise ConfigError(f"{name} must be {allowed}, got {value!r}")


def _check_eps(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{name} must be a small positive number (e.g. 1e-6), got {value!r}")


def _check_options(data: dict[str, Any], known: set[str], accepted: set[str] | frozenset[str], config_name: str,
                   default_only: dict[str, tuple[Any, ...]], model_class: str = "") -> None:
    """Refuse, by name, the options of a ``from_dict`` argument that are not ``accepted`` (with the closest field
    of ``known``), and those that vitexport builds only at timm's default (``default_only``)."""
    unknown = [k for k in data if k not in accepted]
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(k, sorted(known), n=1))
                             else "") for k in unknown]
        raise ConfigError("unsupported model option " + ", ".join(hints) + f"; {config_name} supports: "
                          + ", ".join(sorted(known - {"architecture"})))
    where = f" for {model_class}" if model_class else ""
    for key, allowed in default_only.items():
        if key in data and data[key] not in allowed:
            raise ConfigError(f"{key}={data[key]!r} is not supported by vitexport{where} (only {allowed[0]!r}, "
                              "timm's default); this model cannot be exported exactly")


def _tuples(args: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``args`` with the JSON lists of ``keys`` as tuples (a frozen config holds tuples)."""
    return {k: tuple(v) if k in keys and isinstance(v, list) else v for k, v in args.items()}


class Geometry:
    """The geometry every config class answers from ``img_size`` and ``patch_size``."""

    @property
    def img_hw(self) -> tuple[int, int]:
        return _pair(self.img_size, "img_size")  # type: ignore[attr-defined]

    @property
    def patch_hw(self) -> tuple[int, int]:
        return _pair(self.patch_size, "patch_size")  # type: ignore[attr-defined]

    @property
    def grid_size(self) -> tuple[int, int]:
        """The native positional-embedding grid: ``img_size // patch_size`` (floor), as timm."""
        (h, w), (ph, pw) = self.img_hw, self.patch_hw
        return h // ph, w // pw


@dataclass(frozen=True)
class ImageArgs(Geometry):
    """The keyword arguments timm's ``VisionTransformer`` and ``Eva`` open with, in timm's order, with the ViT's
    defaults (a class with another default declares the field again; it keeps its place)."""

    img_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    in_chans: int = 3
    num_classes: int = 1000
    global_pool: str = "token"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12


@dataclass(frozen=True)
class ViTConfig(ImageArgs):
    """Architecture of a dynamic-pad Vision Transformer, in timm's keyword names (the first ones: `ImageArgs`)."""

    CLASS: ClassVar[str] = "vit"  # the model class (`vitexport.model.names.MODEL_CLASSES`)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_norm: bool = False
    init_values: float | None = None
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    pre_norm: bool = False
    final_norm: bool = True
    fc_norm: bool | None = None
    dynamic_img_size: bool = True
    dynamic_img_pad: bool = True
    # Layer choices (timm's keyword names; names instead of classes). Defaults build timm's defaults.
    norm_layer: str = "layernorm"
    norm_eps: float = 1e-6  # not a timm argument: timm's norm_layer=partial(LayerNorm, eps=...)
    embed_norm_layer: str | None = None
    embed_norm_eps: float = 1e-6  # not a timm argument, as norm_eps
    act_layer: str = "gelu"
    mlp_layer: str = "mlp"
    block_fn: str = "block"
    attn_layer: str = "attn"
    scale_attn_norm: bool = False
    scale_mlp_norm: bool = False
    proj_bias: bool = True
    # Not a timm argument: the timm architecture name this config came from, if any.
    architecture: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        img = _pair(self.img_size, "img_size")
        patch = _pair(self.patch_size, "patch_size")
        # Normalise to timm's spelling: an int when square, a tuple otherwise.
        object.__setattr__(self, "img_size", img[0] if img[0] == img[1] else img)
        object.__setattr__(self, "patch_size", patch[0] if patch[0] == patch[1] else patch)
        self._check_scalars()
        if self.global_pool not in GLOBAL_POOLS:
            raise ConfigError(
                f"global_pool {self.global_pool!r} is not supported; use one of "
                + ", ".join(repr(p) for p in GLOBAL_POOLS)
            )
        if self.global_pool == "token" and not self.class_token:
            raise ConfigError(
                "global_pool='token' needs class_token=True; set global_pool='avg' or enable the class token"
            )
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if not _finite(self.mlp_ratio) or self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be a positive finite number (timm's default 4.0), "
                              f"got {self.mlp_ratio!r}")
        hidden = self.mlp_hidden
        if not 1 <= hidden <= MAX_INT_OPTION:
            raise ConfigError(f"mlp_ratio {self.mlp_ratio} gives an MLP of width {hidden:,} for embed_dim "
                              f"{self.embed_dim}; use a ratio such as 4.0")
        if self.init_values is not None and not _finite(self.init_values):
            raise ConfigError(f"init_values must be a finite number or null, got {self.init_values!r}")
        self._check_layers()
        ph, pw = patch
        if img[0] // ph < 1 or img[1] // pw < 1:
            raise ConfigError(
                f"img_size {img} is smaller than one patch {patch}: the positional-embedding grid would be empty"
            )

    def _check_scalars(self) -> None:
        """Integer sizes within range, flags that are booleans (JSON "false" is a string, not False)."""
        for name, low in (("in_chans", 1), ("embed_dim", 1), ("depth", 1), ("num_heads", 1), ("num_classes", 0),
                          ("reg_tokens", 0)):
            _check_int(name, getattr(self, name), low)
        _check_flags(self, BOOL_FIELDS, optional=("fc_norm",))

    def _check_layers(self) -> None:
        """Layer choices: registered names (`vitexport.model.names.LAYERS`), and the combinations timm itself
        builds (or asserts)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, kind in LAYER_FIELDS.items():
            value, choices = getattr(self, name), vit_layer_names(kind)
            if value not in choices and not (value is None and defaults[name] is None):
                null = "null or " if defaults[name] is None else ""
                eva = (" by a plain ViT (a layer of timm's Eva: use an eva.py architecture)"
                       if has_trait(kind, value if isinstance(value, str) else None, ROTARY) else "")
                raise ConfigError(f"{name} {value!r} is not supported{eva}; use {null}one of "
                                  + ", ".join(map(repr, choices)))
        for name in ("norm_eps", "embed_norm_eps"):
            _check_eps(name, getattr(self, name))
        if has_trait("block", self.block_fn, FUSED):
            if self.scale_attn_norm or self.scale_mlp_norm:
                raise ConfigError(f"block_fn={self.block_fn!r} has no scale_attn_norm/scale_mlp_norm (timm asserts)")
            if (self.mlp_layer, self.attn_layer) != (defaults["mlp_layer"], defaults["attn_layer"]):
                raise ConfigError(
                    f"block_fn={self.block_fn!r} has its own fused MLP and attention (timm ignores mlp_layer and "
                    f"attn_layer there); leave them at {defaults['mlp_layer']!r} and {defaults['attn_layer']!r}"
                )
        if has_trait("mlp", self.mlp_layer, PACKED) and self.mlp_hidden % 2:
            raise ConfigError(
                f"mlp_layer={self.mlp_layer!r} needs an even hidden width; int(embed_dim * mlp_ratio) = "
                f"{self.mlp_hidden}"
            )
        if self.differential and self.embed_dim % (2 * self.num_heads):
            raise ConfigError(
                f"differential attention needs embed_dim ({self.embed_dim}) divisible by 2 * num_heads "
                f"({2 * self.num_heads})"
            )

    @property
    def differential(self) -> bool:
        """Differential attention, in the attention layer or in the block."""
        return has_trait("attn", self.attn_layer, DIFFERENTIAL) or has_trait("block", self.block_fn, DIFFERENTIAL)

    @property
    def mlp_hidden(self) -> int:
        """The MLP's hidden width, ``int(embed_dim * mlp_ratio)`` as timm sizes it."""
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool in ("avg", "avgmax", "max") if self.fc_norm is None else self.fc_norm

    @property
    def num_features(self) -> int:
        return self.embed_dim

    @property
    def has_pos_table(self) -> bool:
        """An absolute positional table (resampled to the input's grid when dynamic_img_size): always for a ViT."""
        return True

    @property
    def rotary(self) -> bool:
        """Rotary embeddings computed from the input's grid: never in a plain ViT (`EvaConfig`)."""
        return False

    def replace(self, **changes: Any) -> ViTConfig:
        return dataclasses.replace(self, **changes)

    # ---- serialisation ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of timm keyword arguments (plus ``architecture`` when known).

        Layer-choice fields are left out when they hold the default and `from_dict` would
        restore the default (no preset says otherwise), so the config of a plain ViT reads
        exactly as it did before those fields existed.
        """
        preset = _preset_or_empty(self.architecture)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if f.name == "architecture" and value is None:
                continue
            if f.name in LAYER_OPTIONS and value == f.default == preset.get(f.name, f.default):
                continue
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        """Build a config from timm keyword arguments; ``architecture`` picks a preset first."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"a model config must be a JSON object of timm keyword arguments, got {type(data).__name__}"
            )
        data = dict(data)
        arch = data.pop("architecture", None) or data.pop("arch", None)
        declared = data.pop("model_class", "vit")
        base: dict[str, Any] = {}
        if arch:
            kind, base = preset_entry(arch)
            declared = kind if declared == "vit" else declared
        if declared != "vit":
            name = f"{arch!r} is" if arch else "this config is"
            raise ConfigError(f"{name} timm's {MODEL_CLASSES.get(declared, declared)}, not a plain ViT; build it with "
                              "vitexport.get_preset / vitexport.create_model (any class), not ViTConfig")
        known = {f.name for f in dataclasses.fields(cls)}
        _check_options(data, known, known | TRAINING_ONLY_KEYS | set(DEFAULT_ONLY_KEYS), "vitexport", DEFAULT_ONLY_KEYS)
        for key in DEFAULT_WHEN_EMPTY:  # timm: None (or '' for attn_layer) means its default layer
            if key in data and data[key] in (None, ""):
                data.pop(key)
        dropped = sorted(k for k in data if k in TRAINING_ONLY_KEYS)
        if dropped:
            logger.debug("ignoring training-only options: %s", ", ".join(dropped))
        base.update({k: v for k, v in data.items() if k in known})
        try:
            return cls(architecture=arch, **_tuples(base, ("img_size", "patch_size")))
        except TypeError as exc:  # pragma: no cover - guarded by the key check above
            raise ConfigError(f"invalid model config: {exc}") from exc


# The layer names and the layer options, in field order; the layer names whose timm None means timm's default.
LAYER_OPTIONS = tuple(f.name for f in dataclasses.fields(ViTConfig) if f.name in LAYER_FIELDS or f.name in LAYER_ARGS)
DEFAULT_WHEN_EMPTY = tuple(f.name for f in dataclasses.fields(ViTConfig) if f.name in LAYER_FIELDS and f.default)


def _preset_or_empty(name: str | None) -> dict[str, Any]:
    try:
        return preset_args(name) if name else {}
    except ConfigError:
        return {}


def preset_key(name: str) -> str:
    """The entrypoint a name stands for: ``"timm/vit_base_patch16_224.augreg_in21k"`` -> ``vit_base_patch16_224``."""
    return name.split("/")[-1].split(".")[0]


def preset_entry(name: str) -> tuple[str, dict[str, Any]]:
    """(model class, timm keyword arguments) of any named architecture: a ``VisionTransformer`` preset
    (`vitexport.model.presets`) or one of eva.py, deit.py, naflexvit.py (`vitexport.model.family_presets`);
    suggests the closest name on a miss."""
    key = preset_key(name)
    PRESETS, FAMILY_PRESETS = _tables()
    if key in PRESETS:
        return "vit", dict(PRESETS[key])
    if key in FAMILY_PRESETS:
        return FAMILY_PRESETS[key]["class"], dict(FAMILY_PRESETS[key]["args"])
    close = difflib.get_close_matches(key, sorted({*PRESETS, *FAMILY_PRESETS}), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"unknown architecture {name!r}; {hint}"
        "pass the model options with --config, or list the known names with `vitexport presets`"
    )


def presets_of_class(kind: str) -> dict[str, dict[str, Any]]:
    """Every preset of model class ``kind`` (`vitexport.model.names.MODEL_CLASSES`) and its timm keyword arguments;
    the plain ViTs include deit.py's plain DeiTs."""
    PRESETS, FAMILY_PRESETS = _tables()
    found = {name: dict(entry["args"]) for name, entry in FAMILY_PRESETS.items() if entry["class"] == kind}
    return {**({k: dict(v) for k, v in PRESETS.items()} if kind == "vit" else {}), **found}


def preset_args(name: str) -> dict[str, Any]:
    """The timm keyword arguments of a named architecture of any class (`preset_entry`)."""
    return preset_entry(name)[1]


def get_preset(name: str, **overrides: Any) -> Any:
    """A named preset's config, of its model's class (`ViTConfig`, or a config of
    `vitexport.model.family_config`), with optional keyword overrides (timm's ``model_args``)."""
    from vitexport.model.family_config import config_from_dict

    return config_from_dict({"architecture": name, **overrides})


def load_config_arg(config: dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    """Accept a dict of timm keyword arguments, a path to a JSON file of them, or the JSON object itself
    (a string starting with ``{``: ``--config '{"architecture": "vit_base_patch16_224"}'``)."""
    if config is None or isinstance(config, dict):
        return config
    if isinstance(config, str) and config.lstrip().startswith("{"):
        try:
            data = parse_json(config.encode("utf-8")[: MAX_JSON_BYTES + 1])
        except ValueError as exc:
            raise ConfigError(f"--config (inline JSON) is {exc}; fix it, or pass a JSON file") from exc
        if not isinstance(data, dict):
            raise ConfigError("--config must be a JSON object of timm keyword arguments")
        return data
    path = Path(config)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ConfigPathError(f"config file {str(path)!r} {what}; pass a JSON file of timm keyword arguments")
    try:
        with open(path, "rb") as fh:
            data = parse_json(fh.read(MAX_JSON_BYTES + 1))
    except OSError as exc:
        raise ConfigPathError(f"config file {str(path)!r} cannot be read ({exc.strerror}); check the path") from exc
    except ValueError as exc:
        raise ConfigError(f"config file {str(path)!r} is {exc}; fix the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a JSON object of timm keyword arguments")
    return data
