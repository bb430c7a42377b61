"""The one-idea helpers: the atomic writer, the output check, one-line errors, geometry, IOSpec.from_metadata."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.models import CONFIGS, ROOT, make_model, sweep_sizes
from vitexport._util.errors import OutputError, OutputExistsError, one_line
from vitexport._util.files import atomic_file, check_output, default_output, staged_output
from vitexport._util.geometry import grid_size, padded_size, token_count
from vitexport.model.layers import pad_to_patch
from vitexport.model.vit import infer_grid
from vitexport.onnx.spec import IOSpec


def test_check_output(tmp_path: Path) -> None:
    assert check_output(tmp_path / "new.onnx") == tmp_path / "new.onnx"
    (tmp_path / "old.onnx").write_text("x")
    with pytest.raises(OutputExistsError, match="exists; pass --force") as exists:
        check_output(tmp_path / "old.onnx")
    assert exists.value.exit_code == 2
    assert check_output(tmp_path / "old.onnx", force=True)
    with pytest.raises(OutputExistsError, match="is a directory"):
        check_output(tmp_path, force=True)
    with pytest.raises(OutputError, match="does not exist; create it first") as missing:
        check_output(tmp_path / "no" / "m.onnx")
    assert missing.value.exit_code == 2  # usage: found before any work


def test_atomic_file_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="half-way"), atomic_file(target, force=True) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("half-way")
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with atomic_file(target, force=True) as tmp:
        assert tmp.parent.parent == tmp_path and tmp.name == target.name  # staged beside, same name and suffix
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # as an ordinary open() creates it


def test_staging_moves_data_files_before_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moves: list[str] = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moves.append(Path(b).name), real(a, b)))
    with staged_output(tmp_path / "m.onnx") as stage:
        stage.file.write_text("model")
        (stage.folder / "m.onnx.data").write_text("weights")
        (tmp_path / "m.onnx").write_text("appeared meanwhile")
        with pytest.raises(OutputExistsError):  # a file that appeared while we worked is not overwritten
            stage.commit()
    assert moves == [] and (tmp_path / "m.onnx").read_text() == "appeared meanwhile"
    with staged_output(tmp_path / "m.onnx", force=True) as stage:
        stage.file.write_text("model")
        (stage.folder / "m.onnx.data").write_text("weights")
        moved = stage.commit()
    assert moves == ["m.onnx.data", "m.onnx"] and [p.name for p in moved] == moves
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_staging_without_commit_writes_nothing(tmp_path: Path) -> None:
    with staged_output(tmp_path / "m.onnx") as stage:
        stage.file.write_text("model")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="nothing was written"), staged_output(tmp_path / "m.onnx") as stage:
        stage.commit()


def test_default_output(tmp_path: Path) -> None:
    (tmp_path / "last.pth.tar").write_bytes(b"x")
    assert default_output(tmp_path / "last.pth.tar", ".onnx") == tmp_path / "last.onnx"
    (tmp_path / "hub").mkdir()
    assert default_output(tmp_path / "hub", ".ts") == tmp_path / "hub.ts"


def test_one_line_folds_and_bounds() -> None:
    exc = ValueError("first line\n   second\tline " + "x" * 500)
    text = one_line(exc, 60)
    assert "\n" not in text and len(text) == 60 and text.startswith("first line second line x") and text.endswith("...")
    assert one_line(exc, 40, kind=True).startswith("ValueError: first line")
    assert one_line(RuntimeError("short")) == "short"


@torch.no_grad()
def test_geometry_matches_the_model(config_name: str) -> None:
    args = CONFIGS[config_name]
    model = make_model(args)
    patch, prefix = model.config.patch_hw, model.config.num_prefix_tokens
    for h, w in sweep_sizes(args):
        geo = infer_grid(model, h, w)
        assert list(padded_size(h, w, patch)) == geo["padded_size"], (h, w)
        assert list(grid_size(h, w, patch)) == geo["grid"]
        assert token_count(h, w, patch, prefix) == geo["seq_len"]
        padded = pad_to_patch(torch.zeros(1, 1, h, w), *patch)
        assert tuple(padded.shape[-2:]) == padded_size(h, w, patch)
        tokens = model._pos_embed(model.patch_embed(torch.zeros(1, model.config.in_chans, h, w)))
        assert tokens.shape[1] == token_count(h, w, patch, prefix)
    # without padding the convolution drops the remainder
    assert grid_size(28, 30, (8, 8), pad=False) == (3, 3) and padded_size(28, 30, (8, 8), pad=False) == (28, 30)


def test_iospec_from_metadata() -> None:
    dynamic = IOSpec.from_metadata({"input_name": "pixel_values", "output_name": "features",
                                    "dynamic_axes": {"pixel_values": {"0": "batch", "2": "height", "3": "width"},
                                                     "features": {"0": "batch", "1": "tokens"}}})
    assert dynamic == IOSpec("pixel_values", "features", {0: "batch", 2: "height", 3: "width"},
                             {0: "batch", 1: "tokens"})
    static = IOSpec.from_metadata({"dynamic_axes": {"pixel_values": {}, "logits": {}}})
    assert static.input_axes == {} and static.output_axes == {}
    assert IOSpec.from_metadata({}) == IOSpec()  # metadata without axes: a dynamic export's interface
    assert IOSpec.from_metadata({"dynamic_axes": dynamic.to_json(), "output_name": "features"}) == dynamic


def test_release_freed_heap_returns_freed_pages_to_the_os() -> None:
    """Freed heap blocks below a live one stay in RSS until malloc_trim (ONNX Runtime's load leaves ~450 MB so
    for ViT-B/16); in a child process, so this test's own heap is not involved."""
    # the small blocks are over pymalloc's 512-byte limit, so they come from malloc and each pins the big block
    # below it: freeing the big ones alone gives nothing back (with 200-byte blocks it depended on the heap's state)
    code = (
        "from vitexport._util.memory import release_freed_heap\n"
        "rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) * 1024\n"
        "big, small = [], []\n"
        "for _ in range(2000):\n"
        "    big.append(bytearray(100_000)); small.append(bytearray(1000))\n"
        "del big\n"
        "before = rss(); ok = release_freed_heap(); print(ok, before - rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=ROOT).stdout.split()
    if out[0] != "True":
        pytest.skip("no glibc malloc_trim here")
    assert int(out[1]) > 150e6, out  # ~200 MB freed
