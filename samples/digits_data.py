"""scikit-learn's handwritten digits rendered like MNIST, and the fixed train/held-out split.

Rendering (the model issue's recipe): values 0..16 scaled to 0..255 as uint8 (white
digit on black), resized 8x8 -> SIZE x SIZE with PIL bilinear, one channel.
The split is stratified, 25% held out, random_state=0; the held-out part is never
used in training.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HELD_OUT_FRACTION = 0.25
SPLIT_SEED = 0


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) uint8 images with 0 = background, 255 = full ink; (N,) int labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def render(images8: np.ndarray, size: int | tuple[int, int] = 28) -> np.ndarray:
    """Resize (N, 8, 8) uint8 images to (N, H, W) uint8 with PIL bilinear."""
    h, w = (size, size) if isinstance(size, int) else size
    out = np.empty((len(images8), h, w), dtype=np.uint8)
    for i, img in enumerate(images8):
        out[i] = np.asarray(Image.fromarray(img, mode="L").resize((w, h), Image.BILINEAR))
    return out


def split() -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out) of the fixed split."""
    from sklearn.model_selection import train_test_split

    _, labels = load_digits_uint8()
    idx = np.arange(len(labels))
    train, held_out = train_test_split(
        idx, test_size=HELD_OUT_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return np.sort(train), np.sort(held_out)


def held_out(size: int | tuple[int, int] = 28) -> tuple[np.ndarray, np.ndarray]:
    """Held-out images rendered at ``size`` (N, H, W) uint8, and their labels."""
    images, labels = load_digits_uint8()
    _, test_idx = split()
    return render(images[test_idx], size), labels[test_idx]
