"""Max |runtime - PyTorch| of both resampling forms on ONNX Runtime CPU, OpenVINO CPU and the ONNX reference.

    python -m benchmarks.resample_accuracy [CHECKPOINT] [--sizes 28x28,25x25,...] [--batch 2]

Exports CHECKPOINT (default: the digits sample) with `--resample portable` and `--resample resize`
and prints, per input size, its patch grid and the largest absolute logit difference from eager
PyTorch on each runtime (random normal inputs, fixed seed). OpenVINO runs on its CPU device with
INFERENCE_PRECISION_HINT=f32 (its default is bf16 on CPUs with AVX512-BF16 or AMX) and is skipped
when not installed. Accuracy only: no timings, so a busy machine does not change the numbers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from vitexport.checkpoint.load import load_model
from vitexport.export.onnx_export import export_onnx

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "digits-vit.pt"
DEFAULT_SIZES = "28x28,20x20,24x24,25x25,16x16,9x30,32x24,40x40,48x48,1x1,100x17"
FORMS = ("portable", "resize")


def runners(path: str) -> dict:
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = ReferenceEvaluator(path)
    out = {"ort-cpu": lambda x: sess.run(None, {"pixel_values": x})[0],
           "reference": lambda x: ref.run(None, {"pixel_values": x})[0]}
    try:
        import openvino as ov
    except ImportError:
        return out
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out[f"openvino-{ov.__version__.split('-')[0]}"] = lambda x: compiled(x)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default=str(SAMPLE))
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    model = load_model(args.checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        run = {}
        for form in FORMS:
            path = os.path.join(folder, f"{form}.onnx")
            export_onnx(model, path, resample=form)
            run[form] = runners(path)
        names = list(run["portable"])
        header = " ".join(f"{form + '/' + name:>26s}" for form in FORMS for name in names)
        print(f"{Path(args.checkpoint).name}: max |runtime - PyTorch| of the logits, batch {args.batch}, "
              f"native grid {'x'.join(map(str, model.patch_embed.grid_size))}")
        print(f"     size    grid {header}")
        for h, w in sizes:
            x = np.random.default_rng([h, w]).standard_normal((args.batch, model.config.in_chans, h, w))
            x = x.astype(np.float32)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            cells = [f"{np.abs(run[form][name](x) - ref).max():26.2e}" for form in FORMS for name in names]
            gh, gw = model.grid_for(h, w)
            print(f"{h:>4d}x{w:<4d} {gh:>3d}x{gw:<3d} {' '.join(cells)}")
        print(f"logit scale: max |PyTorch logit| {np.abs(ref).max():.1f} at the last size")


if __name__ == "__main__":
    main()
