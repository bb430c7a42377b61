"""Images we did not encode: the one format list and the one decoder, for files and for bytes.

`predict`, the `Predictor` helpers (`read_image`, `image_size`, `Predictor.prepare`) and `serve`
read images here and nowhere else:

- Only `ACCEPTED_FORMATS` are opened (``Image.open(..., formats=ACCEPTED_FORMATS)``): raster formats
  Pillow decodes itself. Any other format is refused by name, whatever the file is called (an EPS
  file named ``digit.png`` would otherwise be handed to Ghostscript); `other_format` names it from
  Pillow's own prefix checks, which read bytes and parse nothing. `sniff` takes its image kinds
  from `KINDS`.
- The size comes from the header: the caller's ``check(height, width)`` (token and memory limits,
  a server's pixel limit) and Pillow's decompression-bomb limit refuse an image before any pixel
  is decoded.
- A decoded image is turned upright by its EXIF orientation. A crafted EXIF block that Pillow
  cannot parse or write back (``struct.error``, ``TypeError``, ...) is a one-line "corrupt" `InputError`,
  as is a truncated file.
- `to_pixels` turns any PIL image into (H, W, C) pixels in the 8-bit range: 16-bit modes (``I;16*``,
  ``I``) become ``value / 257`` in float32 (65535 -> 255.0, fractions kept), so the model's 8-bit
  scale applies unchanged; 32-bit float images are refused (no defined range).

Torch-free; Pillow and numpy are imported inside the functions (the CLI imports `sniff`, and with
it this list, for ``--help``).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vitexport._util.errors import ImagePathError, InputError, one_line

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")  # Pillow's names; PPM covers PBM/PGM/PPM
KINDS = {fmt: fmt.lower() for fmt in ACCEPTED_FORMATS}  # `sniff`'s kind for each format
ACCEPTED_TEXT = "PNG, JPEG, WebP, BMP, GIF, TIFF or PPM"  # the same list, as users read it
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
EXIF_ORIENTATION = 0x0112
TURNED = (2, 3, 4, 5, 6, 7, 8)  # EXIF orientations that move pixels
ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # those that also swap width and height
AMBIGUOUS = ("CUR",)  # Pillow's prefix check for CUR (4 bytes) also matches most TGA files: not named
# What Pillow's EXIF reader and writer raise on a crafted block (seen fuzzing Pillow 13's exif_transpose).
EXIF_ERRORS = (struct.error, TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError,
               ZeroDivisionError, OSError, SyntaxError, EOFError, RecursionError)
# What Pillow's decoders raise on a truncated or corrupt file.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError)


@dataclass(frozen=True)
class Source:
    """How errors name an image and say how to fix it: a file (predict) or one element of a request (serve)."""

    what: str  # "image 'x.png'", "the image"
    fix: str  # how to get a readable file: "re-save it", "send the whole file"

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> Source:
        return cls(f"image {str(path)!r}", "re-save or re-download it")


PIL_IMAGE = Source("the image", "re-save it")  # a PIL image handed to the Predictor
SENT = Source("the image", "send the whole, unmodified file")  # bytes from the network


# ---------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------
def other_format(head: bytes) -> str | None:
    """The name of an image format vitexport does not decode ("EPS", "PDF", "ICO", ...) that ``head`` (a
    file's first bytes) starts like, by Pillow's own prefix checks (nothing is parsed); None otherwise."""
    if head.startswith(b"%PDF-"):
        return "PDF"  # Pillow writes PDF but has no reader
    from PIL import Image

    Image.init()
    prefix = head[:16]
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if fmt in ACCEPTED_FORMATS or fmt in AMBIGUOUS or accept is None:
            continue
        with contextlib.suppress(Exception):  # a prefix check that cannot take these bytes does not match
            if accept(prefix):
                return fmt
    return None


def undecodable(what: str, label: str) -> str:
    """The message for an image in a format vitexport does not decode (``label``: "an EPS file")."""
    return f"{what} is {label}, which vitexport does not decode; convert it to {ACCEPTED_TEXT}"


def _not_accepted(source: Source, data: bytes) -> InputError:
    """Bytes that are none of `ACCEPTED_FORMATS`: say what they are, when `sniff` knows."""
    from vitexport.security.sniff import HEAD_BYTES, sniff_bytes

    found = sniff_bytes(data[:HEAD_BYTES], len(data))
    if found.kind == "other-image":
        return InputError(undecodable(source.what, found.label))
    it = f" (it is {found.label})" if found.kind not in ("unknown", *KINDS.values()) else ""
    return InputError(f"{source.what} is not a {ACCEPTED_TEXT} image{it}; send encoded image files")


# ---------------------------------------------------------------------------
# opening: the header only
# ---------------------------------------------------------------------------
def _bomb(source: Source) -> InputError:
    from PIL import Image

    return InputError(f"{source.what} declares more pixels than Pillow's decompression-bomb limit "
                      f"({Image.MAX_IMAGE_PIXELS:,}); refused as a decompression bomb: downscale it first")


def _open_file_error(path: str, exc: BaseException) -> InputError:
    from PIL import Image

    from vitexport.security.sniff import require

    if isinstance(exc, FileNotFoundError):
        return ImagePathError(f"image {path!r} does not exist; check the path")
    if isinstance(exc, IsADirectoryError):
        return ImagePathError(f"image {path!r} is a directory; pass image files")
    if isinstance(exc, PermissionError):
        return ImagePathError(f"image {path!r} cannot be opened ({exc.strerror}); check its permissions")
    if isinstance(exc, Image.DecompressionBombError):
        return _bomb(Source.file(path))
    require(path, "image")  # a model, a checkpoint, an EPS file, ...: raises, saying what it is and where it goes
    return InputError(f"cannot read image {path!r} ({type(exc).__name__}: {one_line(exc, 100)}); "
                      f"pass a {ACCEPTED_TEXT} image")


def _open_bytes(data: bytes) -> Any:
    from PIL import Image

    if not data:
        raise InputError("the image is empty (0 bytes); send each image file's bytes")
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise _bomb(SENT) from None
    except DECODE_ERRORS:  # UnidentifiedImageError is an OSError
        raise _not_accepted(SENT, data) from None


@contextlib.contextmanager
def _opened_file(path: str | os.PathLike[str]) -> Iterator[Any]:
    """The lazily opened image at ``path`` (header read, pixels not decoded), Pillow's warnings silenced
    (the errors below say it in one line); `InputError` when it cannot be opened."""
    from PIL import Image

    path = str(path)
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):  # a FIFO would block open()
        raise ImagePathError(f"image {path!r} is not a regular file; pass image files")
    with warnings.catch_warnings():  # the CLI reads files in one thread: this filter is not shared
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")  # "Corrupt EXIF data", ...
        try:
            img = Image.open(path, formats=ACCEPTED_FORMATS)
        except (Image.DecompressionBombError, *DECODE_ERRORS) as exc:
            raise _open_file_error(path, exc) from None
        with img:
            yield img


def _orientation(image: Any) -> int:
    """The EXIF orientation known without decoding (``getexif`` would decode a PNG to look for it)."""
    from PIL import Image

    try:
        if image.info.get("exif"):
            exif = Image.Exif()
            exif.load(image.info["exif"])
            return int(exif.get(EXIF_ORIENTATION, 1))
        tags = getattr(image, "tag_v2", None)  # TIFF keeps it among its own tags
        return int(tags.get(EXIF_ORIENTATION, 1)) if tags is not None else 1
    except EXIF_ERRORS:  # a broken EXIF block: `upright` names it once the image is decoded
        return 1


def header_size(image: Any) -> tuple[int, int]:
    """(height, width) of an opened, not yet decoded, PIL image as it will be shown (EXIF rotation applied)."""
    w, h = image.size
    return (w, h) if _orientation(image) in ROTATED_ORIENTATIONS else (h, w)


# ---------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------
def load(image: Any, source: Source) -> Any:
    """Decode an opened image's pixels; `InputError` when the file is truncated or corrupt."""
    from PIL import Image

    try:
        image.load()
    except (Image.DecompressionBombError, *DECODE_ERRORS) as exc:
        h, w = image.size[1], image.size[0]
        raise InputError(f"{source.what} ({h}x{w} {image.format or 'image'}) is truncated or corrupt "
                         f"({type(exc).__name__}); {source.fix}") from None
    return image


def upright(image: Any, source: Source = PIL_IMAGE) -> Any:
    """The decoded image turned by its EXIF orientation (the image itself when there is nothing to turn);
    `InputError` for a file Pillow cannot decode or an EXIF block it cannot parse."""
    from PIL import ImageOps

    load(image, source)
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) not in TURNED:
            return image
        return ImageOps.exif_transpose(image)
    except EXIF_ERRORS as exc:
        raise InputError(f"{source.what} is corrupt: its EXIF block does not parse ({type(exc).__name__}); "
                         f"{source.fix} without the EXIF data") from None


def decode(image: Any, source: Source, check: Callable[[int, int], None] | None = None) -> Any:
    """An opened image decoded and upright, after ``check(height, width)`` and the decompression-bomb
    limit have seen its size from the header."""
    from PIL import Image

    if check is not None:
        check(*header_size(image))
    w, h = image.size
    if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
        raise _bomb(source)
    return upright(image, source)


def read_image(path: str | os.PathLike[str], check: Callable[[int, int], None] | None = None) -> Any:
    """A decoded, upright PIL image from a file (fully loaded, file closed); `InputError` naming the problem
    otherwise. ``check(height, width)`` sees the size from the header and may refuse before any decoding."""
    with _opened_file(path) as img:
        out = decode(img, Source.file(path), check)
        return out.copy() if out is img else out  # detached from the file


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image file from its header (upright), without decoding its pixels."""
    with _opened_file(path) as img:
        return header_size(img)


def decode_bytes(data: bytes, check: Callable[[int, int], None] | None = None) -> Any:
    """A decoded, upright PIL image from an encoded image's bytes (a request element), as `read_image`."""
    return decode(_open_bytes(data), SENT, check)


# ---------------------------------------------------------------------------
# pixels
# ---------------------------------------------------------------------------
def to_pixels(image: Any, channels: int) -> Any:
    """A PIL image -> upright (H, W, C) pixels in the 8-bit range: uint8, or float32 for 16-bit images
    (C is 1 for them; otherwise 1 when ``channels`` is 1, else 3)."""
    import numpy as np

    image = upright(image)
    if image.mode in SIXTEEN_BIT_MODES:
        return (np.clip(np.asarray(image, dtype=np.float32), 0, 65535) / np.float32(257))[..., None]
    if image.mode == "F":
        raise InputError("32-bit float images have no defined pixel range; save the image as 8- or 16-bit")
    mode = "L" if channels == 1 else "RGB"
    try:
        pixels = np.asarray(image.convert(mode))
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot convert a {image.mode} image to {mode} ({one_line(exc, 120)}); "
                         "save it as RGB or grayscale") from exc
    return pixels[..., None] if pixels.ndim == 2 else pixels


__all__ = ["ACCEPTED_FORMATS", "ACCEPTED_TEXT", "KINDS", "Source", "decode", "decode_bytes", "header_size",
           "image_size", "load", "other_format", "read_image", "to_pixels", "upright"]
