"""Hostile checkpoints and configs through the library (issue 11): `load_model` refuses each crafted file with the
error class callers catch, one file per test case, before torch unpickles it. The same files through the CLI, in a
memory-limited child, are tests/e2e/test_hostile_cli.py; the readers themselves have their own unit tests
(test_picklescan.py, test_safezip.py, test_isolate.py, tests/unit/_util/test_safejson.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tests.helpers.hostile import SAMPLE, crafted_checkpoints
from tests.helpers.models import CONFIGS, make_model
from vitexport._util.errors import CheckpointError, ConfigError, IsolationError, UnsafeCheckpointError
from vitexport.checkpoint import load_model


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return crafted_checkpoints(tmp_path_factory.mktemp("crafted"))


# (file, error class, what the message names): refused by the pre-scans, so safe to load in-process
REFUSED = [
    ("os_system.pt", UnsafeCheckpointError, r"references os\.system"),
    ("os_system_zip.pt", UnsafeCheckpointError, r"references os\.system"),
    ("bytearray.pt", UnsafeCheckpointError, r"references builtins\.bytearray"),
    ("deep_zip.pt", CheckpointError, "nests deeper than 64 levels"),
    ("shared_zip.pt", CheckpointError, "expands to more than"),
    ("tuple_key.pt", CheckpointError, "uses a tuple as a dict key"),
    ("protocol4.pt", CheckpointError, "opcode"),
    ("expanded.pt", CheckpointError, "expanded with stride 0"),
    ("depth_200000.pt", CheckpointError, r"needs .* parameters"),
    ("sparse.pt", CheckpointError, "holds a sparse tensor"),
    ("qint8.pt", CheckpointError, "holds a quantized tensor"),
    ("bomb_decl.pt", CheckpointError, "inflates to 3,000 MB"),
    ("entries.pt", CheckpointError, "declares 60,000 zip entries"),
]


@pytest.mark.parametrize("name, error, pattern", REFUSED, ids=[r[0] for r in REFUSED])
def test_hostile_checkpoint_is_refused_through_the_library(crafted: dict[str, Path], name: str, error: type,
                                                           pattern: str) -> None:
    with pytest.raises(error, match=pattern) as info:
        load_model(crafted[name])
    assert "\n" not in str(info.value)


def test_trial_load_runs_in_a_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A crash inside torch.load (simulated) ends the child, not the process: the error names the file."""
    import os
    import signal

    import vitexport.security.untrusted as ckpt

    real = ckpt._torch_load
    parent = os.getpid()

    def crash_in_child(path, kind):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, kind)

    monkeypatch.setattr(ckpt, "_torch_load", crash_in_child)
    with pytest.raises(IsolationError, match=r"reading '.*digits-vit.pt' crashed \(SIGSEGV\)"):
        load_model(SAMPLE)
    monkeypatch.setenv("VITEXPORT_ISOLATE", "0")  # the switch for applications that cannot fork
    assert load_model(SAMPLE).config.embed_dim == 64


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------
def test_nan_config_from_python_is_refused() -> None:
    with pytest.raises(ConfigError, match="mlp_ratio must be a positive finite number"):
        load_model(SAMPLE, config=dict(CONFIGS["spec_cls"], embed_dim=64, depth=4, num_heads=4,
                                       mlp_ratio=float("nan")))
    with pytest.raises(ConfigError, match="init_values must be a finite number"):
        load_model(SAMPLE, config=dict(CONFIGS["spec_cls"], init_values=float("inf")))


@pytest.mark.parametrize(
    "hub, fragment",
    [
        ({"architecture": "vit_base_patch16_224", "pretrained_cfg": ["not", "an", "object"]},
         "pretrained_cfg must be an object"),
        ({"pretrained_cfg": {"input_size": [1, "28", 28]}}, "input_size must be [channels, height, width]"),
        ({"pretrained_cfg": {"mean": ["a"], "std": [1]}}, "preprocess mean must be"),
        ({"pretrained_cfg": {"mean": [0.5], "std": [0]}}, "std must be non-zero"),
        ({"model_args": {}, "label_names": 7}, "labels must be a list of strings"),
        ({"model_args": {}, "label_names": {"zero": "a"}}, "labels must be a list of strings or an object"),
        ({"model_args": [1, 2]}, "model_args must be an object"),
    ],
)
def test_malformed_hub_config_is_one_line(tmp_path: Path, hub: dict, fragment: str) -> None:
    save_file(make_model(CONFIGS["spec_cls"]).state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hub))
    with pytest.raises(ConfigError) as info:
        load_model(tmp_path)
    assert fragment in str(info.value) and "\n" not in str(info.value)
