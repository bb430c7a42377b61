"""Every hint the checkpoint loader prints works as printed: each command in a refusal (or a warning), parsed out of
its one line and run through the CLI in-process, exports the weights, and one of them builds the very model the
weights came from.

The refusals and notes of `vitexport/checkpoint` that print a command, and where each is followed:

- `infer.refuse_unstored` (a layout whose eps, activation or gate half the weights do not store): per family
  (`test_unstored_options_hint_works_as_printed`, depth 2 and width 64: no preset's size), and for a preset's
  own size and heads (`test_unstored_options_hint_at_a_presets_size_completes_to_the_preset`, on ``meta``);
  its Eva addendum (weights that also fit an Eva preset exactly): `test_eva_addendum_fits_the_weights`;
- `infer._infer_grid` (a non-square or ambiguous positional grid): `test_grid_hints_work_as_printed`;
- the notes `infer.assumed_act_note` (SigLIP 2 gap) and `infer.ambiguous_block_note` (sorted keys, residual-post-norm
  blocks): `test_notes_work_as_printed`;
- `classes.refuse_other_class` (timm's other classes, at a preset's size): `test_other_class_hint_works_as_printed`
  and, for every class on ``meta``, tests/unit/checkpoint/test_infer.py::test_other_classes_are_refused_with_a_
  command_that_loads_them;
- `foreign.common` (a release format that does not state what it needs, OpenAI CLIP):
  tests/e2e/test_release_formats_cli.py::test_bare_openai_clip_state_dict_is_refused_with_a_command_that_works.

The other refusals print no command: what they lack (a patch embedding, blocks, a ViT at all, a release file's
missing tensors) cannot be completed from the weights.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from tests.helpers.families import TOL, rel_err
from tests.helpers.models import perturb_
from vitexport import load_model
from vitexport._util.errors import ConfigError
from vitexport.checkpoint.infer import infer_config_args, layout_presets, shapes_of
from vitexport.cli import cli
from vitexport.model.config import ViTConfig, get_preset, presets_of_class
from vitexport.model.coverage import FAMILY_BASE
from vitexport.model.families import FAMILIES, family_of
from vitexport.model.vit import VisionTransformer

pytestmark = pytest.mark.slow  # each printed command is an ONNX export

COMMAND = re.compile(r"vitexport (?:onnx|torchscript|info) \S+ --config '[^']*'")
CONFIG = re.compile(r"--config '(\{[^']*\})'")
# the families whose eps, activation or gate half the weights do not store (tests/unit/model/test_families.py)
UNSTORED = ["clip", "clip-quickgelu", "siglip", "siglip2", "aimv2", "beit3", "xp", "swiglu-packed"]


def commands(message: str) -> list[list[str]]:
    """The vitexport commands in a one-line message, as argument lists (without ``vitexport``)."""
    assert "\n" not in message.strip(), message
    return [shlex.split(m.group(0))[1:] for m in COMMAND.finditer(message)]


def refusal(path: Path) -> str:
    """The one-line error of ``vitexport onnx PATH`` (exit 1, nothing written)."""
    result = CliRunner().invoke(cli, ["onnx", str(path)])
    assert result.exit_code == 1 and result.stderr.startswith("Error: "), (result.exit_code, result.output)
    assert not path.with_suffix(".onnx").exists()
    return result.stderr.strip()


def run_as_printed(args: list[str], path: Path) -> None:
    """Run a printed command through the CLI: it must succeed and write its export (removed afterwards, so the
    next command may write it again)."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
    out = path.with_suffix(".onnx")
    assert out.is_file(), result.output
    out.unlink()


def save(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)  # keeps the module order (residual-post-norm blocks show in it)
    return path


def built_exactly(path: Path, config: dict[str, Any], ref: torch.nn.Module) -> bool:
    """Whether the weights loaded with ``config`` compute what ``ref`` computes."""
    x = torch.randn(2, 3, 19, 40, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = load_model(path, config=config)(x)
        want = ref(x)
    return out.shape == want.shape and rel_err(out, want) <= TOL


def timm_pair(representative: str, args: dict[str, Any], seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, timm's) of ``representative`` with ``args``, the same random weights."""
    import timm

    torch.manual_seed(seed)
    ours = perturb_(VisionTransformer(get_preset(representative, **args)), seed).eval()
    ref = timm.create_model(representative, dynamic_img_size=True, dynamic_img_pad=True, **args).eval()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("name", UNSTORED)
def test_unstored_options_hint_works_as_printed(name: str, tmp_path: Path) -> None:
    """The refusal names timm's architectures of this layout (whatever their depth and width: these weights have
    no preset's size) and a command per set of values they use; every command exports, and one builds timm's
    model exactly. Before: `--config` replaced the inferred config, so the options the refusal asked for failed
    with shape mismatches."""
    family = next(f for f in FAMILIES if f.name == name)
    args = {**FAMILY_BASE, "img_size": 32, "embed_dim": 64, "num_heads": 1}
    if name == "xp":
        args["num_heads"] = 2  # stored (qk-norm width)
    if name == "swiglu-packed":
        args["embed_dim"] = 48  # int(64 * 5.33334) is odd: timm refuses a gated MLP of that width too
    ours, ref = timm_pair(family.representative, args)
    path = save(ours, tmp_path / "weights.pth")
    message = refusal(path)
    printed = commands(message)
    assert printed, message
    layout = {n for n, _ in layout_presets(get_preset(family.representative, **args).to_dict())}
    assert family.representative in layout and any(n in message for n in layout), message
    exact = []
    for args_printed in printed:
        assert args_printed[:2] == ["onnx", str(path)], args_printed
        run_as_printed(args_printed, path)
        config = json.loads(args_printed[args_printed.index("--config") + 1])
        exact.append(built_exactly(path, config, ref))
    assert any(exact), (message, exact)


def test_options_given_complete_the_inferred_config_and_a_refusal_asks_for_the_rest(tmp_path: Path) -> None:
    """Weights alone of an AIMv2 layout: --config with part of what is not stored is refused naming only the rest,
    with a command that keeps what was given; with all of it, the inferred config is completed, not replaced."""
    args = {**FAMILY_BASE, "img_size": 32, "embed_dim": 64, "num_heads": 1}
    ours, ref = timm_pair("aimv2_large_patch14_224", args)
    path = save(ours, tmp_path / "weights.pth")
    result = CliRunner().invoke(cli, ["info", str(path), "--config", '{"norm_eps": 1e-5}'])
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert "embed_norm_eps, act_layer are not stored" in message and " norm_eps," not in message, message
    (printed,) = commands(message)[:1]
    full = {"norm_eps": 1e-5, "embed_norm_eps": 1e-5, "act_layer": "silu"}
    assert json.loads(printed[printed.index("--config") + 1]) == full
    run_as_printed(printed, path)
    result = CliRunner().invoke(cli, ["info", str(path), "--config", json.dumps(full)])
    assert result.exit_code == 0 and "config from inferred+--config" in result.stdout, result.output
    assert built_exactly(path, full, ref)
    # a --config that states the width is a whole config of timm keyword arguments, as before (omitted: defaults)
    result = CliRunner().invoke(cli, ["info", str(path), "--config", json.dumps({**full, "embed_dim": 64})])
    assert result.exit_code == 1 and "model config (--config): embed_dim (64) must be divisible by num_heads (12)" \
        in result.stderr, result.output  # timm's default head count: nothing was taken from the weights


def test_unstored_options_hint_at_a_presets_size_completes_to_the_preset() -> None:
    """Weights of AIMv2-L's size (on ``meta``: nothing allocated): the command's options, completed by inference,
    give the preset's config, its head count included (the weights store none; embed_dim/64 would be wrong)."""
    want = get_preset("aimv2_large_patch14_224")
    assert want.num_heads != want.embed_dim // 64
    with torch.device("meta"):
        weights = shapes_of(VisionTransformer(want).state_dict())
    with pytest.raises(ConfigError) as info:
        infer_config_args(weights, file="w.pth")
    message = str(info.value)
    assert "aimv2_large_patch14_224" in message.split("vitexport onnx")[0], message
    config = json.loads(CONFIG.search(message).group(1))
    args, _ = infer_config_args(weights, file="w.pth", given=config)
    got = ViTConfig.from_dict(args)
    fields = ("norm_eps", "embed_norm_eps", "act_layer", "mlp_layer", "num_heads")
    assert {f: getattr(got, f) for f in fields} == {f: getattr(want, f) for f in fields}, config
    assert family_of(got) == family_of(want)


def test_eva_addendum_fits_the_weights() -> None:
    """Eva presets whose weights look like a plain ViT's with a MAP head (PE): the refusal's Eva command fits them."""
    from vitexport.checkpoint.classes import class_shown
    from vitexport.checkpoint.weights import expected_shapes
    from vitexport.model.family_config import config_from_dict
    from vitexport.model.family_models import model_for

    tried = 0
    for name in presets_of_class("eva"):
        with torch.device("meta"):
            weights = shapes_of(model_for(get_preset(name)).state_dict())
        if class_shown(weights) is not None:
            continue
        tried += 1
        with pytest.raises(ConfigError) as info:
            infer_config_args(weights, file="w.pth")
        message = str(info.value)
        assert "they also fit timm's Eva" in message, message
        config = json.loads(CONFIG.findall(message.split("they also fit timm's Eva")[1])[0])
        assert expected_shapes(config_from_dict(config)) == weights, name
        if tried == 3:
            break
    if not tried:
        pytest.skip("no Eva preset has the keys of a plain ViT")


def grid_model(args: dict[str, Any]) -> VisionTransformer:
    torch.manual_seed(0)
    return perturb_(VisionTransformer(ViTConfig(**args)), 0).eval()


@pytest.mark.parametrize("args", [
    # 3x6 patches + a class token: 19 rows, no square grid with or without the class token's row
    dict(img_size=(24, 48), patch_size=8, embed_dim=64, depth=2, num_heads=1, num_classes=5),
    # 3x3 patches, 5 prefix tokens without rows: 9 rows, also 2x2 patches with the prefix tokens' rows
    dict(img_size=24, patch_size=8, embed_dim=64, depth=2, num_heads=1, num_classes=5, reg_tokens=4,
         no_embed_class=True),
], ids=["non-square", "ambiguous"])
def test_grid_hints_work_as_printed(args: dict[str, Any], tmp_path: Path) -> None:
    model = grid_model(args)
    path = save(model, tmp_path / "weights.pth")
    message = refusal(path)
    assert "positional-embedding grid" in message, message
    printed = commands(message)
    assert printed, message
    exact = []
    for args_printed in printed:
        run_as_printed(args_printed, path)
        exact.append(built_exactly(path, json.loads(args_printed[args_printed.index("--config") + 1]), model))
    assert exact.count(True) == 1, (message, exact)


@pytest.mark.parametrize("name", ["siglip2-gap", "res-post"])
def test_notes_work_as_printed(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Layouts built with an assumption and a warning: following the warning's --config builds timm's model."""
    from safetensors.torch import save_file

    family = next(f for f in FAMILIES if f.name == name)
    args = {**FAMILY_BASE, "img_size": 32, "embed_dim": 64, "num_heads": 1}
    ours, ref = timm_pair(family.representative, args)
    if name == "res-post":  # sorted keys: residual-post-norm blocks no longer show
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in sorted(ours.state_dict().items())}, str(path))
    else:
        path = save(ours, tmp_path / "weights.pth")
    with caplog.at_level(logging.WARNING):
        assert not built_exactly(path, None, ref)  # the assumption is wrong for this family
    (args_printed,) = commands(" ".join(r.getMessage() for r in caplog.records if "--config" in r.getMessage()))
    assert args_printed[:2] == ["onnx", str(path)], args_printed
    run_as_printed(args_printed, path)
    assert built_exactly(path, json.loads(args_printed[-1]), ref)


def other_class_hint_builds(name: str, path: Path, expect: str, **overrides: Any) -> None:
    """Weights of preset ``name`` (of another class) with ``overrides``: the refusal (saying ``expect``) prints a
    command that exports them and builds the very model."""
    from vitexport.model.family_models import model_for

    torch.manual_seed(0)
    model = perturb_(model_for(get_preset(name, **overrides)), 0).eval()
    message = refusal(save(model, path))
    printed = commands(message)
    assert printed and "not a plain ViT" in message and expect in message, message
    run_as_printed(printed[0], path)
    assert built_exactly(path, json.loads(printed[0][printed[0].index("--config") + 1]), model)


def test_other_class_hint_works_as_printed(tmp_path: Path) -> None:
    """Weights of a distilled DeiT at its preset's size (5.9 M parameters): the printed command exports them."""
    other_class_hint_builds("deit_tiny_distilled_patch16_224", tmp_path / "deit.pth", "load them with its architecture",
                            num_classes=7)


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "eva02_small_patch14_224",
                                  "deit_tiny_distilled_patch16_224"])
def test_other_class_at_another_size_gets_a_resized_command(name: str, tmp_path: Path) -> None:
    """Weights of timm's other classes at depth 2 and width 64 (no preset's size): the refusal offers the preset
    resized to them, and the command builds the very model (the head count keeps the preset's head width)."""
    preset = get_preset(name)
    heads = 64 // (preset.embed_dim // preset.num_heads)
    other_class_hint_builds(name, tmp_path / "weights.pth", "resized to them", depth=2, embed_dim=64, num_heads=heads,
                            num_classes=5)
