"""Turn user images into model inputs (numpy; Pillow only for PIL images). Imports no torch.

- PIL images and uint8 arrays (HW, HWC with 1/3/4 channels) are raw pixels: converted to the
  model's channel count, scaled and normalised with the model's mean/std. PIL images become
  pixels through `vitexport.security.images.to_pixels` (upright by their EXIF orientation,
  16-bit images as ``value / 257`` in float32). Arithmetic is float32 throughout.
- float arrays (CHW, or NCHW with N=1) are already-preprocessed model inputs, used as they are.
Images keep their size: the exported graph pads and resamples for any size.

Files and encoded bytes are decoded by `vitexport.security.images` (the one format list and
decoder); `read_image`, `image_size` and `header_size` stay importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitexport._util.errors import InputError
from vitexport.security.images import header_size, image_size, read_image, to_pixels

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")


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


def _normalise(pixels: np.ndarray, prep: Preprocess) -> np.ndarray:
    """(H, W, C) pixels in the 8-bit range -> (C, H, W) float32, scaled and normalised."""
    x = _convert_channels(pixels, prep.channels).astype(np.float32) * np.float32(prep.scale)
    if prep.mean is not None and prep.std is not None:
        x = (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def to_model_input(image: Any, prep: Preprocess) -> np.ndarray:
    """One image -> (C, H, W) float32 model input."""
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
        return _normalise(to_pixels(image, prep.channels), prep)
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


__all__ = ["Preprocess", "header_size", "image_size", "read_image", "to_model_input"]
