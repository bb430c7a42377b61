"""Batch inference (vitexport.serving.batch): rows equal the Predictor's, batches by patch grid, error rows, bounded
streaming, and the output folder's rules (atomic shards, resume, force, lock). Local mode only (Ray: tests/e2e)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers.models import CONFIGS, sweep_sizes
from tests.helpers.shared import pooled_features, rgb_classifier
from vitexport._util.errors import InputError, OutputError, OutputExistsError, UsageError
from vitexport.serving.batch.infer import BatchOptions, Worker
from vitexport.serving.batch.job import run
from vitexport.serving.batch.output import JOB_FILE, OutputFolder
from vitexport.serving.batch.sources import Item, make_shard
from vitexport.serving.predictor import Predictor

RGB = CONFIGS["reg_noembed"]  # 24x40 native, patch 8, 7 classes, registers


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, exported) -> dict[str, Path]:
    """A classifier with preprocessing and labels, a pooled and a token features model (each made once per run;
    the classifier and the token model are the ones other modules use too)."""
    return {"classifier": rgb_classifier(tmp_path_factory)[0], "pooled": pooled_features(tmp_path_factory),
            "tokens": exported["features_nopool"][1]}


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0, mode: str = "RGB") -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        path = folder / f"{i:04d}-{h}x{w}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
        paths.append(str(path))
    return paths


def mixed_sizes(n: int, seed: int = 1) -> list[tuple[int, int]]:
    """Sizes from the sweep (1x1, below a patch, non-square, odd, 3x native) and more of the same grids, shuffled."""
    base = sweep_sizes(RGB) + [(h + 3, w + 5) for h, w in sweep_sizes(RGB) if h > 8 and w > 8]
    rng = np.random.default_rng(seed)
    return [base[i] for i in rng.integers(0, len(base), n)]


def files_shard(paths: list[str], index: int = 0):
    return make_shard(index, "files", paths=tuple(paths))


def table_rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def test_rows_equal_the_predictor_one_image_at_a_time_with_batches_by_patch_grid(models, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", mixed_sizes(40))
    options = BatchOptions(top_k=3, logits=True, max_batch=4, workers=3)
    runs: list[list[tuple[int, ...]]] = []
    with Worker(str(models["classifier"]), options) as worker:
        real = worker.predictor.run_prepared
        worker.predictor.run_prepared = lambda xs: (runs.append([x.shape for x in xs]), real(xs))[1]
        rows = table_rows(worker.table(files_shard(paths)))
    alone = Predictor(str(models["classifier"]), provider="cpu", top_k=3)
    assert [r["path"] for r in rows] == paths
    for row, path in zip(rows, paths, strict=True):
        want = alone.predict(Image.open(path))
        assert row["error"] is None and (row["height"], row["width"]) == want.size
        assert [t["index"] for t in row["top_k"]] == [t["index"] for t in want.top_k]
        assert [t["label"] for t in row["top_k"]] == [t["label"] for t in want.top_k]
        np.testing.assert_allclose([t["score"] for t in row["top_k"]], [t["score"] for t in want.top_k], atol=1e-6)
        np.testing.assert_allclose(row["logits"], want.output, atol=1e-5, rtol=0)
    # every engine run holds one shape, padded to whole patches
    assert all(len(set(shapes)) == 1 and shapes[0][1] % 8 == 0 and shapes[0][2] % 8 == 0 for shapes in runs)
    # eight images of four sizes on one 3x5 grid: two full runs, not one (or two) a size
    same_grid = write_images(tmp_path / "grid", [(17, 33), (20, 40), (24, 35), (23, 39)] * 2, seed=9)
    runs.clear()
    with Worker(str(models["classifier"]), options) as worker:
        worker.predictor.run_prepared = lambda xs: (runs.append([x.shape for x in xs]), real(xs))[1]
        grid_rows = table_rows(worker.table(files_shard(same_grid)))
    assert runs == [[(3, 24, 40)] * 4] * 2
    for row, path in zip(grid_rows, same_grid, strict=True):
        np.testing.assert_allclose([t["score"] for t in row["top_k"]],
                                   [t["score"] for t in alone.predict(Image.open(path)).top_k], atol=1e-6)


def test_features_models_write_vectors_or_token_lists(models, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", mixed_sizes(11, seed=2))
    shard = files_shard(paths)
    for name in ("pooled", "tokens"):
        alone = Predictor(str(models[name]), provider="cpu")
        with Worker(str(models[name]), BatchOptions(max_batch=5)) as worker:
            table = worker.table(shard)
        assert "top_k" not in table.column_names and "logits" not in table.column_names
        for row, path in zip(table_rows(table), paths, strict=True):
            want = alone.predict(Image.open(path).convert("RGB")).output
            np.testing.assert_allclose(np.asarray(row["features"], np.float32).reshape(want.shape), want, atol=1e-5,
                                       rtol=0)
        kind = table.schema.field("features").type
        if name == "pooled":  # one vector an image: a fixed-size list of the embedding's width
            assert pa.types.is_fixed_size_list(kind) and kind.list_size == 32
        else:  # tokens follow the image size: a list of fixed-size vectors
            assert pa.types.is_list(kind) and kind.value_type.list_size == 48
    with pytest.raises(UsageError, match="no classification head"):
        Worker(str(models["pooled"]), BatchOptions(logits=True))


def test_bad_images_become_error_rows_and_the_rest_run(models, tmp_path: Path, sample_onnx: Path) -> None:
    good = write_images(tmp_path / "imgs", [(24, 40), (9, 13), (30, 30)])
    bad = {"text.png": b"not an image at all", "cut.png": Path(good[2]).read_bytes()[:-40],
           "empty.png": b"", "model.png": sample_onnx.read_bytes()}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    big = tmp_path / "big.png"
    Image.new("RGB", (800, 600)).save(big)  # 75x100 patches: over a max_tokens of 1000, refused from the header
    order = [good[0], str(tmp_path / "text.png"), good[1], str(tmp_path / "cut.png"), str(big),
             str(tmp_path / "missing.png"), str(tmp_path / "empty.png"), str(tmp_path / "model.png"), good[2]]
    with Worker(str(models["classifier"]), BatchOptions(max_tokens=1000, max_batch=2)) as worker:
        rows = table_rows(worker.table(files_shard(order)))
    assert [r["path"] for r in rows] == order
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"text.png", "cut.png", "big.png", "missing.png", "empty.png", "model.png"}
    assert "does not exist" in errors["missing.png"] and "over the limit of 1,000" in errors["big.png"]
    assert "is an ONNX model, not an image" in errors["model.png"] and "is empty (0 bytes)" in errors["empty.png"]
    assert "is truncated or corrupt" in errors["cut.png"] and errors["text.png"].startswith("cannot read image")
    assert all(r["top_k"] is None and r["height"] is None for r in rows if r["error"])
    assert all(r["top_k"] for r in rows if not r["error"])


def test_an_image_the_engine_refuses_fails_alone(models, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", [(24, 40)] * 5)
    with Worker(str(models["classifier"]), BatchOptions(max_batch=8)) as worker:
        real = worker.predictor.run_prepared
        poisoned = np.asarray(worker.predictor.prepare(Image.open(paths[3])))

        def refuse(xs):
            if any(np.array_equal(x, poisoned) for x in xs):
                raise InputError("the model produced NaN or Inf for this input")
            return real(xs)

        worker.predictor.run_prepared = refuse
        rows = table_rows(worker.table(files_shard(paths)))
    assert [r["error"] for r in rows] == [None, None, None, "the model produced NaN or Inf for this input", None]
    assert rows[3]["height"] == 24 and all(r["top_k"] for i, r in enumerate(rows) if i != 3)


def test_decoding_runs_a_bounded_window_ahead(models, tmp_path: Path) -> None:
    """However long the source, no more than the decoding window plus the images waiting for a batch are held."""
    paths = write_images(tmp_path / "imgs", mixed_sizes(300, seed=4))
    pulled, most = [0], [0]

    def items():
        for p in paths:
            pulled[0] += 1
            yield Item(p)

    options = BatchOptions(max_batch=4, workers=2)
    done = 0
    with Worker(str(models["classifier"]), options) as worker:
        for _ in worker.rows(items()):
            done += 1
            most[0] = max(most[0], pulled[0] - done)
    ahead = max(2 * 4, 4 * 2)
    assert done == len(paths) and most[0] <= ahead + 2 * 4 + 1, most[0]


def test_run_writes_shards_resumes_and_starts_over(models, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    paths = write_images(folder, mixed_sizes(23, seed=5))
    out = tmp_path / "out"
    first = run(str(models["classifier"]), str(folder), str(out), shard_size=5, provider="cpu")
    parts = sorted(p.name for p in out.iterdir() if p.suffix == ".parquet")
    assert parts == [f"part-{i:05d}.parquet" for i in range(5)] and (out / JOB_FILE).is_file()
    assert (first.images, first.processed, first.shards, first.skipped_shards, first.failed) == (23, 23, 5, 0, 0)
    rows = pq.read_table(out).to_pylist()
    assert [r["path"] for r in rows] == paths
    stamps = {p: (out / p).stat().st_mtime_ns for p in parts}
    again = run(str(models["classifier"]), str(folder), str(out), shard_size=5, provider="cpu")
    assert (again.images, again.processed, again.skipped_shards) == (23, 0, 5)
    assert {p: (out / p).stat().st_mtime_ns for p in parts} == stamps  # nothing rewritten
    # one more image, sorting into shard 2: shards 0 and 1 are kept, 2..4 run again, a sixth is written
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "0010-added.png")
    grown = run(str(models["classifier"]), str(folder), str(out), shard_size=5, provider="cpu")
    assert (grown.images, grown.processed, grown.skipped_shards, grown.shards) == (24, 14, 2, 5)
    assert [(out / p).stat().st_mtime_ns for p in parts[:2]] == [stamps[p] for p in parts[:2]]
    # fewer images: the shards past the new count go
    for p in paths[-9:]:
        os.remove(p)
    shrunk = run(str(models["classifier"]), str(folder), str(out), shard_size=5, provider="cpu")
    assert shrunk.shards == 3 and sorted(p.name for p in out.glob("part-*")) == parts[:3]
    assert len(pq.read_table(out)) == 15
    # other options: refused, then --force starts over
    with pytest.raises(OutputExistsError, match=r"holds the results of other options \(top_k\); pass --force"):
        run(str(models["classifier"]), str(folder), str(out), shard_size=5, top_k=2)
    forced = run(str(models["classifier"]), str(folder), str(out), shard_size=5, top_k=2, force=True)
    assert forced.processed == 15 and all(len(r["top_k"]) == 2 for r in pq.read_table(out).to_pylist())


def test_a_damaged_shard_runs_again_and_killed_runs_leave_no_staging(models, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, mixed_sizes(9, seed=6))
    out = tmp_path / "out"
    run(str(models["classifier"]), str(folder), str(out), shard_size=4)
    whole = pq.read_table(out).to_pylist()
    part = out / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:100])  # truncated (as no commit leaves it, but a disk might)
    stale = out / ".part-00002.parquet.abc123.tmp"  # a staging folder left by a SIGKILLed run
    stale.mkdir()
    (stale / "part-00002.parquet").write_bytes(b"half")
    again = run(str(models["classifier"]), str(folder), str(out), shard_size=4)
    assert again.processed == 4 and again.skipped_shards == 2
    assert not stale.exists() and pq.read_table(out).to_pylist() == whole


def test_output_folder_refusals(models, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, [(24, 40)])
    model = str(models["classifier"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file; -o takes a folder"):
        run(model, str(folder), str(tmp_path / "file"))
    with pytest.raises(OutputError, match="does not exist; create it first"):
        run(model, str(folder), str(tmp_path / "no" / "out"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    for force in (False, True):  # never deletes files it did not write
        with pytest.raises(OutputExistsError, match=r"holds other files \(keep.txt\)"):
            run(model, str(folder), str(other), force=force)
    assert (other / "keep.txt").read_text() == "mine"
    busy = tmp_path / "busy"
    with OutputFolder(busy, {"x": 1}):  # another run holds the folder
        with pytest.raises(OutputExistsError, match="another `vitexport batch` is writing"):
            run(model, str(folder), str(busy))
    assert run(model, str(folder), str(busy), force=True).images == 1  # the lock went with its holder
    with pytest.raises(UsageError, match="shard_size must be at least 1"):
        run(model, str(folder), str(tmp_path / "o2"), shard_size=0)
    with pytest.raises(UsageError, match="add --ray or --address"):
        run(model, str(folder), str(tmp_path / "o3"), replicas=2)


def test_an_interrupted_run_leaves_whole_shards_and_resumes_to_the_same_rows(models, tmp_path: Path,
                                                                            monkeypatch) -> None:
    import vitexport.serving.batch.job as job

    monkeypatch.setattr(job, "PROGRESS_EVERY_S", 0.0)  # a report after every image
    folder = tmp_path / "imgs"
    write_images(folder, mixed_sizes(30, seed=7))
    out = tmp_path / "out"
    seen = []

    def stop_in_the_third_shard(p) -> None:
        seen.append(p)
        if p.images == 12:  # two images into the third shard (images 10-14)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(str(models["classifier"]), str(folder), str(out), shard_size=5, progress=stop_in_the_third_shard)
    assert sorted(p.name for p in out.iterdir()) == [".vitexport-batch.lock", JOB_FILE, "part-00000.parquet",
                                                     "part-00001.parquet"]  # no third shard, no staging folder
    resumed = run(str(models["classifier"]), str(folder), str(out), shard_size=5)
    assert (resumed.skipped_shards, resumed.processed, resumed.images) == (2, 20, 30)
    fresh = run(str(models["classifier"]), str(folder), str(tmp_path / "fresh"), shard_size=5)
    assert fresh.images == 30 and pq.read_table(out).to_pylist() == pq.read_table(tmp_path / "fresh").to_pylist()
    assert seen[-1].total == 30 and seen[-1].total_shards == 6


def test_tar_and_parquet_sources_run_like_the_same_files(models, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", mixed_sizes(7, seed=8))
    blobs = [Path(p).read_bytes() for p in paths]
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for i, data in enumerate(blobs):
            info = tarfile.TarInfo(f"s{i}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"img": pa.array(blobs + [None], pa.binary())}), tmp_path / "rows.parquet",
                   row_group_size=3)
    model = str(models["classifier"])
    run(model, str(tmp_path / "imgs"), str(tmp_path / "a"))
    run(model, [str(tmp_path / "shard.tar"), str(tmp_path / "rows.parquet")], str(tmp_path / "b"), shard_size=4,
        image_column="img")
    files = pq.read_table(tmp_path / "a").to_pylist()
    both = pq.read_table(tmp_path / "b").to_pylist()
    assert [(r["member"], r["row"]) for r in both] == [(f"s{i}.png", None) for i in range(7)] + \
        [(None, i) for i in range(8)]
    assert [r["path"] for r in both] == [str(tmp_path / "shard.tar")] * 7 + [str(tmp_path / "rows.parquet")] * 8
    for got in (both[:7], both[7:14]):  # the same images; other batch companions: equal to rounding
        assert [[t["index"] for t in r["top_k"]] for r in got] == [[t["index"] for t in r["top_k"]] for r in files]
        np.testing.assert_allclose([[t["score"] for t in r["top_k"]] for r in got],
                                   [[t["score"] for t in r["top_k"]] for r in files], atol=1e-6)
    assert both[14]["error"] == "the image cell is empty (null)"


def test_the_public_python_path(models, tmp_path: Path) -> None:
    import vitexport.batch
    from vitexport.batch import Summary
    from vitexport.batch import run as public_run

    assert public_run is vitexport.batch.run is run
    write_images(tmp_path / "imgs", [(24, 40), (7, 7)])
    summary = vitexport.batch.run(str(models["classifier"]), str(tmp_path / "imgs"), str(tmp_path / "out"))
    assert isinstance(summary, Summary) and summary.images == 2 and summary.mode == "local"
    assert summary.to_json()["images_per_s"] >= 0 and summary.provider in ("cpu", "cuda")
