"""`ViTConfig` (timm keyword names) and named presets.

A config is a frozen dataclass whose field names and defaults are timm's
``VisionTransformer`` keyword arguments, except that models built by vitexport
default to ``dynamic_img_size=True, dynamic_img_pad=True``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitexport.errors import ConfigError
from vitexport.presets import PRESETS

logger = logging.getLogger(__name__)

GLOBAL_POOLS = ("token", "avg", "max", "avgmax", "")

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
    if min(pair) < 1:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return pair


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a dynamic-pad Vision Transformer, in timm's keyword names."""

    img_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    in_chans: int = 3
    num_classes: int = 1000
    global_pool: str = "token"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
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
    # Not a timm argument: the timm architecture name this config came from, if any.
    architecture: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        img = _pair(self.img_size, "img_size")
        patch = _pair(self.patch_size, "patch_size")
        # Normalise to timm's spelling: an int when square, a tuple otherwise.
        object.__setattr__(self, "img_size", img[0] if img[0] == img[1] else img)
        object.__setattr__(self, "patch_size", patch[0] if patch[0] == patch[1] else patch)
        for name in ("in_chans", "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("num_classes", "reg_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
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
        if not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        if int(self.embed_dim * self.mlp_ratio) < 1:
            raise ConfigError(f"mlp_ratio {self.mlp_ratio} gives an empty MLP for embed_dim {self.embed_dim}")
        if self.init_values is not None and not isinstance(self.init_values, (int, float)):
            raise ConfigError(f"init_values must be a number or null, got {self.init_values!r}")
        ph, pw = patch
        if img[0] // ph < 1 or img[1] // pw < 1:
            raise ConfigError(
                f"img_size {img} is smaller than one patch {patch}: the positional-embedding grid would be empty"
            )

    # ---- derived geometry -------------------------------------------------
    @property
    def img_hw(self) -> tuple[int, int]:
        return _pair(self.img_size, "img_size")

    @property
    def patch_hw(self) -> tuple[int, int]:
        return _pair(self.patch_size, "patch_size")

    @property
    def grid_size(self) -> tuple[int, int]:
        """The native positional-embedding grid: ``img_size // patch_size`` (floor), as timm."""
        (h, w), (ph, pw) = self.img_hw, self.patch_hw
        return h // ph, w // pw

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool in ("avg", "avgmax", "max") if self.fc_norm is None else self.fc_norm

    @property
    def num_features(self) -> int:
        return self.embed_dim

    def replace(self, **changes: Any) -> ViTConfig:
        return dataclasses.replace(self, **changes)

    # ---- serialisation ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of timm keyword arguments (plus ``architecture`` when known)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if f.name == "architecture" and value is None:
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
        base: dict[str, Any] = dict(preset_args(arch)) if arch else {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in known and k not in TRAINING_ONLY_KEYS]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                "unsupported model option " + ", ".join(hints)
                + "; vitexport supports: " + ", ".join(sorted(known - {"architecture"}))
            )
        dropped = sorted(k for k in data if k in TRAINING_ONLY_KEYS)
        if dropped:
            logger.debug("ignoring training-only options: %s", ", ".join(dropped))
        base.update({k: v for k, v in data.items() if k in known})
        for key in ("img_size", "patch_size"):
            if isinstance(base.get(key), list):
                base[key] = tuple(base[key])
        try:
            return cls(architecture=arch, **base)
        except TypeError as exc:  # pragma: no cover - guarded by the key check above
            raise ConfigError(f"invalid model config: {exc}") from exc


def preset_args(name: str) -> dict[str, Any]:
    """The timm keyword arguments of a named architecture; suggests the closest name on a miss."""
    key = name.split("/")[-1]
    key = key.removeprefix("timm/").split(".")[0]  # "vit_base_patch16_224.augreg_in21k" -> base name
    if key in PRESETS:
        return dict(PRESETS[key])
    close = difflib.get_close_matches(key, sorted(PRESETS), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"unknown architecture {name!r}; {hint}"
        "pass the model options with --config, or list the known names with `vitexport presets`"
    )


def get_preset(name: str, **overrides: Any) -> ViTConfig:
    """A named preset as a `ViTConfig`, with optional keyword overrides (timm's ``model_args``)."""
    return ViTConfig.from_dict({"architecture": name, **overrides})


def load_config_arg(config: dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    """Accept a dict of timm keyword arguments or a path to a JSON file of them."""
    if config is None or isinstance(config, dict):
        return config
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass a JSON file of timm keyword arguments")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid JSON ({exc}); fix the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a JSON object of timm keyword arguments")
    return data
