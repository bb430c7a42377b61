"""Speed options of the engines (ONNX Runtime session tuning, OpenVINO performance hints): each reaches its
runtime and none changes the results, at several sizes and batch > 1. No timings here (benchmarks/ measures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.models import CONFIGS, needs_openvino, sweep_sizes
from vitexport._util.errors import EnvironmentProblem
from vitexport.engines import create_engine
from vitexport.engines.ort import SessionTuning
from vitexport.serving.predictor import Predictor

CONFIG = "reg_noembed"  # non-square native grid, registers, LayerScale, qk_norm
TUNINGS = [
    {"graph_level": "disable"},
    {"graph_level": "basic"},
    {"graph_level": "extended"},
    {"graph_level": "all", "prepack": False},
    {"config": {"session.set_denormal_as_zero": "1"}},
]


def _inputs(args: dict) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.standard_normal((3, args.get("in_chans", 3), h, w)).astype(np.float32)
            for h, w in sweep_sizes(args)[:6]]


def _assert_like_torch(engine, model: torch.nn.Module, inputs: list[np.ndarray]) -> None:
    for x in inputs:
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(engine.run(x), ref, atol=2e-5, rtol=1e-4, err_msg=str(x.shape))


@pytest.mark.parametrize("options", TUNINGS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_ort_session_tuning_reaches_the_session_and_keeps_results(exported: dict, options: dict) -> None:
    model, path, _ = exported[CONFIG]
    engine = create_engine("cpu", session=options).load(str(path))
    opts = engine.session.get_session_options()
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    assert opts.graph_optimization_level == levels[options.get("graph_level", "all")]
    if not options.get("prepack", True):
        assert opts.get_session_config_entry("session.disable_prepacking") == "1"
    for key, value in (options.get("config") or {}).items():
        assert opts.get_session_config_entry(key) == value
    _assert_like_torch(engine, model, _inputs(CONFIGS[CONFIG]))


def test_predictor_passes_engine_options_and_refuses_unknown_ones(exported: dict) -> None:
    _, path, _ = exported[CONFIG]
    p = Predictor(str(path), provider="cpu", engine_options={"session": {"graph_level": "basic", "prepack": False}})
    assert p.engine.tuning == SessionTuning("basic", False)
    assert p.engine.session.get_session_options().get_session_config_entry("session.disable_prepacking") == "1"
    with pytest.raises(EnvironmentProblem, match="engine 'cpu' does not take these options"):
        Predictor(str(path), provider="cpu", engine_options={"performance_hint": "LATENCY"})
    with pytest.raises(EnvironmentProblem, match="unknown graph optimization level 'max'; use one of disable"):
        create_engine("cpu", session={"graph_level": "max"})
    with pytest.raises(EnvironmentProblem, match="unknown ONNX Runtime session option"):
        create_engine("cpu", session={"prepacking": False})
    with pytest.raises(EnvironmentProblem, match=r"'session\.\*' string pairs"):
        create_engine("cpu", session={"config": {"intra_op.allow_spinning": "0"}})


@pytest.mark.parametrize("hint", [{"performance_hint": "LATENCY"},
                                  {"performance_hint": "THROUGHPUT", "num_streams": 2}],
                         ids=["latency", "throughput-2-streams"])
def test_openvino_hints_reach_the_compiled_model_and_keep_results(exported: dict, hint: dict) -> None:
    needs_openvino()
    model, path, _ = exported[CONFIG]
    engine = create_engine("openvino", **hint).load(str(path))
    assert str(engine.compiled.get_property("PERFORMANCE_HINT")) == hint["performance_hint"]
    if "num_streams" in hint:
        assert int(engine.compiled.get_property("NUM_STREAMS")) == hint["num_streams"]
    _assert_like_torch(engine, model, _inputs(CONFIGS[CONFIG]))
    with pytest.raises(EnvironmentProblem, match="unknown OpenVINO performance hint 'FAST'"):
        create_engine("openvino", performance_hint="FAST")


def test_session_tuning_defaults_are_ort_defaults() -> None:
    """The defaults change nothing: level all, prepacking on, no extra entries."""
    from vitexport.engines.ort import session_options

    opts = session_options()
    import onnxruntime as ort

    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with pytest.raises(RuntimeError, match="does not have configuration with key"):
        opts.get_session_config_entry("session.disable_prepacking")
