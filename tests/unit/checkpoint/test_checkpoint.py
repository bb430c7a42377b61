"""Every checkpoint format loads to the same model as timm; bad files fail clearly; nothing executes."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers.checkpoints import FORMATS, write_format
from tests.helpers.models import CONFIGS, make_model, sweep_sizes, timm_model
from vitexport import load_model, read_checkpoint, save_checkpoint
from vitexport._util.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from vitexport.checkpoint.infer import infer_config_args
from vitexport.model.config import ViTConfig

ATOL = 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
@torch.no_grad()
def test_every_format_matches_timm(config_name: str, fmt: str, tmp_path: Path) -> None:
    args = CONFIGS[config_name]
    model = make_model(args, seed=3)
    path, config = write_format(fmt, model, args, tmp_path)
    loaded = load_model(path, config=config)
    assert loaded.config == ViTConfig(**args)
    ref = timm_model(args, model.state_dict())
    gen = torch.Generator().manual_seed(0)
    for h, w in sweep_sizes(args):
        x = torch.randn(3, loaded.config.in_chans, h, w, generator=gen)
        assert (loaded(x) - ref(x)).abs().max().item() <= ATOL, (fmt, h, w)
        assert (loaded(x[1:2]) - ref(x[1:2])).abs().max().item() <= ATOL, (fmt, h, w)
    if fmt == "vitexport":
        assert loaded.meta["preprocess"]["mean"] == [0.5] and loaded.meta["labels"] == ["a"]
    if fmt == "safetensors_hub":
        assert loaded.meta["source"]["config_source"] == "config.json"
        assert loaded.meta["preprocess"]["std"] == [0.5] * args.get("in_chans", 3)
        if args.get("num_classes"):
            assert loaded.meta["labels"][0] == "class0"


def semantic(cfg: ViTConfig) -> dict[str, Any]:
    """Config fields that change the computation (LayerScale's init value and fc_norm=None do not)."""
    out = cfg.to_dict()
    out["fc_norm"] = cfg.use_fc_norm
    out["init_values"] = bool(cfg.init_values)
    return out


INFERABLE = {
    "heads_from_dim": dict(img_size=32, patch_size=8, num_classes=5, embed_dim=64, depth=2, num_heads=1),
    "qknorm_registers": dict(
        img_size=24, patch_size=6, embed_dim=48, depth=2, num_heads=3, qk_norm=True, reg_tokens=4,
        no_embed_class=True, init_values=1e-3, global_pool="avg", num_classes=0,
    ),
    # pre_norm is no longer inferred (CLIP's eps and activation are not in the weights: see test_families)
    "nocls_qknorm": dict(
        img_size=16, patch_size=8, in_chans=2, num_classes=3, embed_dim=32, depth=3, num_heads=4, qk_norm=True,
        class_token=False, reg_tokens=2, global_pool="avg", fc_norm=False, qkv_bias=False,
        mlp_ratio=2.75,
    ),
}


@pytest.mark.parametrize("name", sorted(INFERABLE))
@torch.no_grad()
def test_config_inferred_from_shapes(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    args = INFERABLE[name]
    model = make_model(args, seed=5)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_model(path)
    assert loaded.meta["source"]["config_source"] == "inferred"
    assert semantic(loaded.config) == semantic(ViTConfig(**args))
    ref = timm_model(args, model.state_dict())
    for h, w in sweep_sizes(args):
        x = torch.randn(3, loaded.config.in_chans, h, w)
        assert (loaded(x) - ref(x)).abs().max().item() <= ATOL
    if not args.get("qk_norm"):
        assert "num_heads is not stored in the weights" in caplog.text


def test_inference_refuses_ambiguous_and_non_square_grids() -> None:
    sd = make_model(dict(img_size=(24, 48), patch_size=8, embed_dim=32, depth=1, num_heads=2)).state_dict()
    with pytest.raises(ConfigError, match=r"\(non-square\)"):
        infer_config_args(sd)
    # 25 rows with 9 prefix tokens: a 4x4 grid with prefix rows, or a 5x5 grid without
    sd = make_model(dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, reg_tokens=8)).state_dict()
    sd["pos_embed"] = torch.zeros(1, 25, 32)
    with pytest.raises(ConfigError, match="ambiguous"):
        infer_config_args(sd)


@torch.no_grad()
def test_timm_training_checkpoint_arch_and_ema(tmp_path: Path) -> None:
    """`arch` picks the preset; classes come from the head; EMA weights on request; prefixes stripped."""
    import timm

    ref = timm.create_model("vit_tiny_patch16_224", num_classes=3, dynamic_img_size=True, dynamic_img_pad=True)
    ref.eval()
    ema = {k: v + 0.01 for k, v in ref.state_dict().items()}
    path = tmp_path / "last.pth.tar"
    torch.save(
        {
            "arch": "vit_tiny_patch16_224",
            "state_dict": {f"module._orig_mod.{k}": v for k, v in ref.state_dict().items()},
            "state_dict_ema": ema,
            "args": argparse.Namespace(model="vit_tiny_patch16_224", num_classes=3),
            "epoch": 10,
        },
        path,
    )
    model = load_model(path)
    assert model.config.architecture == "vit_tiny_patch16_224" and model.config.num_classes == 3
    assert model.meta["source"]["config_source"] == "arch"
    x = torch.randn(2, 3, 50, 70)
    assert (model(x) - ref(x)).abs().max().item() <= ATOL
    ema_model = load_model(path, use_ema=True)
    assert torch.allclose(ema_model.pos_embed, ema["pos_embed"])


EMA_REFUSALS = {
    "vitexport": ("a vitexport checkpoint", "state_dict"),
    "timm_train": ("a training checkpoint without state_dict_ema or model_ema", "optimizer"),
    "plain_compiled": ("a plain state dict", "_orig_mod.blocks.0."),
    "safetensors_hub": ("a safetensors file", "blocks.0."),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_ema_on_a_file_without_ema_weights_is_an_error(fmt: str, tmp_path: Path) -> None:
    """--ema never silently loads the plain weights: the error says what the file is and which keys it has."""
    args = CONFIGS["spec_cls"]
    path, config = write_format(fmt, make_model(args), args, tmp_path)
    what, key = EMA_REFUSALS[fmt]
    with pytest.raises(CheckpointError, match="has no EMA weights") as info:
        load_model(path, config=config, use_ema=True)
    message = str(info.value)
    assert f"it is {what}" in message and key in message and "drop --ema" in message
    assert load_model(path, config=config)  # without --ema the same file loads


def test_hub_config_with_preset_architecture(tmp_path: Path) -> None:
    import timm

    ref = timm.create_model("vit_small_patch16_224", num_classes=0, depth=1, dynamic_img_size=True,
                            dynamic_img_pad=True).eval()
    save_file(ref.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "vit_small_patch16_224.augreg_in21k_ft_in1k",
        "num_classes": 0,
        "model_args": {"depth": 1},
        "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }))
    model = load_model(tmp_path)  # a hub-layout directory works too
    x = torch.randn(2, 3, 37, 90)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= ATOL
    assert model.meta["preprocess"] == {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}


# ---------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------
def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _torch_file(path: Path, obj: Any) -> Path:
    torch.save(obj, path)
    return path


def _good_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "good.pt"
    save_checkpoint(make_model(CONFIGS["spec_cls"]), path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.pt", "does not exist"),
        (lambda p: p, "is a directory without model.safetensors"),
        (lambda p: _file(p / "empty.pt", b""), "is empty"),
        (lambda p: _file(p / "notes.txt", b"hello world"), "is not a checkpoint"),
        (lambda p: _file(p / "x.safetensors", b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":'), "not a readable safetensors"),
        (lambda p: _file(p / "raw.pkl", pickle.dumps({"a": 1}, protocol=4)), "is not a plain weights file"),
        (lambda p: _torch_file(p / "list.pt", [1, 2, 3]), "holds a list, not a state dict"),
        (lambda p: _torch_file(p / "opt.pt", {"optimizer": {"lr": 0.1}}), "holds no state dict"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(make(tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_checkpoint(tmp_path: Path, keep: float) -> None:
    good = _good_checkpoint(tmp_path)
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(bad)


def test_wrong_config_lists_the_mismatches(tmp_path: Path) -> None:
    good = _good_checkpoint(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_model(good, config=dict(CONFIGS["spec_cls"], embed_dim=64, depth=3))
    text = str(info.value)
    assert "shape mismatch: cls_token (1, 1, 32) vs model (1, 1, 64)" in text
    assert "patch_embed.proj.weight (32, 1, 8, 8) vs model (64, 1, 8, 8)" in text
    assert "missing: blocks.2." in text and "--config" in text


def test_unknown_architecture_suggests_closest(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"arch": "vit_base_patch16_244", "state_dict": make_model(CONFIGS["spec_cls"]).state_dict()}, path)
    expected = r"unknown architecture 'vit_base_patch16_244'; did you mean 'vit_base_patch16_224'"
    with pytest.raises(ConfigError, match=expected):
        read_checkpoint(path)


class Exploit:
    """A pickle payload that writes a file when unpickled by a permissive loader."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("container", ["torch_zip", "legacy_pickle"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, container: str) -> None:
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"pos_embed": torch.zeros(1)}, "hook": Exploit(target)}
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # sanity: a permissive loader really would create the file
    probe = tmp_path / "probe.pth"
    probe.write_bytes(pickle.dumps(Exploit(tmp_path / "probe.txt")))
    pickle.loads(probe.read_bytes())
    assert (tmp_path / "probe.txt").exists()

    with pytest.raises(UnsafeCheckpointError) as info:
        load_model(path)
    assert not target.exists()
    text = str(info.value)
    assert text.startswith(f"refused to load {str(path)!r}: its pickle references ")
    assert "safetensors" in text and "state_dict()" in text
    if container == "torch_zip":  # the zip format is scanned whole, so the culprit is named
        assert "builtins.exec" in text
