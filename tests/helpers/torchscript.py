"""A genuine TorchScript export of the digits sample, and edits of it: what the TorchScript policy tests start from."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tests.helpers.models import SAMPLES

SAMPLE = SAMPLES / "digits-vit.pt"
FORWARD = """    x: Tensor) -> Tensor:
    x0 = (self).forward_features(x, )
    return (self).forward_head(x0, False, )
"""


def export_genuine(path: Path) -> Path:
    """The digits sample exported with `export_torchscript` to ``path``."""
    from vitexport import load_model
    from vitexport.export.exporter import export_torchscript

    export_torchscript(load_model(SAMPLE), path)
    return path


def is_model_code(name: str, data: bytes) -> bool:
    """VisionTransformer's code file (``model.py``, or ``model/___torch_mangle_N.py`` once the process has
    scripted other configs)."""
    return "/code/" in name and name.endswith(".py") and FORWARD.encode() in data


def rewrite(src: Path, dst: Path, member: str | Callable[[str, bytes], bool], edit: Callable[[bytes], bytes],
            deflate: bool = False) -> Path:
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


def in_forward(body: str, result: str = "_0") -> Callable[[bytes], bytes]:
    """An edit of the model's code file that runs ``body`` first in ``forward`` and returns ``result``."""
    def edit(data: bytes) -> bytes:
        text = data.decode()
        assert FORWARD in text
        new = f"""    x: Tensor) -> Tensor:
{body}    _0 = (self).forward_head((self).forward_features(x, ), False, )
    return {result}
"""
        return text.replace(FORWARD, new).encode()
    return edit


def jit_load(path: Path) -> torch.jit.ScriptModule:
    """torch.jit.load without its deprecation warning: what a permissive loader would do."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


class WritesAFile(nn.Module):
    """forward() maps a file of the archive author's choosing, shared: it is created or extended."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, True, 16, dtype=torch.uint8)
        return x + data[0].float()


def file_writing_archive(archive: Path, target: Path) -> Path:
    """A TorchScript archive whose forward writes ``target``, with vitexport metadata; checked once with a
    permissive loader (the file really is written), then ``target`` is removed again."""
    torch.jit.save(torch.jit.script(WritesAFile(str(target))), str(archive), _extra_files={"vitexport.json": "{}"})
    jit_load(archive)(torch.zeros(1))
    assert target.stat().st_size == 16
    target.unlink()
    return archive


def hostile_forward(first: str, shadow: str, methods: tuple[str, ...], path: Path) -> Callable[[bytes], bytes]:
    """An edit of the model's code file in the shape of issue 22's bypass: ``forward`` starts with ``first`` (which
    binds ``_pwn`` to a mapping of ``path``), adds ``_pwn`` to the result times zero, and then ``shadow`` rebinds a
    name the screen's old AST check took as local for the whole function; the class gains dummy methods named
    ``methods`` (the old check accepted any method call whose name some class defines). TorchScript resolves names
    in order: the calls before ``shadow`` are torch's own."""
    def edit(data: bytes) -> bytes:
        text = data.decode()
        assert FORWARD in text
        self_type = text[: text.index(FORWARD)].rsplit("def forward(self: ", 1)[1].split(",", 1)[0]
        dummies = "".join(f"  def {name}(self: {self_type}) -> int:\n    return 0\n" for name in methods)
        new = (f"    x: Tensor) -> Tensor:\n{first.format(path=path)}"
               "    _0 = (self).forward_head((self).forward_features(x, ), False, )\n"
               "    _0 = torch.add(_0, torch.mul(torch.sum(_pwn), 0))\n"
               f"{shadow}    return _0\n{dummies}")
        return text.replace(FORWARD, new).encode()
    return edit


# issue 22's instance and other instances of its root cause (names resolved in order; methods matched by name)
SHADOW_TORCH = "    torch = 0\n"
FROM_FILE = "    _pwn = torch.from_file(\"{path}\", True, 64)\n"
HOSTILE_FORWARDS = {
    # the instance of the issue: creates a 256-byte file
    "creates-a-file": (FROM_FILE, SHADOW_TORCH, ("from_file", "sum", "add", "mul")),
    # shadowed by a loop target instead of an assignment
    "loop-target-shadow": (FROM_FILE, "    for torch in range(1):\n      pass\n", ("from_file", "sum", "add", "mul")),
    # shadowed by tuple unpacking
    "tuple-shadow": (FROM_FILE, "    torch, _y = 0, 1\n", ("from_file", "sum", "add", "mul")),
    # through ops.aten, with ops shadowed
    "ops-shadow": ("    _pwn = ops.aten.from_file(\"{path}\", True, 64)\n", "    ops = 0\n", ("from_file",)),
    # overwrites an existing file through a shared mapping (fill_ as a method some class defines)
    "overwrites-through-a-shared-mapping": ("    _pwn = torch.from_file(\"{path}\", True, 4)\n"
                                            "    _f = _pwn.fill_(1.)\n",
                                            SHADOW_TORCH, ("from_file", "sum", "add", "mul", "fill_")),
}
OVERWRITES = "overwrites-through-a-shared-mapping"


def hostile_export(genuine: Path, dst: Path, name: str, target: Path) -> Path:
    """A copy of ``genuine`` edited by `HOSTILE_FORWARDS` ``name``, writing ``target``."""
    first, shadow, methods = HOSTILE_FORWARDS[name]
    return rewrite(genuine, dst, is_model_code, hostile_forward(first, shadow, methods, target))
