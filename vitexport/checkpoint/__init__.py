"""Checkpoints: read a format (formats) -> resolve the config (resolve: --config, hub files, arch, inference from
shapes in infer) -> check the weights (weights) -> build (load); write one (save).

Re-exports the public API lazily (``from vitexport.checkpoint import load_model`` loads torch only then).
"""

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    **{name: "vitexport.checkpoint.load" for name in ("Checkpoint", "describe_checkpoint", "load_model",
                                                      "read_checkpoint")},
    **{name: "vitexport.checkpoint.formats" for name in ("clean_state_dict", "extract_state_dict", "read_raw",
                                                         "sha256_file")},
    "infer_config_args": "vitexport.checkpoint.infer",
    "save_checkpoint": "vitexport.checkpoint.save",
})
