"""The pickle pre-scan (`vitexport.security.picklescan`) on its own: which globals pass, what it refuses, and that
its bounds (nesting, shared-reference expansion, opcodes, bytes) are exact and cost no more than the bytes."""

from __future__ import annotations

import io
import pickle
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from tests.helpers.hostile import PROTO2, global_call_pickle
from vitexport._util.errors import CheckpointError, UnsafeCheckpointError
from vitexport.security.picklescan import Limits, scan

PLAIN = frozenset({"collections.OrderedDict"})


def nested_lists(levels: int) -> bytes:
    """[[[...]]]: ``levels`` lists, each inside the next (nesting depth ``levels``)."""
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return pickle.dumps(value, protocol=2)


def shared_lists(levels: int) -> bytes:
    """a = []; a = [a, a] ``levels`` times: a few bytes per level (the memo), 2**(levels + 1) - 1 lists expanded."""
    value: list = []
    for _ in range(levels):
        value = [value, value]
    return pickle.dumps(value, protocol=2)


def refusal(data: bytes, allowed: frozenset[str] = PLAIN, limits: Limits = Limits()) -> str:
    """The one-line message `scan` refuses ``data`` with."""
    with pytest.raises(CheckpointError) as info:
        scan(data, "'x.pt'", allowed, limits)
    assert "\n" not in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------------------
# globals
# ---------------------------------------------------------------------------
def test_plain_containers_and_allowed_globals_pass() -> None:
    data = pickle.dumps(OrderedDict(a=1, b=[2.5, "x", None, True], c={"d": (1, 2)}), protocol=2)
    summary = scan(data, "'x.pt'", PLAIN)
    assert summary.globals == {"collections.OrderedDict"} and summary.storages == []
    assert summary.end == len(data)


@pytest.mark.parametrize("module, name, shown", [
    ("os", "system", "os.system"),
    ("builtins", "exec", "builtins.exec"),
    ("__builtin__", "eval", "builtins.eval"),  # Python 2 names are mapped as the unpickler maps them
    ("collections", "Counter", "collections.Counter"),  # harmless, but not in this allowlist
], ids=["os.system", "exec", "python2-name", "not-allowed"])
def test_any_other_global_is_refused_by_name(module: str, name: str, shown: str) -> None:
    with pytest.raises(UnsafeCheckpointError, match=f"references {shown}, which would run code"):
        scan(global_call_pickle(module, name, b"X\x01\x00\x00\x00a"), "'x.pt'", PLAIN)


@pytest.mark.parametrize("name, what", [
    ("torch._utils._rebuild_sparse_tensor", "a sparse tensor"),
    ("torch._utils._rebuild_qtensor", "a quantized tensor"),
    ("torch.QInt8Storage", "a quantized tensor"),
    ("torch._utils._rebuild_nested_tensor", "a nested tensor"),
])
def test_special_tensors_are_named_even_when_allowed(name: str, what: str) -> None:
    """Not a safety refusal (CheckpointError, not UnsafeCheckpointError): the fix is converting the weights."""
    module, _, attr = name.rpartition(".")
    with pytest.raises(CheckpointError, match=f"holds {what}") as info:
        scan(global_call_pickle(module, attr, b")"), "'x.pt'", PLAIN | {name})
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_a_real_torch_state_dict_lists_its_globals_and_storages(tmp_path: Path) -> None:
    sd = OrderedDict(w=torch.zeros(3, 4), b=torch.ones(5, dtype=torch.float16))
    torch.save(sd, tmp_path / "sd.pt")
    with zipfile.ZipFile(tmp_path / "sd.pt") as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    allowed = frozenset({"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage",
                         "torch.HalfStorage"})
    summary = scan(data, "'sd.pt'", allowed)
    assert summary.globals == allowed
    assert sorted((s.type_name, s.numel, s.nbytes) for s in summary.storages) == [
        ("FloatStorage", 12, 48), ("HalfStorage", 5, 10)]
    with pytest.raises(UnsafeCheckpointError, match=r"references torch\.HalfStorage"):
        scan(data, "'sd.pt'", allowed - {"torch.HalfStorage"})


# ---------------------------------------------------------------------------
# structure and bounds
# ---------------------------------------------------------------------------
def test_nesting_is_bounded_exactly() -> None:
    limits = Limits(max_depth=5)
    scan(nested_lists(5), "'x.pt'", PLAIN, limits)
    assert "nests deeper than 5 levels" in refusal(nested_lists(6), limits=limits)


def test_two_million_levels_are_refused_at_once() -> None:
    """The input that overflowed the C stack (a tuple in a tuple, two million times): refused at level 65."""
    start = time.perf_counter()
    assert "nests deeper than 64 levels" in refusal(PROTO2 + b")" + b"\x85" * 2_000_000 + b".")
    assert time.perf_counter() - start < 5


def test_shared_references_are_counted_as_expanded_exactly() -> None:
    """Each level doubles what the unpickled object holds while adding a few bytes: the scan counts expanded
    items (2**(levels+1) - 1 lists here) without expanding them."""
    limits = Limits(max_expanded=1000)
    scan(shared_lists(8), "'x.pt'", PLAIN, limits)  # 511 lists
    assert "expands to more than 1,000 items" in refusal(shared_lists(9), limits=limits)  # 1,023
    start = time.perf_counter()
    assert "expands to more than" in refusal(shared_lists(60))  # 2**61 items: refused as soon as counted
    assert time.perf_counter() - start < 5


def long1(value: int) -> bytes:
    """LONG1: how pickle writes an integer outside BININT's range (and how a crafted file writes any)."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


@pytest.mark.parametrize("key, allowed", [
    (b"K\x01K\x02\x86", False),  # a tuple: hashing nested ones crashed or hung
    (long1(2**61 - 1), False),  # large integers share hashes: a dict of them is quadratic
    (long1(2**31), False),
    (long1(2**31 - 1), True),
    (long1(-(2**31) + 1), True),
    (b"K\x07", True),
    (b"X\x01\x00\x00\x00k", True),
    (b"N", True),
], ids=["tuple", "2**61", "2**31", "2**31-1", "-2**31+1", "small-int", "str", "none"])
def test_only_strings_and_small_integers_are_keys(key: bytes, allowed: bool) -> None:
    data = PROTO2 + b"}" + key + b"N" + b"s" + b"."
    if allowed:
        scan(data, "'x.pt'", PLAIN)
    else:
        assert "as a dict key or set member" in refusal(data)


@pytest.mark.parametrize("data, fragment", [
    (pickle.dumps({"a": 1}, protocol=4), "uses the opcode"),  # FRAME etc.: not what torch's loader reads
    (PROTO2 + b"h\x05.", "reads memo entry 5, which was never written"),
    (PROTO2 + b"a.", "pops an empty stack"),
    (PROTO2 + b"K\x01K\x02.", "does not end with exactly one object"),
    (PROTO2 + b"X\x01\x00\x00\x00aQ.", "persistent id that is not a storage"),
    (pickle.dumps({"a": [1, 2, 3]}, protocol=2)[:-4], "could not be read"),  # truncated
], ids=["protocol-4", "memo-unwritten", "empty-stack", "two-objects", "persistent-id", "truncated"])
def test_malformed_pickles_are_one_line(data: bytes, fragment: str) -> None:
    assert fragment in refusal(data)


def test_opcode_and_byte_counts_are_bounded() -> None:
    many = pickle.dumps(list(range(100)), protocol=2)
    scan(many, "'x.pt'", PLAIN)
    assert "is longer than 50 opcodes" in refusal(many, limits=Limits(max_ops=50))
    assert "is longer than" in refusal(many, limits=Limits(max_bytes=40))


def test_scan_reads_one_pickle_from_a_stream() -> None:
    """The legacy torch format is pickles in sequence: each scan stops at its STOP and says where."""
    first, second = pickle.dumps([1, 2], protocol=2), pickle.dumps({"k": 3}, protocol=2)
    stream = io.BytesIO(first + second + b"tail")
    assert scan(stream, "'x.pt'", PLAIN).end == len(first)
    assert scan(stream, "'x.pt'", PLAIN).end == len(first) + len(second)
