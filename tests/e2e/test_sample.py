"""The shipped sample model: held-out accuracy >= 97% at 28x28, rendered exactly as documented."""

from __future__ import annotations

import numpy as np
import torch

from samples.digits_data import held_out, load_digits_uint8, split
from tests.helpers.models import SAMPLES
from vitexport import load_model


def test_split_is_disjoint_and_fixed() -> None:
    train, test = split()
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 1797
    assert len(test) == 450


def test_rendering_is_white_on_black_uint8() -> None:
    images, _ = load_digits_uint8()
    assert images.dtype == np.uint8 and images.max() == 255 and images.min() == 0
    x, _ = held_out(28)
    assert x.shape == (450, 28, 28) and x.dtype == np.uint8
    assert x[:, 0, 0].mean() < 30  # background is black


@torch.no_grad()
def test_sample_held_out_accuracy_at_28() -> None:
    model = load_model(SAMPLES / "digits-vit.pt")
    pre = model.meta["preprocess"]
    assert model.config.img_hw == (28, 28) and model.config.patch_hw == (8, 8) and model.config.in_chans == 1
    x, labels = held_out(28)
    t = torch.from_numpy(x).float().mul(pre["scale"]).sub(pre["mean"][0]).div(pre["std"][0]).unsqueeze(1)
    acc = (model(t).argmax(-1).numpy() == labels).mean()
    assert acc >= 0.97, acc
