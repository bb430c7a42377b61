"""The model stage: `ViTConfig`, layer registries, presets and families, the dynamic-pad ViT and its numerics.

Imports only `vitexport._util` (and torch); every other stage builds on it.
"""

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    "ViTConfig": "vitexport.model.config",
    "get_preset": "vitexport.model.config",
    "VisionTransformer": "vitexport.model.vit",
    "create_model": "vitexport.model.vit",
    "count_parameters": "vitexport.model.vit",
})
