"""Hostile arguments and environments: work limits, outputs that are not files, signals, a full disk,
image bombs (issue 11). docs/bad-inputs.md lists each case with its test."""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.helpers.limited import ROOT, Outcome, run_cli
from tests.helpers.models import SAMPLES
from vitexport._util.errors import InputError, LimitError, OutputError, OutputExistsError
from vitexport._util.files import check_output, write_text
from vitexport.cli import cli
from vitexport.security.limits import Limits, estimate, largest_batch
from vitexport.serving.predictor import Predictor

SAMPLE = SAMPLES / "digits-vit.pt"


def one_line(result, code: int, *fragments: str) -> None:
    Outcome(result.exit_code, result.stdout, result.stderr).one_line_error(code, *fragments)


# ---------------------------------------------------------------------------
# work limits
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_oversized_work_is_refused_up_front_under_3_gb(sample_onnx: Path, tmp_path: Path) -> None:
    """Each of these exhausted memory before; now each is refused with the estimate and the option to raise."""
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((12000, 12000), np.uint8)).save(big)  # a few hundred KB, 144 M pixels
    outcomes = run_cli(
        ["verify", sample_onnx, "--sizes", "1500x1500"],
        ["verify", sample_onnx, "--batch-sizes", "1000000"],
        ["bench", sample_onnx, "--sizes", "1500x1500"],
        ["onnx", SAMPLE, "-o", tmp_path / "s.onnx", "--static", "30000x30000"],
        ["onnx", SAMPLE, "-o", tmp_path / "s.onnx", "--img-size", "30000x30000"],
        ["onnx", SAMPLE, "-o", tmp_path / "s.onnx", "--batch-size", "1000000"],
        ["torchscript", SAMPLE, "-o", tmp_path / "s.ts", "--img-size", "30000x30000"],
        ["predict", sample_onnx, big, big, big],
        ["predict", sample_onnx, big, "--max-tokens", "10000000"],
        ["predict", sample_onnx, big, "--max-tokens", "10000000", "--max-memory-gb", "1e6"],  # Pillow's limit holds
    )
    expected = [
        (2, "verify at 1500x1500", "35,345 tokens per image, over the limit of 16,640 (--max-tokens)"),
        (2, "batch 1,000,000", "GB estimated for one forward pass", "(--max-memory-gb)"),
        (2, "bench at 1500x1500", "(--max-tokens)"),
        (2, "onnx export (the traced example) at 30000x30000", "(--max-tokens)"),
        (2, "--img-size at 30000x30000", "(--max-tokens)"),
        (2, "onnx export (the traced example) at", "batch 1,000,000", "(--max-memory-gb)"),
        (2, "--img-size at 30000x30000", "(--max-tokens)"),
        (1, "a 12000x12000 image gives", "(--max-tokens)"),
        (1, "a 12000x12000 image gives", "GB estimated for one forward pass", "(--max-memory-gb)"),
        (1, "decompression-bomb limit"),
    ]
    for outcome, (code, *fragments) in zip(outcomes, expected, strict=True):
        outcome.one_line_error(code, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]  # nothing written, nothing staged


def test_limits_can_be_raised(sample_onnx: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", str(sample_onnx), "--sizes", "100x100", "--batch-sizes", "2",
                                      "--max-tokens", "200"])
    assert result.exit_code == 0, result.stderr
    one_line(CliRunner().invoke(cli, ["verify", str(sample_onnx), "--sizes", "100x100", "--max-tokens", "100"]), 2,
             "170 tokens per image, over the limit of 100 (--max-tokens)")


def test_default_sweep_skips_sizes_over_the_token_limit(sample_onnx: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", str(sample_onnx), "--max-tokens", "20"])
    assert result.exit_code == 0, result.stderr
    assert "skipped        56x56 b1: 50 tokens, over --max-tokens 20" in result.stdout
    assert "PASSED" in result.stdout


MEASURE_PEAK = (
    "import sys, numpy as np\n"
    "from vitexport._util.memory import release_freed_heap\n"
    "from vitexport.engines import create_engine\n"
    "status = lambda k: int(next(l for l in open('/proc/self/status') if l.startswith(k)).split()[1]) * 1024\n"
    "engine = create_engine('cpu', spin=False).load(sys.argv[1])\n"
    "engine.run(np.zeros((1, 3, 32, 32), np.float32))\n"
    "x = np.random.default_rng(0).standard_normal((int(sys.argv[4]), 3, int(sys.argv[2]), int(sys.argv[3])))\n"
    "x = x.astype(np.float32)\n"
    "release_freed_heap()\n"
    "open('/proc/self/clear_refs', 'w').write('5')  # VmHWM := VmRSS\n"
    "before = status('VmRSS')\n"
    "engine.run(x)\n"
    "print(status('VmHWM') - before)\n"
)


@pytest.fixture(scope="module")
def vit_ti_exports(tmp_path_factory: pytest.TempPathFactory):
    """A ViT-Ti-wide model (depth 3) and its export per attention form, made once per run on first use (shared by
    the pytest-xdist workers): the chunked export serves three sizes."""
    from tests.helpers.models import make_model
    from tests.helpers.shared import build_once
    from vitexport.export.exporter import export_onnx

    model = make_model(dict(img_size=224, patch_size=16, num_classes=10, embed_dim=192, depth=3, num_heads=3), seed=2)

    def export(attention: str) -> Path:
        def build(folder: Path) -> Path:
            export_onnx(model, folder / f"{attention}.onnx", attention=attention)
            return folder / f"{attention}.onnx"

        return build_once(tmp_path_factory, f"estimate-{attention}", build)

    return model, export


@pytest.mark.slow  # measures the peak of real runs (fresh processes) at up to ~2.5k tokens
@pytest.mark.parametrize("attention, height, width, batch", [
    ("chunked", 512, 512, 1), ("chunked", 784, 800, 1), ("chunked", 256, 240, 4), ("sdpa", 512, 512, 1)])
def test_estimate_is_within_25_percent_of_the_measured_peak(vit_ti_exports, attention: str, height: int, width: int,
                                                            batch: int) -> None:
    """The estimate against ONNX Runtime's measured peak of one forward pass, in a fresh process: its peak RSS
    (VmHWM, reset just before the run) over its RSS before it, freed heap pages returned first. A ViT-Ti-wide
    model with chunked attention at ~1k tokens (one block) and ~2.5k (two), a batch, and whole score matrices."""
    model, export = vit_ti_exports
    path = export(attention)
    measured = int(subprocess.run([sys.executable, "-c", MEASURE_PEAK, str(path), str(height), str(width), str(batch)],
                                  capture_output=True, text=True, check=True, timeout=300, cwd=ROOT).stdout)
    est = estimate(model.config, height, width, batch, attention).bytes
    assert measured > 30e6, measured  # big enough to measure
    assert abs(est / measured - 1) <= 0.25, (est / 1e6, measured / 1e6)


def test_predictor_splits_batches_to_stay_within_memory(sample_onnx: Path) -> None:
    predictor = Predictor(str(sample_onnx), provider="cpu", max_memory_gb=0.01)
    step = largest_batch(predictor.vit_config, 100, 100, predictor.limits)
    assert 1 <= step < 16
    calls: list[int] = []
    real = predictor.run_batch
    predictor.run_batch = lambda batch: (calls.append(len(batch)), real(batch))[1]
    images = [np.full((100, 100), i * 20, np.uint8) for i in range(12)]
    together = predictor.predict(images)
    assert max(calls) == step and sum(calls) == 12
    alone = [predictor.predict(img) for img in images]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    with pytest.raises(InputError, match="GB estimated for one forward pass"):
        Predictor(str(sample_onnx), provider="cpu", max_memory_gb=1e-4).predict(images[0])
    with pytest.raises(LimitError, match="max_tokens must be at least 1"):
        Limits(max_tokens=0)


# ---------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------
def test_force_replaces_regular_files_only(sample_onnx: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    target = tmp_path / "elsewhere.json"
    target.write_text("keep")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    try:
        for path, what in ((fifo, "is a FIFO"), (sock_path, "is a socket"), (link, "is a symbolic link")):
            one_line(CliRunner().invoke(cli, ["verify", str(sample_onnx), "--json", str(path), "--force"]), 2, what)
            with pytest.raises(OutputExistsError, match=what):
                write_text(path, "x", force=True)
    finally:
        sock.close()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    assert os.path.islink(link) and target.read_text() == "keep"


def test_force_never_replaces_a_device(tmp_path: Path) -> None:
    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD, which this machine does not give")
    one_line(CliRunner().invoke(cli, ["onnx", str(SAMPLE), "-o", str(dev), "--force"]), 2, "is a character device")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


@pytest.mark.slow
def test_force_never_replaces_an_input(sample_onnx: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(sample_onnx.read_bytes())
    before = model.read_bytes()
    one_line(CliRunner().invoke(cli, ["verify", str(model), "--json", str(model), "--force"]), 2,
             "is the input", "of this command")
    os.link(model, tmp_path / "hardlink.onnx")
    one_line(CliRunner().invoke(cli, ["verify", str(model), "--plot", str(tmp_path / "hardlink.onnx"), "--force"]),
             2, "is the input")
    one_line(CliRunner().invoke(cli, ["quantize", str(model), "-o", str(model), "--force"]), 2, "is the input")
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(SAMPLE.read_bytes())
    from vitexport import load_model
    from vitexport.export.onnx_export import export_onnx

    (tmp_path / "ext").mkdir()
    external = export_onnx(load_model(SAMPLE), tmp_path / "ext" / "e.onnx", external_data=True).external_data
    data_before = external.read_bytes()
    one_line(CliRunner().invoke(cli, ["verify", str(tmp_path / "ext" / "e.onnx"), "--json", str(external),
                                      "--force"]), 2, "is the input")
    assert external.read_bytes() == data_before
    one_line(CliRunner().invoke(cli, ["onnx", str(ckpt), "-o", str(ckpt), "--force"]), 2, "is the input")
    assert model.read_bytes() == before and ckpt.read_bytes() == SAMPLE.read_bytes()


@pytest.mark.parametrize(
    "args, fragment",
    [(["--seed", "-1"], "seed must be a non-negative integer"), (["--atol", "nan"], "atol must be a finite number"),
     (["--rtol", "-1"], "rtol must be a finite number")],
)
def test_verify_arguments_out_of_range(sample_onnx: Path, args: list[str], fragment: str) -> None:
    one_line(CliRunner().invoke(cli, ["verify", str(sample_onnx), "--sizes", "28x28", *args]), 2, fragment)


def test_json_and_plot_must_differ(sample_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.out"
    result = CliRunner().invoke(cli, ["verify", str(sample_onnx), "--json", str(out), "--plot", str(out)])
    assert result.exit_code == 2 and "--json and --plot name the same file" in result.stderr, result.stderr
    assert not out.exists()


def _export_cmd(out: Path, command: str = "onnx") -> list[str]:
    return [sys.executable, "-m", "vitexport.cli", command, str(SAMPLE), "-o", str(out)]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_termination_signals_clean_the_staging_folder(tmp_path: Path, signum: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(_export_cmd(tmp_path / "m.onnx"), stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not any(tmp_path.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert [p.name.startswith(".m.onnx.") for p in tmp_path.iterdir()] == [True], "the export never staged"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert err.strip().splitlines()[-1] == f"Error: stopped by {signal.Signals(signum).name}; nothing was written " \
                                          "or replaced"
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC at the write: an OutputError that says so; the old report stays, nothing is left behind."""
    old = tmp_path / "report.json"
    old.write_text("previous")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError, match="no space left on device; free some space"):
        write_text(old, "new", force=True)
    monkeypatch.undo()
    assert old.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["onnx", "torchscript"])
def test_file_size_limit_during_an_export_is_one_line(tmp_path: Path, command: str) -> None:
    """A real write failure (RLIMIT_FSIZE, the way a full quota fails): one line, nothing left behind
    (torch.jit.save writing the file itself aborted the process: SIGABRT, staging folder left)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(_export_cmd(tmp_path / f"m.{command}", command), capture_output=True, text=True,
                          env=env, preexec_fn=limit, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "file too large" in proc.stderr and "nothing was replaced" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_check_output_names_what_it_refuses(tmp_path: Path) -> None:
    (tmp_path / "in.onnx").write_text("model")
    with pytest.raises(OutputExistsError, match="is the input"):
        check_output(tmp_path / "in.onnx", force=True, inputs=(tmp_path / "in.onnx",))
    assert check_output(tmp_path / "new.json", inputs=(tmp_path / "missing.onnx",)) == tmp_path / "new.json"


