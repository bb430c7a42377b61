"""Held-out accuracy of an exported digits model through `vitexport predict --json`, per input size.

    python -m samples.evaluate digits-vit.onnx [--sizes 20,24,28,32,36,40]

Renders the 450 held-out digits (samples/digits_data.py) as PNG files at each size and
runs the real command line on them, as a user would.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from samples.digits_data import held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--sizes", default="20,24,28,32,36,40")
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("vitexport")
    print(f"{'size':>6s} {'images':>7s} {'top-1':>8s}")
    for size in (int(s) for s in args.sizes.split(",")):
        images, labels = held_out(size)
        with tempfile.TemporaryDirectory() as folder:
            paths = []
            for i, img in enumerate(images):
                paths.append(str(Path(folder) / f"{i:03d}.png"))
                Image.fromarray(img, mode="L").save(paths[-1])
            out = subprocess.run([str(exe), "predict", args.model, *paths, "--json", "--top-k", "1"],
                                 capture_output=True, text=True, check=True)
        data = json.loads(out.stdout)
        correct = sum(d["top_k"][0]["index"] == int(y) for d, y in zip(data, labels, strict=True))
        print(f"{size:>4d}px {len(data):>7d} {100 * correct / len(data):>7.2f}%")


if __name__ == "__main__":
    main()
