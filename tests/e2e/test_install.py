"""The serving install: inference commands without torch or onnx, the install command when a part is missing,
light startup; and the small frictions of issue 13 (each test fails on the old behaviour)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.models import CONFIGS, ROOT, SAMPLES, make_model
from vitexport.cli import cli

PNG = SAMPLES / "images" / "digit-1-28px.png"
EXPORT_ONLY = ("torch", "onnx", "onnxscript", "onnx_ir", "safetensors", "timm", "torchvision", "matplotlib")

# Runs the CLI (or a snippet) in a fresh interpreter in which the export extra's modules cannot be imported,
# as in a venv with only the base install: an import of one raises ModuleNotFoundError, like a missing package.
BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
if sys.argv[2] == "-c":
    exec(sys.argv[3])
else:
    from vitexport.cli import main
    sys.argv = ["vitexport", *sys.argv[2:]]
    main()
"""


def run_blocked(*args: str, blocked: tuple[str, ...] = EXPORT_ONLY, cwd: Path | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(blocked), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sample_onnx: Path) -> Path:
    folder = tmp_path_factory.mktemp("served")
    return Path(shutil.copy(sample_onnx, folder / "digits-vit.onnx"))


def test_inference_commands_never_import_torch_or_onnx(served: Path) -> None:
    """info, predict, bench and Predictor on an exported model run with torch, onnx, safetensors ... unimportable."""
    r = run_blocked("info", str(served))
    assert r.returncode == 0, r.stderr
    assert "opset          18" in r.stdout and "resampling     portable" in r.stdout and "ops            " in r.stdout
    r = run_blocked("info", str(served), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["resample_matmuls"], r.stderr
    r = run_blocked("predict", str(served), str(PNG), "--json", "--provider", "auto")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["top_k"][0]["label"] == "1"  # stdout is exactly the JSON array
    r = run_blocked("bench", str(served), "--sizes", "28x28,17x45", "--batch-sizes", "1,2", "--warmup", "0",
                    "--iters", "2", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["cases"]) == 4, r.stderr
    snippet = (f"from PIL import Image; from vitexport.runtime import Predictor; "
               f"p = Predictor({str(served)!r}, provider='cpu'); print(p.predict(Image.open({str(PNG)!r})).top_k[0])")
    r = run_blocked("-c", snippet)
    assert r.returncode == 0 and "'label': '1'" in r.stdout, r.stderr


def test_inference_of_a_torchscript_info_needs_no_torch(tmp_path: Path) -> None:
    from vitexport.export.torchscript_export import export_torchscript

    export_torchscript(make_model(CONFIGS["spec_cls"]), tmp_path / "m.ts")
    r = run_blocked("info", str(tmp_path / "m.ts"))
    assert r.returncode == 0 and r.stdout.startswith("torchscript"), r.stderr


@pytest.mark.parametrize("args, what", [
    (["onnx", str(SAMPLES / "digits-vit.pt"), "-o", "x.onnx"], "`vitexport onnx`"),
    (["torchscript", str(SAMPLES / "digits-vit.pt"), "-o", "x.ts"], "`vitexport torchscript`"),
    (["info", str(SAMPLES / "digits-vit.pt")], "`vitexport info` on a checkpoint"),
    (["verify", "{onnx}"], "`vitexport verify`"),
    (["quantize", "{onnx}", "-o", "q.onnx"], "`vitexport quantize`"),
    (["bench", "{onnx}", "--compare-torch"], "`vitexport bench --compare-torch`"),
])
def test_commands_that_need_torch_name_the_install_command(served: Path, tmp_path: Path, args: list[str],
                                                           what: str) -> None:
    r = run_blocked(*[a.replace("{onnx}", str(served)) for a in args], cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith(f"Error: {what} needs ") and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.rstrip().endswith("install it with: pip install 'vitexport[export]'"), r.stderr
    assert list(tmp_path.iterdir()) == []


def test_plot_names_its_extra(served: Path, tmp_path: Path) -> None:
    r = run_blocked("verify", str(served), "--plot", str(tmp_path / "h.png"), blocked=("matplotlib",))
    assert r.returncode == 2 and "pip install 'vitexport[plot]'" in r.stderr, r.stderr


def test_startup_imports_nothing_heavy() -> None:
    """`vitexport --help` and a subcommand's --help import no numpy, onnxruntime, PIL, torch or onnx."""
    snippet = ("import sys; from vitexport.cli import cli\n"
               "for args in (['--help'], ['predict', '--help'], ['onnx', '--help'], ['verify', '--help']):\n"
               "    cli(args, standalone_mode=False)\n"
               "heavy = {'numpy', 'onnxruntime', 'PIL', 'torch', 'onnx'}\n"
               "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    r = run_blocked("-c", snippet, blocked=())
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "LOADED []", r.stdout[-300:] + r.stderr


def test_probe_model_is_the_one_onnx_builds() -> None:
    """The provider probe is a serialized constant (no onnx at run time); it is this one-node graph."""
    from onnx import TensorProto, helper

    from vitexport.engines.ort import PROBE_MODEL, probe_provider

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    assert model.SerializeToString() == PROBE_MODEL
    assert probe_provider("cpu") == (True, "")


def test_cuda_preload_prints_nothing_on_stdout(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """onnxruntime.preload_dlls print()s every CUDA library it misses (a torch-free install misses them all):
    on stdout that broke `predict --json`."""
    import onnxruntime

    from vitexport.engines import ort

    monkeypatch.setattr(onnxruntime, "preload_dlls", lambda: print("Failed to load libcurand.so.10"), raising=False)
    ort._preload_cuda()
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------
# smaller frictions
# ---------------------------------------------------------------------------
def test_bench_auto_prints_the_fallback_note(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vitexport.engines.ort as ort_engine

    monkeypatch.setattr(ort_engine, "probe_provider", lambda provider, debug=False: (False, "no GPU in this test"))
    args = ["bench", str(served), "--provider", "auto", "--sizes", "28x28", "--batch-sizes", "1", "--warmup", "0",
            "--iters", "1"]
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code == 0, result.output
        assert result.stderr == "note: auto: running on the CPU (no GPU in this test)\n"
    assert json.loads(result.stdout)["provider_note"] == "auto: running on the CPU (no GPU in this test)"
    result = CliRunner().invoke(cli, [*args[:2], "--provider", "cpu", *args[4:]])
    assert result.exit_code == 0 and result.stderr == ""


def test_torchscript_verify_names_its_engine_and_warns_nothing(tmp_path: Path) -> None:
    from vitexport.export.torchscript_export import export_torchscript

    export_torchscript(make_model(CONFIGS["spec_cls"]), tmp_path / "m.ts")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # torch.jit.load's deprecation warning fails the test
        result = CliRunner().invoke(cli, ["verify", str(tmp_path / "m.ts"), "--sizes", "28x28,17x45",
                                          "--batch-sizes", "1"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(rows) == 2 and all(" torchscript-cpu " in r and " run " in r and " ort " not in r for r in rows), rows


def test_walk_through_outputs_are_ignored_by_git() -> None:
    """Every file the README's commands write (and verify's report and heatmap) is git-ignored."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: .gitignore cannot be checked")
    readme = (ROOT / "README.md").read_text()
    written = {"report.json", "heatmap.png", "digits-vit.int8.onnx", "digits-vit.ts", "digits-vit.onnx.data"}
    for line in readme.splitlines():
        words = line.split()
        for flag in ("-o", "--json", "--plot"):
            if "vitexport" in words and flag in words[:-1]:
                written.add(words[words.index(flag) + 1])
    assert "digits-vit.onnx" in written
    for name in sorted(written):
        r = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT)
        assert r.returncode == 0, f"{name} is not git-ignored"


def test_set_up_puts_vitexport_on_the_path() -> None:
    """The walk-through types `vitexport ...`: Set up activates the venv before it."""
    readme = (ROOT / "README.md").read_text()
    setup, walk = readme.split("## Set up", 1)[1].split("## Walk-through", 1)
    assert ". .venv/bin/activate" in setup or "source .venv/bin/activate" in setup
    assert "$ vitexport " in walk


def test_a_closed_pipe_stops_quietly(served: Path) -> None:
    """`vitexport info m.onnx | head -1`: the reader leaves early; no 'unexpected BrokenPipeError', exit 141."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "vitexport.cli", "info", str(served)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before the first line is written: every write fails with EPIPE
    _, err = proc.communicate(timeout=120)
    assert err.decode() == "" and proc.returncode == 141, (proc.returncode, err.decode())


def test_batch_runs_without_torch_onnx_or_ray_and_names_its_extra(served: Path, tmp_path: Path) -> None:
    """`vitexport batch` here needs pyarrow only (torch, onnx and Ray unimportable); without pyarrow, or Ray Data
    for --ray, it exits 2 with the install command of the batch extra."""
    blocked = (*EXPORT_ONLY, "ray")
    r = run_blocked("batch", str(served), str(PNG), "-o", str(tmp_path / "out"), "--json", "--provider", "auto",
                    blocked=blocked)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["images"] == 1 and json.loads(r.stdout)["failed"] == 0
    for extra_blocked, args in ((("pyarrow",), ()), (("ray",), ("--ray",))):
        r = run_blocked("batch", str(served), str(PNG), "-o", str(tmp_path / "o2"), *args,
                        blocked=(*EXPORT_ONLY, *extra_blocked))
        assert r.returncode == 2 and "pip install 'vitexport[batch]'" in r.stderr, r.stderr
        assert not (tmp_path / "o2").exists()
