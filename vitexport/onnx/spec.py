"""The single definition of exported artifacts' interface: names, dynamic axes, metadata keys.

Export writes these, verify checks the graph really has them, the runtime reads
them. Imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vitexport.model.names import DEFAULT_RESAMPLE, OUTPUTS, RESAMPLE_FORMS  # noqa: F401 - re-exported: the interface
from vitexport.security.sniff import TORCHSCRIPT_EXTRA_FILE  # noqa: F401 - re-exported

INPUT_NAME = "pixel_values"
# The output is named by what it holds (`vitexport.model.names.OUTPUTS`): the head's logits, the pooled embedding
# before the head, or every token after the final norm.
LOGITS_NAME = "logits"
FEATURES_NAME = "features"
TOKENS_NAME = "tokens"
BATCH, HEIGHT, WIDTH, TOKENS = "batch", "height", "width", "tokens"

# The exact ONNX equivalent of F.interpolate(mode="bicubic", antialias=True, align_corners=False).
RESIZE_ATTRIBUTES: dict[str, Any] = {
    "mode": "cubic",
    "coordinate_transformation_mode": "half_pixel",
    "cubic_coeff_a": -0.5,
    "antialias": 1,
    "exclude_outside": 1,
}
# ONNX's defaults for those attributes when a node leaves them out.
RESIZE_DEFAULTS: dict[str, Any] = {
    "mode": "nearest",
    "coordinate_transformation_mode": "half_pixel",
    "cubic_coeff_a": -0.75,
    "antialias": 0,
    "exclude_outside": 0,
}

META_PREFIX = "vitexport."


@dataclass(frozen=True)
class IOSpec:
    """Input/output names and their symbolic axes, declared once for export and validation."""

    input_name: str = INPUT_NAME
    output_name: str = LOGITS_NAME
    input_axes: dict[int, str] = field(default_factory=lambda: {0: BATCH, 2: HEIGHT, 3: WIDTH})
    output_axes: dict[int, str] = field(default_factory=lambda: {0: BATCH})

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> IOSpec:
        """The interface an artifact declares in its vitexport metadata.

        ``dynamic_axes`` is taken as written (a name without an entry has no dynamic axes, as in
        a static export); metadata without ``dynamic_axes`` at all gets a dynamic export's axes.
        """
        name_in = meta.get("input_name") or INPUT_NAME
        name_out = meta.get("output_name") or LOGITS_NAME
        axes = meta.get("dynamic_axes")
        if not isinstance(axes, dict):
            return cls(name_in, name_out)
        return cls(
            name_in,
            name_out,
            {int(k): v for k, v in (axes.get(name_in) or {}).items()},
            {int(k): v for k, v in (axes.get(name_out) or {}).items()},
        )

    def to_json(self) -> dict[str, dict[str, str]]:
        return {
            self.input_name: {str(k): v for k, v in self.input_axes.items()},
            self.output_name: {str(k): v for k, v in self.output_axes.items()},
        }


def io_spec(output: str, global_pool: str, dynamic_batch: bool = True, dynamic_size: bool = True) -> IOSpec:
    """Names and dynamic axes of a model's export whose output is ``output`` (one of `OUTPUTS`, its name too):
    ``(B, classes)`` logits, ``(B, D)`` features, ``(B, tokens, D)`` tokens (every output per token without
    pooling, ``global_pool=''``)."""
    if output not in OUTPUTS:
        raise ValueError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
    in_axes: dict[int, str] = {}
    out_axes: dict[int, str] = {}
    if dynamic_batch:
        in_axes[0] = BATCH
        out_axes[0] = BATCH
    if dynamic_size:
        in_axes[2] = HEIGHT
        in_axes[3] = WIDTH
        if global_pool == "" or output == TOKENS_NAME:  # (B, tokens, D): the token count follows the input size
            out_axes[1] = TOKENS
    return IOSpec(INPUT_NAME, output, in_axes, out_axes)


def encode_metadata(values: dict[str, Any]) -> dict[str, str]:
    """``{"config": {...}}`` -> ``{"vitexport.config": "{...}"}`` (JSON strings, ONNX-style)."""
    return {META_PREFIX + k: json.dumps(v) for k, v in values.items()}


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of `encode_metadata`; keys without the prefix are ignored. A value that is not usable
    JSON (`vitexport._util.safejson`: bounded, finite, shallow) stays a string, which the checks then refuse."""
    from vitexport._util.safejson import parse_json

    out: dict[str, Any] = {}
    for key, value in props.items():
        if key.startswith(META_PREFIX):
            try:
                out[key[len(META_PREFIX) :]] = parse_json(value)
            except ValueError:
                out[key[len(META_PREFIX) :]] = value
    return out
