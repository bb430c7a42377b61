"""The command line as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.models import CONFIGS, SAMPLES, make_model
from vitexport import __version__, save_checkpoint
from vitexport.cli import cli

SAMPLE = SAMPLES / "digits-vit.pt"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version_and_help() -> None:
    code, out, _ = run("--version")
    assert code == 0 and __version__ in out
    code, out, _ = run("--help")
    assert code == 0 and "info" in out


def test_info_on_the_sample_shows_the_spec_example() -> None:
    code, out, _ = run("info", str(SAMPLE), "--size", "28x28", "--size", "17x45")
    assert code == 0, out
    assert "native size    28x28, patch 8x8, grid 3x3" in out
    assert "pos_embed rows: 10" in out
    assert "size 28x28: padded 32x32, grid 4x4, 16 patches, sequence length 17 (pos-embed resampled 3x3 -> 4x4)" in out
    assert "size 17x45: padded 24x48, grid 3x6, 18 patches, sequence length 19" in out
    assert "labels         0, 1, 2" in out


def test_info_json() -> None:
    code, out, _ = run("info", str(SAMPLE), "--json", "--size", "5x70")
    data = json.loads(out)
    assert code == 0
    assert data["parameters"] > 100_000
    assert data["native_grid"] == [3, 3]
    assert data["sizes"][0]["grid"] == [1, 9]
    assert data["config"]["dynamic_img_pad"] is True


def test_info_with_config_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    args = CONFIGS["reg_noembed"]
    save_file(make_model(args).state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(args))
    code, out, _ = run("info", str(tmp_path / "w.safetensors"), "--config", str(tmp_path / "cfg.json"))
    assert code == 0, out
    assert "grid 3x5" in out and "registers: 4" in out


def test_config_as_inline_json_is_the_same_as_the_file(tmp_path: Path) -> None:
    """--config '{...}' (what the "architecture" hint of an unstored layout tells users to type) works like a file."""
    from safetensors.torch import save_file

    args = CONFIGS["reg_noembed"]
    save_file(make_model(args).state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(args))
    from_file = run("info", str(tmp_path / "w.safetensors"), "--config", str(tmp_path / "cfg.json"), "--json")
    inline = run("info", str(tmp_path / "w.safetensors"), "--config", " " + json.dumps(args), "--json")
    assert from_file[0] == inline[0] == 0, inline
    assert json.loads(inline[1])["config"] == json.loads(from_file[1])["config"]
    code, _, err = run("info", str(tmp_path / "w.safetensors"), "--config", '{"embed_dim": ')
    assert code == 1 and err.startswith("Error: --config (inline JSON) is not valid JSON") and err.count("\n") == 1
    code, _, err = run("info", str(tmp_path / "w.safetensors"), "--config", '{"embed_dimm": 3}')
    assert code == 1 and "did you mean 'embed_dim'" in err
    code, _, err = run("info", str(SAMPLE), "--config", str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err


def test_info_sizes_of_an_exported_model_match_the_checkpoint(sample_onnx: Path) -> None:
    """--size on an .onnx shows the geometry from its metadata (it was silently ignored); checkpoint-only flags are
    refused there instead of ignored."""
    sizes = ("--size", "5x70", "--size", "28x28", "--size", "3x3", "--size", "97x41")
    code, out, err = run("info", str(sample_onnx), "--json", *sizes)
    assert code == 0, err
    code, ref, _ = run("info", str(SAMPLE), "--json", *sizes)
    assert code == 0 and json.loads(out)["sizes"] == json.loads(ref)["sizes"]
    assert [s["grid"] for s in json.loads(out)["sizes"]] == [[1, 9], [4, 4], [1, 1], [13, 6]]
    code, out, _ = run("info", str(sample_onnx), "--size", "5x70")
    assert code == 0 and "size 5x70: padded 8x72, grid 1x9, 9 patches, sequence length 10" in out
    for flags in (["--ema"], ["--config", '{"embed_dim": 64}']):
        code, _, err = run("info", str(sample_onnx), *flags)
        assert code == 2 and "--config and --ema apply to checkpoints" in err and err.count("\n") == 1, err


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    "make, message, code",
    [
        (lambda p: str(p / "nope.pt"), "does not exist", 2),  # a path that cannot be opened: usage
        (lambda p: str(p), "is a directory", 2),
        (lambda p: _write(p / "empty.pt", b""), "is empty", 1),
        (lambda p: _write(p / "t.pt", SAMPLE.read_bytes()[:20000]), "truncated or corrupt", 1),
        (lambda p: _write(p / "x.txt", b"not a model"), "is not a checkpoint", 1),
    ],
)
def test_bad_files_exit_with_one_line(tmp_path: Path, make, message: str, code: int) -> None:
    exit_code, _, err = run("info", make(tmp_path))
    assert exit_code == code
    assert message in err
    assert err.startswith("Error: ") and err.count("\n") == 1  # one line, no traceback
    assert "Traceback" not in err


def test_wrong_config_exit_1(tmp_path: Path) -> None:
    """A --config whose content is unusable is the work failing (1); a --config file that is not there, usage (2)."""
    (tmp_path / "cfg.json").write_text(json.dumps(dict(CONFIGS["spec_cls"], embed_dim=64)))
    code, _, err = run("info", str(SAMPLE), "--config", str(tmp_path / "cfg.json"))
    assert code == 1 and "do not fit the model config: shape mismatch" in err and err.count("\n") == 1
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run("info", str(SAMPLE), "--config", str(tmp_path / "bad.json"))
    assert code == 1 and "is not valid JSON" in err
    (tmp_path / "typo.json").write_text(json.dumps({"embed_dimm": 3}))
    code, _, err = run("info", str(SAMPLE), "--config", str(tmp_path / "typo.json"))
    assert code == 1 and "did you mean 'embed_dim'" in err


def test_bad_size_is_usage_error() -> None:
    code, _, err = run("info", str(SAMPLE), "--size", "28by28")
    assert code == 2 and "write HxW" in err


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--debug", "info", str(tmp_path / "nope.pt")])
    assert result.exit_code != 0 and result.exception is not None  # raised, not turned into one line


def test_presets_lists_names() -> None:
    code, out, _ = run("presets")
    assert code == 0 and "vit_base_patch16_224" in out and "vit_small_patch14_reg4_dinov2" in out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert rows["vit_base_patch16_siglip_224"] == "siglip" and rows["aimv2_large_patch14_224"] == "aimv2"


def test_sample_checkpoint_round_trips(tmp_path: Path) -> None:
    from vitexport import load_model

    model = load_model(SAMPLE)
    save_checkpoint(model, tmp_path / "copy.pt")
    again = load_model(tmp_path / "copy.pt")
    assert again.meta["labels"] == [str(i) for i in range(10)] and again.meta["preprocess"]["mean"]
    assert (tmp_path / "copy.pt").stat().st_mode & 0o044  # readable like a normally written file
