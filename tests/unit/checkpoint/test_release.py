"""Release formats in the read path (`vitexport.checkpoint.release`): which reader a file or folder gets, where the
format's own config comes from, what ``--config`` may add, and the refusals a user sees.

The converters themselves are tested against the libraries that wrote each format in test_foreign_*.py; the
command line end to end in tests/e2e/test_release_formats_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.foreign import TOL, images, rel_err
from tests.helpers.models import CONFIGS, make_model, perturb_
from tests.helpers.release import save_open_clip
from vitexport._util.errors import CheckpointError, ConfigError
from vitexport.checkpoint import load_model, read_checkpoint, save_checkpoint
from vitexport.checkpoint.foreign.common import complete_args
from vitexport.checkpoint.foreign.detect import convert_state_dict
from vitexport.checkpoint.weights import check_fits
from vitexport.model.config import ViTConfig
from vitexport.security.sniff import require, sniff

T = pytest.importorskip("transformers", reason="transformers is a test dependency (pip install transformers)")
open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is a test dependency")

TEXT = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
VISION = dict(image_size=32, layers=2, width=64, head_width=16, patch_size=8)
SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=32,
             patch_size=8)


def _clip(seed: int = 0, **kw: Any) -> Any:
    torch.manual_seed(seed)
    return perturb_(open_clip.model.CLIP(embed_dim=16, vision_cfg=VISION, text_cfg=TEXT, **kw), seed).eval()


def _open_clip_folder(folder: Path, seed: int = 0) -> Any:
    model = _clip(seed)
    save_open_clip(model, dict(embed_dim=16, vision_cfg=VISION, text_cfg=TEXT), folder)
    return model


# ---------------------------------------------------------------------------
# which reader
# ---------------------------------------------------------------------------
@torch.no_grad()
def test_open_clip_folder_file_and_config_given_as_config(tmp_path: Path) -> None:
    """The folder, its weights file (open_clip_config.json beside it), and the weights alone with that file as
    --config are the same model; open_clip's preprocessing travels."""
    ref = _open_clip_folder(tmp_path / "oc", seed=1)
    assert sniff(tmp_path / "oc").kind == "hub-folder"
    x = images(2, 32, 32)
    weights = tmp_path / "oc" / "open_clip_model.safetensors"
    for path in (tmp_path / "oc", weights):
        ckpt = read_checkpoint(path)
        assert (ckpt.format, ckpt.config_source, ckpt.path) == ("open_clip", "file", weights)
        assert ckpt.preprocess["mean"] == [0.5, 0.4, 0.3]
        assert rel_err(load_model(path)(x), ref.encode_image(x)) <= TOL
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes(weights.read_bytes())
    with pytest.raises(ConfigError, match="act_layer, num_heads, norm_eps, global_pool not stored"):
        read_checkpoint(alone)  # the same weights without open_clip's config: OpenAI's layout, unknowns named
    model = load_model(alone, config=str(tmp_path / "oc" / "open_clip_config.json"))
    assert rel_err(model(x), ref.encode_image(x)) <= TOL
    assert model.meta["source"]["config_source"] == "file+--config"


def test_timm_state_dict_beside_a_transformers_config_is_read_as_timm(tmp_path: Path) -> None:
    """Keys decide: a timm state dict in a folder holding a transformers config.json is not converted, and
    that config.json is not taken for timm's hub config (the shapes are read)."""
    T.ViTModel(T.ViTConfig(**SMALL)).config.save_pretrained(tmp_path)
    model = make_model(CONFIGS["spec_cls"])
    torch.save(model.state_dict(), tmp_path / "timm.pth")
    ckpt = read_checkpoint(tmp_path / "timm.pth")
    assert (ckpt.format, ckpt.config_source) == ("state_dict", "inferred")


def test_transformers_config_as_config_needs_transformers_weights(tmp_path: Path) -> None:
    T.ViTModel(T.ViTConfig(**SMALL)).config.save_pretrained(tmp_path / "cfg")
    torch.save(make_model(CONFIGS["spec_cls"]).state_dict(), tmp_path / "timm.pth")
    with pytest.raises(ConfigError, match="not in that library's layout"):
        read_checkpoint(tmp_path / "timm.pth", config=str(tmp_path / "cfg" / "config.json"))


@torch.no_grad()
def test_integer_position_ids_of_older_transformers_saves_are_dropped(tmp_path: Path) -> None:
    """transformers < 4.31 saved ``*.embeddings.position_ids`` (int64) into CLIP files: they hold no weights and
    are dropped before the dtype check; another integer tensor is still refused by name."""
    torch.manual_seed(0)
    ref = perturb_(T.CLIPVisionModel(T.CLIPVisionConfig(**SMALL)), 0).eval()
    ref.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    save_file(sd, tmp_path / "model.safetensors")
    x = images(2, 32, 32)
    assert rel_err(load_model(tmp_path)(x), ref(pixel_values=x).pooler_output) <= TOL
    sd["vision_model.embeddings.patch_ids"] = torch.arange(17)[None]
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"not dense floating-point tensors: vision_model\.embeddings\.patch_ids"):
        read_checkpoint(tmp_path)


def test_sharded_transformers_folder_is_refused_by_name(tmp_path: Path) -> None:
    T.ViTModel(T.ViTConfig(**SMALL)).config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    assert require(tmp_path, "info").kind == "hub-folder"  # info and verify --checkpoint reach the reader too
    with pytest.raises(CheckpointError, match=r"transformers-vit checkpoint: its weights are sharded"):
        read_checkpoint(tmp_path)


# ---------------------------------------------------------------------------
# --config and --ema
# ---------------------------------------------------------------------------
def test_hub_config_adds_preprocessing_that_wins(tmp_path: Path) -> None:
    """A timm hub config.json as --config: its preprocessing and labels win over the format's own."""
    _open_clip_folder(tmp_path / "oc")
    hub = {"architecture": "vit_base_patch16_clip_224", "pretrained_cfg": {"mean": [0.1, 0.1, 0.1],
                                                                           "std": [0.3, 0.3, 0.3]}}
    ckpt = read_checkpoint(tmp_path / "oc", config=hub)
    assert ckpt.config_source == "file+--config" and ckpt.preprocess["mean"] == [0.1, 0.1, 0.1]
    assert ckpt.config.embed_dim == 64 and ckpt.config.depth == 2  # the architecture fills only what is unknown


def test_ema_is_refused_on_release_formats(tmp_path: Path) -> None:
    """A training checkpoint whose EMA weights are in a release layout: one set of weights per format, refused."""
    sd = _clip().state_dict()
    torch.save({"state_dict": sd, "state_dict_ema": sd}, tmp_path / "train.pt")
    with pytest.raises(CheckpointError, match=r"is in the openai-clip format, which holds one set of weights; drop "
                                              r"--ema"):
        read_checkpoint(tmp_path / "train.pt", use_ema=True)


def test_converted_checkpoint_resaved_is_a_vitexport_checkpoint(tmp_path: Path) -> None:
    """Re-saved by vitexport, the converted model is read as written (never converted again)."""
    _open_clip_folder(tmp_path / "oc")
    model = load_model(tmp_path / "oc")
    save_checkpoint(model, tmp_path / "m.pt")
    ckpt = read_checkpoint(tmp_path / "m.pt")
    assert (ckpt.format, ckpt.config_source) == ("vitexport", "checkpoint")
    assert ckpt.preprocess["mean"] == [0.5, 0.4, 0.3]


# ---------------------------------------------------------------------------
# the refusal's hint
# ---------------------------------------------------------------------------
def test_openai_hint_names_the_quickgelu_preset_and_it_fits() -> None:
    """OpenAI ViT-B/16 shapes (no memory): the hint is the QuickGELU preset at the file's size, and the config
    it gives fits every weight."""
    with torch.device("meta"):
        model = open_clip.model.CLIP(embed_dim=512, vision_cfg=dict(image_size=224, layers=12, width=768,
                                                                     patch_size=16), text_cfg=TEXT)
    converted = convert_state_dict(model.state_dict())
    with pytest.raises(ConfigError) as err:
        complete_args(converted, None, "ViT-B-16.pt")
    message = str(err.value)
    hint = '--config \'{"architecture": "vit_base_patch16_clip_quickgelu_224"}\''
    assert f"run `vitexport onnx ViT-B-16.pt {hint}`" in message and "\n" not in message
    cfg = ViTConfig.from_dict(complete_args(converted, {"architecture": "vit_base_patch16_clip_quickgelu_224"}))
    assert (cfg.act_layer, cfg.num_heads, cfg.norm_eps, cfg.global_pool) == ("quick_gelu", 12, 1e-5, "token")
    check_fits(cfg, converted.state_dict, "the converted weights")


def test_hint_without_a_matching_preset_writes_the_openai_rule_out() -> None:
    converted = convert_state_dict(_clip(quick_gelu=True).state_dict())
    with pytest.raises(ConfigError) as err:
        complete_args(converted, None, "my weights.pt")
    rule = '{"act_layer": "quick_gelu", "num_heads": 1, "norm_eps": 1e-05, "global_pool": "token"}'
    assert f"run `vitexport onnx 'my weights.pt' --config '{rule}'`" in str(err.value)  # quoted for the shell
