"""The GPU-visit tools on the CPU: wheel split/join, gpu_check's steps, placement analysis, the GPU benchmark's logic.

The GPU itself is exercised by tests/e2e/test_cuda.py (marked cuda); these make sure the prepared
script still works, so that a GPU visit needs nothing but the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from benchmarks import gpu_bench
from scripts import gpu_check, ort_placement
from tests.helpers.models import ROOT

SPLIT = ROOT / "scripts" / "split_wheel.sh"
PINNED = subprocess.run(["bash", str(SPLIT), "wheel-name"], capture_output=True, text=True, check=True).stdout.strip()


def split_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SPLIT), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "thing-1.0-py3-none-any.whl"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    return path


def test_split_join_round_trip(blob: Path, tmp_path: Path) -> None:
    result = split_cmd("split", str(blob), str(tmp_path / "parts"), "3000")
    assert result.returncode == 0, result.stderr
    parts = sorted((tmp_path / "parts").glob("*.part-*"))
    assert [p.stat().st_size for p in parts] == [3000, 3000, 3000, 1000]
    manifest = (tmp_path / "parts" / f"{blob.name}.sha256").read_text().splitlines()
    assert manifest[0] == f"{hashlib.sha256(blob.read_bytes()).hexdigest()}  {blob.name}"
    assert len(manifest) == 1 + len(parts)
    result = split_cmd("join", str(tmp_path / "parts"), str(tmp_path / "joined"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "joined" / blob.name).read_bytes() == blob.read_bytes()


@pytest.mark.parametrize("damage", ["corrupt", "missing", "extra"])
def test_join_refuses_damaged_parts(blob: Path, tmp_path: Path, damage: str) -> None:
    parts = tmp_path / "parts"
    assert split_cmd("split", str(blob), str(parts), "3000").returncode == 0
    second = parts / f"{blob.name}.part-001"
    if damage == "corrupt":
        data = bytearray(second.read_bytes())
        data[100] ^= 0xFF
        second.write_bytes(bytes(data))
    elif damage == "missing":
        second.unlink()
    else:
        (parts / f"{blob.name}.part-009").write_bytes(b"x")
    result = split_cmd("join", str(parts), str(tmp_path / "joined"))
    assert result.returncode == 1
    expected = {"corrupt": "corrupted part: " + second.name, "missing": "missing part: " + second.name,
                "extra": f"unexpected part: {blob.name}.part-009"}[damage]
    assert expected in result.stderr
    assert not (tmp_path / "joined" / blob.name).exists()


def test_join_refuses_a_manifest_that_contradicts_the_pin(tmp_path: Path) -> None:
    fake = tmp_path / PINNED
    fake.write_bytes(b"not the real wheel" * 100)
    assert split_cmd("split", str(fake), str(tmp_path / "parts"), "500").returncode == 0
    result = split_cmd("join", str(tmp_path / "parts"), str(tmp_path / "joined"))
    assert result.returncode == 1 and "pinned" in result.stderr


def test_stash_moves_parts_out_of_the_repository(blob: Path, tmp_path: Path) -> None:
    whl = tmp_path / "repo" / ".whl"
    assert split_cmd("split", str(blob), str(tmp_path / "all"), "3000").returncode == 0
    env = dict(os.environ, WHL_DIR=str(whl))
    (whl / "parts").mkdir(parents=True)
    for name in (f"{blob.name}.part-000", f"{blob.name}.sha256"):  # one call carries one part
        (tmp_path / "all" / name).rename(whl / "parts" / name)
    result = split_cmd("stash", str(tmp_path / "dest"), env=env)
    assert result.returncode == 0, result.stderr
    assert "ok      " + f"{blob.name}.part-000" in result.stdout and f"waiting {blob.name}.part-003" in result.stdout
    assert not list((whl / "parts").iterdir())
    damaged = whl / "parts" / f"{blob.name}.part-001"
    damaged.write_bytes(b"wrong")
    result = split_cmd("stash", str(tmp_path / "dest"), env=env)
    assert result.returncode == 1 and "corrupted part" in result.stderr


def _wheel(path: Path) -> Path:
    """A minimal valid wheel (pip installs it)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fakepkg/__init__.py", "VALUE = 1\n")
        zf.writestr("fakepkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
        zf.writestr("fakepkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                   "Tag: py3-none-any\n")
        zf.writestr("fakepkg-1.0.dist-info/RECORD", "")
    return path


@pytest.mark.slow
def test_gpu_check_records_a_failed_step_and_goes_on(tmp_path: Path) -> None:
    """A damaged part fails the wheel step; the later steps still run and the summary says what failed."""
    wheel = _wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl")
    parts = tmp_path / "ortgpu"
    assert split_cmd("split", str(wheel), str(parts), "200").returncode == 0
    (parts / f"{wheel.name}.part-001").write_bytes(b"damaged")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run", "--parts",
                           str(parts), "--skip", ",".join(gpu_check.STEPS)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 1, proc.stdout[-2000:]
    summary = (out / "summary.md").read_text()
    assert "| wheel | FAILED |" in summary and "corrupted part" in summary
    assert "| imports | ok |" in summary and "| prepare | ok |" in summary
    assert "| bench | skipped |" in summary
    assert {p.name for p in out.iterdir()} <= set(gpu_check.OUT_FILES) and len(list(out.iterdir())) <= 8


def test_gpu_check_installs_the_joined_wheel_first_on_the_path(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl")
    parts = tmp_path / "ortgpu"
    assert split_cmd("split", str(wheel), str(parts), "200").returncode == 0
    check = gpu_check.Check(gpu_check.parse_args([str(tmp_path / "out"), "--dry-run", "--parts", str(parts)]))
    note = gpu_check.step_wheel(check)
    assert "sha256 ok" in note and (parts / "site" / "fakepkg" / "__init__.py").is_file()
    assert check.child_env["PYTHONPATH"].split(os.pathsep)[:2] == [str(parts / "site"), str(ROOT)]
    again = gpu_check.Check(gpu_check.parse_args([str(tmp_path / "out"), "--dry-run", "--parts", str(parts)]))
    assert "already installed" in gpu_check.step_wheel(again)


def test_parse_ldd() -> None:
    text = ("\tlinux-vdso.so.1 (0x00007ffc)\n\tlibcublas.so.13 => not found\n"
            "\tlibcudart.so.13 => /x/nvidia/cu13/lib/libcudart.so.13 (0x00007f)\n")
    assert gpu_check.parse_ldd(text) == {"libcublas.so.13": "not found",
                                         "libcudart.so.13": "/x/nvidia/cu13/lib/libcudart.so.13"}


@pytest.mark.slow
@pytest.mark.timeout(600)  # every step of the GPU check in fresh processes: minutes on a loaded 2-core machine
def test_gpu_check_dry_run_end_to_end(tmp_path: Path) -> None:
    """Every step that needs no GPU, as the GPU machine would run them (CPU provider, sample model)."""
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run", "--parts",
                           str(tmp_path / "none"), "--work", str(tmp_path / "work"), "--limit-s", "900"],
                          capture_output=True, text=True, timeout=1000, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, (out / "summary.md").read_text() if (out / "summary.md").exists() else proc.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(gpu_check.OUT_FILES)
    reports = json.loads((out / "verify-reports.json").read_text())["artifacts"]
    assert {a["variant"] for a in reports} >= {"default", "fp16", "mha", "optimize"}
    assert all(a["verify"]["rc"] == 0 and a["verify"]["report"]["passed"] for a in reports)
    placement = json.loads((out / "placement.json").read_text())
    assert set(placement) == {a["name"] for a in reports}
    bench = json.loads((out / "bench.json").read_text())
    assert {r["engine"] for r in bench["results"]} == {"eager-fp32", "ort-fp32-sdpa", "ort-fp16-sdpa"}
    assert "pytest -m cuda:" in (out / "summary.md").read_text()


# -- placement analysis -------------------------------------------------------------------------
def _memcpy_graph():
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("MemcpyFromHost", ["x"], ["x_gpu"], name="in_copy"),
        helper.make_node("Relu", ["x_gpu"], ["a"]),
        helper.make_node("MemcpyToHost", ["a"], ["a_cpu"], name="mid_copy"),  # a CPU node follows: inside
        helper.make_node("Floor", ["a_cpu"], ["b"]),
        helper.make_node("MemcpyToHost", ["b"], ["y"], name="out_copy"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [1])],
                              [helper.make_tensor_value_info("y", f, [1])])
    return helper.make_model(graph)


def test_classify_memcpy_tells_io_copies_from_inner_ones() -> None:
    result = ort_placement.classify_memcpy(_memcpy_graph())
    assert result["memcpy_nodes"] == 3 and result["memcpy_at_io"] == 2
    assert result["memcpy_inside"] == [{"op": "MemcpyToHost", "tensor": "a", "from": "Relu", "to": ["Floor"]}]


@pytest.mark.slow
def test_placement_on_cpu_and_cpu_nodes_seen_as_a_gpu_session_would(sample_onnx: Path, tmp_path: Path) -> None:
    result = ort_placement.placement(str(sample_onnx), "cpu")
    assert result["session_providers"] == ["CPUExecutionProvider"] and result["target_met"]
    total = result["placement"]["CPUExecutionProvider"]
    # the same profile read as if it came from a CUDA session: every node counts as left on the CPU,
    # and the integer shape arithmetic (padding amounts, resample sizes) is told apart from real work
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "p")  # the export is the run's shared one: never write beside it
    session = ort.InferenceSession(str(sample_onnx), sess_options=opts, providers=["CPUExecutionProvider"])
    session.run(None, {"pixel_values": np.zeros((2, 1, 29, 31), np.float32)})
    events = json.loads(Path(session.end_profiling()).read_text())
    seen = ort_placement.summarize_nodes(ort_placement.nodes_from_profile(events), "cuda")
    assert seen["cpu_nodes"] == total
    assert 0 < seen["cpu_shape_only"] < total
    assert seen["cpu_ops"]["MatMul"] >= 8  # 4 blocks x (qkv, attention x2, proj, 2 MLP) at least
    details = {d["op"]: d for d in seen["cpu_node_detail"]}
    assert not ort_placement._is_shape_work(details["MatMul"])


def test_placement_refuses_a_silent_fallback(sample_onnx: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider to fall back from")
    from vitexport.serving.predictor import probe_provider

    if probe_provider("cuda")[0]:
        pytest.skip("CUDA works here: nothing falls back")
    with pytest.raises(RuntimeError, match="could not be initialised"):
        ort_placement.placement(str(sample_onnx), "cuda")


# -- the GPU benchmark's logic ------------------------------------------------------------------
def test_bench_measures_the_target_case_first() -> None:
    order = gpu_bench.case_order(["vit_small_patch16_224", "vit_base_patch16_224"], [(384, 384), (224, 224)], [1, 32])
    assert order[0] == gpu_bench.TARGET
    assert len(order) == len(set(order)) == 8
    assert [b for _, _, b in order[:4]] == [32] * 4


def _case(engine_ms: dict[str, float], batch: int = 32) -> gpu_bench.Case:
    case = gpu_bench.Case("vit_base_patch16_224", (224, 224), batch)
    case.times = {e: [ms, ms * 1.1, ms * 0.9] for e, ms in engine_ms.items()}
    return case


def test_bench_rows_ratios_and_target_verdict() -> None:
    results = gpu_bench.rows([_case({"eager-fp16": 40.0, "ort-fp16-sdpa": 50.0, "ort-fp16-mha": 32.0})])
    by = {r["engine"]: r for r in results}
    assert by["eager-fp16"]["images_per_s"] == pytest.approx(32 / 0.040)
    assert by["ort-fp16-mha"]["ratio_to_eager_fp16"] == pytest.approx(40 / 32)
    assert gpu_bench.target_verdict(results).startswith("target MET")
    slower = gpu_bench.rows([_case({"eager-fp16": 40.0, "ort-fp16-sdpa": 50.0, "ort-fp16-mha": 45.0})])
    assert gpu_bench.target_verdict(slower).startswith("target NOT met")
    assert gpu_bench.target_verdict(gpu_bench.rows([_case({"eager-fp16": 40.0}, batch=1)])) == \
        "target case not measured"


def test_bench_results_from_json_go_into_results_md(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import perf

    monkeypatch.setattr(perf, "HERE", tmp_path)
    (tmp_path / "RESULTS.md").write_text("# CPU performance\n\nintro\n\n## attention export: sdpa\n\ncpu table\n")
    results = gpu_bench.rows([_case({"eager-fp16": 40.0, "ort-fp16-mha": 32.0})])
    data = {"environment": {"gpu": "Test GPU 80GB", "torch": "2.11", "onnxruntime": "1.31.1"},
            "args": {"iters": "25", "warmup": "2"}, "results": results,
            "target": gpu_bench.target_verdict(results), "seconds": 99.0}
    (tmp_path / "bench.json").write_text(json.dumps(data))
    assert gpu_bench.main(["--from-json", str(tmp_path / "bench.json"), "--write"]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## attention export: sdpa\n\ncpu table" in text and "## GPU: Test GPU 80GB" in text
    assert "| vit_base_patch16_224 | 224x224 | 32 | ort-fp16-mha | 32.00 |" in text and "target MET" in text
    assert gpu_bench.main(["--from-json", str(tmp_path / "bench.json"), "--write"]) == 0
    assert (tmp_path / "RESULTS.md").read_text().count("## GPU: Test GPU 80GB") == 1
