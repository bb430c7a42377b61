"""TorchScript is code: vitexport loads only archives whose code it could have written itself.

A TorchScript archive carries its program as Python-syntax source (``code/__torch__/**.py``)
and its objects as pickles (``data.pkl``, ``constants.pkl``); ``torch.jit.load`` compiles the
one and unpickles the other (running any scripted ``__setstate__``), and calling the module
runs whatever the code says: ``torch.from_file(path, shared=True)`` writes a file of the
author's choosing. Before ``torch.jit.load`` ever sees an archive, `check_archive`:

- reads it with bounded zip reads (`vitexport.security.safezip`);
- parses every code file with `ast` (never executes it) and collects what it uses: the
  qualified names it calls or references (``torch.add``, ``ops.prim.RaiseException``), the
  bare names, the syntax node types, the dunder methods it defines, the modules it defines
  classes in, what its loops iterate over; every ``__torch__.*`` reference must be defined in
  the archive itself, and every method called on an object must be defined by one of its classes;
- compares those with `vitexport.security.torchscript_allowlist`, which `scripts/gen_torchscript_allowlist.py`
  derives from vitexport's own exports (every test config and a small model of every family);
- pre-scans ``data.pkl``, ``constants.pkl`` and the debug pickles (`vitexport.security.picklescan`): globals
  must be the archive's own classes or what our exports reference, storages must be backed.

Anything else is refused with the first thing that differs: an archive from another tool or
another torch release is refused too (re-export it with ``vitexport torchscript``). The
archives that pass still run in a child process with a memory limit and a timeout
(`vitexport.security.torchscript_worker`): the allowlist bounds what code does, not how long or how big.
`read_metadata` reads ``extra/vitexport.json`` alone (bounded); `vitexport info` never loads
the archive. Torch-free.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitexport._util.errors import CheckpointError, UnsafeCheckpointError
from vitexport._util.safejson import parse_json
from vitexport.security.picklescan import Limits as PickleLimits
from vitexport.security.picklescan import scan
from vitexport.security.safezip import MAX_METADATA_BYTES, open_zip, read_member
from vitexport.security.sniff import TORCHSCRIPT_EXTRA_FILE, sniff, torchscript_prefix

MAX_CODE_BYTES = 64_000_000  # all code files together (a ViT export has ~60 KB)
MAX_PICKLE_BYTES = 64_000_000
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


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TorchScript archive, by `vitexport.security.sniff`'s one rule (a zip with code/
    beside data.pkl; only the zip's directory is read). The commands tell files apart with `sniff` itself."""
    return sniff(path).kind == "torchscript"


def read_archive(path: str | os.PathLike[str]) -> Archive:
    """Code, pickles and metadata of a TorchScript archive, each read with a cap."""
    p, what = Path(path), f"TorchScript archive {str(path)!r}"
    archive = Archive(p)
    with open_zip(p, "TorchScript archive") as zf:
        names = zf.namelist()
        prefix = torchscript_prefix(names)
        if prefix is None:
            raise CheckpointError(f"{what} has no code/ and data.pkl; export it with `vitexport torchscript`")
        total = 0
        for name in names:
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix) :]
            archive.members[rel] = zf.getinfo(name).file_size
            if rel.startswith("code/") and rel.endswith(".py"):
                text = read_member(zf, name, what)
                total += len(text)
                if total > MAX_CODE_BYTES:
                    raise CheckpointError(f"{what} holds more than {MAX_CODE_BYTES / 1e6:.0f} MB of code; refused")
                module = rel[len("code/") : -len(".py")].replace("/", ".")
                archive.code[module] = text.decode("utf-8", errors="replace")
            elif rel.endswith(".pkl") or rel.endswith(".debug_pkl"):
                archive.pickles[rel] = read_member(zf, name, what, MAX_PICKLE_BYTES)
            elif rel == f"extra/{TORCHSCRIPT_EXTRA_FILE}":
                archive.metadata = read_member(zf, name, what, MAX_METADATA_BYTES)
    return archive


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The vitexport metadata of a TorchScript archive: one bounded read, no code loaded or parsed."""
    what = f"TorchScript archive {str(path)!r}"
    with open_zip(path, "TorchScript archive") as zf:
        name = next((n for n in zf.namelist() if n.endswith(f"extra/{TORCHSCRIPT_EXTRA_FILE}")), None)
        if name is None:
            raise CheckpointError(f"{what} has no vitexport metadata; export it with `vitexport torchscript`")
        data = read_member(zf, name, what, MAX_METADATA_BYTES)
    try:
        meta = parse_json(data)
    except ValueError as exc:
        raise CheckpointError(f"{what}: its metadata is {exc}; export it again") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{what}: its metadata is not a JSON object; export it again")
    return meta


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


def check_archive(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Refuse an archive whose code or pickles go beyond what vitexport's exports use; its metadata if it passes."""
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
    return read_metadata(path)


__all__ = ["ADVICE", "Archive", "Features", "check_archive", "collect", "is_torchscript", "normalize",
           "read_archive", "read_metadata"]
