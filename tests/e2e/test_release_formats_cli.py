"""Checkpoints as their authors release them, through the command line: `vitexport onnx`, `verify --checkpoint` and
`info` on an OpenAI CLIP / open_clip state dict or folder, a DINOv2-repository state dict, a big_vision ``.npz``
and transformers folders.

Each model is built locally with random weights by the library that writes the format (transformers, open_clip;
the DINOv2 repository and big_vision are JAX/unpublished code: their layouts are written from transformers' ports,
tests/helpers/release.py) and saved in that library's layout; no downloads. The exported ONNX, run by ONNX
Runtime at the native size, equals the library's own forward on the output the converter claims (logits, the
projected or pooled embedding), and `verify` passes on sizes the library itself cannot run (timm's dynamic pad).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.helpers.foreign import images
from tests.helpers.models import perturb_
from tests.helpers.release import dinov2_repository_layout, save_open_clip, siglip_as_big_vision
from vitexport.cli import cli

T = pytest.importorskip("transformers", reason="transformers is a test dependency (pip install transformers)")
open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is a test dependency (pip install "
                                "open-clip-torch)")

TEXT = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)  # open_clip's text tower, as small
HF_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=32,
             patch_size=8)
# fp32 ONNX Runtime against the library's PyTorch forward: float rounding only
ATOL, RTOL = 1e-4, 1e-4


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@dataclass
class Release:
    """A checkpoint written in a release layout, and what vitexport must make of it."""

    path: Path  # what the user passes as CHECKPOINT
    forward: Callable[[torch.Tensor], torch.Tensor]  # the library's own output the converter claims
    native: tuple[int, int]
    format: str
    head: str
    config: list[str] = field(default_factory=list)  # --config the format needs
    labels: list[str] | None = None
    sizes: str = ""  # verify's sizes (default: from the native size)


def _seeded(build: Callable[[], Any], seed: int, scale: float = 0.2) -> Any:
    torch.manual_seed(seed)
    return perturb_(build(), seed, scale).eval()


# ---------------------------------------------------------------------------
# the formats, each written by (or as) its library
# ---------------------------------------------------------------------------
def open_clip_folder(tmp: Path) -> Release:
    """open_clip's own ViT tower (GELU, head width 16), saved by open_clip's hub writer."""
    model_cfg = dict(embed_dim=16, vision_cfg=dict(image_size=32, layers=2, width=64, head_width=16, patch_size=8),
                     text_cfg=TEXT)
    model = _seeded(lambda: open_clip.model.CLIP(embed_dim=16, vision_cfg=model_cfg["vision_cfg"], text_cfg=TEXT), 1)
    folder = save_open_clip(model, model_cfg, tmp / "open_clip")
    return Release(folder, model.encode_image, (32, 32), "open_clip", "projection")


def open_clip_timm_tower(tmp: Path) -> Release:
    """An open_clip tower that is a timm model (timm_model_name), its trunk pooled by the MAP head, no projection.
    open_clip builds the timm model at its default size (224) whatever image_size says; weights are perturbed
    less than elsewhere, since 12 random blocks amplify float rounding past verify's tolerance."""
    vision = dict(image_size=224, timm_model_name="vit_tiny_patch16_224", timm_pool="map", timm_proj="none")
    model_cfg = dict(embed_dim=192, vision_cfg=vision, text_cfg=TEXT)
    model = _seeded(lambda: open_clip.model.CLIP(embed_dim=192, vision_cfg=vision, text_cfg=TEXT), 2, 0.02)
    folder = save_open_clip(model, model_cfg, tmp / "open_clip_timm")
    return Release(folder, model.encode_image, (224, 224), "open_clip-timm", "none", sizes="224x224,40x72,5x3")


def dinov2_state_dict(tmp: Path) -> Release:
    """The DINOv2 repository's ViT-S/14 layout (width 384: its head count is the repository's), with registers."""
    model = _seeded(lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(
        hidden_size=384, num_hidden_layers=1, num_attention_heads=6, image_size=28, patch_size=14,
        num_register_tokens=4, layerscale_value=0.5)), 3)
    path = tmp / "dinov2_vits14_reg4.pth"
    torch.save(dinov2_repository_layout(model), path)
    return Release(path, lambda x: model(pixel_values=x).pooler_output, (28, 28), "dinov2", "none")


def big_vision_npz(tmp: Path) -> Release:
    """A two-tower SigLIP's image tower as big_vision saves it (params/img/, scanned blocks, MAP head)."""
    model = _seeded(lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**SMALL)), 4)
    path = tmp / "siglip.npz"
    np.savez(path, **siglip_as_big_vision(model, scan=True))
    return Release(path, lambda x: model(pixel_values=x).pooler_output, (32, 32), "big_vision", "none")


def _transformers(tmp: Path, name: str, build: Callable[[], Any], forward: Callable[[Any, torch.Tensor], Any],
                  fmt: str, head: str, seed: int, native: tuple[int, int] = (32, 32)) -> Release:
    model = _seeded(build, seed)
    model.save_pretrained(tmp / name)
    labels = None
    if head == "classifier":  # transformers' placeholder names (LABEL_0, ...) are not labels
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        labels = None if labels[0] == "LABEL_0" else labels
    return Release(tmp / name, lambda x: forward(model, x), native, fmt, head, labels=labels)


def transformers_vit(tmp: Path) -> Release:
    """ViTForImageClassification with named labels and an image processor (preprocessing travels)."""
    names = {0: "cat", 1: "dog", 2: "eel"}
    release = _transformers(tmp, "vit", lambda: T.ViTForImageClassification(T.ViTConfig(
        **SMALL, id2label=names, label2id={v: k for k, v in names.items()})),
        lambda m, x: m(pixel_values=x).logits, "transformers-vit", "classifier", 5)
    T.ViTImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]).save_pretrained(release.path)
    return release


def transformers_deit(tmp: Path) -> Release:
    return _transformers(tmp, "deit", lambda: T.DeiTForImageClassification(T.DeiTConfig(**SMALL, num_labels=4)),
                         lambda m, x: m(pixel_values=x).logits, "transformers-deit", "classifier", 6)


def transformers_dinov2(tmp: Path) -> Release:
    return _transformers(tmp, "dinov2", lambda: T.Dinov2Model(T.Dinov2Config(**{**SMALL, "image_size": 28,
                                                                               "patch_size": 7})),
                         lambda m, x: m(pixel_values=x).pooler_output, "transformers-dinov2", "none", 7, (28, 28))


def transformers_clip(tmp: Path) -> Release:
    """The full two-tower CLIPModel: the image tower and its projection (get_image_features)."""
    def features(m: Any, x: torch.Tensor) -> torch.Tensor:
        out = m.get_image_features(pixel_values=x)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    return _transformers(tmp, "clip", lambda: T.CLIPModel(T.CLIPConfig(vision_config=SMALL, projection_dim=20,
                                                                      text_config=HF_TEXT)),
                         features, "transformers-clip", "projection", 8)


def transformers_siglip(tmp: Path) -> Release:
    return _transformers(tmp, "siglip", lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**SMALL)),
                         lambda m, x: m(pixel_values=x).pooler_output, "transformers-siglip_vision_model", "none", 9)


FORMATS: dict[str, Callable[[Path], Release]] = {
    "open_clip_folder": open_clip_folder,
    "dinov2_state_dict": dinov2_state_dict,
    "big_vision_npz": big_vision_npz,
    "transformers_vit": transformers_vit,
    "transformers_deit": transformers_deit,
    "transformers_dinov2": transformers_dinov2,
    "transformers_clip": transformers_clip,
    "transformers_siglip": transformers_siglip,
}


# ---------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------
def _onnx_output(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _sizes(native: tuple[int, int]) -> str:
    """Native, non-square and not a multiple of the patch, smaller than one patch, larger than native."""
    h, w = native
    return ",".join(f"{a}x{b}" for a, b in ((h, w), (h - 5, w + 11), (5, 3), (2 * h + 3, w)))


def export_and_verify(release: Release, out: Path) -> dict[str, Any]:
    """`vitexport onnx` then `vitexport verify --checkpoint`: both pass; the ONNX metadata returned."""
    result = run("onnx", str(release.path), "-o", str(out), *release.config)
    assert result.exit_code == 0, result.output
    result = run("verify", str(out), "--checkpoint", str(release.path), *release.config, "--provider", "cpu",
                 "--sizes", release.sizes or _sizes(release.native), "--batch-sizes", "1,3")
    assert result.exit_code == 0, result.output
    assert "differ from the checkpoint" not in result.stdout
    result = run("info", str(out))
    assert result.exit_code == 0, result.output
    assert f"source         {release.format}: {release.head} head" in result.stdout
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    return {k.removeprefix("vitexport."): json.loads(v) for k, v in props.items() if k.startswith("vitexport.")}


def check_native_output(release: Release, out: Path) -> None:
    x = images(2, *release.native, seed=11)
    with torch.no_grad():
        expected = release.forward(x).numpy()
    got = _onnx_output(out, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.slow  # seven release formats built by their own libraries, each exported by the CLI
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_release_format_exports_and_equals_its_library(name: str, tmp_path: Path) -> None:
    release = FORMATS[name](tmp_path)
    info = run("info", str(release.path), *release.config)
    assert info.exit_code == 0, info.output
    assert f"format         {release.format} (config from file" in info.stdout
    assert f"output         {release.head} head" in info.stdout
    meta = export_and_verify(release, tmp_path / "model.onnx")
    assert meta["source"]["format"] == release.format and meta["source"]["head"] == release.head
    assert meta["labels"] == release.labels
    if name in ("open_clip_folder", "transformers_vit"):  # the library's own preprocessing config travels
        assert meta["preprocess"]["mean"] == [0.5, 0.4, 0.3] and meta["preprocess"]["std"] == [0.2, 0.25, 0.3]
    check_native_output(release, tmp_path / "model.onnx")


@pytest.mark.slow
def test_open_clip_timm_tower_exports_and_equals_open_clip(tmp_path: Path) -> None:
    """timm's vit_tiny (12 blocks of width 192) as an open_clip tower: the preset named by open_clip's config."""
    release = open_clip_timm_tower(tmp_path)
    meta = export_and_verify(release, tmp_path / "model.onnx")
    assert meta["config"]["architecture"] == "vit_tiny_patch16_224" and meta["config"]["global_pool"] == "map"
    check_native_output(release, tmp_path / "model.onnx")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_of_a_release_format_verifies_against_it(tmp_path: Path) -> None:
    """`vitexport torchscript` takes the same checkpoints; its archive verifies against the folder and equals
    transformers' image_embeds at the native size."""
    release = transformers_clip(tmp_path)
    out = tmp_path / "clip.ts"
    result = run("torchscript", str(release.path), "-o", str(out))
    assert result.exit_code == 0, result.output
    result = run("verify", str(out), "--checkpoint", str(release.path), "--sizes", _sizes(release.native),
                 "--batch-sizes", "2")
    assert result.exit_code == 0, result.output
    x = images(2, *release.native, seed=13)
    with torch.no_grad():
        got = torch.jit.load(str(out))(x)  # vitexport's own export, just written
        np.testing.assert_allclose(got.numpy(), release.forward(x).numpy(), atol=ATOL, rtol=RTOL)


def test_transformers_weights_file_reads_the_config_beside_it(tmp_path: Path) -> None:
    """model.safetensors passed alone is read with the config.json beside it; without one, refused by name."""
    release = transformers_dinov2(tmp_path)
    weights = release.path / "model.safetensors"
    result = run("info", str(weights))
    assert result.exit_code == 0 and "format         transformers-dinov2 (config from file)" in result.stdout
    (release.path / "config.json").rename(tmp_path / "config.moved.json")
    result = run("info", str(weights))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "transformers weights without their config.json" in result.stderr
    result = run("info", str(weights), "--config", str(tmp_path / "config.moved.json"))  # given as --config
    assert result.exit_code == 0 and "transformers-dinov2 (config from file+--config)" in result.stdout, result.output


# ---------------------------------------------------------------------------
# a refusal's hint is a command that works
# ---------------------------------------------------------------------------
@pytest.mark.slow  # builds an open_clip model and exports it through the CLI
def test_bare_openai_clip_state_dict_is_refused_with_a_command_that_works(tmp_path: Path) -> None:
    """OpenAI's `visual.*` layout stores no activation, head count, eps or pooling: refused in one line with the
    command for OpenAI's weights (its QuickGELU rule); that command, run as printed, exports the model, and the
    export equals open_clip's OpenAI-style model (QuickGELU, width/64 heads)."""
    vision = dict(image_size=32, layers=2, width=128, patch_size=8)
    model = _seeded(lambda: open_clip.model.CLIP(embed_dim=24, vision_cfg=vision, text_cfg=TEXT, quick_gelu=True), 12)
    path = tmp_path / "ViT-tiny-openai.pt"
    torch.save(model.state_dict(), path)
    result = run("onnx", str(path))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "act_layer, num_heads, norm_eps, global_pool not stored in the file" in result.stderr
    command = re.search(r"`(vitexport onnx [^`]+)`", result.stderr)
    assert command is not None, result.stderr
    args = shlex.split(command.group(1))[1:]
    result = run(*args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "ViT-tiny-openai.onnx"  # the default output, beside the checkpoint
    config = args[args.index("--config"):][:2]
    release = Release(path, model.encode_image, (32, 32), "openai-clip", "projection", config)
    result = run("verify", str(out), "--checkpoint", str(path), *config, "--provider", "cpu", "--sizes",
                 _sizes(release.native))
    assert result.exit_code == 0, result.output
    check_native_output(release, out)


@pytest.mark.parametrize(("name", "args", "message"), [
    ("big_vision_npz", ["--ema"], "has no EMA weights: it is a JAX .npz checkpoint"),
    ("dinov2_state_dict", ["--config", '{"depth": 12}'], "--config contradicts the file: depth=12 (the file has 1)"),
    ("transformers_siglip", ["--ema"], "has no EMA weights"),
])
def test_release_format_refusals_are_one_line(name: str, args: list[str], message: str, tmp_path: Path) -> None:
    release = FORMATS[name](tmp_path)
    result = run("info", str(release.path), *args)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert message in result.stderr
