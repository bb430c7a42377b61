"""Train the sample model samples/digits-vit.pt (a few minutes on 2 CPU cores).

    python -m samples.train_digits [--out samples/digits-vit.pt] [--epochs 150]

A small dynamic-pad ViT, img_size=28 and patch_size=8: its positional-embedding grid
is 3x3 and every 28x28 input is padded to 32x32 (a 4x4 grid, 17 tokens with CLS),
exactly the example of the spec. It trains on 28x28 renderings, plus a share of
other sizes (20..40 px) so that other resolutions also give sensible answers.
The held-out accuracy printed at the end is the figure stated in the README.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samples.digits_data import held_out, load_digits_uint8, render, split
from vitexport import ViTConfig, save_checkpoint
from vitexport.model.vit import VisionTransformer

CONFIG = ViTConfig(
    img_size=28, patch_size=8, in_chans=1, num_classes=10,
    embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
)
OTHER_SIZES = (20, 24, 32, 36, 40)


def normalize(x_uint8: np.ndarray, mean: float, std: float) -> torch.Tensor:
    x = torch.from_numpy(x_uint8).float().div_(255.0).unsqueeze(1)  # (N, 1, H, W)
    return (x - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random affine jitter (rotation, scale, shift), as the digits are few."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) - 0.5) * (2 * np.pi * 12 / 360)
    scale = 1 + (torch.rand(n, generator=gen) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin()  # padding value = the normalised black
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "digits-vit.pt"))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    images8, labels = load_digits_uint8()
    train_idx, _ = split()
    train28 = render(images8[train_idx], 28)
    mean = float(train28.mean() / 255.0)
    std = float(train28.std() / 255.0)
    by_size = {s: normalize(render(images8[train_idx], s), mean, std) for s in (28, *OTHER_SIZES)}
    y = torch.from_numpy(labels[train_idx])

    model = VisionTransformer(CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps_per_epoch = (len(y) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.epochs * steps_per_epoch)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * 64 : (i + 1) * 64]
            size = 28 if torch.rand(1, generator=gen).item() < 0.6 else OTHER_SIZES[i % len(OTHER_SIZES)]
            xb = augment(by_size[size][idx], gen)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if (epoch + 1) % 25 == 0 or epoch == 0:
            print(f"epoch {epoch + 1:3d}  loss {total / steps_per_epoch:.4f}  {time.time() - t0:.0f}s", flush=True)

    model.eval()
    print("held-out accuracy (PyTorch, 450 images):")
    with torch.no_grad():
        for size in (28, *OTHER_SIZES):
            x, t = held_out(size)
            pred = model(normalize(x, mean, std)).argmax(-1).numpy()
            print(f"  {size}x{size}: {100 * (pred == t).mean():.2f}%")
    preprocess = {"scale": 1 / 255, "mean": [mean], "std": [std], "channels": 1}
    save_checkpoint(model, args.out, preprocess=preprocess, labels=[str(i) for i in range(10)])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
