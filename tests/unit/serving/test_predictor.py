"""Production inference: Predictor (no torch), vitexport predict and bench."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samples.digits_data import held_out
from tests.helpers.models import CONFIGS, SAMPLES, make_model, predict_in_threads
from vitexport._util.errors import InputError, ServingError
from vitexport.export.onnx_export import export_onnx
from vitexport.serving.predictor import Predictor, predict_files


@pytest.fixture(scope="module")
def digits_onnx(sample_onnx: Path) -> Path:
    return sample_onnx


@pytest.fixture(scope="module")
def rgb_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    model = make_model(CONFIGS["reg_noembed"], seed=3)
    model.meta = {"preprocess": {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
                  "labels": [f"c{i}" for i in range(7)]}
    path = tmp_path_factory.mktemp("rgb") / "rgb.onnx"
    export_onnx(model, path)
    return path, model


def write_pngs(folder: Path, size: int) -> tuple[list[str], np.ndarray]:
    images, labels = held_out(size)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:03d}-{size}.png"
        Image.fromarray(img, mode="L").save(path)
        paths.append(str(path))
    return paths, labels


@torch.no_grad()
def torch_logits_of_pngs(paths: list[str]) -> torch.Tensor:
    """The sample checkpoint in PyTorch on the PNGs, preprocessed by hand as its metadata says."""
    from vitexport import load_model

    model = load_model(SAMPLES / "digits-vit.pt")
    pre = model.meta["preprocess"]
    x = np.stack([np.asarray(Image.open(p).convert("L"), np.float64) for p in paths])
    x = (x * pre["scale"] - pre["mean"][0]) / pre["std"][0]
    return model(torch.from_numpy(x[:, None].astype(np.float32)))


def test_predict_files_accuracy_on_held_out_digits(digits_onnx: Path, tmp_path: Path) -> None:
    paths, labels = write_pngs(tmp_path, 28)
    report = predict_files(str(digits_onnx), paths, top_k=3, provider="cpu")
    assert report.provider == "cpu" and report.provider_note == ""
    data = json.loads(json.dumps(report.to_json()))  # what `predict --json` prints
    assert [d["path"] for d in data] == paths
    assert all(d["size"] == [28, 28] and len(d["top_k"]) == 3 for d in data)
    first = data[0]["top_k"][0]
    assert set(first) == {"index", "label", "score"} and first["label"] == str(first["index"])
    # the scores are PyTorch's softmax probabilities of the three most likely classes, best first
    probs = torch.softmax(torch_logits_of_pngs(paths), -1).numpy()
    for d, p in zip(data, probs, strict=True):
        best = np.argsort(-p, kind="stable")[:3]
        assert [t["index"] for t in d["top_k"]] == best.tolist()
        np.testing.assert_allclose([t["score"] for t in d["top_k"]], p[best], atol=1e-5, rtol=0)
    accuracy = np.mean([d["top_k"][0]["index"] == y for d, y in zip(data, labels, strict=True)])
    assert accuracy >= 0.97, accuracy


def test_predict_files_reads_every_header_before_loading_the_model(digits_onnx: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable file among good ones fails before any engine is created; an oversized one before decoding."""
    from PIL import ImageFile

    good = str(SAMPLES / "images" / "digit-4-28px.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with monkeypatch.context() as patched:
        patched.setattr(Predictor, "__init__", lambda *a, **k: pytest.fail("the model was loaded"))
        with pytest.raises(InputError, match="cannot read image"):
            predict_files(str(digits_onnx), [good, str(tmp_path / "bad.png")], provider="cpu")
    decoded: list[object] = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda img: decoded.append(img) or real(img))
    with pytest.raises(InputError, match=r"over the limit of 4 \(--max-tokens\)"):
        predict_files(str(digits_onnx), [good], provider="cpu", max_tokens=4)
    assert decoded == []
    assert len(predict_files(str(digits_onnx), [good], provider="cpu").files) == 1 and decoded  # the spy sees loads


def test_mixed_sizes_equal_one_by_one(rgb_onnx) -> None:
    path, _ = rgb_onnx
    predictor = Predictor(str(path), provider="cpu", max_batch=2)
    rng = np.random.default_rng(0)
    sizes = [(24, 40), (17, 33), (24, 40), (5, 70), (24, 40), (17, 33), (1, 1)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    together = predictor.predict(images)
    for img, pred in zip(images, together, strict=True):
        alone = predictor.predict(img)
        assert pred.size == alone.size
        np.testing.assert_allclose(pred.output, alone.output, atol=1e-5, rtol=0)
        assert [t["index"] for t in pred.top_k] == [t["index"] for t in alone.top_k]
    assert [p.index for p in together] == list(range(len(images)))


@torch.no_grad()
def test_predictor_preprocessing_matches_pytorch(rgb_onnx) -> None:
    path, model = rgb_onnx
    predictor = Predictor(str(path), provider="cpu")
    img = np.random.default_rng(1).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    x = ((img / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    ref = model(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(predictor.predict(img).output, ref, atol=1e-4, rtol=0)
    # PIL, a preprocessed float CHW array and a 1xCxHxW array give the same
    np.testing.assert_allclose(predictor.predict(Image.fromarray(img)).output, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(predictor.predict(x[0]).output, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(predictor.predict(x).output, ref, atol=1e-4, rtol=0)
    # grayscale into a 3-channel model: replicated channels
    gray = img[..., 0]
    np.testing.assert_allclose(predictor.predict(gray).output, predictor.predict(np.stack([gray] * 3, -1)).output,
                               atol=1e-6)
    # RGBA: alpha dropped
    rgba = np.concatenate([img, np.full((30, 45, 1), 7, np.uint8)], -1)
    np.testing.assert_allclose(predictor.predict(rgba).output, ref, atol=1e-4, rtol=0)


def test_rgb_into_grayscale_model_uses_luma(digits_onnx: Path) -> None:
    predictor = Predictor(str(digits_onnx), provider="cpu")
    rgb = np.random.default_rng(2).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_allclose(predictor.predict(rgb).output, predictor.predict(luma).output, atol=0.05)


@pytest.mark.slow
def test_eight_threads_match_sequential(digits_onnx: Path) -> None:
    predictor = Predictor(str(digits_onnx), provider="cpu")
    rng = np.random.default_rng(3)
    requests = [[rng.integers(0, 256, (int(rng.integers(1, 60)), int(rng.integers(1, 60))), dtype=np.uint8)
                 for _ in range(int(rng.integers(1, 4)))] for _ in range(100)]
    expected = [[p.output for p in predictor.predict(r)] for r in requests]
    for (_, i), outs in predict_in_threads(predictor, requests).items():
        for a, b in zip(outs, expected[i], strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 5), np.uint8), "empty image"),
        (np.zeros((4, 4, 2), np.uint8), "expected HxW or HxWxC"),
        (np.zeros((2, 3, 4, 5, 6), np.uint8), "expected HxW or HxWxC"),
        (np.zeros((3, 10, 10), np.float32), "has 3 channels"),
        (np.zeros((10, 10), np.float32), "expected a preprocessed CxHxW"),
        (np.full((1, 10, 10), np.nan, np.float32), "NaN or Inf"),
        (np.zeros((10, 10), np.int64), "unsupported dtype int64"),
        ("not an image", "unsupported image type str"),
        (np.zeros((2000, 2000), np.uint8), "over the limit of 16,640"),
    ],
)
def test_bad_inputs_are_refused(digits_onnx: Path, image, message: str) -> None:
    predictor = Predictor(str(digits_onnx), provider="cpu")
    with pytest.raises(InputError, match=message):
        predictor.predict(image)


def test_default_bench_sizes() -> None:
    from vitexport.serving.bench import default_bench_sizes

    meta = {"config": {"img_size": [24, 40]}, "patch_size": [8, 8]}
    sizes = default_bench_sizes(meta)
    assert sizes[0] == (24, 40) and len(set(sizes)) == 3
    assert all(h != w for h, w in sizes[1:]) and all(h % 8 or w % 8 for h, w in sizes[1:])
    assert default_bench_sizes({**meta, "static_size": [24, 40]}) == [(24, 40)]
    with pytest.raises(ServingError, match="pass --sizes"):
        default_bench_sizes({})


@pytest.fixture(scope="module")
def fixed_batch_onnx(rgb_onnx, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, model = rgb_onnx
    path = tmp_path_factory.mktemp("fixed") / "batch4.onnx"
    export_onnx(model, path, batch_size=4)
    return path


@pytest.mark.slow
def test_fixed_batch_export_pads_partial_batches(rgb_onnx, fixed_batch_onnx: Path) -> None:
    dynamic = Predictor(str(rgb_onnx[0]), provider="cpu")
    fixed = Predictor(str(fixed_batch_onnx), provider="cpu", max_batch=16)
    assert fixed.max_batch == 4  # the export's batch wins over max_batch
    rng = np.random.default_rng(6)
    for count in (1, 3, 4, 6, 9):  # a partial batch, a full one, and several
        sizes = [(24, 40) if i % 3 else (17, 33) for i in range(count)]
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
        got, want = fixed.predict(images), dynamic.predict(images)
        assert [p.size for p in got] == sizes
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.output, b.output, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_static_export_refuses_other_sizes(rgb_onnx, tmp_path: Path) -> None:
    path, model = rgb_onnx
    static = tmp_path / "static.onnx"
    export_onnx(model, static, static_size=(24, 40))
    predictor = Predictor(str(static), provider="cpu")
    img = np.random.default_rng(7).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    np.testing.assert_allclose(predictor.predict(img).output, Predictor(str(path), provider="cpu").predict(img).output,
                               atol=1e-5, rtol=0)
    for h, w in [(25, 40), (24, 39), (40, 24)]:
        with pytest.raises(InputError, match=f"this export is fixed at 24x40, got {h}x{w}"):
            predictor.predict(np.zeros((h, w, 3), np.uint8))


def test_model_without_metadata_is_refused_clearly(digits_onnx: Path, tmp_path: Path) -> None:
    import onnx

    from vitexport._util.errors import VerificationError
    from vitexport.verify.sweep import verify

    proto = onnx.load(str(digits_onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ServingError, match="has no vitexport metadata; export it with `vitexport onnx`"):
        Predictor(str(bare), provider="cpu")
    with pytest.raises(VerificationError, match="carries no vitexport config"):
        verify(bare, provider="cpu")


def test_image_sizes_are_checked_against_the_graph_before_decoding(sample_onnx: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose graph grows with the image ([H, W, H, W] floats folded into the logits): a 28x28 image runs
    as before, a 300x300 one is refused from its header (InputError naming the node), before its pixels are
    decoded; batches are sized by the graph's footprint per image."""
    from tests.helpers.onnx_bombs import folded
    from vitexport.security import images

    path = folded(sample_onnx, tmp_path / "g.onnx", "size_dependent")
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("L", (28, 28), 100).save(small)
    Image.new("L", (300, 300), 100).save(large)
    report = predict_files(str(path), [str(small)], provider="cpu")
    reference = predict_files(str(sample_onnx), [str(small)], provider="cpu")
    assert report.files[0].prediction.top_k == reference.files[0].prediction.top_k
    decoded = []
    real = images.load
    monkeypatch.setattr(images, "load", lambda *a, **k: decoded.append(a) or real(*a, **k))
    with pytest.raises(InputError, match=r"a 300x300 image: the graph holds 32\.\d GB .*node 'b_grow'"):
        predict_files(str(path), [str(large)], provider="cpu")
    assert not decoded
    predictor = Predictor(str(path), provider="cpu", max_memory_gb=0.02)
    per_image = predictor.budget.per_item((1, 1, 28, 28))
    assert per_image > 2e6 and predictor.batch_limit((1, 28, 28)) == int(0.02e9 // per_image) < predictor.max_batch
