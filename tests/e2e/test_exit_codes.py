"""One exit-code rule for every command (README, "Exit codes"): an input path that does not exist or cannot be
opened is usage (2), found before any work; a file of the right kind whose contents are unusable is the work
failing (1). Each command is tried with each of its input paths missing, a directory, a FIFO and (not as root)
unreadable, and with a corrupt file of the right kind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.models import SAMPLES
from vitexport.cli import cli

SAMPLE = SAMPLES / "digits-vit.pt"
IMAGE = str(SAMPLES / "images" / "digit-4-28px.png")

# command -> how to call it with (model or checkpoint, extra input) filled in; "{ok_model}" and "{ok_ckpt}" are
# good files, "{bad}" the path under test (its role given by the key).
COMMANDS: dict[str, list[str]] = {
    "info": ["info", "{bad_ckpt}"],
    "onnx": ["onnx", "{bad_ckpt}", "-o", "{out}/m.onnx"],
    "torchscript": ["torchscript", "{bad_ckpt}", "-o", "{out}/m.ts"],
    "onnx --config": ["onnx", "{ok_ckpt}", "--config", "{bad_json}", "-o", "{out}/m.onnx"],
    "quantize": ["quantize", "{bad_model}", "-o", "{out}/m.int8.onnx"],
    "predict MODEL": ["predict", "{bad_model}", IMAGE, "--provider", "cpu"],
    "predict IMAGE": ["predict", "{ok_model}", "{bad_image}", "--provider", "cpu"],
    "bench": ["bench", "{bad_model}", "--provider", "cpu", "--warmup", "0", "--iters", "1"],
    "verify": ["verify", "{bad_model}", "--provider", "cpu"],
    "verify --checkpoint": ["verify", "{ok_model}", "--checkpoint", "{bad_ckpt}", "--provider", "cpu"],
    "batch MODEL": ["batch", "{bad_model}", IMAGE, "-o", "{out}/rows"],
    "batch SOURCE": ["batch", "{ok_model}", "{bad_image}", "-o", "{out}/rows"],
    "triton": ["triton", "{bad_model}", "-o", "{out}/repo"],
}
ROLE = {"{bad_ckpt}": "ckpt", "{bad_model}": "model", "{bad_image}": "image", "{bad_json}": "json"}


def _path(kind: str, folder: Path) -> str:
    """A path that cannot be used as an input file: missing, a directory, a FIFO, or a file without permission."""
    target = folder / f"{kind}-input"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "unreadable":
        target.write_bytes(SAMPLE.read_bytes())
        target.chmod(0)
    return str(target)


def _args(command: str, bad: str, out: Path, sample_onnx: Path) -> list[str]:
    fill = {"{ok_model}": str(sample_onnx), "{ok_ckpt}": str(SAMPLE), "{out}": str(out)}
    args = []
    for arg in COMMANDS[command]:
        if arg in ROLE:
            arg = bad
        for key, value in fill.items():
            arg = arg.replace(key, value)
        args.append(arg)
    return args


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "unreadable"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_input_path_that_cannot_be_opened_exits_2(command: str, kind: str, sample_onnx: Path,
                                                      tmp_path: Path) -> None:
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads files without permission: no unreadable file to make")
    if kind == "directory" and command.startswith("batch SOURCE"):
        pytest.skip("a folder is a SOURCE of batch (its images are the input)")
    if kind == "directory" and command == "predict IMAGE":
        pytest.skip("a folder is a SOURCE of predict (its images are the input)")
    out = tmp_path / "out"
    out.mkdir()
    result = _invoke(_args(command, _path(kind, tmp_path), out, sample_onnx))
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output and not any(out.iterdir())


def _corrupt(role: str, folder: Path, sample_onnx: Path) -> str:
    """A file of the right kind (by name and first bytes) whose contents are unusable."""
    if role == "ckpt":
        target = folder / "cut.pt"
        target.write_bytes(SAMPLE.read_bytes()[:20000])
    elif role == "model":
        target = folder / "cut.onnx"
        target.write_bytes(sample_onnx.read_bytes()[:5000])
    elif role == "image":
        target = folder / "cut.png"
        target.write_bytes(Path(IMAGE).read_bytes()[:60])
    else:
        target = folder / "bad.json"
        target.write_text('{"embed_dim": 65}')
    return str(target)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_whose_contents_are_unusable_exits_1(command: str, sample_onnx: Path, tmp_path: Path) -> None:
    role = next(ROLE[a] for a in COMMANDS[command] if a in ROLE)
    out = tmp_path / "out"
    out.mkdir()
    result = _invoke(_args(command, _corrupt(role, tmp_path, sample_onnx), out, sample_onnx))
    if command in ("batch SOURCE",):  # a bad image among a dataset is an error row: the job went on
        assert result.exit_code == 0 and "failed    1" in result.stdout, result.output
        return
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not [p for p in out.iterdir() if p.name != "rows"]


def test_a_missing_output_folder_exits_2(tmp_path: Path) -> None:
    result = _invoke(["onnx", str(SAMPLE), "-o", str(tmp_path / "no" / "m.onnx")])
    assert result.exit_code == 2 and "does not exist; create it first" in result.stderr, result.output


def test_a_name_too_long_is_a_path_error_and_a_row_in_a_list(sample_onnx: Path, tmp_path: Path) -> None:
    """`info` on a name over the file system's limit exits 2 with one line (was an unexpected OSError, exit 1); in a
    path list given to `predict`, that line is a row with its error and the other images run."""
    long_name = str(tmp_path / ("y" * 300 + ".onnx"))
    result = CliRunner().invoke(cli, ["info", long_name])
    assert result.exit_code == 2 and "File name too long" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    listing = tmp_path / "list.txt"
    listing.write_text(f"{SAMPLES / 'images' / 'digit-4-28px.png'}\n{tmp_path / ('z' * 300 + '.png')}\n")
    result = CliRunner().invoke(cli, ["predict", str(sample_onnx), str(listing), "--provider", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["error"] is None and rows[0]["top_k"][0]["label"] == "4"
    assert "File name too long" in rows[1]["error"]
