"""Checkpoints as their authors released them, mapped onto timm's ``VisionTransformer`` layout (``Eva`` for `eva`).

- `clip`: OpenAI CLIP / open_clip ViT towers (``visual.*``), open_clip timm towers (``visual.trunk.*``) and
  open_clip folders; timm's ``_convert_openai_clip`` and ``checkpoint_filter_fn``, ported;
- `dinov2`: facebookresearch/dinov2 state dicts, with and without registers; timm's ``_convert_dinov2``, ported;
- `eva`: facebookresearch/dinov3 ViT state dicts and BAAI's EVA / EVA-02 / EVA-02 CLIP towers, onto timm's
  ``Eva``; timm's ``checkpoint_filter_fn`` of eva.py, ported;
- `big_vision`: JAX/Flax ``.npz`` (big_vision SigLIP and ViTs, vision_transformer); timm's ``_load_weights``, ported;
- `hf`: transformers folders (``vit``, ``deit``, ``dinov2``, ``clip``, ``siglip``); vitexport's own mapping,
  proven by forward parity with transformers.

Each converter returns a `Converted` (state dict, the timm keyword arguments the file states, what it does
not state, what the model's forward equals); `complete_args` joins it with an explicit config. `detect`
tells the state-dict formats apart by their keys.
"""

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    "Converted": "vitexport.checkpoint.foreign.common",
    "complete_args": "vitexport.checkpoint.foreign.common",
    "detect_format": "vitexport.checkpoint.foreign.detect",
    "convert_state_dict": "vitexport.checkpoint.foreign.detect",
    "convert_openai_clip": "vitexport.checkpoint.foreign.clip",
    "convert_open_clip_timm": "vitexport.checkpoint.foreign.clip",
    "read_open_clip_folder": "vitexport.checkpoint.foreign.clip",
    "convert_dinov2": "vitexport.checkpoint.foreign.dinov2",
    "convert_dinov3": "vitexport.checkpoint.foreign.eva",
    "convert_eva": "vitexport.checkpoint.foreign.eva",
    "convert_big_vision": "vitexport.checkpoint.foreign.big_vision",
    "read_transformers_folder": "vitexport.checkpoint.foreign.hf",
    "convert_transformers": "vitexport.checkpoint.foreign.hf",
})
