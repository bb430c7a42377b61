"""Checkpoints written in each supported format, shared by the checkpoint unit tests and the CLI tests."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vitexport.checkpoint import save_checkpoint
from vitexport.model.config import ViTConfig

FORMATS = ["vitexport", "timm_train", "plain_compiled", "safetensors_hub"]


def write_format(fmt: str, model, args: dict[str, Any], tmp: Path) -> tuple[Path, Any]:
    """Write ``model`` in one of the supported layouts; return (path, config argument for load_model)."""
    sd = model.state_dict()
    if fmt == "vitexport":
        path = tmp / "model.pt"
        save_checkpoint(model, path, preprocess={"scale": 1 / 255, "mean": [0.5], "std": [0.25]}, labels=["a"])
        return path, None
    if fmt == "timm_train":
        path = tmp / "checkpoint-3.pth.tar"
        wrapped = {f"module.{k}": v for k, v in sd.items()}
        torch.save(
            {
                "epoch": 3,
                "arch": "custom",  # not a preset: the config must come from --config
                "state_dict": wrapped,
                "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]},
                "args": argparse.Namespace(model="custom", lr=0.1, img_size=None),
                "version": 2,
            },
            path,
        )
        cfg_path = tmp / "args.json"
        cfg_path.write_text(json.dumps(ViTConfig(**args).to_dict()))
        return path, str(cfg_path)
    if fmt == "plain_compiled":
        path = tmp / "weights.bin"
        torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, path)
        return path, dict(args)
    if fmt == "safetensors_hub":
        path = tmp / "model.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        cfg = ViTConfig(**args)
        model_args = {k: v for k, v in cfg.to_dict().items() if k not in ("in_chans", "num_classes", "img_size")}
        hub = {
            "architecture": "vit_custom",
            "num_classes": cfg.num_classes,
            "model_args": model_args,
            "pretrained_cfg": {
                "input_size": [cfg.in_chans, *cfg.img_hw],
                "mean": [0.5] * cfg.in_chans,
                "std": [0.5] * cfg.in_chans,
            },
            "label_names": [f"class{i}" for i in range(cfg.num_classes)],
        }
        hub.pop("architecture")  # a custom model: no preset to start from
        (tmp / "config.json").write_text(json.dumps(hub))
        return path, None
    raise AssertionError(fmt)
