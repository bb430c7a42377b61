"""A Triton model repository for an exported model: ``REPO/NAME/config.pbtxt``, ``REPO/NAME/1/`` and the labels.

- ``onnxruntime`` (what GPU deployments use): ``platform: "onnxruntime_onnx"``, ``1/model.onnx`` (and its
  external data), the input and output names, dtypes and dims read from the graph (``-1`` on dynamic axes; the
  batch axis becomes ``max_batch_size`` when it is dynamic), dynamic batching, instance groups, and
  ``labels.txt`` for Triton's classification extension. Triton's ONNX Runtime backend runs the graph as it is:
  vitexport's limits (``max_tokens``) do not apply there.
- ``python``: Triton's Python backend running vitexport's `Predictor` through
  `vitexport.serving.triton.python_model` (``1/model.py`` imports it; Triton's Python needs ``pip install
  vitexport``): ``pixel_values`` FP32 ``[B, C, H, W]`` or ``image`` BYTES ``[B, 1]`` (encoded images, decoded
  with the server's decoder and limits), as `vitexport serve` takes them. Both inputs are optional (send one)
  and ragged, so Triton's dynamic batcher hands requests of any size to one ``execute`` call, which runs each
  image size once.

The model folder is written whole beside its place and renamed in (`vitexport._util.files.staged_folder`):
Triton never sees a half-written model. The config is protobuf text that Triton's own ``ModelConfig``
message parses (tested with the ``model_config_pb2`` shipped in tritonclient).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitexport._util.errors import CheckpointError, UsageError
from vitexport.security.limits import DEFAULT_MAX_TOKENS
from vitexport.serving.defaults import TRITON_BACKENDS, TRITON_KINDS
from vitexport.serving.http.config import AppArgs

logger = logging.getLogger(__name__)

BACKENDS, KINDS = TRITON_BACKENDS, TRITON_KINDS
VERSION = "1"
LABELS_FILE = "labels.txt"
IMAGE_INPUT = "image"
DEFAULT_MAX_BATCH_SIZE = AppArgs.max_batch
QUEUE_DELAY_US = int(AppArgs.batch_wait_ms * 1000)
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# ONNX TensorProto element types -> Triton's data types (vitexport exports float32 or float16)
TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}
PYTHON_MODEL = '''"""Triton Python-backend model written by `vitexport triton --backend python`.

It runs vitexport's Predictor on model.onnx beside this file; Triton's Python needs `pip install vitexport`.
"""

from vitexport.serving.triton.python_model import TritonPythonModel  # noqa: F401
'''


def check_model_name(name: str, option: str = "--name") -> str:
    """``name`` when it can name a model in URLs and a repository folder; `UsageError` otherwise."""
    if not MODEL_NAME_RE.match(name):
        raise UsageError(f"{name!r} cannot be a model name; use 1-128 letters, digits, '.', '_' or '-', starting "
                         f"with a letter or digit ({option})")
    return name


@dataclass(frozen=True)
class TensorConfig:
    """One ``input`` or ``output`` entry of a model config (dims without the batch axis when batching)."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    label_filename: str | None = None
    optional: bool = False
    ragged: bool = False

    def text(self) -> str:
        lines = [f"    name: {json.dumps(self.name)}", f"    data_type: {self.data_type}",
                 f"    dims: [ {', '.join(map(str, self.dims))} ]"]
        if self.label_filename:
            lines.append(f"    label_filename: {json.dumps(self.label_filename)}")
        if self.optional:
            lines.append("    optional: true")
        if self.ragged:
            lines.append("    allow_ragged_batch: true")
        return "  {\n" + "\n".join(lines) + "\n  }"


@dataclass(frozen=True)
class ModelConfig:
    """A Triton model config (the fields vitexport writes), rendered as ``config.pbtxt`` by `text`."""

    name: str
    backend: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    instances: int = 1
    kind: str = "cpu"
    parameters: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        engine = 'platform: "onnxruntime_onnx"' if self.backend == "onnxruntime" else 'backend: "python"'
        parts = [f"name: {json.dumps(self.name)}", engine, f"max_batch_size: {self.max_batch_size}",
                 "input [\n" + ",\n".join(t.text() for t in self.inputs) + "\n]",
                 "output [\n" + ",\n".join(t.text() for t in self.outputs) + "\n]"]
        if self.max_batch_size > 0:
            parts.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}")
        kind = f"KIND_{self.kind.upper()}"
        parts.append(f"instance_group [\n  {{\n    count: {self.instances}\n    kind: {kind}\n  }}\n]")
        for key, value in self.parameters.items():
            value_text = f"{{ string_value: {json.dumps(value)} }}"
            parts.append(f"parameters {{\n  key: {json.dumps(key)}\n  value: {value_text}\n}}")
        return "# written by `vitexport triton`\n" + "\n".join(parts) + "\n"


@dataclass(frozen=True)
class GraphInterface:
    """What the repository needs of an exported ONNX file: its one input and output, metadata, files."""

    path: Path
    input: Any  # onnxwire.ValueInfo
    output: Any
    metadata: dict[str, Any]
    files: tuple[Path, ...]  # the .onnx file first, then its external data

    @property
    def labels(self) -> list[str] | None:
        return self.metadata.get("labels")


def read_interface(model_path: str | os.PathLike[str]) -> GraphInterface:
    """The graph's interface (`vitexport.onnx.graph`: no onnx package, weights not read), its metadata checked."""
    from vitexport.onnx.graph import inspect_graph, model_files, read_structure
    from vitexport.onnx.metadata import check_metadata

    p = Path(model_path)
    structure = read_structure(p)
    report = inspect_graph(structure, str(p))
    graph = structure.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise CheckpointError(f"{str(p)!r} has {len(graph.input)} inputs and {len(graph.output)} outputs; a "
                              "repository needs a vitexport export (one input, one output): export it with "
                              "`vitexport onnx`")
    if not report.metadata.get("config"):
        raise CheckpointError(f"{str(p)!r} has no vitexport metadata; export it with `vitexport onnx`")
    check_metadata(report.metadata, repr(str(p)), graph.input[0].dims)
    for label in report.metadata.get("labels") or []:
        if "\n" in label or "\r" in label:
            raise CheckpointError(f"{str(p)!r}: the label {label!r} holds a line break, which a Triton labels file "
                                  "cannot carry; fix the labels and export again")
    return GraphInterface(p, graph.input[0], graph.output[0], report.metadata, model_files(p, report))


def _triton_type(info: Any, where: str) -> str:
    try:
        return TRITON_TYPES[info.elem_type]
    except KeyError:
        raise CheckpointError(f"{where} {info.name!r} has ONNX element type {info.elem_type}, which vitexport does "
                              "not write; export the model with `vitexport onnx`") from None


def _dims(dims: list[int | str | None], batched: bool) -> tuple[int, ...]:
    """Triton dims of graph dims: -1 where the axis is symbolic; without the batch axis when ``batched``."""
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in (dims[1:] if batched else dims))


def model_config(graph: GraphInterface, name: str, backend: str = "onnxruntime",
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, instances: int = 1, kind: str = "cpu",
                 max_tokens: int | None = None) -> ModelConfig:
    """The config of ``graph`` served as ``name`` on ``backend``; `UsageError` for arguments out of range."""
    check_model_name(name)
    if backend not in BACKENDS or kind not in KINDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)} and kind one of {', '.join(KINDS)}; "
                         f"got {backend!r}, {kind!r}")
    if max_batch_size < 1 or instances < 1:
        raise UsageError(f"--max-batch-size and --instances must be at least 1, got {max_batch_size}, {instances}")
    in_dims, out_dims = list(graph.input.dims), list(graph.output.dims)
    fixed_batch = bool(in_dims) and isinstance(in_dims[0], int) and in_dims[0] > 0
    labels = LABELS_FILE if graph.labels else None
    if backend == "onnxruntime":
        batched = not fixed_batch  # a fixed-batch export takes exactly its batch: no Triton batching
        inputs = (TensorConfig(graph.input.name, _triton_type(graph.input, "input"), _dims(in_dims, batched)),)
        output = TensorConfig(graph.output.name, _triton_type(graph.output, "output"), _dims(out_dims, batched),
                              labels)
        return ModelConfig(name, backend, max_batch_size if batched else 0, inputs, (output,), instances, kind)
    # python: FP32 pixels or encoded images, as `vitexport serve` takes them; the Predictor pads fixed batches
    inputs = (TensorConfig(graph.input.name, "TYPE_FP32", _dims(in_dims, True), optional=True, ragged=True),
              TensorConfig(IMAGE_INPUT, "TYPE_STRING", (1,), optional=True, ragged=True))
    output = TensorConfig(graph.output.name, "TYPE_FP32", _dims(out_dims, True), labels)
    parameters = {"max_tokens": str(max_tokens or DEFAULT_MAX_TOKENS)}
    return ModelConfig(name, backend, max_batch_size, inputs, (output,), instances, kind, parameters)


@dataclass(frozen=True)
class Repository:
    """What `write_repository` wrote: the repository (``root``), the model's folder in it (``model_dir``), the
    model's ``config`` and every file written (``files``)."""

    root: Path
    model_dir: Path
    config: ModelConfig
    files: tuple[Path, ...]

    @property
    def name(self) -> str:
        return self.config.name


def write_repository(model_path: str | os.PathLike[str], repository: str | os.PathLike[str],
                     name: str | None = None, backend: str = "onnxruntime",
                     max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, instances: int = 1, kind: str = "cpu",
                     max_tokens: int | None = None, force: bool = False) -> Repository:
    """Write ``REPOSITORY/NAME`` (NAME: the file's stem unless given) for ``model_path``; the repository folder
    is created when its parent exists, an existing model folder is replaced only with ``force``."""
    from vitexport._util.files import staged_folder

    graph = read_interface(model_path)
    name = name or Path(model_path).name.split(".")[0]
    config = model_config(graph, name, backend, max_batch_size, instances, kind, max_tokens)
    root = Path(repository)
    if root.exists() and not root.is_dir():
        raise UsageError(f"the repository {str(root)!r} is a file; pass a folder with -o")
    if not root.parent.is_dir():
        raise UsageError(f"the repository's parent folder {str(root.parent)!r} does not exist; create it first")
    root.mkdir(exist_ok=True)
    with staged_folder(root / name, force, _stage_in(root)) as staged:
        _write_model_folder(staged, graph, config)
    files = tuple(sorted(p.relative_to(root) for p in (root / name).rglob("*") if p.is_file()))
    logger.info("wrote the Triton model %s (%s backend) in %s", name, backend, root)
    return Repository(root, root / name, config, files)


def _stage_in(root: Path) -> Path:
    """Where to write a model folder before it is renamed into ``root``: beside the repository, where Triton does
    not look (it takes every folder inside, hidden ones too, for a model), when that is writable and on the same
    filesystem; else inside it."""
    parent = root.resolve().parent
    try:
        same = os.stat(parent).st_dev == os.stat(root).st_dev
    except OSError:
        return root
    return parent if same and os.access(parent, os.W_OK | os.X_OK) else root


def _write_model_folder(folder: Path, graph: GraphInterface, config: ModelConfig) -> None:
    version = folder / VERSION
    version.mkdir()
    (folder / "config.pbtxt").write_text(config.text(), encoding="utf-8")
    if graph.labels:
        (folder / LABELS_FILE).write_text("".join(f"{label}\n" for label in graph.labels), encoding="utf-8")
    source, *external = graph.files
    shutil.copyfile(source, version / "model.onnx")
    for data in external:  # the graph names them relative to itself: same names beside model.onnx
        target = version / data.relative_to(source.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, target)
    if config.backend == "python":
        (version / "model.py").write_text(PYTHON_MODEL, encoding="utf-8")


__all__ = [
    "BACKENDS", "DEFAULT_MAX_BATCH_SIZE", "IMAGE_INPUT", "KINDS", "LABELS_FILE", "MODEL_NAME_RE", "GraphInterface",
    "ModelConfig", "Repository", "TensorConfig", "check_model_name", "model_config", "read_interface",
    "write_repository",
]
