"""What kind of file a path is, from its first bytes: the one file-kind sniffer every command uses.

`sniff` reads at most `HEAD_BYTES` from the start of a file (and a zip's central directory) and
never executes or decodes its contents beyond that: PyTorch checkpoints (``torch.save`` zip with
``data.pkl``; legacy and raw pickles), TorchScript archives (zip with ``code/``), safetensors
(8-byte little-endian header length, then a JSON object), ONNX models, images (the formats of
`vitexport.security.images.ACCEPTED_FORMATS`: PNG, JPEG, WebP, BMP, GIF, TIFF, PPM; other image
formats are named by Pillow's own prefix checks, as ``other-image``), JSON, NumPy ``.npz`` archives
(JAX/Flax checkpoints: a zip of ``.npy`` members only), model folders (a hub layout with
``model.safetensors`` or ``pytorch_model.bin``, an open_clip folder), directories, empty and missing paths.

ONNX has no magic number: a ModelProto is a protobuf message, so it is recognised by its first
fields (wire type and field number of ``ir_version`` = 1 (varint), ``producer_name`` = 2,
``graph`` = 7, ``opset_import`` = 8, ...), every length fitting the file, and the graph's own
first field being a GraphProto field. Whether the whole file is well formed is `onnxwire`'s job
(``require(..., deep=True)``).

`require` turns a wrong kind into one line that says what the file is and which command or flag
takes it (`FileKindError`, exit 2); a path that does not exist or cannot be opened is an `InputPathError`
(exit 2); an empty, truncated or unknown file is `CheckpointError` (`InputError` for images; exit 1), as the
rest of vitexport reports bad files.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitexport._util.errors import (
    CheckpointError,
    CheckpointPathError,
    FileKindError,
    ImagePathError,
    InputError,
)
from vitexport.security.images import ACCEPTED_TEXT, KINDS, other_format, undecodable
from vitexport.security.onnxwire import WireError, varint

HEAD_BYTES = 64 * 1024
TORCHSCRIPT_LABEL = "a TorchScript archive"
TORCHSCRIPT_EXTRA_FILE = "vitexport.json"  # the member (under extra/) of our TorchScript archives holding metadata
# Weight files that make a folder a model folder (timm / Hugging Face hub layout, OpenCLIP).
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                    "open_clip_pytorch_model.bin")
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit

# torch.save(..., _use_new_zipfile_serialization=False) pickles this magic number first (protocol 2, LONG1)
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_IMAGES = (
    (b"\x89PNG\r\n\x1a\n", "png", "a PNG image"),
    (b"\xff\xd8\xff", "jpeg", "a JPEG image"),
    (b"GIF87a", "gif", "a GIF image"),
    (b"GIF89a", "gif", "a GIF image"),
    (b"II*\x00", "tiff", "a TIFF image"),
    (b"MM\x00*", "tiff", "a TIFF image"),
)
IMAGE_KINDS = frozenset(KINDS.values())  # one kind per format the image decoder accepts
CHECKPOINT_KINDS = frozenset({"torch-zip", "torch-pickle", "pickle", "safetensors", "hub-folder", "npz"})
# What `sniff` says of a path that cannot be used as a file at all (kinds, and labels of the kind "unknown"):
# a usage problem (exit 2), not a bad file.
PATH_PROBLEMS = frozenset({"missing", "directory", "not a regular file", "unreadable"})

# ModelProto fields -> wire type (0 varint, 2 length-delimited); GraphProto fields are all messages/strings
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_GRAPH_FIELDS = frozenset({1, 2, 5, 10, 11, 12, 13, 14, 15, 16})


@dataclass(frozen=True)
class Sniffed:
    """A path's kind (a short name), how to say it to a user, and a detail (why it is unknown, which file)."""

    kind: str
    label: str
    detail: str = ""


# ---------------------------------------------------------------------------
# recognising bytes
# ---------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    return varint(buf, pos, len(buf))


def onnx_start(head: bytes, size: int) -> str:
    """``"onnx"`` when the first bytes parse as the start of an ONNX ModelProto in a file of ``size`` bytes,
    ``"truncated"`` when they do but a field runs past the end of the file, else ``""``."""
    pos, seen, truncated = 0, set(), False
    try:
        while pos < len(head):
            key = _varint(head, pos)
            if key is None:
                break
            (tag, pos), number = key, key[0] >> 3
            if _MODEL_FIELDS.get(number) != tag & 7:
                return ""
            value = _varint(head, pos)
            if value is None:
                break
            length, pos = value
            if number == 1 and not 1 <= length <= 100:  # ir_version
                return ""
            if tag & 7 == 2:
                if number == 7 and pos < len(head) and not _graph_start(head, pos):
                    return ""
                truncated = truncated or pos + length > size
                pos += length
            seen.add(number)
    except WireError:  # a varint over 10 bytes
        return ""
    if not seen & {1, 7}:
        return ""
    return "truncated" if truncated else "onnx"


def _graph_start(head: bytes, pos: int) -> bool:
    first = _varint(head, pos)
    return first is None or ((first[0] >> 3) in _GRAPH_FIELDS and first[0] & 7 == 2)


def looks_like_onnx(head: bytes, size: int) -> bool:
    """Do the first bytes parse as the start of a complete-looking ONNX ModelProto of ``size`` bytes?"""
    return onnx_start(head, size) == "onnx"


def torchscript_prefix(names: list[str]) -> str | None:
    """The rule for "this zip is TorchScript": the folder ('archive/') of a ``data.pkl`` with a ``code/``
    folder beside it (a ``torch.save`` checkpoint has ``data.pkl`` and no ``code/``); None when there is none."""
    for name in names:
        if name.endswith("data.pkl"):
            prefix = name[: -len("data.pkl")]
            if any(n.startswith(prefix + "code/") for n in names):
                return prefix
    return None


def _zip_kind(path: Path, head: bytes) -> Sniffed:
    from vitexport.security.safezip import MAX_ENTRIES, declared_entries

    count = declared_entries(path)
    if count is not None and count > MAX_ENTRIES:  # not handed to zipfile: the checkpoint reader names the count
        return Sniffed("torch-zip", "a PyTorch checkpoint", f"declares {count:,} entries")
    try:
        with zipfile.ZipFile(path) as zf:  # the directory only: nothing is inflated
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        # no readable central directory (a truncated file): judge by the first entry's name, which is
        # 'archive/data.pkl' for torch.save and under 'archive/extra/' or 'archive/code/' for TorchScript
        length = struct.unpack_from("<H", head, 26)[0] if len(head) >= 30 else 0
        first = head[30 : 30 + length].decode("utf-8", errors="replace")
        kind = "torchscript" if "/code/" in f"/{first}" or "/extra/" in f"/{first}" else "torch-zip"
        return Sniffed(kind, TORCHSCRIPT_LABEL if kind == "torchscript" else "a PyTorch checkpoint",
                       "truncated: no central directory")
    if torchscript_prefix(names) is not None:
        return Sniffed("torchscript", TORCHSCRIPT_LABEL)
    if any(n.endswith("data.pkl") for n in names):
        return Sniffed("torch-zip", "a PyTorch checkpoint")
    if names and all(n.endswith(".npy") for n in names):  # numpy.savez: big_vision / vision_transformer weights
        return Sniffed("npz", "a NumPy .npz archive")
    return Sniffed("zip", "a zip archive", "no data.pkl inside")


def _pickle_kind(head: bytes) -> Sniffed:
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return Sniffed("torch-pickle", "a PyTorch checkpoint (legacy format)")
    return Sniffed("pickle", "a pickle file")


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    n = struct.unpack_from("<Q", head)[0]
    return 2 <= n <= min(size - 8, SAFETENSORS_MAX_HEADER) and head[8:9] == b"{"


def _is_bmp(head: bytes) -> bool:
    return head.startswith(b"BM") and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in (
        12, 40, 52, 56, 64, 108, 124)


def _is_pnm(head: bytes) -> bool:
    """Netpbm (PBM/PGM/PPM, Pillow's "PPM"): P1-P6 (or Pf, float) and whitespace."""
    return head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"f") and head[2:3] in (
        b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")


def sniff_bytes(head: bytes, size: int) -> Sniffed:
    """The kind of a file from its first bytes (``size``: the whole file's); zips are told apart by `sniff`."""
    if size == 0:
        return Sniffed("empty", "empty (0 bytes)")
    for magic, kind, label in _IMAGES:
        if head.startswith(magic):
            return Sniffed(kind, label)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("webp", "a WebP image")
    if _is_bmp(head):
        return Sniffed("bmp", "a BMP image")
    if _is_pnm(head):
        return Sniffed("ppm", "a PPM image")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return _pickle_kind(head)
    if _is_safetensors(head, size):
        return Sniffed("safetensors", "a safetensors weights file")
    start = onnx_start(head, size)
    if start:
        if start == "truncated":
            return Sniffed("onnx", "an ONNX model (truncated)", "a field runs past the end of the file")
        return Sniffed("onnx", "an ONNX model")
    if _is_json(head, size):
        return Sniffed("json", "a JSON file")
    fmt = other_format(head)
    if fmt:
        return Sniffed("other-image", f"{'an' if fmt[0] in 'AEIOU' else 'a'} {fmt} file",
                       f"an image format vitexport does not decode (it decodes {ACCEPTED_TEXT})")
    return Sniffed("unknown", "not a format vitexport reads", f"first bytes {head[:8]!r}")


def _is_json(head: bytes, size: int) -> bool:
    """A JSON object or array: parsed whole when it fits in ``head``, else judged by its first tokens."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text[:1] not in (b"{", b"["):
        return False
    if size <= len(head):
        try:
            json.loads(head.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            return False
        return True
    second = text[1:].lstrip()[:1]
    return second in (b'"', b"}") if text[:1] == b"{" else second in (b"{", b"[", b'"', b"]")


def sniff(path: str | os.PathLike[str]) -> Sniffed:
    """The kind of ``path``; reads at most `HEAD_BYTES` (and a zip's central directory)."""
    p = Path(path)
    try:
        os.stat(p)  # a name too long for the file system, a loop of links: say so, as for a file we cannot open
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        return Sniffed("unknown", "unreadable", exc.strerror or str(exc))
    if p.is_dir():
        weights = next((name for name in HUB_WEIGHT_FILES if (p / name).is_file()), None)
        if weights:
            return Sniffed("hub-folder", f"a model folder ({weights})", weights)
        config = next((n for n in ("config.json", "open_clip_config.json") if (p / n).is_file()), None)
        if config:  # e.g. sharded transformers weights: the checkpoint reader names what is missing
            return Sniffed("hub-folder", f"a model folder ({config})", config)
        return Sniffed("directory", "a directory")
    if not p.exists():
        return Sniffed("missing", "missing")
    if not p.is_file():
        return Sniffed("unknown", "not a regular file")
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        return Sniffed("unknown", "unreadable", exc.strerror or str(exc))
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(p, head)
    return sniff_bytes(head, size)


# ---------------------------------------------------------------------------
# what each argument takes, and what to say otherwise
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Role:
    """An argument: the kinds it takes, how to name it, and how to fix a file that is not one."""

    accepts: frozenset[str]
    noun: str  # "a checkpoint", "an exported model"
    missing: str  # prefix for missing/empty/directory messages: "checkpoint", "ONNX model"
    fix_empty: str
    unknown: str  # the message for an unknown or unreadable file; {path} and {detail} filled in


_ONNX_UNREADABLE = "{path} is not a readable ONNX model ({detail}); it is truncated or not ONNX: export it again"
ROLES: dict[str, Role] = {
    # the export commands (onnx, torchscript) and load_model/read_checkpoint
    "checkpoint": Role(CHECKPOINT_KINDS, "a checkpoint", "checkpoint", "re-download or re-save it",
                       "{path} is not a checkpoint; expected a PyTorch .pt/.pth/.bin file, .safetensors, "
                       "or a vitexport checkpoint"),
    # info: anything it can describe
    "info": Role(CHECKPOINT_KINDS | {"onnx", "torchscript"}, "a checkpoint or an exported model", "checkpoint",
                 "re-download or re-save it",
                 "{path} is not a checkpoint or an exported model; expected a PyTorch .pt/.pth/.bin file, "
                 ".safetensors, a vitexport checkpoint, an .onnx or a TorchScript file"),
    # verify MODEL
    "model": Role(frozenset({"onnx", "torchscript"}), "an exported model", "model", "export it again",
                  _ONNX_UNREADABLE),
    # verify --checkpoint: the reference (a checkpoint, or the float ONNX export a transformed model came from)
    "reference": Role(CHECKPOINT_KINDS | {"onnx"}, "a checkpoint", "checkpoint", "re-download or re-save it",
                      "{path} is not a checkpoint; expected a PyTorch .pt/.pth/.bin file, .safetensors, "
                      "a vitexport checkpoint, or the float .onnx export"),
    # predict, bench, quantize, Predictor, and every reader of an ONNX file
    "onnx": Role(frozenset({"onnx"}), "an ONNX model", "ONNX model", "export it again", _ONNX_UNREADABLE),
    # predict IMAGE...
    "image": Role(IMAGE_KINDS, "an image", "image", f"pass a {ACCEPTED_TEXT} image",
                  "cannot read image {path} ({detail}); pass a " + ACCEPTED_TEXT + " image"),
}


def _fix(role: str, found: Sniffed, path: str) -> str:
    """Which command or flag takes a file of this kind, said to someone who passed it as ``role``."""
    kind = found.kind
    if kind in CHECKPOINT_KINDS:
        if role == "model":
            return f"run `vitexport onnx {path}` first, or pass it as --checkpoint"
        if role == "image":
            return f"export it with `vitexport onnx {path}` and pass the .onnx as MODEL, before the images"
        return f"run `vitexport onnx {path}` first and use the .onnx it writes"
    if kind == "onnx":
        if role == "image":
            return "the model comes first: `vitexport predict MODEL IMAGE...`"
        return (f"it is already exported: `vitexport verify {path}` checks it, `vitexport predict {path} IMAGE...` "
                "runs it; exports start from the PyTorch checkpoint or safetensors weights")
    if kind == "torchscript":
        if role == "image":
            return "the model comes first: `vitexport predict MODEL.onnx IMAGE...`"
        if role in ("checkpoint", "reference"):
            return (f"it is already exported: `vitexport verify {path}` checks it; "
                    + ("--checkpoint takes the PyTorch checkpoint or the float .onnx" if role == "reference" else
                       "exports start from the PyTorch checkpoint or safetensors weights"))
        return f"export the checkpoint with `vitexport onnx CHECKPOINT` (`vitexport verify {path}` checks this archive)"
    if kind in IMAGE_KINDS:
        return f"classify it with `vitexport predict MODEL.onnx {path}`"
    if kind == "json":
        if role in ("checkpoint", "info", "reference"):
            return "pass a model config as --config, beside the weights file"
        config = f"a model config goes to `vitexport onnx CHECKPOINT --config {path}`"
        return f"pass image files ({config})" if role == "image" else f"pass an exported .onnx file ({config})"
    return ""


def wrong_kind_message(path: str | os.PathLike[str], found: Sniffed, role: str) -> str:
    """One line: what ``path`` is, what ``role`` takes, and the command or flag for a file of its kind."""
    spec = ROLES[role]
    shown = repr(str(path))
    if found.kind == "missing":
        return f"{spec.missing} {shown} does not exist; check the path"
    if found.kind == "empty":
        return f"{spec.missing} {shown} is empty (0 bytes); {spec.fix_empty}"
    if found.kind == "directory":
        if role in ("checkpoint", "info", "reference"):
            return f"{shown} is a directory without {' or '.join(HUB_WEIGHT_FILES[:2])}; pass the weights file itself"
        return f"{spec.missing} {shown} is a directory; pass {'image files' if role == 'image' else 'a file'}"
    if found.label == "unreadable":
        return f"{spec.missing} {shown} cannot be opened ({found.detail}); check the path and its permissions"
    if found.label == "not a regular file":
        return f"{spec.missing} {shown} is not a regular file; pass {'image files' if role == 'image' else 'a file'}"
    if found.kind == "other-image" and role == "image":
        return undecodable(shown, found.label)
    fix = _fix(role, found, str(path))
    if not fix:  # unknown, a zip or pickle that is no model, unreadable
        detail = f"{found.label}: {found.detail}" if found.detail else found.label
        unknown = _ONNX_UNREADABLE if Path(path).suffix.lower() == ".onnx" and role != "image" else spec.unknown
        return unknown.format(path=shown, detail=detail)
    return f"{shown} is {found.label}, not {spec.noun}: {fix}"


def require(path: str | os.PathLike[str], role: str, deep: bool = False, found: Sniffed | None = None) -> Sniffed:
    """The kind of ``path`` when ``role`` takes it; else raise with what the file is and how to fix it.

    A file of another known kind raises `FileKindError` (exit 2: the wrong argument); a path that does not
    exist or cannot be opened (a directory, not a regular file, no permission) `CheckpointPathError` or
    `ImagePathError` (exit 2); an empty or unknown file `CheckpointError` (`InputError` for images; exit 1).
    ``deep``: an ONNX file is also parsed to its end (`onnxwire`: weights skipped), so a truncated one is
    named here, not by the runtime.
    ``found``: what `sniff` already said of ``path`` (it is not read again).
    """
    found = found or sniff(path)
    if found.kind in ROLES[role].accepts:
        if deep and found.kind == "onnx":
            read_onnx_structure(path)
        return found
    message = wrong_kind_message(path, found, role)
    if found.kind in CHECKPOINT_KINDS | IMAGE_KINDS | {"onnx", "torchscript", "json"}:
        raise FileKindError(message)
    if found.kind in PATH_PROBLEMS or found.label in PATH_PROBLEMS:
        raise (ImagePathError if role == "image" else CheckpointPathError)(message)
    raise (InputError if role == "image" else CheckpointError)(message)


def unreadable_onnx(path: str | os.PathLike[str], detail: Any) -> CheckpointError:
    """The error for an ONNX file that does not parse (truncated, or not ONNX after all)."""
    return CheckpointError(_ONNX_UNREADABLE.format(path=repr(str(path)), detail=detail))


def read_onnx_structure(path: str | os.PathLike[str]) -> Any:
    """`onnxwire.read_model` of ``path`` (weights skipped), or `unreadable_onnx`."""
    from vitexport.security.onnxwire import read_model

    try:
        return read_model(path)
    except (WireError, OSError) as exc:
        raise unreadable_onnx(path, exc) from exc


__all__ = ["CHECKPOINT_KINDS", "HUB_WEIGHT_FILES", "IMAGE_KINDS", "ROLES", "Sniffed", "looks_like_onnx", "onnx_start",
           "read_onnx_structure", "require", "sniff", "sniff_bytes", "torchscript_prefix", "unreadable_onnx",
           "wrong_kind_message"]
