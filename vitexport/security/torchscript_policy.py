"""TorchScript is code: vitexport runs an archive only if its code is what its own exporter writes.

A TorchScript archive carries its program as Python-syntax source (``code/__torch__/**.py``)
and its objects as pickles (``data.pkl``, ``constants.pkl``); ``torch.jit.load`` compiles the
one and unpickles the other (running any scripted ``__setstate__``), and calling the module
runs whatever the code says: ``torch.from_file(path, shared=True)`` writes a file of the
author's choosing. Before ``torch.jit.load`` ever sees an archive, `check_archive`:

1. reads it with bounded zip reads (`vitexport.security.safezip`), refusing a zip that torch's reader
   (miniz) could read differently from Python's: duplicate names (also by case: miniz looks names up without
   it), members outside the folder of the first entry (torch's prefix), a directory at a shifted offset;
2. screens it (`screen`, a first line that refuses most hostile archives with a precise message): parses every
   code file with `ast` (never executes it) and compares what it uses (qualified names, bare names,
   syntax, dunder methods, modules, loops) with `vitexport.security.torchscript_allowlist`, which
   `scripts/gen_torchscript_allowlist.py` derives from vitexport's own exports; pre-scans ``data.pkl``,
   ``constants.pkl`` and the debug pickles (`vitexport.security.picklescan`);
3. requires the torch release that wrote it (its metadata's ``torch_version``) to be this one;
4. **positive match** (`match`): the caller regenerates, from the config and output in the archive's own
   metadata, what vitexport's exporter writes (`vitexport.security.torchscript_match.regenerated_members`), and
   every member that is not tensor data (code files, their debug pickles, ``data.pkl``, ``constants.pkl``,
   ``constants/``, version records) must be identical byte for byte; the tensor data members (``data/N``,
   the weights) and ``.data/serialization_id`` (a hash that covers them) must exist with the same sizes and are
   read as data. Nothing else is run.

Anything else is refused with the first thing that differs and the advice to re-export it with
``vitexport torchscript``. The archives that pass still run in a confined child process
(`vitexport.security.torchscript_worker`). `read_metadata` reads ``extra/vitexport.json`` alone (bounded);
`vitexport info` never loads the archive. Torch-free.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitexport._util.errors import CheckpointError, IsolationError, UnsafeCheckpointError
from vitexport._util.safejson import parse_json
from vitexport.security.picklescan import Limits as PickleLimits
from vitexport.security.picklescan import scan
from vitexport.security.safezip import MAX_METADATA_BYTES, open_zip, read_member
from vitexport.security.sniff import TORCHSCRIPT_EXTRA_FILE, sniff, torchscript_prefix

MAX_CODE_BYTES = 64_000_000  # all code files together (a ViT export has ~60 KB)
MAX_PICKLE_BYTES = 64_000_000
MAX_RECORD_BYTES = 256_000_000  # every member that is not tensor data, together
_MANGLE = re.compile(r"\.___torch_mangle_\d+")
ADVICE = ("vitexport runs only TorchScript whose code its own exporter writes: re-export the model with "
          "`vitexport torchscript` (or verify its ONNX export)")


def normalize(name: str) -> str:
    """Without TorchScript's mangling: ``...linear.___torch_mangle_3.Linear`` -> ``...linear.Linear``."""
    return _MANGLE.sub("", name)


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
@dataclass
class Archive:
    """The parts of a TorchScript archive that decide what loading and running it does."""

    path: Path
    code: dict[str, str] = field(default_factory=dict)  # module name (raw, with mangles) -> source
    pickles: dict[str, bytes] = field(default_factory=dict)  # member name (without prefix) -> bytes
    members: dict[str, int] = field(default_factory=dict)  # member name (without prefix) -> size
    metadata: bytes | None = None
    records: dict[str, bytes] = field(default_factory=dict)  # every member but tensor data (data/N) -> bytes

    def digest(self) -> str:
        """sha256 over every member that is not tensor data (names and bytes) and the data members' sizes."""
        h = hashlib.sha256()
        for name in sorted(self.members):
            h.update(name.encode() + b"\0" + str(self.members[name]).encode() + b"\0")
            h.update(hashlib.sha256(self.records.get(name, b"")).digest())
        return h.hexdigest()


def is_tensor_data(name: str) -> bool:
    """Whether member ``name`` (without the prefix) is a tensor's bytes (``data/0``...), which torch reads as
    data: the weights."""
    return name.startswith("data/") and name[len("data/"):].isdigit()


SERIALIZATION_ID = ".data/serialization_id"  # 40 digits: a hash of the record names and their crc32s (weights too)


def is_data(name: str) -> bool:
    """Whether member ``name`` depends on the weights (`is_tensor_data`, `SERIALIZATION_ID`): compared by size."""
    return is_tensor_data(name) or name == SERIALIZATION_ID


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TorchScript archive, by `vitexport.security.sniff`'s one rule (a zip with code/
    beside data.pkl; only the zip's directory is read). The commands tell files apart with `sniff` itself."""
    return sniff(path).kind == "torchscript"


def _directory_offset(path: Path) -> int | None:
    """Where the end-of-central-directory record says the directory starts (zip64's when the classic field
    says 0xFFFFFFFF), as miniz reads it; None when there is no record."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 65557 - 20))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    offset = struct.unpack("<I", tail[at + 16 : at + 20])[0]
    if offset != 0xFFFFFFFF:
        return offset
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if locator < 0:
        return None
    with open(path, "rb") as fh:
        fh.seek(struct.unpack("<Q", tail[locator + 8 : locator + 16])[0])
        record = fh.read(56)
    return struct.unpack("<Q", record[48:56])[0] if len(record) == 56 and record[:4] == b"PK\x06\x06" else None


def _check_layout(zf: Any, p: Path, names: list[str], what: str) -> str:
    """The archive's folder (torch's prefix: the first entry's), after refusing what torch's zip reader could
    read differently from Python's."""
    problem = ""
    folded = {n.lower() for n in names}
    if len(folded) != len(names):
        problem = "holds two zip entries of the same name (or names differing only in case)"
    elif any(not n.isascii() or not n.isprintable() for n in names):
        problem = "has a zip entry whose name is not printable ASCII"
    elif _directory_offset(p) != zf.start_dir:
        problem = "has data before its first zip entry (its directory's offsets are shifted)"
    prefix = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
    if not problem and (not prefix or any(not n.startswith(prefix) for n in names)):
        problem = "has zip entries outside the folder of its first entry"
    if not problem and torchscript_prefix(names) != prefix:
        problem = "has no code/ and data.pkl in the folder of its first entry"
    if problem:
        raise UnsafeCheckpointError(f"refused to load {what}: it {problem}; {ADVICE}")
    return prefix


def read_archive(path: str | os.PathLike[str]) -> Archive:
    """Code, pickles, metadata and every other record but tensor data of a TorchScript archive, each read with a
    cap, after `_check_layout`."""
    p, what = Path(path), f"TorchScript archive {str(path)!r}"
    archive = Archive(p)
    with open_zip(p, "TorchScript archive") as zf:
        names = zf.namelist()
        if torchscript_prefix(names) is None:
            raise CheckpointError(f"{what} has no code/ and data.pkl; export it with `vitexport torchscript`")
        prefix = _check_layout(zf, p, names, what)
        total = records = 0
        for name in names:
            rel = name[len(prefix) :]
            archive.members[rel] = zf.getinfo(name).file_size
            if not is_tensor_data(rel):
                records += archive.members[rel]
                if records > MAX_RECORD_BYTES:
                    raise CheckpointError(f"{what} holds more than {MAX_RECORD_BYTES / 1e6:.0f} MB besides its "
                                          f"tensor data; refused: {ADVICE}")
                limit = MAX_METADATA_BYTES if rel == f"extra/{TORCHSCRIPT_EXTRA_FILE}" else MAX_PICKLE_BYTES
                archive.records[rel] = read_member(zf, name, what, limit)
            if rel.startswith("code/") and rel.endswith(".py"):
                text = archive.records[rel]
                total += len(text)
                if total > MAX_CODE_BYTES:
                    raise CheckpointError(f"{what} holds more than {MAX_CODE_BYTES / 1e6:.0f} MB of code; refused")
                module = rel[len("code/") : -len(".py")].replace("/", ".")
                archive.code[module] = text.decode("utf-8", errors="replace")
            elif rel.endswith(".pkl") or rel.endswith(".debug_pkl"):
                archive.pickles[rel] = archive.records[rel]
            elif rel == f"extra/{TORCHSCRIPT_EXTRA_FILE}":
                archive.metadata = archive.records[rel]
    return archive


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The vitexport metadata of a TorchScript archive: one bounded read, no code loaded or parsed."""
    what = f"TorchScript archive {str(path)!r}"
    with open_zip(path, "TorchScript archive") as zf:
        name = next((n for n in zf.namelist() if n.endswith(f"extra/{TORCHSCRIPT_EXTRA_FILE}")), None)
        if name is None:
            raise CheckpointError(f"{what} has no vitexport metadata; export it with `vitexport torchscript`")
        data = read_member(zf, name, what, MAX_METADATA_BYTES)
    return _parse_metadata(data, what)


# ---------------------------------------------------------------------------
# what the code uses
# ---------------------------------------------------------------------------
@dataclass
class Features:
    """What an archive's code and pickles use; the allowlist is the union of these over our exports."""

    refs: set[str] = field(default_factory=set)  # dotted names outside __torch__: torch.add, ops.prim.dtype
    names: set[str] = field(default_factory=set)  # bare global names: int, annotate, uninitialized
    node_types: set[str] = field(default_factory=set)
    dunders: set[str] = field(default_factory=set)  # __len__; never __setstate__
    modules: set[str] = field(default_factory=set)  # normalized modules that define code
    loops: set[str] = field(default_factory=set)  # what for-loops iterate over ("range")
    pickle_globals: set[str] = field(default_factory=set)  # outside __torch__
    torch_refs: set[str] = field(default_factory=set)  # normalized __torch__ references (must be defined)
    defined: set[str] = field(default_factory=set)  # normalized qualified names the archive defines
    raw_classes: set[str] = field(default_factory=set)  # classes as pickles name them (with mangles)
    methods_called: set[str] = field(default_factory=set)
    methods_defined: set[str] = field(default_factory=set)

    def allowlist(self) -> dict[str, set[str]]:
        keys = ("refs", "names", "node_types", "dunders", "modules", "loops", "pickle_globals")
        return {k: set(getattr(self, k)) for k in keys}


def _dotted(node: ast.AST) -> tuple[str, str] | None:
    """(root name, dotted name) of an attribute chain a.b.c rooted at a Name; None otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return node.id, ".".join([node.id, *reversed(parts)])


def _locals(fn: ast.FunctionDef) -> set[str]:
    args = fn.args
    names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    names |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def _collect_scope(tree: ast.AST, local: set[str], features: Features, skip: set[int]) -> None:
    """Names, references, method calls and loops used in ``tree`` (not inside the nodes in ``skip``)."""
    parents: dict[int, ast.AST] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if id(child) in skip:
                continue
            parents[id(child)] = node
            stack.append(child)
        features.node_types.add(type(node).__name__)
        if isinstance(node, ast.For):
            it = node.iter
            features.loops.add(it.func.id if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) else "other")
        parent = parents.get(id(node))
        if isinstance(node, ast.Attribute) and not isinstance(parent, ast.Attribute):
            dotted = _dotted(node)
            if dotted is None:
                if isinstance(parent, ast.Call) and parent.func is node:
                    features.methods_called.add(node.attr)
                continue
            root, name = dotted
            if root in local:
                if isinstance(parent, ast.Call) and parent.func is node:
                    features.methods_called.add(node.attr)
            elif root == "__torch__":
                features.torch_refs.add(normalize(name))
            else:
                features.refs.add(name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local:
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                features.names.add(node.id)


def _collect_module(module: str, source: str, features: Features) -> None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CheckpointError(f"its code file for {module} is not parseable ({type(exc).__name__})") from exc
    norm = normalize(module)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            features.defined.add(f"{norm}.{node.name}")
            features.modules.add(norm)
            if isinstance(node, ast.ClassDef):
                features.raw_classes.add(f"{module}.{node.name}")
                features.methods_defined |= {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
    for fn in functions:
        if fn.name.startswith("__") and fn.name.endswith("__"):
            features.dunders.add(fn.name)
    _collect_scope(tree, set(), features, {id(f) for f in functions})
    for fn in functions:
        _collect_scope(fn, _locals(fn), features, {id(f) for f in functions if f is not fn})


def collect(archive: Archive) -> Features:
    """Everything an archive's code and pickles use (see `Features`)."""
    features = Features()
    for module, source in sorted(archive.code.items()):
        _collect_module(module, source, features)
    for name, data in archive.pickles.items():
        summary = scan(data, f"{name} of {str(archive.path)!r}", _ANY, _LIMITS)
        features.pickle_globals |= {g for g in summary.globals if not g.startswith("__torch__.")}
    return features


class _Anything(frozenset):
    """An allow-all set for `collect` (the refusal comes from comparing with the allowlist)."""

    def __contains__(self, item: object) -> bool:
        return True


_ANY = _Anything()
_LIMITS = PickleLimits(max_bytes=MAX_PICKLE_BYTES)


# ---------------------------------------------------------------------------
# the policy
# ---------------------------------------------------------------------------
_PROBLEMS = (
    ("dunders", "defines {}, which vitexport's exports never define (__setstate__ runs while the archive loads)"),
    ("refs", "calls or references {}, which vitexport's own TorchScript exports never use"),
    ("names", "uses the global name {}, which vitexport's own TorchScript exports never use"),
    ("node_types", "uses the syntax {}, which vitexport's own TorchScript exports never use"),
    ("loops", "loops over {}, which vitexport's own TorchScript exports never do"),
    ("modules", "defines code in {}, where vitexport's exports define none"),
    ("pickle_globals", "unpickles {}, which vitexport's own TorchScript exports never reference"),
)


def _first_problem(features: Features, allowed: dict[str, frozenset[str]]) -> str:
    for key, text in _PROBLEMS:
        extra = sorted(getattr(features, key) - allowed[key])
        if extra:
            return text.format(", ".join(extra[:3]) + (f" (and {len(extra) - 3} more)" if len(extra) > 3 else ""))
    undefined = sorted(features.torch_refs - features.defined)
    if undefined:
        return f"refers to {undefined[0]}, which the archive does not define"
    unknown = sorted(features.methods_called - features.methods_defined)
    if unknown:
        return f"calls the method {unknown[0]}, which no class of the archive defines"
    return ""


def _check_pickles(archive: Archive, features: Features, allowed: frozenset[str]) -> None:
    globals_ = allowed | features.raw_classes
    for name, data in archive.pickles.items():
        what = f"{name} of TorchScript archive {str(archive.path)!r}"
        summary = scan(data, what, frozenset(globals_), _LIMITS)
        folder = "constants/" if name == "constants.pkl" and any(m.startswith("constants/") for m in archive.members) \
            else "data/"
        for s in summary.storages:
            have = archive.members.get(folder + s.key, -1)
            if have < s.nbytes:
                raise CheckpointError(f"{what}: storage {s.key!r} declares {s.nbytes:,} bytes, the archive holds "
                                      f"{max(have, 0):,}; it is corrupt or crafted: {ADVICE}")


def screen(path: str | os.PathLike[str]) -> tuple[Archive, dict[str, Any]]:
    """The first line (module doc, steps 1-2): refuse an archive whose code or pickles go beyond what vitexport's
    exports use; the archive as read and its metadata if it passes. Passing is not admission: `check_archive`."""
    from vitexport.security import torchscript_allowlist as allow

    archive = read_archive(path)
    what = f"TorchScript archive {str(path)!r}"
    try:
        features = collect(archive)
    except CheckpointError as exc:
        raise CheckpointError(f"refused to load {what}: {exc}; {ADVICE}") from exc
    problem = _first_problem(features, allow.ALLOWED)
    if problem:
        raise UnsafeCheckpointError(f"refused to load {what}: its code {problem}; {ADVICE} "
                                    f"(allowlist derived with torch {allow.TORCH_VERSION})")
    _check_pickles(archive, features, allow.ALLOWED["pickle_globals"])
    if archive.metadata is None:
        raise CheckpointError(f"{what} has no vitexport metadata; export it with `vitexport torchscript`")
    return archive, _parse_metadata(archive.metadata, what)


def _parse_metadata(data: bytes, what: str) -> dict[str, Any]:
    try:
        meta = parse_json(data)
    except ValueError as exc:
        raise CheckpointError(f"{what}: its metadata is {exc}; export it again") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{what}: its metadata is not a JSON object; export it again")
    return meta


# what `check_archive`'s caller regenerates: member name (without the prefix) -> its bytes, or its size for
# tensor data; from (the archive's metadata, the bytes its tensor data members hold together)
Regenerate = Callable[[dict[str, Any], int], dict[str, "bytes | int"]]


# a source file's path in a debug pickle: where vitexport or torch is installed is not part of the code
_SOURCE_PATH = re.compile(r"(?:.*[/\\])?((?:vitexport|torch)[/\\][\w./\\-]+\.py)")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}


def _debug_ops(data: bytes) -> list[tuple[str, Any]] | None:
    """A debug pickle (source ranges: offsets, source text, file names; read only for error messages) as its
    opcodes and arguments, with each source path cut to its package-relative part; None if it does not parse.
    Parsed with `pickletools.genops`, which builds nothing."""
    import pickletools

    ops: list[tuple[str, Any]] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            name = "STRING" if op.name in _STRING_OPS else op.name
            path = _SOURCE_PATH.fullmatch(arg) if isinstance(arg, str) and len(arg) < 4096 else None
            ops.append((name, ("source", path.group(1).replace("\\", "/")) if path else arg))
    except (ValueError, TypeError, UnicodeDecodeError, EOFError, struct.error):
        return None
    return ops


def _same_record(name: str, have: bytes | None, want: bytes) -> bool:
    """A record is ours when it is the same bytes; a debug pickle also when it differs only in where vitexport
    and torch are installed (the source paths it names)."""
    if have == want:
        return True
    if have is None or not name.endswith(".debug_pkl"):
        return False
    ours = _debug_ops(want)
    return ours is not None and _debug_ops(have) == ours


def _first_line_difference(have: bytes, want: bytes) -> str:
    a, b = have.split(b"\n"), want.split(b"\n")
    line = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"line {line + 1}"


def match(archive: Archive, expected: dict[str, bytes | int]) -> str:
    """The first way ``archive`` differs from ``expected`` (what vitexport's exporter writes for its config,
    `Regenerate`), as a clause, or "" when it is the same: every record byte for byte (``extra/vitexport.json``,
    the metadata, is data and the exporter's own; a debug pickle may name its source files under another
    install folder), every tensor data member present with the same size."""
    meta = f"extra/{TORCHSCRIPT_EXTRA_FILE}"
    ours = "what vitexport's exporter writes for the config in its metadata"
    extra = sorted(set(archive.members) - set(expected) - {meta})
    if extra:
        return f"it holds {extra[0]!r}, which is not in {ours}"
    missing = sorted(set(expected) - set(archive.members) - {meta})
    if missing:
        return f"it lacks {missing[0]!r}, which is in {ours}"
    for name, want in sorted(expected.items()):
        if name == meta:
            continue
        if isinstance(want, int):
            digits = name != SERIALIZATION_ID or archive.records.get(name, b"").isdigit()
            if not is_data(name) or archive.members[name] != want or not digits:
                return f"its {name!r} holds {archive.members[name]:,} bytes, {want:,} in {ours}"
        elif not _same_record(name, archive.records.get(name), want):
            where = _first_line_difference(archive.records.get(name, b""), want) if name.endswith(".py") else ""
            return f"its {name!r} differs{' at ' + where if where else ''} from {ours}"
    return ""


_ADMITTED: dict[str, dict[str, Any]] = {}  # Archive.digest() -> metadata, for archives admitted in this process


def check_archive(path: str | os.PathLike[str], regenerate: Regenerate | None = None,
                  torch_version: str | None = None) -> dict[str, Any]:
    """Admit a TorchScript archive (module doc, steps 1-4) or refuse it in one line; its metadata.

    Args:
        path: the archive.
        regenerate: what vitexport's exporter writes for a metadata's config (`Regenerate`; by default
            `vitexport.security.torchscript_match.regenerated_members`).
        torch_version: the torch release that must have written it (default: this process's).
    """
    if regenerate is None:
        from vitexport.security.torchscript_match import regenerated_members as regenerate
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    archive, metadata = screen(path)
    what = f"TorchScript archive {str(path)!r}"
    made_with = metadata.get("torch_version")
    if made_with != torch_version:
        shown = repr(made_with)[:40] if isinstance(made_with, str) else "an unknown release"
        raise UnsafeCheckpointError(f"refused to load {what}: it was written by torch {shown} and this is torch "
                                    f"{torch_version}, so its code cannot be compared with what vitexport's "
                                    f"exporter writes; {ADVICE} (here, with torch {torch_version})")
    key = archive.digest()
    if key in _ADMITTED:
        return _ADMITTED[key]
    data_bytes = sum(size for name, size in archive.members.items() if is_tensor_data(name))
    try:
        expected = regenerate(metadata, data_bytes)
    except (CheckpointError, IsolationError) as exc:
        raise CheckpointError(f"refused to load {what}: {exc}") from exc
    problem = match(archive, expected)
    if problem:
        raise UnsafeCheckpointError(f"refused to load {what}: {problem} (torch {torch_version}); {ADVICE}")
    _ADMITTED[key] = metadata
    return metadata


__all__ = ["ADVICE", "SERIALIZATION_ID", "Archive", "Features", "Regenerate", "check_archive", "collect", "is_data",
           "is_tensor_data",
           "is_torchscript", "match", "normalize", "read_archive", "read_metadata", "screen"]
