"""timm-layout checkpoints of timm's other classes (Eva, distilled DeiT, NaFlexViT) load as timm builds them: with
``--config '{"architecture": ...}'``, an ``arch`` in a timm training checkpoint (its ``--model-kwargs``), or a timm
hub ``config.json``; a vitexport checkpoint of one round-trips its class; their weights alone are refused by name."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers.families import REPRESENTATIVES, TOL, overrides, pair, rel_err
from vitexport._util.errors import ConfigError
from vitexport.checkpoint.load import load_model
from vitexport.checkpoint.save import save_checkpoint

NAMES = ["dinov3", "eva02-split", "sapiens2", "deit-distilled", "naflex-siglip", "naflex-factorized"]


def model_kwargs(name: str) -> dict[str, object]:
    """The size overrides a user would have passed to timm (--model-kwargs / hub model_args)."""
    return {k: v for k, v in overrides(name).items() if k not in ("num_classes", "in_chans")}


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_family_checkpoint_loads_from_config_arch_and_hub_folder(name: str, tmp_path: Path) -> None:
    ours, ref = pair(name, seed=5)
    arch, sd = REPRESENTATIVES[name][0], ours.state_dict()
    plain = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(plain))
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({
        "architecture": arch, "num_classes": ours.config.num_classes,
        "model_args": {k: v for k, v in model_kwargs(name).items() if k != "img_size"},
        "pretrained_cfg": {"input_size": [3, *ours.config.img_hw], "mean": [0.5] * 3, "std": [0.5] * 3},
    }))
    train = tmp_path / "last.pth.tar"
    torch.save({"arch": arch, "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "args": argparse.Namespace(model=arch, model_kwargs=model_kwargs(name), gp=None)}, train)
    x = torch.randn(2, 3, 17, 45, generator=torch.Generator().manual_seed(4))
    expected = ref(x)
    config = json.dumps({"architecture": arch, **overrides(name)})
    for path, cfg, source in ((plain, config, "--config"), (hub, None, "config.json"), (train, None, "arch")):
        loaded = load_model(path, config=cfg)
        assert loaded.meta["source"]["config_source"] == source
        assert type(loaded) is type(ours) and loaded.config == ours.config, (source, loaded.config)
        assert rel_err(loaded(x), expected) <= TOL, source
    saved = tmp_path / "saved.pt"
    save_checkpoint(ours, saved)  # its config names the class: model_class
    assert rel_err(load_model(saved)(x), expected) <= TOL
    with pytest.raises(ConfigError, match=r"these weights are timm's \w+, not a plain ViT"):
        load_model(plain)  # the weights alone: refused by the keys that show the class, with the command


def test_img_size_is_for_vision_transformers_only(tmp_path: Path) -> None:
    """``--img-size`` resamples a ViT's table for good; the other classes are refused in one line, nothing written."""
    from vitexport._util.errors import UsageError
    from vitexport.export.pipeline import export_checkpoint

    ours, _ = pair("rope-mixed-ape")
    saved = tmp_path / "rope.pt"
    save_checkpoint(ours, saved)
    with pytest.raises(UsageError, match=r"^--img-size applies to timm's VisionTransformer only; this Eva model"):
        export_checkpoint(saved, tmp_path / "m.onnx", img_size=(48, 48))
    assert not (tmp_path / "m.onnx").exists()
