"""`vitexport triton`'s repository writer: configs that Triton's own ModelConfig message parses, whose names,
dtypes and dims are the graph's (read back with the onnx package), the model files, labels, and atomic writes.

The real server loads these repositories in tests/e2e/test_triton.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers.models import CONFIGS, make_model
from vitexport._util.errors import CheckpointError, FileKindError, OutputExistsError, UsageError
from vitexport.serving.predictor import Predictor
from vitexport.serving.triton.repository import read_interface, write_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] is not installed (pip install 'vitexport[serve]')")
text_format = pytest.importorskip("google.protobuf.text_format")

ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}


def parse_config(path: Path):
    """config.pbtxt through Triton's own ModelConfig message (unknown fields or bad values raise)."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def graph_dims(info) -> list[int]:
    """ONNX value-info dims with -1 for symbolic axes, as Triton writes them."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four export forms: dynamic, fixed batch, fixed size (fp16), features without pooling."""
    from vitexport.export.exporter import export_onnx

    folder = tmp_path_factory.mktemp("triton-exports")
    out = {}
    for key, config, options in (("dynamic", "spec_cls", {}), ("batch2", "reg_noembed", {"batch_size": 2}),
                                 ("static_fp16", "token_fcnorm", {"static_size": (48, 80), "dtype": "float16"}),
                                 ("features", "features_nopool", {})):
        out[key] = folder / f"{key}.onnx"
        export_onnx(make_model(CONFIGS[config], seed=3), out[key], **options)
    return out


@pytest.mark.slow  # four exports
@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
@pytest.mark.parametrize("form", ["dynamic", "batch2", "static_fp16", "features"])
def test_config_parses_and_matches_the_graph(exports: dict[str, Path], tmp_path: Path, backend: str,
                                             form: str) -> None:
    graph = onnx.load(str(exports[form]), load_external_data=False).graph
    (inp,), (out,) = graph.input, graph.output
    in_dims, out_dims = graph_dims(inp), graph_dims(out)
    written = write_repository(exports[form], tmp_path / "repo", name="m", backend=backend, max_batch_size=8,
                               instances=2, kind="gpu")
    config = parse_config(written.model_dir / "config.pbtxt")
    assert config.name == "m" and written.model_dir == tmp_path / "repo" / "m"
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    fixed_batch = in_dims[0] > 0
    if backend == "onnxruntime":
        assert config.platform == "onnxruntime_onnx" and not config.backend
        assert [i.name for i in config.input] == [inp.name] and [o.name for o in config.output] == [out.name]
        assert model_config_pb2.DataType.Name(config.input[0].data_type) == ONNX_TYPES[inp.type.tensor_type.elem_type]
        assert model_config_pb2.DataType.Name(config.output[0].data_type) == \
            ONNX_TYPES[out.type.tensor_type.elem_type]
        if fixed_batch:  # Triton must send exactly the graph's batch: no batching, the full dims
            assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
            assert list(config.input[0].dims) == in_dims and list(config.output[0].dims) == out_dims
        else:
            assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
            assert list(config.input[0].dims) == in_dims[1:] and list(config.output[0].dims) == out_dims[1:]
    else:
        assert config.backend == "python" and not config.platform and config.max_batch_size == 8
        assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims), i.optional, i.allow_ragged_batch)
                for i in config.input] == [(inp.name, "TYPE_FP32", in_dims[1:], True, True),
                                           ("image", "TYPE_STRING", [1], True, True)]
        assert list(config.output[0].dims) == out_dims[1:]
        assert config.parameters["max_tokens"].string_value.isdigit()
        assert (written.model_dir / "1" / "model.py").is_file()
    if form == "static_fp16":
        assert in_dims[2:] == [48, 80] and list(config.input[0].dims)[-2:] == [48, 80]
    if form == "features":  # no classes: no labels file, token axis stays dynamic
        assert not config.output[0].label_filename and not (written.model_dir / "labels.txt").exists()
        assert config.output[0].dims[0] == -1
    assert (written.model_dir / "1" / "model.onnx").read_bytes() == exports[form].read_bytes()


def test_labels_file_is_the_metadata_labels_in_order(sample_onnx: Path, tmp_path: Path) -> None:
    written = write_repository(sample_onnx, tmp_path / "repo")
    config = parse_config(written.model_dir / "config.pbtxt")
    assert written.name == "digits-vit" and config.output[0].label_filename == "labels.txt"
    labels = Predictor(str(sample_onnx), provider="cpu").labels
    assert (written.model_dir / "labels.txt").read_text().splitlines() == labels and len(labels) == 10


def test_external_data_travels_with_the_model(sample_onnx: Path, tmp_path: Path) -> None:
    """A model whose weights live in a separate file: both are copied, and the copy runs like the original."""
    model = onnx.load(str(sample_onnx))
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(model, str(src / "ext.onnx"), save_as_external_data=True, location="ext.weights", size_threshold=0)
    written = write_repository(src / "ext.onnx", tmp_path / "repo", backend="python")
    version = written.model_dir / "1"
    assert (version / "ext.weights").read_bytes() == (src / "ext.weights").read_bytes()
    x = np.random.default_rng(0).standard_normal((2, 1, 19, 33)).astype(np.float32)
    got = [p.logits for p in Predictor(str(version / "model.onnx"), provider="cpu").predict(list(x))]
    want = [p.logits for p in Predictor(str(sample_onnx), provider="cpu").predict(list(x))]
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=1e-6, atol=1e-6)


def test_existing_model_folder_needs_force_and_other_models_stay(sample_onnx: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton takes every folder in a repository (hidden ones too) for a model: a model folder is written beside
    the repository and renamed in, so a server scanning it meanwhile sees only whole models."""
    from vitexport.serving.triton import repository

    repo = tmp_path / "repo"
    seen = []
    write_model_folder = repository._write_model_folder
    monkeypatch.setattr(repository, "_write_model_folder",
                        lambda folder, *a: (seen.append(sorted(p.name for p in repo.iterdir())),
                                            write_model_folder(folder, *a)))
    write_repository(sample_onnx, repo, name="other", backend="python")
    first = write_repository(sample_onnx, repo, name="m")
    before = (first.model_dir / "config.pbtxt").read_text()
    with pytest.raises(OutputExistsError, match="--force"):
        write_repository(sample_onnx, repo, name="m", backend="python")
    assert (first.model_dir / "config.pbtxt").read_text() == before
    write_repository(sample_onnx, repo, name="m", backend="python", force=True)
    assert 'backend: "python"' in (first.model_dir / "config.pbtxt").read_text()
    assert (repo / "other" / "1" / "model.py").is_file()
    assert seen == [[], ["other"], ["m", "other"]], seen  # while each was written
    assert sorted(p.name for p in repo.iterdir()) == ["m", "other"]  # no staging folder left behind,
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # here nor beside the repository


def test_failed_write_leaves_the_old_model_and_no_staging_folder(sample_onnx: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    first = write_repository(sample_onnx, repo, name="m")
    files = {p: p.read_bytes() for p in first.model_dir.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(shutil, "copyfile", fail)
    with pytest.raises(OSError):
        write_repository(sample_onnx, repo, name="m", backend="python", force=True)
    assert {p: p.read_bytes() for p in first.model_dir.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in repo.iterdir()) == ["m"] and [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_bad_inputs_are_named(sample_onnx: Path, tmp_path: Path) -> None:
    image = Path(__file__).resolve().parents[3] / "samples" / "images" / "digit-4-28px.png"
    with pytest.raises(FileKindError, match="image"):
        write_repository(image, tmp_path / "repo")
    with pytest.raises(UsageError, match="model name"):
        write_repository(sample_onnx, tmp_path / "repo", name="../escape")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        write_repository(sample_onnx, tmp_path / "file")
    with pytest.raises(UsageError, match="does not exist"):
        write_repository(sample_onnx, tmp_path / "missing" / "repo")
    bare = tmp_path / "bare.onnx"
    model = onnx.load(str(sample_onnx))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    with pytest.raises(CheckpointError, match="no vitexport metadata"):
        read_interface(bare)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
