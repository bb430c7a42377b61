"""Which release format a state dict is in, from its keys alone: one answer or a refusal, never a guess.

`detect_format` returns one of `STATE_DICT_FORMATS`, or None for timm's own layout (and anything it does not
recognise, which the shape inference then reads or refuses as before). A state dict that matches two formats,
or a known layout vitexport does not build (a ModifiedResNet CLIP, Sapiens2, a transformers file without its
``config.json``) is refused by name, in one line, with the fix. Folders (transformers, open_clip) and ``.npz``
files are told apart by their files, not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from vitexport.checkpoint.foreign.clip import (
    OPEN_CLIP_TIMM,
    OPENAI,
    convert_open_clip_timm,
    convert_openai_clip,
    is_open_clip_timm,
    is_openai_clip,
)
from vitexport.checkpoint.foreign.common import Converted, refuse
from vitexport.checkpoint.foreign.dinov2 import FORMAT as DINOV2
from vitexport.checkpoint.foreign.dinov2 import convert_dinov2, is_dinov2
from vitexport.checkpoint.foreign.eva import DINOV3, EVA, convert_dinov3, convert_eva, is_dinov3, is_eva
from vitexport.checkpoint.foreign.eva import refuse_unmapped as refuse_unmapped_eva
from vitexport.checkpoint.foreign.hf import is_transformers_keys

STATE_DICT_FORMATS = (OPENAI, OPEN_CLIP_TIMM, DINOV2, DINOV3, EVA)
_TESTS = ((OPENAI, is_openai_clip), (OPEN_CLIP_TIMM, is_open_clip_timm), (DINOV2, is_dinov2), (DINOV3, is_dinov3),
          (EVA, is_eva))


def _refuse_known(keys: set[str]) -> None:
    if any(k.startswith(("visual.layer1.", "visual.attnpool.")) for k in keys):
        raise refuse("CLIP", "its image tower is a ModifiedResNet (visual.layer1, visual.attnpool), not a ViT",
                     "vitexport exports Vision Transformers only")
    refuse_unmapped_eva(keys)  # Sapiens2's original layout, DINOv3 without storage tokens
    if "patch_embed.proj.weight" not in keys and is_transformers_keys(keys):
        raise refuse("transformers", "these are transformers weights without their config.json",
                     "pass the model's folder (config.json beside model.safetensors)")


def detect_format(keys: Iterable[str]) -> str | None:
    """The release format of a state dict's keys, or None for timm's layout; refuses ambiguous/unbuilt layouts."""
    keys = set(keys)
    found = [name for name, test in _TESTS if test(keys)]
    if len(found) > 1:
        raise refuse(" / ".join(found), f"its keys match {len(found)} release formats ({', '.join(found)})",
                     "re-save the one model's weights alone")
    if found:
        return found[0]
    _refuse_known(keys)
    return None


def convert_state_dict(sd: dict[str, torch.Tensor], open_clip_config: dict[str, Any] | None = None
                       ) -> Converted | None:
    """``sd`` in timm's layout when it is a release format (`detect_format`), else None (already timm's).

    ``open_clip_config``: the parsed ``open_clip_config.json`` found beside the weights, if any.
    """
    fmt = detect_format(sd)
    if fmt == OPENAI:
        return convert_openai_clip(sd, open_clip_config)
    if fmt == OPEN_CLIP_TIMM:
        return convert_open_clip_timm(sd, open_clip_config)
    if fmt == DINOV2:
        return convert_dinov2(sd)
    if fmt == DINOV3:
        return convert_dinov3(sd)
    if fmt == EVA:
        return convert_eva(sd)
    return None


__all__ = ["STATE_DICT_FORMATS", "convert_state_dict", "detect_format"]
