"""Turn user images into model inputs (numpy; Pillow only for PIL images). Imports no torch.

- PIL images and uint8 arrays (HW, HWC with 1/3/4 channels) are raw pixels: converted to the
  model's channel count, scaled and normalised with the model's mean/std. PIL images are
  turned upright by their EXIF orientation first; 16-bit images (modes ``I;16*``, ``I``) are
  brought to the 8-bit range as ``value / 257`` in float32 (65535 -> 255.0, fractions kept), so
  the model's 8-bit scale applies unchanged. Arithmetic is float32 throughout.
- `read_image` reads the size from the file's header and refuses an image over the caller's
  limit (``check``) or over Pillow's decompression-bomb limit before decoding any pixel.
- float arrays (CHW, or NCHW with N=1) are already-preprocessed model inputs, used as they are.
Images keep their size: the exported graph pads and resamples for any size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitexport._util.errors import InputError, one_line

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
EXIF_ORIENTATION = 0x0112
ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Preprocess:
    channels: int
    scale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_metadata(cls, meta: dict[str, Any] | None, channels: int) -> Preprocess:
        meta = meta or {}
        mean, std = meta.get("mean"), meta.get("std")
        if mean is not None and len(mean) not in (1, channels):
            raise InputError(f"model metadata mean {mean} does not match its {channels} channels; re-export it")
        return cls(
            channels=channels,
            scale=float(meta.get("scale", 1 / 255)),
            mean=tuple(float(v) for v in mean) if mean is not None else None,
            std=tuple(float(v) for v in std) if std is not None else None,
        )


def _convert_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) uint8/float pixels -> (H, W, channels): gray<->RGB, alpha dropped."""
    c = pixels.shape[-1]
    if c == 4:
        pixels, c = pixels[..., :3], 3
    if c == channels:
        return pixels
    if c == 1 and channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    if c == 3 and channels == 1:
        return (pixels.astype(np.float32) @ LUMA)[..., None]
    raise InputError(f"cannot convert a {c}-channel image to the model's {channels} channels")


def _pil_pixels(image: Any, channels: int) -> np.ndarray:
    """A PIL image -> (H, W, C) pixels in the 8-bit range: uint8, or float32 for 16-bit images."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)  # a no-op without an orientation tag
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


def _normalise(pixels: np.ndarray, prep: Preprocess) -> np.ndarray:
    """(H, W, C) pixels in the 8-bit range -> (C, H, W) float32, scaled and normalised."""
    x = _convert_channels(pixels, prep.channels).astype(np.float32) * np.float32(prep.scale)
    if prep.mean is not None and prep.std is not None:
        x = (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def to_model_input(image: Any, prep: Preprocess) -> np.ndarray:
    """One image -> (C, H, W) float32 model input."""
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
        return _normalise(_pil_pixels(image, prep.channels), prep)
    if not isinstance(image, np.ndarray):
        raise InputError(f"unsupported image type {type(image).__name__}; pass a PIL image or a numpy array")
    if image.size == 0:
        raise InputError(f"empty image of shape {image.shape}")
    if image.dtype == np.uint8:
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise InputError(
                f"uint8 image of shape {image.shape}: expected HxW or HxWxC with C in 1, 3, 4 (channels last)"
            )
        return _normalise(image, prep)
    if np.issubdtype(image.dtype, np.floating):
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3:
            raise InputError(
                f"float image of shape {image.shape}: expected a preprocessed CxHxW (or 1xCxHxW) array"
            )
        if image.shape[0] != prep.channels:
            raise InputError(
                f"float image has {image.shape[0]} channels (CxHxW), the model takes {prep.channels}; "
                "pass uint8 pixels to have channels converted"
            )
        if not np.isfinite(image).all():
            raise InputError("the input holds NaN or Inf values")
        return np.ascontiguousarray(image, dtype=np.float32)
    raise InputError(f"unsupported dtype {image.dtype}; pass uint8 pixels or a float32 CxHxW array")


def _open_error(path: str, exc: BaseException) -> InputError:
    from PIL import Image

    if isinstance(exc, FileNotFoundError):
        return InputError(f"image {path!r} does not exist; check the path")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"image {path!r} is a directory; pass image files")
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return InputError(f"image {path!r} declares more pixels than Pillow's decompression-bomb limit "
                          f"({Image.MAX_IMAGE_PIXELS:,}); downscale it first")
    from vitexport.security.sniff import require

    require(path, "image")  # a model, a checkpoint, ...: raises, saying what it is and where it goes
    return InputError(f"cannot read image {path!r} ({type(exc).__name__}); pass a PNG, JPEG or other Pillow format")


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
    except Exception:  # a broken EXIF block: the pixels are still readable, unrotated
        return 1


def header_size(image: Any) -> tuple[int, int]:
    """(height, width) of an opened, not yet decoded, PIL image as it will be shown (EXIF rotation applied)."""
    w, h = image.size
    return (w, h) if _orientation(image) in ROTATED_ORIENTATIONS else (h, w)


def _with_image(path: str, use: Callable[[Any], Any]) -> Any:
    """``use(image)`` on the lazily opened image at ``path``; Pillow's errors as one `InputError`."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `read_image` refuses it, in one line
            with Image.open(path) as img:
                return use(img)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, ValueError,
            SyntaxError, EOFError) as exc:  # SyntaxError/EOFError: some of Pillow's parsers on broken headers
        raise _open_error(path, exc) from None


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image file from its header (upright), without decoding its pixels."""
    return _with_image(path, header_size)


def read_image(path: str, check: Callable[[int, int], None] | None = None) -> Any:
    """A decoded, upright PIL image from a file (fully loaded, file closed); `InputError` naming the problem
    otherwise. ``check(height, width)`` sees the size from the header and may refuse before any decoding."""
    from PIL import Image, ImageOps

    def decode(img: Any) -> Any:
        if check is not None:
            check(*header_size(img))
        if Image.MAX_IMAGE_PIXELS and img.size[0] * img.size[1] > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombWarning("over the limit")
        img.load()
        return ImageOps.exif_transpose(img.copy())

    return _with_image(path, decode)
