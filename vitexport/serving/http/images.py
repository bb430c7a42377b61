"""Encoded images from the network (PNG, JPEG, ...) to decoded PIL images, refusing bombs before decoding.

Pillow reads only the header on ``open``; the pixel count is checked against the limit
before any pixel is decoded, so a small file that inflates to a huge image (a decompression
bomb) costs nothing. Only raster formats Pillow decodes itself are accepted (EPS, for one,
would run Ghostscript).
"""

from __future__ import annotations

import io
from typing import Any

from vitexport._util.errors import InputError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")


def open_image(data: bytes) -> Any:
    """An opened PIL image (header read, pixels not decoded); `InputError` when the bytes are not an image."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError("an image element is empty; send each image file's bytes")
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InputError(f"refused a decompression bomb ({exc}); send a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(f"an image element is not a {', '.join(ACCEPTED_FORMATS)} image; send encoded image files"
                         ) from None


def check_pixels(img: Any, max_pixels: int) -> tuple[int, int]:
    """(height, width) of an opened image, `InputError` when it holds more than ``max_pixels`` pixels."""
    w, h = img.size
    if h * w > max_pixels:
        raise InputError(f"a {h}x{w} image has {h * w:,} pixels, over this server's limit of {max_pixels:,}; "
                         "downscale it")
    return h, w


def load_image(img: Any) -> Any:
    """Decode an opened image's pixels; `InputError` when the file is truncated or corrupt."""
    from PIL import Image

    try:
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        h, w = img.size[1], img.size[0]
        raise InputError(f"a {h}x{w} {img.format} image is truncated or corrupt; send the whole file") from None
    return img


__all__ = ["ACCEPTED_FORMATS", "check_pixels", "load_image", "open_image"]
