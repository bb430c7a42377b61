"""TorchScript is code: only archives whose code vitexport's own exporter writes are loaded, and those run
in a child with limits (issue 11). The allowlist is derived again from our exports and compared."""

from __future__ import annotations

import importlib
import json
import struct
import warnings
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Tuple

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tests.helpers.models import SAMPLES
from vitexport._util.errors import CheckpointError, UnsafeCheckpointError
from vitexport.cli import cli
from vitexport.export.torchscript_export import export_torchscript
from vitexport.security import torchscript_allowlist
from vitexport.security.torchscript_policy import check_archive, collect, read_archive

SAMPLE = SAMPLES / "digits-vit.pt"


def gen_allowlist() -> ModuleType:
    return importlib.import_module("scripts.gen_torchscript_allowlist")


@pytest.mark.slow
def test_every_export_passes_and_the_allowlist_is_derived_from_them(tmp_path: Path) -> None:
    """Every test config and a model of every family exports an archive the policy admits; what they use,
    together, is exactly the stored allowlist (so it is neither stale nor wider than our exports)."""
    from vitexport.model.vit import VisionTransformer

    gen = gen_allowlist()
    union: dict[str, set[str]] = {}
    for name, cfg in gen.configs().items():
        torch.manual_seed(0)
        path = tmp_path / f"{name}.ts"
        export_torchscript(VisionTransformer(cfg).eval(), path)
        assert check_archive(path)["config"] == cfg.to_dict(), name
        for key, values in collect(read_archive(path)).allowlist().items():
            union.setdefault(key, set()).update(values)
    assert union == {k: set(v) for k, v in torchscript_allowlist.ALLOWED.items()}
    assert torchscript_allowlist.TORCH_VERSION == torch.__version__.split("+")[0]


# ---------------------------------------------------------------------------
# archives that run code
# ---------------------------------------------------------------------------
class WritesAFile(nn.Module):
    """forward() maps a file of the archive author's choosing, shared: it is created or extended."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, True, 16, dtype=torch.uint8)
        return x + data[0].float()


class RunsOnLoad(nn.Module):
    """A scripted __setstate__: torch.jit.load runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.flag = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.flag

    @torch.jit.export
    def __getstate__(self) -> Tuple[int, bool]:
        return (self.flag, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[int, bool]) -> None:
        self.flag = 7  # not what was saved: code ran while loading
        self.training = state[1]


def jit_load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


def test_archive_that_writes_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "written.bin"
    evil = tmp_path / "evil.ts"
    torch.jit.save(torch.jit.script(WritesAFile(str(target))), str(evil), _extra_files={"vitexport.json": "{}"})
    jit_load(evil)(torch.zeros(1))  # sanity: a permissive loader really writes the file
    assert target.stat().st_size == 16
    target.unlink()
    result = CliRunner().invoke(cli, ["verify", str(evil)])
    assert result.exit_code == 1 and "calls or references torch.from_file" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "re-export the model" in result.stderr
    assert not target.exists()


def test_archive_that_runs_code_while_loading_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "state.ts"
    torch.jit.save(torch.jit.script(RunsOnLoad()), str(evil))
    assert jit_load(evil).flag == 7  # sanity: loading ran the scripted __setstate__
    with pytest.raises(UnsafeCheckpointError, match="defines __getstate__, __setstate__"):
        check_archive(evil)


# ---------------------------------------------------------------------------
# a genuine export, edited
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vitexport import load_model

    path = tmp_path_factory.mktemp("ts") / "digits.ts"
    export_torchscript(load_model(SAMPLE), path)
    return path


FORWARD = """    x: Tensor) -> Tensor:
    _0 = (self).forward_head((self).forward_features(x, ), False, )
    return _0
"""


def is_model_code(name: str, data: bytes) -> bool:
    """VisionTransformer's code file (``model.py``, or ``model/___torch_mangle_N.py`` once the process has
    scripted other configs)."""
    return "/code/" in name and name.endswith(".py") and FORWARD.encode() in data


def rewrite(src: Path, dst: Path, member, edit, deflate: bool = False) -> Path:
    """A copy of ``src`` whose member ``member`` (a name suffix, or a predicate of name and bytes) is
    ``edit(bytes)`` (added under that name when missing)."""
    with zipfile.ZipFile(src) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    matches = member if callable(member) else (lambda name, data: name.endswith(member))
    found = False
    with zipfile.ZipFile(dst, "w") as zout:
        for info, data in items:
            if matches(info.filename, data):
                data, found = edit(data), True
                info.compress_type = zipfile.ZIP_DEFLATED if deflate else info.compress_type
            zout.writestr(info, data)
        if not found:
            zout.writestr(items[0][0].filename.split("/")[0] + "/" + member, edit(b""))
    return dst


def in_forward(body: str, result: str = "_0"):
    def edit(data: bytes) -> bytes:
        text = data.decode()
        assert FORWARD in text
        new = f"""    x: Tensor) -> Tensor:
{body}    _0 = (self).forward_head((self).forward_features(x, ), False, )
    return {result}
"""
        return text.replace(FORWARD, new).encode()
    return edit


MODEL_PY = is_model_code
EDITS = {
    "aten-save": (MODEL_PY, in_forward("    _s = ops.aten.save(x, \"/tmp/stolen\")\n"),
                  "calls or references ops.aten.save"),
    "from-file": (MODEL_PY, in_forward("    _f = torch.from_file(\"/tmp/f\", True, 16)\n"),
                  "calls or references torch.from_file"),
    "print": (MODEL_PY, in_forward("    print(\"hello\")\n"), "uses the global name print"),
    "while-loop": (MODEL_PY, in_forward("    while True:\n      pass\n"), "uses the syntax While"),
    "loop-over-list": (MODEL_PY, in_forward("    for _i in [1, 2]:\n      pass\n"), "loops over other"),
    "undefined-class": (MODEL_PY, in_forward("    _c = __torch__.evil.Thing\n"),
                        "refers to __torch__.evil.Thing, which the archive does not define"),
    "unknown-method": (MODEL_PY, in_forward("    _m = (self).steal(x, )\n"), "calls the method steal"),
    "new-module": ("code/__torch__/evil/payload.py", lambda _: b"def run(x: Tensor) -> Tensor:\n  return x\n",
                   "defines code in __torch__.evil.payload"),
    "unparseable": (MODEL_PY, lambda data: data + b"\n  def (:\n", "is not parseable"),
    "pickle-global": ("data.pkl", lambda data: data.replace(b"collections\nOrderedDict", b"os\nsystem"),
                      "unpickles os.system"),
    "pickle-deep": ("constants.pkl", lambda _: b"\x80\x02" + b")" + b"\x85" * 100_000 + b".",
                    "nests deeper than 64 levels"),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_edited_export_is_refused_before_loading(genuine: Path, tmp_path: Path, name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    member, edit, fragment = EDITS[name]
    bad = rewrite(genuine, tmp_path / f"{name}.ts", member, edit)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load ran on a refused archive"))
    with pytest.raises(CheckpointError) as info:
        check_archive(bad)
    assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_genuine_export_passes_and_verifies(genuine: Path) -> None:
    assert check_archive(genuine)["config"]["embed_dim"] == 64
    result = CliRunner().invoke(cli, ["verify", str(genuine), "--sizes", "28x28,17x45", "--batch-sizes", "2"])
    assert result.exit_code == 0 and "PASSED" in result.stdout, result.stderr


def test_info_reads_metadata_only(genuine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("info loaded the archive"))
    result = CliRunner().invoke(cli, ["info", str(genuine)])
    assert result.exit_code == 0 and "torchscript" in result.stdout, result.stderr
    for declared, fragment in ((2_500_000_000, "inflates to 2,500 MB (limit 256 MB for compressed members)"),
                               (20_000_000, "declares 20.0 MB, over the 16 MB limit")):
        bomb = declare_size(rewrite(genuine, tmp_path / "bomb.ts", "extra/vitexport.json", lambda d: d,
                                    deflate=True), "vitexport.json", declared)
        result = CliRunner().invoke(cli, ["info", str(bomb)])
        assert result.exit_code == 1 and fragment in result.stderr, result.stderr
        assert "TorchScript archive" in result.stderr and result.stderr.count("\n") == 1


def declare_size(path: Path, name_suffix: str, declared: int) -> Path:
    """Rewrite the uncompressed size a zip member declares (local and central headers)."""
    raw = bytearray(path.read_bytes())
    for signature, offset, name_at, length_at in ((b"PK\x03\x04", 22, 30, 26), (b"PK\x01\x02", 24, 46, 28)):
        at = raw.find(signature)
        while at >= 0:
            n = struct.unpack("<H", raw[at + length_at : at + length_at + 2])[0]
            if raw[at + name_at : at + name_at + n].endswith(name_suffix.encode()):
                raw[at + offset : at + offset + 4] = struct.pack("<I", declared)
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "body, result, fragment",
    [
        ("    _z = 0\n    for _i in range(100000000000):\n      _z = torch.add(_z, 1)\n", "torch.add(_0, _z)",
         "did not finish in 3 s"),
        ("    _p = torch.pad(x, [0, 300000, 0, 300000])\n", "torch.add(_0, torch.mean(_p))", "failed"),
    ],
    ids=["endless-loop", "huge-allocation"],
)
def test_admitted_code_still_runs_within_limits(genuine: Path, tmp_path: Path, body: str, result: str,
                                                fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code made only of what our exports use passes the policy, but can loop or allocate: the child's
    timeout and memory limit turn that into failed cases, and the run ends by itself."""
    import vitexport.security.torchscript_worker as worker

    monkeypatch.setattr(worker, "RUN_SECONDS", 3.0)
    bad = rewrite(genuine, tmp_path / "bad.ts", MODEL_PY, in_forward(body, result))
    check_archive(bad)  # admitted: nothing it calls is new
    out = CliRunner().invoke(cli, ["verify", str(bad), "--sizes", "28x28", "--batch-sizes", "1"])
    assert out.exit_code == 1 and "verification failed" in out.stderr, out.stderr
    assert fragment in out.stdout and "IsolationError" in out.stdout, out.stdout


def test_policy_metadata_is_json_checked(genuine: Path, tmp_path: Path) -> None:
    bad = rewrite(genuine, tmp_path / "nan.ts", "extra/vitexport.json",
                  lambda d: json.dumps({**json.loads(d), "dtype": "float32"}).replace("null", "NaN", 1).encode())
    with pytest.raises(CheckpointError, match="not usable JSON"):
        check_archive(bad)
