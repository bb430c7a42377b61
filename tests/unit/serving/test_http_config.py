"""`vitexport.serving.http.config`: what each replica runs is checked on creation, so a hand-written Ray config
(`build_app`) is held to what `vitexport serve` checks; its defaults are the library's."""

from __future__ import annotations

import pytest

from vitexport.engines import DEFAULT_PROVIDER
from vitexport.serving.http.config import (
    AppArgs,
    Scaling,
    ServeOptions,
    check_model_name,
    default_model_name,
    deployment_options,
    serve_config,
)


@pytest.mark.parametrize("name", ["a/b", "", "-lead", "x" * 129, "two words", "é", "a?b", "../up"])
def test_names_that_cannot_be_a_url_segment_are_refused_everywhere(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be a model name in URLs"):
        check_model_name(name)
    with pytest.raises(ValueError, match="cannot be a model name in URLs"):
        AppArgs("m.onnx", name)
    with pytest.raises(ValueError, match="cannot be a model name in URLs"):  # a Ray config's args
        AppArgs.from_args({"model": "m.onnx", "name": name})


@pytest.mark.parametrize("name", ["digits-vit", "m", "ViT_S.16", "x" * 128])
def test_good_names_pass(name: str) -> None:
    assert check_model_name(name) == name and AppArgs("m.onnx", name).name == name


def test_default_name_and_provider() -> None:
    assert default_model_name("/models/digits-vit.int8.onnx") == "digits-vit"
    args = AppArgs.from_args({"model": "m.onnx", "name": "m"})
    assert args.provider == DEFAULT_PROVIDER == "auto"  # as the CLI and the Predictor
    assert "num_gpus" not in deployment_options(args, Scaling())["ray_actor_options"]
    assert deployment_options(AppArgs("m.onnx", "m", provider="cuda"), Scaling())["ray_actor_options"]["num_gpus"] == 1
    config = serve_config(ServeOptions(args))
    assert config["applications"][0]["args"]["provider"] == "auto"


@pytest.mark.parametrize("args, message", [
    ({"max_batch": 0}, "must be positive"),
    ({"batch_wait_ms": -1.0}, "not negative"),
    ({"oops": 1}, "unknown vitexport serve argument"),
])
def test_bad_arguments_are_value_errors(args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppArgs.from_args({"model": "m.onnx", "name": "m", **args})
