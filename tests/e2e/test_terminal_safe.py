"""Terminal-safe output (issue 22, row 6): strings from files (labels, metadata values such as ``version``, member
names inside tar shards, error and log lines that quote them) are printed with every control character escaped, so
a file cannot set the window title (OSC), clear the screen (CSI), overwrite a line (CR), reorder it (bidi
overrides) or forge a second ``Error:`` line (a newline). ``--json`` output stays exact."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from tests.helpers.models import SAMPLES
from tests.helpers.serving import VITEXPORT, env
from vitexport._util.text import UNSAFE, safe_text
from vitexport.cli import cli

EVIL = {
    "osc-title": "\x1b]0;pwned\x07",
    "csi-clear": "\x1b[2J\x1b[H",
    "forged-line": "seven\nError: forged",
    "carriage-return": "fine\rFAIL",
    "bidi": "\u202egnp.exe",
    "c1-csi": "\x9b31mred",
    "line-separator": "a\u2028b",
}
LABELS = [*EVIL.values(), "7", "8", "9"]
VERSION = "0.1\x1b]0;version\x07\nError: forged by the version"
IMAGE = SAMPLES / "images" / "digit-4-28px.png"


def assert_terminal_safe(text: str) -> None:
    assert not UNSAFE.search(text.replace("\n", "")), repr(text)
    assert "\nError: forged" not in "\n" + text, text


@pytest.fixture(scope="module")
def evil_onnx(sample_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    proto = onnx.load(str(sample_onnx))
    for prop in proto.metadata_props:
        if prop.key == "vitexport.labels":
            prop.value = json.dumps(LABELS)
        elif prop.key == "vitexport.version":
            prop.value = json.dumps(VERSION) if prop.value.startswith('"') else VERSION
    path = tmp_path_factory.mktemp("evil") / "evil.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_safe_text_escapes_every_control_and_nothing_else() -> None:
    assert safe_text("plain text, tab\tand ünïcödé 漢字") == "plain text, tab\tand ünïcödé 漢字"
    assert safe_text("\x1b]0;t\x07") == "\\x1b]0;t\\x07"
    assert safe_text("a\nb\rc\x9bd\u202ee\x00\x7f") == "a\\nb\\rc\\x9bd\\u202ee\\x00\\x7f"
    assert safe_text(json.dumps(LABELS)) == json.dumps(LABELS)  # JSON output is unchanged
    for value in EVIL.values():
        assert_terminal_safe(safe_text(value))


def test_predict_prints_labels_escaped_and_json_exact(evil_onnx: Path) -> None:
    code, out, _ = run("predict", str(evil_onnx), str(IMAGE), "--top-k", "10", "--provider", "cpu")
    assert code == 0, out
    assert_terminal_safe(out)
    for value in EVIL.values():
        assert safe_text(value) in out, (value, out)
    code, out, _ = run("predict", str(evil_onnx), str(IMAGE), "--top-k", "10", "--provider", "cpu", "--json")
    assert code == 0
    assert {row["label"] for row in json.loads(out)[0]["top_k"]} == set(LABELS)  # exact, escapes undone


def test_info_prints_labels_and_version_escaped_and_json_exact(evil_onnx: Path) -> None:
    code, out, _ = run("info", str(evil_onnx))
    assert code == 0, out
    assert_terminal_safe(out)
    assert safe_text(VERSION) in out and safe_text(EVIL["osc-title"]) in out
    code, out, _ = run("info", str(evil_onnx), "--json")
    meta = json.loads(out)["metadata"]
    assert meta["labels"] == LABELS and meta["version"] == VERSION


def test_member_names_inside_a_tar_shard_are_escaped(sample_onnx: Path, tmp_path: Path) -> None:
    """Paths inside archives: each row names its member, a failed member's error line too."""
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in ((f"{EVIL['osc-title']}ok.png", IMAGE.read_bytes()),
                           (f"{EVIL['forged-line']}.png", b"not an image"),
                           (f"{EVIL['bidi']}.png", IMAGE.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    code, out, err = run("predict", str(sample_onnx), str(shard), "--provider", "cpu")
    assert code == 0, out + err
    assert_terminal_safe(out + err)
    assert safe_text(EVIL["osc-title"]) in out and safe_text(EVIL["bidi"]) in out
    assert safe_text(EVIL["forged-line"]) in out + err


def test_error_and_log_lines_are_escaped(sample_onnx: Path, tmp_path: Path) -> None:
    """A warning and a one-line error that quote a file name (in a process of its own: the log handler is set up
    once per process)."""
    proto = onnx.load(str(sample_onnx))
    for prop in proto.metadata_props:
        if prop.key == "vitexport.preprocess":
            proto.metadata_props.remove(prop)  # a warning names the model: "... carries no preprocessing"
            break
    path = tmp_path / f"{EVIL['csi-clear']}m.onnx"
    path.write_bytes(proto.SerializeToString())
    done = subprocess.run([*VITEXPORT, "predict", str(path), str(IMAGE), "--provider", "cpu"], capture_output=True,
                          text=True, env=env(), timeout=120)
    assert done.returncode == 0 and "carries no preprocessing" in done.stderr, done.stderr
    assert_terminal_safe(done.stdout + done.stderr)
    code, out, err = run("info", str(tmp_path / f"{EVIL['forged-line']}.onnx"))  # missing: Error: names it
    assert code == 2 and "Error:" in err
    assert_terminal_safe(out + err)
