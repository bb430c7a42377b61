"""A pure-Python pre-scan of every pickle vitexport lets torch unpickle: nothing is built, nothing called.

``torch.load(weights_only=True)`` refuses code, but its unpickler has pathological inputs of
its own: a dict key nested two million tuples deep overflows the C stack while it is hashed
(SIGSEGV), and forty levels of shared pairs make one key take 2^40 steps to hash (a hang that
Ctrl-C cannot stop). `scan` walks the opcodes with `pickletools.genops` and simulates the
unpickler's stack with small placeholders, tracking for every item its nesting depth and its
*expanded* size (an item reached twice through the memo counts twice), and refuses:

- any global outside ``allowed`` (naming it, e.g. ``os.system``), and sparse, quantized or
  other special tensors by what they are;
- opcodes outside the set torch's weights-only unpickler implements;
- nesting deeper than ``max_depth``, expanded sizes over ``max_expanded``, more than ``max_ops``
  opcodes, a pickle over ``max_bytes``;
- dict keys and set members other than strings, booleans, None and integers below 2^31 (what
  checkpoints use): tuples (the hashing cases above) and large integers (which share hashes
  and make a dict quadratic) never reach a hash function;
- storages (persistent ids) whose declared bytes the file does not hold (`Storage` records
  each; the caller compares them with the zip members or the bytes that follow the pickle).

Torch-free: it runs before torch sees the bytes.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
from dataclasses import dataclass, field
from typing import Any

from vitexport._util.errors import CheckpointError, UnsafeCheckpointError

# Opcodes of torch's weights-only unpickler (torch/_weights_only_unpickler.py), by name.
OPCODES = frozenset({
    "PROTO", "STOP", "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "MARK",
    "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWFALSE", "NEWTRUE", "EMPTY_TUPLE", "EMPTY_LIST",
    "EMPTY_DICT", "EMPTY_SET", "BININT", "BININT1", "BININT2", "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING",
    "BINPERSID", "BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT", "LONG1",
})
# Storage classes and their element sizes (torch/storage.py `_dtype_to_storage_type_map`).
STORAGE_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8, "UntypedStorage": 1,
    "QInt8Storage": 1, "QInt32Storage": 4, "QUInt8Storage": 1, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1,
}
QUANTIZED_STORAGES = frozenset(n for n in STORAGE_BYTES if n.startswith("QU") or n.startswith("QI"))
# Globals refused for what they build, with the fix.
SPECIAL_TENSORS = {
    "torch._utils._rebuild_sparse_tensor": "a sparse tensor",
    "torch._utils._rebuild_qtensor": "a quantized tensor",
    "torch._utils._rebuild_nested_tensor": "a nested tensor",
    "torch._utils._rebuild_wrapper_subclass": "a tensor subclass",
    "torch._utils._rebuild_meta_tensor_no_storage": "a meta tensor (no data)",
    "torch._utils._rebuild_device_tensor_from_numpy": "a tensor rebuilt from numpy",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "a device tensor",
    "torch.serialization._get_layout": "a tensor with a sparse layout",
}
SMALL_INT = 2**31
MAX_VALUE_ITEMS = 16  # tuples up to this many items keep their values (persistent ids, sizes, strides)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 64_000_000
    max_ops: int = 4_000_000
    max_depth: int = 64
    max_expanded: int = 20_000_000


@dataclass(frozen=True)
class Storage:
    """One persistent id: a storage of ``numel`` elements of ``type_name`` under ``key``."""

    type_name: str
    key: str
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * STORAGE_BYTES[self.type_name]


@dataclass
class Summary:
    """What a pickle references: its globals, its storages, how many opcodes it has, where it stopped."""

    globals: set[str] = field(default_factory=set)
    storages: list[Storage] = field(default_factory=list)
    ops: int = 0
    end: int = 0
    value: Any = None  # the top-level value when it is a primitive (the legacy format's magic number)


class _Node:
    """A placeholder for one unpickled item: kind, nesting depth, expanded size, and small values."""

    __slots__ = ("depth", "kind", "size", "value")

    def __init__(self, kind: str, depth: int = 0, size: int = 1, value: Any = None) -> None:
        self.kind, self.depth, self.size, self.value = kind, depth, size, value


_MARK = _Node("mark")
_HASHABLE = ("str", "bool", "none", "int")


class _Scanner:
    def __init__(self, what: str, allowed: frozenset[str], limits: Limits) -> None:
        self.what, self.allowed, self.limits = what, allowed, limits
        self.stack: list[_Node] = []
        self.memo: dict[int, _Node] = {}
        self.summary = Summary()

    # -- refusals ----------------------------------------------------------
    def refuse(self, problem: str) -> CheckpointError:
        return CheckpointError(f"refused to load {self.what}: its pickle {problem}; it is corrupt or crafted: "
                               "re-save the weights with torch.save(model.state_dict(), path) or as safetensors")

    def check_global(self, name: str) -> None:
        special = SPECIAL_TENSORS.get(name)
        if special is None and name.rsplit(".", 1)[-1] in QUANTIZED_STORAGES:
            special = "a quantized tensor"
        if special is not None:
            raise CheckpointError(
                f"{self.what} holds {special} ({name}); vitexport loads dense floating-point weights: convert "
                "them (e.g. tensor.to_dense() or tensor.dequantize()) and re-save with torch.save(state_dict)")
        if name not in self.allowed:
            raise UnsafeCheckpointError(
                f"refused to load {self.what}: its pickle references {name}, which would run code on load "
                "or is not part of a weights file; re-save only the weights (torch.save(model.state_dict(), "
                "path)) or convert them to safetensors")

    def grown(self, node: _Node) -> _Node:
        if node.depth > self.limits.max_depth:
            raise self.refuse(f"nests deeper than {self.limits.max_depth} levels")
        if node.size > self.limits.max_expanded:
            raise self.refuse(f"expands to more than {self.limits.max_expanded:,} items through shared references")
        return node

    # -- stack -------------------------------------------------------------
    def pop(self) -> _Node:
        if not self.stack or self.stack[-1] is _MARK:
            raise self.refuse("pops an empty stack")
        return self.stack.pop()

    def pop_mark(self) -> list[_Node]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise self.refuse("has no MARK where one is needed")

    def combine(self, kind: str, items: list[_Node], value: Any = None) -> _Node:
        depth = 1 + max((n.depth for n in items), default=0)
        return self.grown(_Node(kind, depth, 1 + sum(n.size for n in items), value))

    def add_into(self, target: _Node, items: list[_Node], keys: list[_Node] = ()) -> None:  # type: ignore[assignment]
        for key in keys:
            self.check_key(key)
        target.depth = max(target.depth, 1 + max((n.depth for n in items), default=0))
        target.size += sum(n.size for n in items)
        self.grown(target)

    def check_key(self, key: _Node) -> None:
        if key.kind not in _HASHABLE or (key.kind == "int" and abs(key.value) >= SMALL_INT):
            shown = "a large integer" if key.kind == "int" else f"a {key.kind}"
            raise self.refuse(f"uses {shown} as a dict key or set member (only strings and small integers "
                              "are accepted: others can make hashing crash or hang)")


def _primitive(name: str, arg: Any) -> _Node | None:
    if name in ("BININT", "BININT1", "BININT2", "LONG1"):
        return _Node("int", value=arg)
    if name == "BINFLOAT":
        return _Node("float", value=arg)
    if name in ("BINUNICODE", "SHORT_BINSTRING"):
        return _Node("str", value=arg)
    if name == "NONE":
        return _Node("none")
    if name in ("NEWTRUE", "NEWFALSE"):
        return _Node("bool", value=name == "NEWTRUE")
    if name in ("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
        kind = name[6:].lower()
        return _Node(kind, 1, 1, () if kind == "tuple" else None)
    return None


def _global_name(arg: str) -> str:
    module, _, name = arg.partition(" ")
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _values(items: list[_Node]) -> tuple[Any, ...] | None:
    if len(items) > MAX_VALUE_ITEMS or any(n.value is None and n.kind != "none" for n in items):
        return None
    return tuple(n.value for n in items)


def _tuple(sc: _Scanner, items: list[_Node]) -> None:
    sc.stack.append(sc.combine("tuple", items, _values(items)))


def _step(sc: _Scanner, name: str, arg: Any) -> None:
    """Apply one opcode to the simulated stack (the structure of pickle.py's `_Unpickler`)."""
    node = _primitive(name, arg)
    if node is not None:
        sc.stack.append(node)
    elif name == "MARK":
        sc.stack.append(_MARK)
    elif name in ("BINPUT", "LONG_BINPUT"):
        if not sc.stack:
            raise sc.refuse("memoizes an empty stack")
        sc.memo[arg] = sc.stack[-1]
    elif name in ("BINGET", "LONG_BINGET"):
        if arg not in sc.memo:
            raise sc.refuse(f"reads memo entry {arg}, which was never written")
        sc.stack.append(sc.memo[arg])
    elif name == "GLOBAL":
        full = _global_name(arg)
        sc.check_global(full)
        sc.summary.globals.add(full)
        sc.stack.append(_Node("global", value=full))
    elif name == "TUPLE":
        _tuple(sc, sc.pop_mark())
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        _tuple(sc, [sc.pop() for _ in range(int(name[-1]))][::-1])
    else:
        _container_step(sc, name)


def _container_step(sc: _Scanner, name: str) -> None:
    if name in ("APPEND", "APPENDS"):
        items = [sc.pop()] if name == "APPEND" else sc.pop_mark()
        target = sc.stack[-1] if sc.stack else None
        if target is None or target.kind != "list":
            raise sc.refuse("appends to something that is not a list")
        sc.add_into(target, items)
    elif name in ("SETITEM", "SETITEMS"):
        items = [sc.pop(), sc.pop()][::-1] if name == "SETITEM" else sc.pop_mark()
        target = sc.stack[-1] if sc.stack else None
        if target is None or target.kind not in ("dict", "object") or len(items) % 2:
            raise sc.refuse("sets items on something that is not a dict")
        sc.add_into(target, items, items[0::2])
    elif name in ("REDUCE", "NEWOBJ"):
        args, func = sc.pop(), sc.pop()
        if func.kind != "global":
            raise sc.refuse(f"calls something that is not an allowed global ({func.kind})")
        if func.value == "builtins.set" and args.value is None and args.size > 1:
            raise sc.refuse("builds a set from items it cannot check")
        sc.stack.append(sc.combine("object", [args], None))
    elif name == "BUILD":
        state = sc.pop()
        if not sc.stack:
            raise sc.refuse("builds on an empty stack")
        sc.add_into(sc.stack[-1], [state])
    elif name == "BINPERSID":
        _persistent(sc, sc.pop())
    else:  # PROTO, STOP: handled by the caller
        raise sc.refuse(f"uses the opcode {name}, which torch's weights-only unpickler does not implement")


def _persistent(sc: _Scanner, pid: _Node) -> None:
    value = pid.value
    ok = (isinstance(value, tuple) and len(value) in (5, 6) and value[0] == "storage"
          and isinstance(value[1], str) and isinstance(value[2], str) and isinstance(value[4], int)
          and value[4] >= 0)
    type_name = value[1].rsplit(".", 1)[-1] if ok else ""
    if not ok or type_name not in STORAGE_BYTES:
        raise sc.refuse("has a persistent id that is not a storage ('storage', type, key, location, numel)")
    sc.summary.storages.append(Storage(type_name, value[2], value[4]))
    sc.stack.append(_Node("storage", value=value[2]))


def scan(stream: io.BufferedIOBase | bytes, what: str, allowed: frozenset[str], limits: Limits = Limits()) -> Summary:
    """Scan one pickle (from ``stream``'s position up to its STOP); `CheckpointError` on anything refused."""
    fh = io.BytesIO(stream) if isinstance(stream, (bytes, bytearray)) else stream
    start = fh.tell()
    sc = _Scanner(what, allowed, limits)
    try:
        for opcode, arg, pos in pickletools.genops(fh):
            sc.summary.ops += 1
            if sc.summary.ops > limits.max_ops or (pos or 0) - start > limits.max_bytes:
                raise sc.refuse(f"is longer than {limits.max_ops:,} opcodes / {limits.max_bytes / 1e6:.0f} MB")
            if opcode.name not in OPCODES:
                raise CheckpointError(
                    f"{what} is not a plain weights file: its pickle uses the opcode {opcode.name} (protocol "
                    f"{opcode.proto}), which torch's weights-only loader does not read; re-save it with "
                    "torch.save(model.state_dict(), path) or convert it to safetensors")
            if opcode.name == "STOP":
                break
            if opcode.name != "PROTO":
                _step(sc, opcode.name, arg)
    except (ValueError, EOFError, TypeError, IndexError, UnicodeDecodeError) as exc:  # genops on broken bytes
        raise CheckpointError(f"{what} could not be read ({' '.join(str(exc).split())[:160]}); it is truncated "
                              "or corrupt: re-download or re-save it") from exc
    if len(sc.stack) != 1:
        raise sc.refuse("does not end with exactly one object")
    sc.summary.end = fh.tell()
    sc.summary.value = sc.stack[0].value
    return sc.summary


__all__ = ["OPCODES", "STORAGE_BYTES", "Limits", "Storage", "Summary", "scan"]
