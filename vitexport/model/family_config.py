"""Configs of timm's other dynamic-size ViT classes, in timm's keyword names (torch-free).

- `EvaConfig`: timm's ``Eva`` (eva.py): EVA, EVA-02 (and EVA-02 CLIP), DINOv3, Perception Encoder
  (core, lang, spatial), RoPE-ViT (axial, mixed, with and without an absolute table), timm's SBB
  RoPE ViTs, LingBot-Vision, Sapiens2;
- `DistilledConfig`: timm's ``VisionTransformerDistilled`` (deit.py, the distilled DeiTs): a `ViTConfig`
  whose model adds a distillation token and a second head;
- `NaFlexConfig`: timm's ``NaFlexVit`` (naflexvit.py) on NCHW images: NaFlexViT, SigLIP2-NaFlex, C-RADIO.

Field names and defaults are timm's, except that models built by vitexport are dynamic
(``dynamic_img_size=True, dynamic_img_pad=True``). Norm layers, which timm takes as classes (often a
``partial`` carrying the eps), are a name and ``norm_eps`` here, as in `ViTConfig`. timm options that
only matter for training are accepted and dropped; options vitexport cannot build exactly are refused
by name. ``architecture`` picks a preset of `vitexport.model.family_presets` first.

Every config class (`ViTConfig` too) answers what the other stages ask of a model without building it (the
geometry, limits, export and verify read only these): ``CLASS`` (the ``model_class`` its dict records),
``img_hw``, ``patch_hw``, ``grid_size`` (the native grid: the absolute table's, NaFlexViT's table grid),
``num_prefix_tokens``, ``in_chans``, ``num_classes``, ``global_pool``, ``embed_dim``, ``num_heads``, ``mlp_ratio``,
``mlp_layer`` (the registered MLP), ``differential``, ``dynamic_img_size``, ``dynamic_img_pad``, ``has_pos_table``
(an absolute table resampled to the input's grid), ``rotary`` (RoPE computed from it), ``to_dict``, ``replace``.
Layer choices are names of the registry (`vitexport.model.names.LAYERS`): Eva's attention (``attn_type``) and
blocks are its `ROTARY` layers; NaFlexViT's blocks are the ViT's, built from `NaFlexConfig.block_config`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vitexport._util.errors import ConfigError
from vitexport.model.config import (
    GLOBAL_POOLS,
    MAX_INT_OPTION,
    TRAINING_ONLY_KEYS,
    Geometry,
    ImageArgs,
    ViTConfig,
    _check_eps,
    _check_flags,
    _check_int,
    _check_options,
    _finite,
    _pair,
    _tuples,
    preset_entry,
)
from vitexport.model.names import ROTARY, layer_names, with_trait

logger = logging.getLogger(__name__)

# The key that names the model class in a config dict (to_dict writes it; a plain ViT's config has none).
MODEL_CLASS_KEY = "model_class"
ROPE_TYPES = ("cat", "mixed", "dinov3")  # timm's create_rope_embed names that Eva entrypoints use
ROPE_GRID_INDEXING = ("ij", "xy")
EVA_ATTN_TYPES = with_trait("attn", ROTARY)  # registered: timm's EvaAttention ('eva'), AttentionRope ('rope')
NORM_LAYERS = layer_names("norm")
NAFLEX_NORM_EPS = 1e-6  # timm's LayerNorm / RmsNorm default: NaFlexVit names its norms without an eps
# Eva options that only act in training (RoPE coordinate augmentation, the head's init scale).
EVA_TRAINING_ONLY = TRAINING_ONLY_KEYS | {"rope_shift_coords", "rope_jitter_coords", "rope_rescale_coords",
                                          "head_init_scale"}
NAFLEX_POS_EMBEDS = ("learned", "factorized", "none", "")
NAFLEX_INTERP_MODES = ("bicubic", "bilinear")
NAFLEX_PROJ_TYPES = ("linear", "conv")
# NaFlexVit options that act only on pre-patchified (NaFlex-mode) input, or not at all in timm 1.0.31
# (NaFlexVit never passes input_norm_layer on): an NCHW image never reaches them.
NAFLEX_NO_EFFECT = frozenset({"pos_embed_use_grid_sample", "use_key_only_attn_mask", "input_norm_layer",
                              "enable_patch_interpolator"})
NAFLEX_TRAINING_ONLY = TRAINING_ONLY_KEYS | {"rope_shift_coords", "rope_jitter_coords", "rope_rescale_coords"}
# NaFlexVit options vitexport builds only at timm's default: the EVA-block and RoPE paths of NaFlexVit,
# which no naflexvit.py entrypoint uses (the Eva class covers them), and layer classes by name.
NAFLEX_DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    "rope_type": ("", "none"), "attn_type": ("standard",), "attn_gated": (False,), "swiglu_mlp": (False,),
    "attn_only_layer_scale": (False,), "num_kv_heads": (None,), "block_fn": (None,), "mlp_layer": (None,),
    "attn_layer": (None, "", "attn"),
}
# RoPE settings that act only when rope_type is set (refused above): accepted at any value, unused.
NAFLEX_ROPE_ONLY = frozenset({"rope_temperature", "rope_ref_feat_shape", "rope_grid_offset", "rope_grid_indexing",
                              "rope_rotate_half", "rope_mrope_section", "swiglu_align_to", "qkv_fused"})
NAFLEX_ACTS = {None: "gelu", "gelu": "gelu", "gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu", "silu": "silu",
               "swish": "silu"}  # timm get_act_layer names -> vitexport's (ACT_LAYERS)


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is not supported; use one of " + ", ".join(map(repr, choices)))


def _check_ratio(name: str, value: Any, dim: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _finite(value) or value <= 0 or not 1 <= int(dim * value) <= MAX_INT_OPTION:
        raise ConfigError(f"{name} must be a positive finite number giving an MLP width of at least 1 for "
                          f"embed_dim {dim}, got {value!r}")


def _check_sizes(img_size: Any, patch_size: Any) -> tuple[Any, Any]:
    """(img_size, patch_size) in timm's spelling: an int when square, a tuple otherwise; the grid non-empty."""
    img, patch = _pair(img_size, "img_size"), _pair(patch_size, "patch_size")
    if img[0] // patch[0] < 1 or img[1] // patch[1] < 1:
        raise ConfigError(f"img_size {img} is smaller than one patch {patch}: the native grid would be empty")
    return (img[0] if img[0] == img[1] else img), (patch[0] if patch[0] == patch[1] else patch)


def _check_model(c: Any) -> None:
    """What Eva and NaFlexViT check alike (as timm asserts): pooling, the MLP ratio, layer scale, the heads, and
    the attention pool's heads and MLP."""
    _check_choice("global_pool", c.global_pool, GLOBAL_POOLS)
    _check_ratio("mlp_ratio", c.mlp_ratio, c.embed_dim)
    if c.init_values is not None and not _finite(c.init_values):
        raise ConfigError(f"init_values must be a finite number or null, got {c.init_values!r}")
    if c.global_pool == "token" and not c.class_token:
        raise ConfigError("global_pool='token' needs class_token=True (timm asserts)")
    if c.embed_dim % c.num_heads:
        raise ConfigError(f"embed_dim ({c.embed_dim}) must be divisible by num_heads ({c.num_heads})")
    if c.global_pool == "map":
        _check_ratio("attn_pool_mlp_ratio", c.attn_pool_mlp_ratio, c.embed_dim, optional=True)
        heads = c.attn_pool_num_heads or c.num_heads
        _check_int("attn_pool_num_heads", heads, 1)
        if c.embed_dim % heads:
            raise ConfigError(f"embed_dim ({c.embed_dim}) must be divisible by attn_pool_num_heads ({heads})")


def _split_architecture(data: Any, kind: str) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """(architecture, its preset's arguments, the other options) of a ``from_dict`` argument of class ``kind``."""
    if not isinstance(data, dict):
        raise ConfigError(f"a model config must be a JSON object of timm keyword arguments, got {type(data).__name__}")
    data = dict(data)
    declared = data.pop(MODEL_CLASS_KEY, kind)
    if declared != kind:
        raise ConfigError(f"a {declared!r} config cannot build a {kind!r} model; use `config_from_dict`")
    arch = data.pop("architecture", None) or data.pop("arch", None)
    base: dict[str, Any] = {}
    if arch:
        found, base = preset_entry(arch)
        if found != kind:
            raise ConfigError(f"{arch!r} is a {found!r} architecture, not {kind!r}; build it with its own config class")
    return arch, base, data


class _FromDict(Geometry):
    """``from_dict`` / ``to_dict`` / ``replace`` shared by the configs of this module."""

    CLASS: ClassVar[str]
    TRAINING_ONLY: ClassVar[frozenset[str]] = TRAINING_ONLY_KEYS
    NO_EFFECT: ClassVar[frozenset[str]] = frozenset()
    DEFAULT_ONLY: ClassVar[dict[str, tuple[Any, ...]]] = {}
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("img_size", "patch_size")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """A config from timm keyword arguments; ``architecture`` picks a preset first (the rest override it)."""
        arch, base, data = _split_architecture(data, cls.CLASS)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        accepted = known | cls.TRAINING_ONLY | cls.NO_EFFECT | set(cls.DEFAULT_ONLY)
        _check_options(data, known, accepted, cls.__name__, cls.DEFAULT_ONLY, cls.CLASS)
        dropped = sorted(k for k in data if k not in known)
        if dropped:
            logger.debug("ignoring options without effect on inference: %s", ", ".join(dropped))
        base.update({k: v for k, v in data.items() if k in known})
        return cls(architecture=arch, **_tuples(base, cls.TUPLE_FIELDS))  # type: ignore[call-arg]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly timm keyword arguments (tuples as lists), the class, ``architecture`` when known."""
        out: dict[str, Any] = {MODEL_CLASS_KEY: self.CLASS}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == "architecture" and value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class EvaConfig(_FromDict, ImageArgs):
    """timm's ``Eva`` keyword arguments (``norm_layer`` a name, its eps ``norm_eps``)."""

    CLASS: ClassVar[str] = "eva"
    TRAINING_ONLY: ClassVar[frozenset[str]] = EVA_TRAINING_ONLY
    DEFAULT_ONLY: ClassVar[dict[str, tuple[Any, ...]]] = {"rope_mrope_section": (None,)}
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("img_size", "patch_size", "num_kv_heads", "ref_feat_shape")

    # img_size, patch_size, in_chans, num_classes, global_pool, embed_dim, depth, num_heads: `ImageArgs`
    global_pool: str = "avg"
    num_kv_heads: int | tuple[int, ...] | None = None
    qkv_bias: bool = True
    qkv_fused: bool = True
    qk_norm: bool = False
    mlp_ratio: float = 4.0
    swiglu_mlp: bool = False
    swiglu_align_to: int = 0
    scale_mlp: bool = False
    scale_attn_inner: bool = False
    attn_type: str = "eva"
    norm_layer: str = "layernorm"
    norm_eps: float = 1e-6  # not a timm argument: timm's norm_layer=partial(LayerNorm, eps=...)
    init_values: float | None = None
    attn_only_layer_scale: bool = False
    class_token: bool = True
    num_reg_tokens: int = 0
    no_embed_class: bool = False
    use_abs_pos_emb: bool = True
    use_rot_pos_emb: bool = False
    rope_type: str = "cat"
    rope_grid_offset: float = 0.0
    rope_grid_indexing: str = "ij"
    rope_temperature: float = 10000.0
    rope_rotate_half: bool = False
    use_post_norm: bool = False
    use_pre_transformer_norm: bool = False
    use_post_transformer_norm: bool | None = None
    use_fc_norm: bool | None = None
    attn_pool_num_heads: int | None = None
    attn_pool_mlp_ratio: float | None = None
    dynamic_img_size: bool = True
    dynamic_img_pad: bool = True
    ref_feat_shape: int | tuple[int, int] | None = None
    architecture: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        img, patch = _check_sizes(self.img_size, self.patch_size)
        object.__setattr__(self, "img_size", img)
        object.__setattr__(self, "patch_size", patch)
        if self.ref_feat_shape is not None:
            object.__setattr__(self, "ref_feat_shape", _pair(self.ref_feat_shape, "ref_feat_shape"))
        for name, low in (("in_chans", 1), ("num_classes", 0), ("embed_dim", 1), ("depth", 1), ("num_heads", 1),
                          ("swiglu_align_to", 0), ("num_reg_tokens", 0)):
            _check_int(name, getattr(self, name), low)
        _check_flags(self, ("qkv_bias", "qkv_fused", "qk_norm", "swiglu_mlp", "scale_mlp", "scale_attn_inner",
                            "attn_only_layer_scale", "class_token", "no_embed_class", "use_abs_pos_emb",
                            "use_rot_pos_emb", "rope_rotate_half", "use_post_norm", "use_pre_transformer_norm",
                            "dynamic_img_size", "dynamic_img_pad"),
                     optional=("use_post_transformer_norm", "use_fc_norm"))
        _check_choice("attn_type", self.attn_type, EVA_ATTN_TYPES)
        _check_choice("norm_layer", self.norm_layer, NORM_LAYERS)
        _check_eps("norm_eps", self.norm_eps)
        _check_model(self)
        self._check_heads()
        self._check_rope()

    def _check_heads(self) -> None:
        """num_kv_heads (grouped-query attention): timm's AttentionRope with separate projections only."""
        kv = self.num_kv_heads
        if isinstance(kv, list):
            object.__setattr__(self, "num_kv_heads", kv := tuple(kv))
        per_block = (kv,) * self.depth if kv is None or isinstance(kv, int) else kv
        if len(per_block) != self.depth:
            raise ConfigError(f"num_kv_heads has {len(per_block)} entries for depth {self.depth}; give one per block")
        for heads in per_block:
            if heads is None or heads == self.num_heads:
                continue
            _check_int("num_kv_heads", heads, 1)
            if self.attn_type != "rope" or self.qkv_fused or self.num_heads % heads:
                raise ConfigError(f"num_kv_heads={heads} needs attn_type='rope', qkv_fused=False and num_heads "
                                  f"({self.num_heads}) divisible by it (timm asserts)")
        if self.use_post_norm and (self.qk_norm or self.attn_only_layer_scale or any(h is not None for h in per_block)):
            raise ConfigError("use_post_norm=True has no qk_norm, num_kv_heads or attn_only_layer_scale (timm asserts)")

    def _check_rope(self) -> None:
        _check_choice("rope_type", self.rope_type, ROPE_TYPES)
        _check_choice("rope_grid_indexing", self.rope_grid_indexing, ROPE_GRID_INDEXING)
        for name in ("rope_grid_offset", "rope_temperature"):
            if not _finite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if not self.use_rot_pos_emb:
            return
        if self.rope_temperature <= 0:
            raise ConfigError(f"rope_temperature must be positive, got {self.rope_temperature!r}")
        if self.head_dim % 4:
            raise ConfigError(f"rotary embeddings need a head width divisible by 4; embed_dim / num_heads = "
                              f"{self.head_dim}")
        if self.rope_type == "mixed" and self.rope_rotate_half:
            raise ConfigError("rope_type='mixed' requires rope_rotate_half=False (timm raises)")

    # ---- derived -----------------------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.num_reg_tokens

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def fc_norm_active(self) -> bool:
        """timm: ``use_fc_norm`` when given, else on for ``global_pool='avg'`` (only avg, unlike ViT)."""
        return self.global_pool == "avg" if self.use_fc_norm is None else self.use_fc_norm

    @property
    def post_norm_active(self) -> bool:
        """The norm after the blocks: ``use_post_transformer_norm`` when given, else when fc_norm is off."""
        if self.use_post_transformer_norm is not None:
            return self.use_post_transformer_norm
        return not self.fc_norm_active

    @property
    def kv_heads(self) -> tuple[int, ...]:
        """Key/value heads of each block (num_heads where not grouped)."""
        kv = self.num_kv_heads
        per_block = (kv,) * self.depth if kv is None or isinstance(kv, int) else kv
        return tuple(self.num_heads if h is None else h for h in per_block)

    @property
    def num_features(self) -> int:
        return self.embed_dim

    @property
    def block_fn(self) -> str:
        """The registered block: ``eva_post_norm`` with ``use_post_norm``, else ``eva``."""
        return "eva_post_norm" if self.use_post_norm else "eva"

    @property
    def mlp_layer(self) -> str:
        """The registered MLP timm's Eva blocks choose: GELU ``mlp``; with ``swiglu_mlp`` the packed
        ``swiglu_packed`` (SiLU gate first), unless a norm inside the MLP (``scale_mlp``) or a width alignment
        (``swiglu_align_to``, pre-norm blocks only) asks for ``swiglu`` (separate gate and value projections)."""
        if not self.swiglu_mlp:
            return "mlp"
        if self.scale_mlp or (self.swiglu_align_to and not self.use_post_norm):
            return "swiglu"
        return "swiglu_packed"

    @property
    def mlp_hidden(self) -> int:
        """The ``hidden`` the MLP is built with: ``int(embed_dim * mlp_ratio)``, aligned up for ``swiglu``, twice
        that for the packed one (one ``fc1`` holds both halves)."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.mlp_layer == "swiglu" and self.swiglu_align_to:
            hidden += -hidden % self.swiglu_align_to
        return 2 * hidden if self.mlp_layer == "swiglu_packed" else hidden

    @property
    def mlp_act(self) -> str:
        return "silu" if self.swiglu_mlp else "gelu"

    @property
    def differential(self) -> bool:
        return False

    @property
    def has_pos_table(self) -> bool:
        return self.use_abs_pos_emb

    @property
    def rotary(self) -> bool:
        return self.use_rot_pos_emb


@dataclass(frozen=True)
class DistilledConfig(ViTConfig):
    """timm's ``VisionTransformerDistilled``: a ViT with a distillation token after the class token and a second
    head (``head_dist``) whose logits are averaged with the first at inference."""

    CLASS: ClassVar[str] = "deit_distilled"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.global_pool != "token":
            raise ConfigError("the distilled DeiT head reads the class and distillation tokens: global_pool must "
                              f"be 'token', got {self.global_pool!r} (timm asserts)")
        if self.reg_tokens or self.no_embed_class:
            raise ConfigError("the distilled DeiT has no register tokens and no no_embed_class (timm's distilled "
                              "model builds a position table that does not fit them)")

    @property
    def num_prefix_tokens(self) -> int:
        return 2  # class, distillation

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistilledConfig:
        """As `ViTConfig.from_dict`, with ``architecture`` one of deit.py's distilled models."""
        arch, base, data = _split_architecture(data, "deit_distilled")
        config = super().from_dict({**base, **data})
        return config.replace(architecture=arch) if arch else config  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {MODEL_CLASS_KEY: self.CLASS, **super().to_dict()}


@dataclass(frozen=True)
class NaFlexConfig(_FromDict, ImageArgs):
    """timm's ``NaFlexVit`` on NCHW images: ``NaFlexVitCfg`` fields plus ``img_size``, ``in_chans``, ``num_classes``.

    ``img_size`` is the size the weights were trained at (timm's pretrained ``input_size``); timm uses it only to
    size the position table when ``pos_embed_grid_size`` is null.
    """

    CLASS: ClassVar[str] = "naflexvit"
    TRAINING_ONLY: ClassVar[frozenset[str]] = NAFLEX_TRAINING_ONLY
    NO_EFFECT: ClassVar[frozenset[str]] = NAFLEX_NO_EFFECT | NAFLEX_ROPE_ONLY
    DEFAULT_ONLY: ClassVar[dict[str, tuple[Any, ...]]] = NAFLEX_DEFAULT_ONLY
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("img_size", "patch_size", "pos_embed_grid_size")

    # patch_size, in_chans, num_classes, embed_dim, depth, num_heads: `ImageArgs` (img_size and global_pool have
    # other defaults here)
    img_size: int | tuple[int, int] | None = None
    mlp_ratio: float = 4.0
    scale_mlp_norm: bool = False
    qkv_bias: bool = True
    qk_norm: bool = False
    proj_bias: bool = True
    scale_attn_inner_norm: bool = False
    init_values: float | None = None
    class_token: bool = False
    reg_tokens: int = 0
    pos_embed: str = "learned"
    pos_embed_grid_size: tuple[int, int] | None = (16, 16)
    pos_embed_interp_mode: str = "bicubic"
    pos_embed_ar_preserving: bool = False
    pos_embed_antialias: bool = True
    pos_embed_align_corners: bool = False
    dynamic_img_pad: bool = True
    patchify_channels_last: bool = True
    pre_norm: bool = False
    final_norm: bool = True
    fc_norm: bool | None = None
    global_pool: str = "map"
    pool_include_prefix: bool = False
    attn_pool_num_heads: int | None = None
    attn_pool_mlp_ratio: float | None = None
    embed_proj_type: str = "linear"
    embed_norm_layer: str | None = None
    norm_layer: str | None = None
    act_layer: str | None = None
    architecture: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        patch = _pair(self.patch_size, "patch_size")
        object.__setattr__(self, "patch_size", patch[0] if patch[0] == patch[1] else patch)
        if self.img_size is not None:
            img = _pair(self.img_size, "img_size")
            object.__setattr__(self, "img_size", img[0] if img[0] == img[1] else img)
        if self.pos_embed_grid_size is not None:
            object.__setattr__(self, "pos_embed_grid_size", _pair(self.pos_embed_grid_size, "pos_embed_grid_size"))
        for name, low in (("in_chans", 1), ("num_classes", 0), ("embed_dim", 1), ("depth", 1), ("num_heads", 1),
                          ("reg_tokens", 0)):
            _check_int(name, getattr(self, name), low)
        _check_flags(self, ("scale_mlp_norm", "qkv_bias", "qk_norm", "proj_bias", "scale_attn_inner_norm",
                            "class_token", "pos_embed_ar_preserving", "pos_embed_antialias",
                            "pos_embed_align_corners", "dynamic_img_pad", "patchify_channels_last", "pre_norm",
                            "final_norm", "pool_include_prefix"), optional=("fc_norm",))
        _check_choice("pos_embed", self.pos_embed, NAFLEX_POS_EMBEDS)
        _check_choice("embed_proj_type", self.embed_proj_type, NAFLEX_PROJ_TYPES)
        _check_choice("norm_layer", self.norm_layer, (None, *NORM_LAYERS))
        _check_choice("embed_norm_layer", self.embed_norm_layer, (None, *NORM_LAYERS))
        _check_choice("act_layer", self.act_layer, tuple(NAFLEX_ACTS))
        _check_model(self)
        self._check_pos_embed()

    def _check_pos_embed(self) -> None:
        if self.pos_embed in ("", "none"):
            return
        if self.pos_embed_grid_size is None and self.img_size is None:
            raise ConfigError("a learned position table needs pos_embed_grid_size or img_size (timm raises)")
        gh, gw = self.pos_grid
        if gh < 1 or gw < 1:
            raise ConfigError(f"the position table grid {self.pos_grid} is empty; set pos_embed_grid_size")
        if self.pos_embed == "learned":
            _check_choice("pos_embed_interp_mode", self.pos_embed_interp_mode, NAFLEX_INTERP_MODES)
            if self.pos_embed_interp_mode == "bicubic" and (self.pos_embed_align_corners
                                                             or not self.pos_embed_antialias):
                raise ConfigError("bicubic position resampling is built with pos_embed_antialias=True and "
                                  "pos_embed_align_corners=False only (timm's default)")
            if self.pos_embed_ar_preserving and gh != gw:
                raise ConfigError("pos_embed_ar_preserving needs a square position table: timm skips resampling at "
                                  "exactly the table's grid, which one exported graph cannot do for a non-square one")

    # ---- derived -----------------------------------------------------------
    @property
    def pos_grid(self) -> tuple[int, int]:
        """The learned position table's grid: ``pos_embed_grid_size``, else ``img_size // patch_size``."""
        if self.pos_embed_grid_size is not None:
            return self.pos_embed_grid_size
        (h, w), (ph, pw) = self.img_hw, self.patch_hw
        return h // ph, w // pw

    @property
    def img_hw(self) -> tuple[int, int]:
        """The native size: ``img_size``, else the position table's grid times the patch."""
        if self.img_size is not None:
            return _pair(self.img_size, "img_size")
        (gh, gw), (ph, pw) = self.pos_embed_grid_size or (16, 16), self.patch_hw
        return gh * ph, gw * pw

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def fc_norm_active(self) -> bool:
        """timm: ``fc_norm`` when given, else on for ``global_pool='avg'``."""
        return self.global_pool == "avg" if self.fc_norm is None else self.fc_norm

    @property
    def act(self) -> str:
        return NAFLEX_ACTS[self.act_layer]

    @property
    def num_features(self) -> int:
        return self.embed_dim

    @property
    def grid_size(self) -> tuple[int, int]:
        """The native grid: the position table's (`pos_grid`), which every input's grid is resampled from."""
        return self.pos_grid

    @property
    def dynamic_img_size(self) -> bool:
        return True  # NaFlexVit resamples its table to every grid

    @property
    def mlp_layer(self) -> str:
        return "mlp"

    @property
    def differential(self) -> bool:
        return False

    @property
    def has_pos_table(self) -> bool:
        return self.pos_embed in ("learned", "factorized")

    @property
    def rotary(self) -> bool:
        return False

    def block_config(self) -> ViTConfig:
        """The `ViTConfig` whose registered ``block`` NaFlexVit builds (timm's ViT ``Block``, these arguments)."""
        return ViTConfig(embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
                         mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, qk_norm=self.qk_norm,
                         init_values=self.init_values, scale_attn_norm=self.scale_attn_inner_norm,
                         scale_mlp_norm=self.scale_mlp_norm, proj_bias=self.proj_bias, act_layer=self.act,
                         norm_layer=self.norm_layer or "layernorm", norm_eps=NAFLEX_NORM_EPS)


CONFIG_CLASSES: dict[str, type] = {"vit": ViTConfig, "deit_distilled": DistilledConfig, "eva": EvaConfig,
                                   "naflexvit": NaFlexConfig}


def config_from_dict(data: dict[str, Any]) -> Any:
    """The config of any model class from timm keyword arguments: the class ``model_class`` names (what
    ``to_dict`` writes), else the class of ``architecture``'s preset (`vitexport.model.config.preset_entry`), else
    a plain ViT (`ViTConfig`). The one place a config is rebuilt from a dict.

    Args:
        data: timm keyword arguments, with ``architecture`` (a preset of any class, the other keys override it)
            and/or ``model_class`` (``vit``, ``deit_distilled``, ``eva``, ``naflexvit``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a model config must be a JSON object of timm keyword arguments, got {type(data).__name__}")
    arch = data.get("architecture") or data.get("arch")
    kind = data.get(MODEL_CLASS_KEY) or (preset_entry(str(arch))[0] if arch else "vit")
    if kind not in CONFIG_CLASSES:
        raise ConfigError(f"unknown model_class {kind!r}; use one of " + ", ".join(map(repr, CONFIG_CLASSES)))
    return CONFIG_CLASSES[kind].from_dict(data)


__all__ = ["CONFIG_CLASSES", "MODEL_CLASS_KEY", "DistilledConfig", "EvaConfig", "NaFlexConfig", "config_from_dict"]
