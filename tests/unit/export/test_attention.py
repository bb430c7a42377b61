"""The default export's chunked attention: standard ops, linear memory, right on every engine (issue 26).

The block budget is made small here (`CHUNK_SCORES` patched), so tiny models at small sizes split their
queries into many blocks, with padding, exactly as ViT-B/16 at 16k tokens does with the real budget;
one case also runs the real budget at a size where it splits.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from tests.helpers.models import make_model, needs_openvino, perturb_, timm_model
from tests.helpers.shared import build_once
from vitexport.engines import create_engine
from vitexport.export import attention as attention_mod
from vitexport.export.exporter import export_onnx
from vitexport.model.config import get_preset
from vitexport.model.vit import VisionTransformer
from vitexport.onnx.graph import inspect_graph, non_portable_ops
from vitexport.security.limits import CHUNK_SCORES, block_rows
from vitexport.verify.sweep import verify

TINY = dict(img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=2)
SMALL_BUDGET = 100  # score elements per block: one to a few query rows per block at these sizes


def loops(path: Path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(str(path)).graph.node if n.op_type == "Loop"]


def rel_err(out: np.ndarray, ref: torch.Tensor) -> float:
    return float(np.abs(out - ref.numpy()).max() / max(1.0, ref.abs().max().item()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[VisionTransformer, Path]:
    """A tiny model exported with the defaults and a small block budget (read-only for the tests)."""
    def build(folder: Path) -> Path:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(attention_mod, "CHUNK_SCORES", SMALL_BUDGET)
            export_onnx(make_model(TINY, seed=7), folder / "tiny.onnx")
        return folder / "tiny.onnx"
    return make_model(TINY, seed=7), build_once(tmp_path_factory, "attention-tiny", build)


def test_default_export_is_chunked_with_standard_ops_at_opset_18(tiny) -> None:
    model, path = tiny
    proto = onnx.load(str(path))
    report = inspect_graph(proto)
    assert report.metadata["attention"] == "chunked" and report.opset == 18
    assert {o.domain for o in proto.opset_import} == {""}
    assert len(loops(path)) == model.config.depth and "Softmax" not in report.op_counts  # softmax: in the bodies
    assert non_portable_ops(report) == []
    for loop in loops(path):  # the body: standard ops only
        body = loop.attribute[0].g
        assert [n.op_type for n in body.node] == ["Constant", "Gather", "MatMul", "Softmax", "MatMul", "Reshape",
                                                  "Identity"]


@pytest.mark.parametrize("batch, h, w", [(1, 1, 1), (2, 7, 5), (3, 40, 33), (1, 64, 72), (2, 100, 9)])
def test_trip_count_is_the_estimators_block_count(tiny, batch: int, h: int, w: int) -> None:
    """The graph's blocks are `limits.block_rows`' (what the memory estimate assumes), padding < one row per block."""
    model, path = tiny
    x = np.random.default_rng(h).standard_normal((batch, 3, h, w)).astype(np.float32)
    results = ReferenceEvaluator(onnx.load(str(path))).run(None, {"pixel_values": x}, intermediate=True)
    trips = [int(results[loop.input[0]]) for loop in loops(path)]
    tokens = math.ceil(h / 8) * math.ceil(w / 8) + 1
    rows = block_rows(batch, model.config.num_heads, tokens, tokens, SMALL_BUDGET)
    blocks = math.ceil(tokens / rows)
    assert trips == [blocks] * model.config.depth
    assert blocks * rows - tokens < blocks and (rows == 1 or batch * 2 * rows * tokens <= SMALL_BUDGET)
    assert tokens <= 3 or blocks > 1  # the small budget really splits


@torch.no_grad()
def test_chunked_export_matches_timm_on_every_engine(tiny) -> None:
    """ONNX Runtime (the Loop), OpenVINO (the loop fused into its attention op, and the Loop as written) and the
    reference evaluator, at sizes that split into many blocks, against timm."""
    model, path = tiny
    ref_model = timm_model(TINY, model.state_dict())
    engines = {"cpu": create_engine("cpu").load(str(path)), "reference": create_engine("reference").load(str(path))}
    needs_openvino()
    engines["openvino"] = create_engine("openvino").load(str(path))
    engines["openvino-loop"] = create_engine("openvino", fuse_attention=False).load(str(path))
    assert engines["openvino"].fused == model.config.depth and engines["openvino-loop"].fused == 0
    assert any("ScaledDotProductAttention" in n for n in engines["openvino"].describe()["notes"])
    gen = torch.Generator().manual_seed(3)
    for batch, h, w in [(2, 40, 33), (1, 9, 70), (3, 17, 17), (1, 1, 1)]:
        x = torch.randn(batch, 3, h, w, generator=gen)
        expected = ref_model(x)
        for name, engine in engines.items():
            assert rel_err(engine.run(x.numpy()), expected) <= 1e-5, (name, batch, h, w)


@pytest.mark.slow
@pytest.mark.parametrize("name, expected_loops", [("vit_base_patch16_siglip_224", 2 + 1),
                                                  ("vit_dwee_patch16_reg1_gap_256", 2 * 2)])
def test_latent_query_and_differential_heads_pass_verify_on_every_engine(name: str, expected_loops: int,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The MAP head's one query over N keys, and values twice as wide as the queries, split into blocks."""
    torch.manual_seed(4)
    args = dict(depth=2, embed_dim=48, num_heads=3, img_size=(24, 40), patch_size=8, num_classes=0)
    model = perturb_(VisionTransformer(get_preset(name, **args)), 4).eval()
    path = tmp_path / "m.onnx"
    monkeypatch.setattr(attention_mod, "CHUNK_SCORES", SMALL_BUDGET)
    export_onnx(model, path)
    assert len(loops(path)) == expected_loops
    needs_openvino()
    assert create_engine("openvino").load(str(path)).fused == expected_loops
    report = verify(path, provider="all", sizes=[(24, 40), (17, 45), (7, 5), (1, 1)], batch_sizes=(1, 3))
    assert {s["name"] for s in report.sessions} >= {"cpu", "openvino", "reference"}
    assert report, [(c.provider, c.height, c.width, c.max_abs) for c in report.failures]


@torch.no_grad()
def test_the_real_budget_splits_a_2304_token_image(exported) -> None:
    """The default budget (no patch): 2,304 tokens of a 2-head model in a batch of 2 take 2 blocks (the session's
    default export of spec_cls: 8x8 patches, a class token)."""
    model, path, _ = exported["spec_cls"]
    assert model.config.num_heads == 2 and model.config.patch_size == 8 and model.config.num_prefix_tokens == 1
    x = torch.randn(2, model.config.in_chans, 392, 376, generator=torch.Generator().manual_seed(5))  # 49 x 47 + CLS
    rows = block_rows(2, 2, 2304, 2304, CHUNK_SCORES)
    assert math.ceil(2304 / rows) == 2
    expected = model(x)
    assert rel_err(create_engine("cpu").load(str(path)).run(x.numpy()), expected) <= 1e-5
    assert rel_err(create_engine("reference").load(str(path)).run(x.numpy()), expected) <= 1e-5


def test_masked_attention_is_refused_with_the_form_that_exports_it(tmp_path: Path) -> None:
    class Masked(torch.nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)

    with pytest.raises(Exception, match="use attention='sdpa'"):
        torch.onnx.export(Masked().eval(), (torch.randn(1, 2, 5, 4),), dynamo=True, optimize=False,
                          custom_translation_table=attention_mod.translation_table("chunked"))
