"""Crafted image files the image-decoder tests share: EXIF blocks Pillow cannot write back, EPS files."""

from __future__ import annotations

import io
import struct

from PIL import Image

ROTATE = (0x0112, 3, 1, 6)  # Orientation (SHORT) = 6: rotate 90 degrees clockwise to display


def exif_block(entries: list[tuple[int, int, int, bytes | int]]) -> bytes:
    """A little-endian TIFF-structured EXIF block with one IFD of (tag, type, count, value) entries."""
    ifd, extra = struct.pack("<H", len(entries)), b""
    base = 8 + 2 + 12 * len(entries) + 4
    for tag, typ, count, value in entries:
        if isinstance(value, bytes) and len(value) > 4:
            ifd += struct.pack("<HHII", tag, typ, count, base + len(extra))
            extra += value
        else:
            raw = value if isinstance(value, bytes) else struct.pack("<H", value)
            ifd += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + extra


# An orientation next to a tag of the wrong type: turning the image makes Pillow re-encode the block, which fails.
CRAFTED_EXIF = {
    "width-as-text": exif_block([ROTATE, (0x0100, 2, 8, b"notanum\0")]),  # struct.error
    "resolution-as-text": exif_block([ROTATE, (0x011A, 2, 8, b"notanum\0")]),  # TypeError
}


def with_exif(image: Image.Image, fmt: str, block: bytes, **save: object) -> bytes:
    """``image`` encoded as ``fmt`` carrying the EXIF ``block`` (JPEG and WebP want the ``Exif`` prefix)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, exif=block if fmt == "PNG" else b"Exif\x00\x00" + block, **save)
    return buf.getvalue()


def crafted_exif_png(name: str = "width-as-text", size: tuple[int, int] = (20, 10)) -> bytes:
    """A small RGB PNG whose EXIF block is `CRAFTED_EXIF[name]`."""
    return with_exif(Image.new("RGB", size, (40, 80, 120)), "PNG", CRAFTED_EXIF[name])


def eps_bytes(size: tuple[int, int] = (28, 28)) -> bytes:
    """A valid EPS file (Pillow writes it without Ghostscript; reading it back needs Ghostscript)."""
    buf = io.BytesIO()
    Image.new("L", size, 128).save(buf, format="EPS")
    return buf.getvalue()
