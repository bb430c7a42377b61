"""Write a few held-out digits as PNG files into samples/images/ (used by the README walk-through).

    python -m samples.make_images
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from samples.digits_data import held_out

OUT = Path(__file__).resolve().parent / "images"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for size, picks in ((28, (0, 1, 2, 3)), (40, (4,)), (20, (5,))):
        images, labels = held_out(size)
        for i in picks:
            Image.fromarray(images[i], mode="L").save(OUT / f"digit-{labels[i]}-{size}px.png")
    # a non-square crop: the model pads it to a multiple of its patch and runs at that size
    images, labels = held_out(36)
    Image.fromarray(images[6][2:34, :], mode="L").save(OUT / f"digit-{labels[6]}-32x36px.png")
    print("\n".join(sorted(p.name for p in OUT.iterdir())))


if __name__ == "__main__":
    main()
