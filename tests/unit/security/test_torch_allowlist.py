"""One pickle allowlist (`vitexport.security.untrusted.CHECKPOINT_GLOBALS`) for the pre-scan and for torch.load:
an allowed global passes both, a refused one is refused by both, and taking a name off the list takes it off both."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from vitexport._util.errors import UnsafeCheckpointError
from vitexport.security import untrusted
from vitexport.security.untrusted import CHECKPOINT_GLOBALS, load_torch_file, prescan, torch_safe_globals

ALLOWED = argparse.Namespace(model="vit_tiny_patch16_224", lr=0.1)  # timm's train.py saves its args so
REFUSED = datetime.date(2024, 1, 1)  # inert, but not part of a weights file: on neither list


def write(tmp_path: Path, extra: Any, kind: str) -> Path:
    path = tmp_path / f"ckpt-{kind}.pth"
    payload = {"state_dict": {"pos_embed": torch.zeros(1, 4, 8)}, "args": extra}
    if kind == "torch-zip":
        torch.save(payload, path)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    return path


KINDS = ["torch-zip", "torch-pickle"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_allowed_global_passes_the_prescan_and_torch_load(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, ALLOWED, kind)
    prescan(path, kind)
    loaded = untrusted._torch_load(path, kind)
    assert loaded["args"] == ALLOWED and torch.equal(loaded["state_dict"]["pos_embed"], torch.zeros(1, 4, 8))
    assert load_torch_file(path, kind)["args"] == ALLOWED


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_global_is_refused_by_the_prescan_and_by_torch_load(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, REFUSED, kind)
    with pytest.raises(UnsafeCheckpointError, match=r"its pickle references datetime\.date"):
        prescan(path, kind)
    with pytest.raises(UnsafeCheckpointError, match=r"datetime\.date"):  # torch.load on its own refuses it too
        untrusted._torch_load(path, kind)
    with pytest.raises(UnsafeCheckpointError, match=r"datetime\.date"):
        load_torch_file(path, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_the_list_is_one_list(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without argparse.Namespace on CHECKPOINT_GLOBALS, both the pre-scan and torch.load refuse it."""
    path = write(tmp_path, ALLOWED, kind)
    monkeypatch.setattr(untrusted, "CHECKPOINT_GLOBALS", CHECKPOINT_GLOBALS - {"argparse.Namespace"})
    with pytest.raises(UnsafeCheckpointError, match=r"argparse\.Namespace"):
        prescan(path, kind)
    with pytest.raises(UnsafeCheckpointError, match=r"argparse\.Namespace"):
        untrusted._torch_load(path, kind)


def test_torch_load_is_given_the_entries_from_outside_torch() -> None:
    given = torch_safe_globals()
    outside = {name for name in CHECKPOINT_GLOBALS if not name.startswith("torch.")}
    assert {f"{g.__module__}.{g.__name__}" for g in given} == outside and argparse.Namespace in given


def test_the_prescan_is_narrower_than_torch_load(tmp_path: Path) -> None:
    """A set is fine for torch's weights-only unpickler but not in a weights file: the pre-scan, run first, refuses."""
    path = tmp_path / "set.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "tags": {"a", "b"}}, path)
    assert untrusted._torch_load(path, "torch-zip")["tags"] == {"a", "b"}
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.set"):
        load_torch_file(path, "torch-zip")
    assert "builtins.set" not in CHECKPOINT_GLOBALS
