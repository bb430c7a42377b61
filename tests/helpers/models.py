"""Small random-weight models, the option matrix, sizes, timm references, shared by the tests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from vitexport import ViTConfig
from vitexport.model.coverage import OPTION_CONFIGS
from vitexport.model.vit import VisionTransformer

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"

# Every option of the model issue appears in at least one config; all are small (depth 2, dim 32-64). The library
# holds the matrix: the TorchScript allowlist is derived from the same configs (vitexport/model/coverage.py).
CONFIGS: dict[str, dict[str, Any]] = OPTION_CONFIGS


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Move every parameter away from its init so that each one changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def make_model(args: dict[str, Any], seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return perturb_(VisionTransformer(ViTConfig(**args)), seed).eval()


def timm_model(args: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None, **extra: Any):
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    kw = dict(args)
    kw.setdefault("dynamic_img_size", True)
    kw.setdefault("dynamic_img_pad", True)
    kw.update(extra)
    model = TimmViT(**kw).eval()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def sweep_sizes(args: dict[str, Any]) -> list[tuple[int, int]]:
    """>= 10 sizes: native, non-square, not multiples, < one patch, 1x1, up to 3x native."""
    cfg = ViTConfig(**args)
    (h, w), (ph, pw) = cfg.img_hw, cfg.patch_hw
    sizes = [
        (h, w),  # native
        (1, 1),
        (ph - 1, pw - 1) if min(ph, pw) > 1 else (1, 2),  # smaller than one patch
        (ph * 2, pw * 5),  # divisible, non-square
        (h + 3, w - 1 if w > 1 else 2),  # not divisible
        (h // 2 + 1, 2 * w + 3),  # wide
        (3 * h - 1, w // 2 + 2),  # tall
        (3 * h, 3 * w),  # 3x native
        (ph + 1, 3 * pw - 1),
        (2 * h + 5, 2 * w + 5),
        (h + ph, w),  # same width, one more patch row
    ]
    out: list[tuple[int, int]] = []
    for s in sizes:
        if s not in out:
            out.append(s)
    return out


def needs_openvino() -> Any:
    """The openvino module, or skip the test (the `openvino` extra is part of the test extras)."""
    return pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'vitexport[openvino]')")


def predict_in_threads(predictor: Any, requests: list[list[Any]], threads: int = 8) -> dict[tuple[int, int], list]:
    """Every request from each of ``threads`` threads sharing ``predictor`` at once: {(thread, request): outputs}.
    Raises the first error a thread hit."""
    results: dict[tuple[int, int], list] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i, r in enumerate(requests):
                results[(t, i)] = [p.output for p in predictor.predict(r)]
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    if errors:
        raise errors[0]
    assert len(results) == threads * len(requests)
    return results
