"""Checkpoints: read a format -> resolve its config (hub files, layout, shapes) -> check the weights -> build.

Re-exports the reader's API lazily (``from vitexport.checkpoint import load_model`` loads torch only then).
"""

from vitexport._util.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    name: "vitexport.checkpoint.reader"
    for name in ("Checkpoint", "load_model", "read_checkpoint", "save_checkpoint", "read_raw",
                 "infer_config_args", "extract_state_dict", "clean_state_dict", "describe_checkpoint", "sha256_file")
})
