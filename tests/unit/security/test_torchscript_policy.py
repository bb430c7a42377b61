"""TorchScript is code: only archives whose code vitexport's own exporter writes are loaded (issue 11). The
allowlist is derived again from our exports and compared. Running admitted archives in a child with limits, through
`vitexport verify`, is tests/e2e/test_hostile_cli.py."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Tuple

import pytest
import torch
from torch import nn

from tests.helpers.hostile import declare_size
from tests.helpers.torchscript import (
    export_genuine,
    file_writing_archive,
    in_forward,
    is_model_code,
    jit_load,
    rewrite,
)
from vitexport._util.errors import CheckpointError, UnsafeCheckpointError
from vitexport.export import export_torchscript
from vitexport.model.config import ViTConfig
from vitexport.model.coverage import OPTION_CONFIGS, export_cases, export_configs, uncovered
from vitexport.security import torchscript_allowlist
from vitexport.security.torchscript_policy import (
    Features,
    check_archive,
    collect,
    is_torchscript,
    read_archive,
    read_metadata,
    screen,
)


def test_export_configs_use_every_option_value() -> None:
    """The allowlist is derived from `export_configs`: they must reach every code path a config can select."""
    assert uncovered(export_configs()) == {}
    assert uncovered({"spec_cls": ViTConfig(**OPTION_CONFIGS["spec_cls"])})  # a single config does not


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 50 exports, each admitted by regenerating its code (issue 22): minutes under load
def test_every_export_passes_and_the_allowlist_is_derived_from_them(tmp_path: Path) -> None:
    """Every coverage config exports an archive the policy admits (its code regenerated from its metadata is the
    same, for every class and option); what they use, together, is exactly the stored
    allowlist, and the stored file is what the generator writes (so it is neither stale nor wider than our
    exports)."""
    from vitexport.model.family_models import model_for

    gen = importlib.import_module("scripts.gen_torchscript_allowlist")
    union = Features()
    for name, (cfg, output) in export_cases().items():
        torch.manual_seed(0)
        path = tmp_path / f"{name}.ts"
        export_torchscript(model_for(cfg), path, output=output)
        assert check_archive(path)["config"] == cfg.to_dict(), name
        for key, values in collect(read_archive(path)).allowlist().items():
            getattr(union, key).update(values)
    assert union.allowlist() == {k: set(v) for k, v in torchscript_allowlist.ALLOWED.items()}
    assert torchscript_allowlist.TORCH_VERSION == torch.__version__.split("+")[0]
    assert gen.render(union) == Path(torchscript_allowlist.__file__).read_text()


# ---------------------------------------------------------------------------
# archives that run code
# ---------------------------------------------------------------------------
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


def test_archive_that_writes_a_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "written.bin"
    evil = tmp_path / "evil.ts"
    file_writing_archive(evil, target)  # a permissive loader really writes the file
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load ran on a refused archive"))
    with pytest.raises(UnsafeCheckpointError, match=r"calls or references torch\.from_file"):
        check_archive(evil)
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
    return export_genuine(tmp_path_factory.mktemp("ts") / "digits.ts")


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


def test_genuine_export_passes(genuine: Path) -> None:
    assert check_archive(genuine)["config"]["embed_dim"] == 64
    assert is_torchscript(genuine)


@pytest.mark.parametrize("declared, fragment", [
    (2_500_000_000, "inflates to 2,500 MB (limit 256 MB for compressed members)"),
    (20_000_000, "declares 20.0 MB, over the 16 MB limit"),
], ids=["inflates-2.5-GB", "declares-20-MB"])
def test_metadata_is_read_alone_and_bounded(genuine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            declared: int, fragment: str) -> None:
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("reading metadata loaded the archive"))
    assert read_metadata(genuine)["config"]["embed_dim"] == 64
    bomb = declare_size(rewrite(genuine, tmp_path / "bomb.ts", "extra/vitexport.json", lambda d: d, deflate=True),
                        "vitexport.json", declared)
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        read_metadata(bomb)


@pytest.mark.parametrize("body, result", [
    ("    _z = 0\n    for _i in range(100000000000):\n      _z = torch.add(_z, 1)\n", "torch.add(_0, _z)"),
    ("    _p = torch.pad(x, [0, 300000, 0, 300000])\n", "torch.add(_0, torch.mean(_p))"),
], ids=["endless-loop", "huge-allocation"])
def test_code_made_of_what_exports_use_passes_the_screen_not_the_match(genuine: Path, tmp_path: Path, body: str,
                                                                       result: str) -> None:
    """The screen bounds what code calls, not how long or how big: these pass it; the positive match (issue 22)
    refuses them, since our exporter never wrote them (the child's limits would still stop them,
    tests/e2e/test_hostile_cli.py::test_admitted_code_still_runs_within_limits)."""
    bad = rewrite(genuine, tmp_path / "bad.ts", MODEL_PY, in_forward(body, result))
    screen(bad)
    with pytest.raises(UnsafeCheckpointError, match="differs at line"):
        check_archive(bad)


def test_policy_metadata_is_json_checked(genuine: Path, tmp_path: Path) -> None:
    bad = rewrite(genuine, tmp_path / "nan.ts", "extra/vitexport.json",
                  lambda d: json.dumps({**json.loads(d), "dtype": "float32"}).replace("null", "NaN", 1).encode())
    with pytest.raises(CheckpointError, match="not usable JSON"):
        check_archive(bad)
