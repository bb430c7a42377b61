"""``output``: logits, features (timm's ``forward_head(x, pre_logits=True)``) or tokens (``forward_features``), in
PyTorch, TorchScript and ONNX, on a CLIP, a SigLIP and a DINOv3 preset shrunk; the metadata records the choice, verify
compares it, the Predictor returns embeddings for it; ``logits`` without a head is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.helpers.models import perturb_
from vitexport._util.errors import UsageError
from vitexport.export.onnx_export import export_onnx
from vitexport.export.torchscript_export import export_torchscript
from vitexport.model.config import get_preset
from vitexport.model.family_models import model_for
from vitexport.verify.sweep import verify

TOL = 1e-5
SMALL: dict[str, Any] = dict(depth=2, embed_dim=64, num_heads=4, img_size=(24, 40), patch_size=8)
# name -> (preset, overrides): CLIP with its projection as a head, SigLIP's MAP pool without one, DINOv3 (Eva, RoPE)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "clip": ("vit_base_patch16_clip_224", dict(SMALL, num_classes=7)),
    "siglip": ("vit_base_patch16_siglip_224", dict(SMALL, num_classes=0)),
    "dinov3": ("vit_small_patch16_dinov3", dict(SMALL, num_classes=0)),
}
SIZES = [(24, 40), (17, 45), (7, 5), (50, 31)]  # native, not multiples, smaller than one patch, larger


def pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    import timm

    arch, overrides = PRESETS[name]
    torch.manual_seed(0)
    ours = perturb_(model_for(get_preset(arch, **overrides)), 0).eval()
    ref = timm.create_model(arch, pretrained=False, dynamic_img_size=True, dynamic_img_pad=True, **overrides).eval()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def timm_output(ref: torch.nn.Module, x: torch.Tensor, output: str) -> torch.Tensor:
    tokens = ref.forward_features(x)
    return {"tokens": tokens, "features": ref.forward_head(tokens, pre_logits=True),
            "logits": ref.forward_head(tokens)}[output]


def rel_err(out: Any, ref: torch.Tensor) -> float:
    return float((torch.as_tensor(np.asarray(out)) - ref).abs().max() / max(1.0, ref.abs().max().item()))


@pytest.mark.parametrize("name", sorted(PRESETS))
@torch.no_grad()
def test_each_output_is_timms_in_pytorch(name: str) -> None:
    ours, ref = pair(name)
    gen = torch.Generator().manual_seed(1)
    outputs = ["features", "tokens"] + (["logits"] if ours.config.num_classes else [])
    for h, w in SIZES:
        x = torch.randn(3, 3, h, w, generator=gen)
        for output in outputs:
            with ours.producing(output):
                got = ours(x)
            assert got.shape == timm_output(ref, x, output).shape, (output, h, w)
            assert rel_err(got, timm_output(ref, x, output)) <= TOL, (name, output, h, w)
    assert ours.output == ("logits" if ours.config.num_classes else "features")  # restored after each block


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
@torch.no_grad()
def test_features_and_tokens_exports_are_timms_at_every_size(name: str, tmp_path: Path) -> None:
    """ONNX: the graph's output is named by the choice, the metadata records it and its shape, ONNX Runtime gives
    timm's pooled embedding / tokens at every size, and verify compares that output (it passes)."""
    ours, ref = pair(name)
    gen = torch.Generator().manual_seed(2)
    for output in ("features", "tokens"):
        path = tmp_path / f"{output}.onnx"
        result = export_onnx(ours, path, output=output)
        meta = result.metadata
        assert (meta["output"], meta["output_name"], result.io.output_name) == (output, output, output)
        assert meta["output_shape"] == (["batch", 64] if output == "features" else ["batch", "tokens", 64])
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in sess.get_outputs()] == [output]
        for h, w in SIZES:
            x = torch.randn(2, 3, h, w, generator=gen)
            assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], timm_output(ref, x, output)) <= TOL
        report = verify(path, provider="cpu", sizes=SIZES[1:3], batch_sizes=(2,))
        assert report and report.output == output, report.failures
    ts = tmp_path / "features.ts"
    export_torchscript(ours, ts, output="features")
    scripted = torch.jit.load(str(ts))
    x = torch.randn(2, 3, 17, 45, generator=gen)
    assert rel_err(scripted(x), timm_output(ref, x, "features")) <= TOL


def test_logits_without_a_head_is_refused_in_one_line(tmp_path: Path) -> None:
    ours, _ = pair("dinov3")
    with pytest.raises(UsageError, match=r"^--output logits: this model has no classification head") as info:
        export_onnx(ours, tmp_path / "m.onnx", output="logits")
    assert "\n" not in str(info.value) and not (tmp_path / "m.onnx").exists()
    with pytest.raises(UsageError, match="no classification head"):
        export_torchscript(ours, tmp_path / "m.ts", output="logits")
    with pytest.raises(UsageError, match="is not supported; use one of logits, features, tokens"):
        export_onnx(ours, tmp_path / "m.onnx", output="embedding")


@pytest.mark.slow  # an export of its own (a CLIP tower with --output features)
@torch.no_grad()
def test_predictor_returns_the_embedding_of_a_features_export(tmp_path: Path) -> None:
    """A classifier exported with --output features: no top-k, the embedding per image (``predict --json``)."""
    from vitexport.serving.predictor import FilePrediction, Predictor

    ours, ref = pair("clip")
    path = tmp_path / "clip-features.onnx"
    export_onnx(ours, path, output="features")
    predictor = Predictor(str(path), provider="cpu")
    image = np.random.default_rng(3).random((3, 30, 44), dtype=np.float32)
    pred = predictor.predict(image)
    assert pred.kind == "features" and pred.top_k == [] and pred.output.shape == (64,)
    x = torch.from_numpy(predictor.prepare(image))[None]
    assert rel_err(pred.output[None], timm_output(ref, x, "features")) <= TOL
    data = FilePrediction("a.png", pred).to_json()
    assert data["output"] == "features" and np.allclose(data["embedding"], pred.output)
