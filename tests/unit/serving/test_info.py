"""`vitexport.serving.info`: typed descriptions of a checkpoint and of exported files, their JSON (`info --json`,
keys in a fixed order) and the geometry of the sizes asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.models import CONFIGS, SAMPLES, make_model
from vitexport._util.errors import UsageError
from vitexport._util.geometry import input_geometry
from vitexport.model.config import ViTConfig
from vitexport.serving.info import ArtifactInfo, CheckpointInfo, SizeGeometry, describe_file

# `info --json` keys, in order: scripts read them (README "Command line")
CHECKPOINT_KEYS = ["path", "format", "config_source", "sha256", "preprocess", "labels", "notes", "kind", "config",
                   "parameters", "patch_size", "native_grid", "prefix_tokens", "pos_embed_rows", "sizes"]
ONNX_KEYS = ["kind", "path", "bytes", "opset", "inputs", "outputs", "external_data", "op_counts", "resample",
             "resize", "resample_matmuls", "metadata"]
SIZES = ((28, 28), (17, 45), (5, 70), (1, 1))


def test_checkpoint_info_is_typed_and_its_json_keeps_the_keys() -> None:
    info = describe_file(SAMPLES / "digits-vit.pt", sizes=SIZES)
    assert isinstance(info, CheckpointInfo) and info.kind == "checkpoint"
    cfg = ViTConfig.from_dict(info.config)
    assert (info.img_size, info.patch_size, info.native_grid) == (cfg.img_hw, [8, 8], [3, 3])
    assert (info.prefix_tokens.class_token, info.prefix_tokens.registers, info.prefix_tokens.total) == (1, 0, 1)
    assert info.pos_embed_rows == 10 and info.parameters > 100_000 and info.labels[:3] == ["0", "1", "2"]
    expected = [input_geometry(h, w, cfg.patch_hw, cfg.dynamic_img_pad, cfg.num_prefix_tokens, cfg.grid_size)
                for h, w in SIZES]
    assert [SizeGeometry(**g) for g in expected] == info.sizes
    data = info.to_json()
    assert list(data) == CHECKPOINT_KEYS
    assert data["prefix_tokens"] == {"class": 1, "registers": 0, "total": 1} and data["sizes"] == expected


def test_registers_and_no_class_token_are_counted(tmp_path: Path) -> None:
    from vitexport.checkpoint import save_checkpoint

    save_checkpoint(make_model(CONFIGS["nocls_avgmax"]), tmp_path / "m.pt")
    info = describe_file(tmp_path / "m.pt")
    assert info.prefix_tokens.to_json() == {"class": 0, "registers": 2, "total": 2} and info.sizes == []


def test_onnx_info_is_typed_and_its_json_keeps_the_keys(sample_onnx: Path) -> None:
    info = describe_file(sample_onnx)
    assert isinstance(info, ArtifactInfo) and info.kind == "onnx" and info.sizes is None
    graph = info.graph
    assert graph is not None and graph.opset == 18 and graph.resample == "portable" and graph.resize == []
    assert graph.inputs == {"pixel_values": ["batch", 1, "height", "width"]}
    assert list(graph.op_counts.values()) == sorted(graph.op_counts.values(), reverse=True)
    assert graph.nodes == sum(graph.op_counts.values()) and info.bytes == sample_onnx.stat().st_size
    assert list(info.to_json()) == ONNX_KEYS  # no "sizes" unless asked for
    with_sizes = describe_file(sample_onnx, sizes=SIZES)
    assert list(with_sizes.to_json()) == [*ONNX_KEYS, "sizes"]
    assert with_sizes.sizes == describe_file(SAMPLES / "digits-vit.pt", sizes=SIZES).sizes  # same geometry


def test_torchscript_info_has_metadata_and_no_graph(tmp_path: Path) -> None:
    from vitexport.export.torchscript_export import export_torchscript

    path = tmp_path / "m.ts"
    export_torchscript(make_model(CONFIGS["spec_cls"]), path)
    info = describe_file(path)
    assert info.kind == "torchscript" and info.graph is None and info.metadata["native_grid"] == [3, 3]
    assert list(info.to_json()) == ["kind", "path", "bytes", "metadata"]


@pytest.mark.parametrize("options", [{"config": {"img_size": 28}}, {"use_ema": True}])
def test_checkpoint_options_are_refused_for_an_exported_file(sample_onnx: Path, options: dict) -> None:
    with pytest.raises(UsageError):
        describe_file(sample_onnx, **options)
