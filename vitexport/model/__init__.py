"""The model stage: `ViTConfig`, layer registries, presets and families, the dynamic-pad ViT and its numerics.

Imports only `vitexport._util` (and torch); every other stage builds on it.
"""

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    "ViTConfig": "vitexport.model.config",
    "get_preset": "vitexport.model.config",
    "EvaConfig": "vitexport.model.family_config",
    "DistilledConfig": "vitexport.model.family_config",
    "NaFlexConfig": "vitexport.model.family_config",
    "config_from_dict": "vitexport.model.family_config",
    "Eva": "vitexport.model.eva",
    "VisionTransformerDistilled": "vitexport.model.deit",
    "NaFlexVit": "vitexport.model.naflex",
    "model_for": "vitexport.model.family_models",
    "VisionTransformer": "vitexport.model.vit",
    "create_model": "vitexport.model.vit",
    "count_parameters": "vitexport.model.vit",
})
