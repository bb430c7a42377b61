"""Edits of exported ONNX files that break them in known ways (verify must catch each where it is wrong)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx import helper


def edited(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of ``src`` at ``dst`` with ``edit(model_proto)`` applied."""
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def set_resize_attr(name: str, value: Any) -> Any:
    """An edit setting attribute ``name`` of the graph's one Resize to ``value``."""
    def edit(model: onnx.ModelProto) -> None:
        (node,) = [n for n in model.graph.node if n.op_type == "Resize"]
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(name, value))
    return edit


def spec_export(folder: Path) -> tuple[Path, Path]:
    """(.onnx, checkpoint) of the spec model (3x3 native grid, 28x28 -> padded 32x32), seed 11: verify's good
    export, with the default (portable) resampling."""
    from tests.helpers.models import CONFIGS, make_model
    from vitexport.checkpoint import save_checkpoint
    from vitexport.export.onnx_export import export_onnx

    model = make_model(CONFIGS["spec_cls"], seed=11)
    ckpt = folder / "model.pt"
    save_checkpoint(model, ckpt)
    path = folder / "good.onnx"
    export_onnx(model, path)
    return path, ckpt


def resize_export(checkpoint: Path) -> Path:
    """The checkpoint's model exported beside it with resample="resize" (one antialiased Resize)."""
    from vitexport.checkpoint import load_model
    from vitexport.export.onnx_export import export_onnx

    path = checkpoint.parent / "good-resize.onnx"
    export_onnx(load_model(checkpoint), path, resample="resize")
    return path
