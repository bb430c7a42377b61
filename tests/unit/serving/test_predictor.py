"""Production inference: Predictor (no torch), vitexport predict and bench."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samples.digits_data import held_out
from tests.helpers.models import SAMPLES, predict_in_threads
from tests.helpers.shared import rgb_classifier
from vitexport._util.errors import InputError, ServingError, UsageError
from vitexport.export.onnx_export import export_onnx
from vitexport.serving.batch.sources import open_sources
from vitexport.serving.predictor import Predictor, predict_files


@pytest.fixture(scope="module")
def digits_onnx(sample_onnx: Path) -> Path:
    return sample_onnx


@pytest.fixture(scope="module")
def rgb_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    return rgb_classifier(tmp_path_factory)


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


def test_predict_files_refuses_unusable_sources_before_loading_and_oversized_images_before_decoding(
        digits_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that does not exist, or sources without any image, are usage errors before any engine is created;
    an image over the limits is an error row decided from its header, before its pixels are decoded."""
    from PIL import ImageFile

    good = str(SAMPLES / "images" / "digit-4-28px.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with monkeypatch.context() as patched:
        patched.setattr(Predictor, "__init__", lambda *a, **k: pytest.fail("the model was loaded"))
        with pytest.raises(UsageError, match="does not exist"):
            predict_files(str(digits_onnx), [good, str(tmp_path / "missing.png")], provider="cpu")
        with pytest.raises(UsageError, match=r"no images in .*\(1 other files ignored\)"):
            predict_files(str(digits_onnx), [str(tmp_path / "empty")], provider="cpu")
    decoded: list[object] = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda img: decoded.append(img) or real(img))
    report = predict_files(str(digits_onnx), [good], provider="cpu", max_tokens=4)
    assert [f.prediction for f in report.files] == [None] and decoded == []
    assert "over the limit of 4 (--max-tokens)" in report.files[0].error
    assert len(predict_files(str(digits_onnx), [good], provider="cpu").files) == 1 and decoded  # the spy sees loads


def _tree(root: Path) -> dict[str, str]:
    """A folder tree of held-out digits at several sizes, two levels deep, with a bad image, a truncated one and
    a text file among them; returns {path: what it is}."""
    images, _ = held_out(20)
    made: dict[str, str] = {}
    for i, (sub, size) in enumerate([("", 28), ("a", 20), ("a/b", 36), ("a/b", 17), ("c", 28), ("c", 41)]):
        folder = root / sub
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i}.png"
        Image.fromarray(images[i], mode="L").resize((size + i % 2, size), Image.BILINEAR).save(path)
        made[str(path)] = "image"
    (root / "a" / "bad.png").write_bytes(b"not a png")
    made[str(root / "a" / "bad.png")] = "bad"
    cut = root / "c" / "cut.png"
    cut.write_bytes((root / "c" / "4.png").read_bytes()[:60])
    made[str(cut)] = "bad"
    (root / "a" / "notes.txt").write_text("ignored")
    return made


def test_predict_files_walks_folders_and_globs_with_errors_as_rows(digits_onnx: Path, tmp_path: Path) -> None:
    """A folder is walked recursively (each level sorted by name), a glob matches across folders; each image's
    result equals the Predictor's on that image alone, and each bad image is a row with its error."""
    made = _tree(tmp_path / "data")
    predictor = Predictor(str(digits_onnx), provider="cpu", top_k=3)
    walked = sorted(made, key=lambda p: Path(p).relative_to(tmp_path / "data").parts)
    glob = str(tmp_path / "data" / "**" / "*.png")
    assert [i.path for s in open_sources([glob]) for i in s.items()] != walked  # a glob lists a level's files first
    for sources in ([str(tmp_path / "data")], [glob]):
        report = predict_files(str(digits_onnx), sources, provider="cpu", top_k=3)
        batch_order = [i.path for s in open_sources(sources) for i in s.items()]  # what `vitexport batch` reads
        assert [f.path for f in report.files] == batch_order and sorted(batch_order) == sorted(walked), sources
        if sources[0] != glob:
            assert batch_order == walked
        assert report.ignored == (1 if sources[0].endswith("data") else 0)
        for entry in report.files:
            if made[entry.path] == "bad":
                assert entry.prediction is None and "image" in entry.error, entry
                continue
            alone = predictor.predict(Image.open(entry.path))
            assert entry.error is None and entry.prediction.top_k == alone.top_k
            np.testing.assert_allclose(entry.prediction.output, alone.output, atol=1e-5, rtol=1e-5)
        data = json.loads(json.dumps(report.to_json()))
        assert {d["path"] for d in data if d["error"]} == {p for p, kind in made.items() if kind == "bad"}
        assert all((d["top_k"] is None and d["size"] is None) == bool(d["error"]) for d in data)


def test_predict_files_gives_an_engine_refusal_only_to_the_images_refused(digits_onnx: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that refuses one image of a run fails that image's row only: the run is retried image by image."""
    from vitexport._util.errors import EngineError

    for i, size in enumerate([(28, 28), (28, 30), (28, 28), (17, 30)]):
        Image.fromarray(np.full(size, 30 * i, np.uint8), mode="L").save(tmp_path / f"{i}.png")
    real = Predictor.run_batch

    def refuse_width_30(self, batch):
        if batch.shape[-1] == 30 and batch.shape[-2] == 28:
            raise EngineError("refused a 28x30 input")
        return real(self, batch)

    monkeypatch.setattr(Predictor, "run_batch", refuse_width_30)
    report = predict_files(str(digits_onnx), [str(tmp_path)], provider="cpu")
    assert [f.error for f in report.files] == [None, "refused a 28x30 input", None, None]
    alone = Predictor(str(digits_onnx), provider="cpu").predict(Image.open(tmp_path / "3.png"))
    np.testing.assert_allclose(report.files[3].prediction.output, alone.output, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_predict_files_on_a_fixed_size_export_refuses_other_sizes_per_image(static_onnx: Path,
                                                                            tmp_path: Path) -> None:
    """A fixed-size export runs the images of its size and refuses the others, each in its own row."""
    for i, (h, w) in enumerate([(24, 40), (25, 40), (24, 40)]):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    report = predict_files(str(static_onnx), [str(tmp_path / "*.png")], provider="cpu")
    assert [f.error is None for f in report.files] == [True, False, True]
    assert "fixed at 24x40" in report.files[1].error


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


@pytest.fixture(scope="module")
def static_onnx(rgb_onnx, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rgb_onnx's model exported at the fixed size 24x40 (shared: an export takes seconds)."""
    path = tmp_path_factory.mktemp("static") / "static.onnx"
    export_onnx(rgb_onnx[1], path, static_size=(24, 40))
    return path


@pytest.mark.slow
def test_static_export_refuses_other_sizes(rgb_onnx, static_onnx: Path) -> None:
    path, _ = rgb_onnx
    static = static_onnx
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
    as before, a 300x300 one is refused from its header (its row's error names the node), before its pixels are
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
    [refused] = predict_files(str(path), [str(large)], provider="cpu").files  # its error row, the others go on
    assert refused.prediction is None
    assert re.search(r"a 300x300 image: the graph holds 32\.\d GB .*node 'b_grow'", refused.error), refused.error
    assert not decoded
    predictor = Predictor(str(path), provider="cpu", max_memory_gb=0.02)
    per_image = predictor.budget.per_item((1, 1, 28, 28))
    assert per_image > 2e6 and predictor.batch_limit((1, 28, 28)) == int(0.02e9 // per_image) < predictor.max_batch
