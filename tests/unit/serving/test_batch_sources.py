"""Batch sources (vitexport.serving.batch.sources): what each SOURCE names, in which order, cut into which shards,
and the one image decoder for files and bytes. No model needed."""

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

from vitexport._util.errors import FileKindError, InputError, UsageError
from vitexport.serving.batch.sources import (
    Item,
    all_shards,
    decode_image,
    key_columns,
    open_source,
    open_sources,
    parquet_items,
    tar_items,
)


def png(h: int = 5, w: int = 7, seed: int = 0, mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_parquet(path: Path, column: pa.Array, name: str = "image", row_group_size: int | None = None) -> Path:
    pq.write_table(pa.table({"id": pa.array(range(len(column))), name: column}), path,
                   row_group_size=row_group_size)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Images in nested folders, a hidden folder, other files, and a link to a folder outside."""
    root = tmp_path / "data"
    for rel in ["b/2.png", "b/10.jpg", "a.png", "c/d/e.PNG", "c/x.webp", ".hidden/h.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png())
    (root / "notes.txt").write_text("not an image")
    (root / "c" / "labels.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.png").write_bytes(png())
    os.symlink(outside, root / "link")  # a link to a folder: not followed (it may loop)
    return root


def test_folder_is_walked_recursively_in_name_order_and_counts_what_it_ignores(tree: Path) -> None:
    source = open_source(str(tree))
    paths = [p for _, p in source.entries()]
    rel = [os.path.relpath(p, tree) for p in paths]
    assert rel == [".hidden/h.png", "a.png", "b/10.jpg", "b/2.png", "c/d/e.PNG", "c/x.webp"]
    assert all(p.startswith(str(tree)) for p in paths)  # as given, joined: what `predict` would be given
    assert source.ignored == 2  # notes.txt and labels.json
    assert [i.path for i in source.items()] == paths
    assert source.count() == 6 and key_columns([source]) == ("path",)


def test_glob_matches_across_folders_and_keeps_the_walk_order(tree: Path, monkeypatch) -> None:
    deep = [os.path.relpath(i.path, tree) for i in open_source(str(tree / "**" / "*.png")).items()]
    assert deep == ["a.png", "b/2.png"]  # case-sensitive; no dot folders; ** does not follow the link
    one = [os.path.relpath(i.path, tree) for i in open_source(str(tree / "*" / "*")).items()]
    assert one == ["b/10.jpg", "b/2.png", "c/labels.json", "c/x.webp", "link/o.png"]  # what it matches, as a shell
    monkeypatch.chdir(tree)
    assert [i.path for i in open_source("b/?.png").items()] == ["b/2.png"]  # relative, as the shell writes it
    with pytest.raises(UsageError, match="no files match"):
        open_source(str(tree / "*.gif"))


def test_list_file_keeps_paths_as_written(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nx/a.png\n\n  \r\n/abs/b.jpg\r\nmissing.png\n")
    source = open_source(str(listing))
    assert source.kind == "list"
    assert [i.path for i in source.items()] == ["x/a.png", "/abs/b.jpg", "missing.png"]  # not checked here: rows


def test_what_each_argument_is(tmp_path: Path, sample_onnx: Path) -> None:
    (tmp_path / "one.png").write_bytes(png())
    write_tar(tmp_path / "s.tar", [("k.png", png())])
    write_tar(tmp_path / "s.tar.gz", [("k.png", png())], mode="w:gz")
    write_parquet(tmp_path / "p.parquet", pa.array([png()], pa.binary()))
    kinds = {name: open_source(str(tmp_path / name)).kind for name in ("one.png", "s.tar", "s.tar.gz", "p.parquet")}
    assert kinds == {"one.png": "image", "s.tar": "tar", "s.tar.gz": "tar", "p.parquet": "parquet"}
    with pytest.raises(FileKindError, match=r"is an ONNX model, not an image: the model comes first.*SOURCE takes"):
        open_source(str(sample_onnx))
    with pytest.raises(UsageError, match="does not exist"):
        open_source(str(tmp_path / "nope"))
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)  # no kind vitexport knows: the decoder judges it
    (item,) = open_source(str(tmp_path / "blob.bin")).items()
    with pytest.raises(InputError, match="not a format vitexport reads"):
        item.load()
    with pytest.raises(UsageError, match="no SOURCE"):
        open_sources([])


def test_shards_cut_files_in_order_and_number_across_sources(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i}.png").write_bytes(png(seed=i))
    write_tar(folder / "t.tar", [("a.png", png())])
    write_parquet(tmp_path / "p.parquet", pa.array([png(seed=i) for i in range(5)], pa.binary()))
    sources = open_sources([str(folder), str(tmp_path / "p.parquet")])
    shards = list(all_shards(sources, 3))
    assert [s.index for s in shards] == list(range(len(shards)))
    files = [s for s in shards if s.kind == "files"]
    assert [len(s.paths) for s in files] == [3, 3, 1]
    assert [p for s in files for p in s.paths] == [str(folder / f"{i}.png") for i in range(7)]
    assert [(s.start, s.stop) for s in shards if s.kind == "parquet"] == [(0, 3), (3, 5)]
    assert [s.kind for s in shards].count("tar") == 1
    assert key_columns(sources) == ("path", "member", "row")  # a tar inside the folder: member; Parquet: row
    # identities: stable when nothing changed; another file changes its shard's; a rewritten container its own
    again = list(all_shards(open_sources([str(folder), str(tmp_path / "p.parquet")]), 3))
    assert [s.identity for s in again] == [s.identity for s in shards]
    (folder / "3b.png").write_bytes(png())  # sorts between 3.png and 4.png: shards 1 and 2 change, 0 does not
    write_parquet(tmp_path / "p.parquet", pa.array([png(seed=i + 1) for i in range(5)], pa.binary()))
    os.utime(tmp_path / "p.parquet", ns=(1, 1))
    moved = list(all_shards(open_sources([str(folder), str(tmp_path / "p.parquet")]), 3))
    assert moved[0].identity == shards[0].identity
    assert moved[1].identity != shards[1].identity
    assert {s.identity for s in moved if s.kind == "parquet"}.isdisjoint({s.identity for s in shards})


def test_tar_members_stream_in_order_images_only_with_bounds(tmp_path: Path) -> None:
    members = [("s1.png", png(seed=1)), ("s1.cls", b"3"), ("dir/s2.jpg", png(seed=2)), ("s3.png", png(seed=3))]
    items = list(tar_items(str(write_tar(tmp_path / "a.tar", members)), max_image_bytes=10_000))
    assert [(i.member, i.data) for i in items] == [(n, d) for n, d in members if n != "s1.cls"]
    small = list(tar_items(str(tmp_path / "a.tar"), max_image_bytes=10))
    assert all(i.data is None and "over the limit of 10 bytes" in i.problem for i in small)
    # a tar cut off in the middle of a member: the members before it, then one item saying so
    whole = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[:1536])  # header 512 + data of s1 + .cls header: then s2 is cut
    cut = list(tar_items(str(tmp_path / "cut.tar")))
    assert cut[0].member == "s1.png" and cut[0].data == members[0][1]
    assert cut[-1].member is None and "truncated or corrupt after" in cut[-1].problem
    gz = list(tar_items(str(write_tar(tmp_path / "b.tar.gz", members, mode="w:gz"))))
    assert [i.data for i in gz] == [i.data for i in items]


def test_parquet_rows_ranges_struct_columns_nulls_and_bad_columns(tmp_path: Path) -> None:
    images = [png(seed=i) for i in range(10)]
    path = write_parquet(tmp_path / "b.parquet", pa.array(images[:4] + [None] + images[5:], pa.binary()),
                         row_group_size=3)
    got = list(parquet_items(str(path), "image", 2, 7))
    assert [i.row for i in got] == [2, 3, 4, 5, 6]  # crossing row groups, only the rows asked for
    assert [i.data for i in got] == [images[2], images[3], None, images[5], images[6]]
    assert "empty (null)" in got[2].problem
    hf = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)],
                  pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    struct_path = write_parquet(tmp_path / "hf.parquet", hf)
    assert [i.data for i in parquet_items(str(struct_path), "image", 0, 10)] == images
    with pytest.raises(UsageError, match=r"no column 'img' \(its columns: id, image\)"):
        open_source(str(path), image_column="img")
    write_parquet(tmp_path / "s.parquet", pa.array(["a.png"]), name="image")
    with pytest.raises(UsageError, match=r"holds string, not encoded image bytes \(paths: list them"):
        open_source(str(tmp_path / "s.parquet"))


def test_unreadable_parquet_is_an_error_row_in_a_folder_and_an_error_alone(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "bad.parquet").write_bytes(b"PAR1" + b"\0" * 64)
    shards = list(all_shards(open_sources([str(folder)]), 10))
    [item] = list(shards[0].items())
    assert shards[0].kind == "broken" and "cannot read Parquet file" in item.problem
    with pytest.raises(InputError, match="cannot read Parquet file"):
        open_source(str(folder / "bad.parquet"))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_decode_image_gives_the_same_pixels_from_a_file_and_from_bytes(tmp_path: Path, mode: str) -> None:
    data = png(9, 4, seed=5, mode=mode)
    (tmp_path / "x.png").write_bytes(data)
    a, b = decode_image(str(tmp_path / "x.png")), decode_image(data)
    assert a.size == b.size == (4, 9) and np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(Item(str(tmp_path / "x.png")).load()), np.asarray(a))


def test_decode_image_refuses_from_the_header_before_decoding() -> None:
    """A PNG whose header says 12000x12000 (144 M pixels: between Pillow's warning and error limits) and whose
    data is a few bytes: the check sees the header's size and refuses it; nothing is decoded (which would fail)."""
    import zlib

    h = w = 12000

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = h.to_bytes(4, "big") + w.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")
    seen = []

    def check(height: int, width: int) -> None:
        seen.append((height, width))
        raise InputError(f"{height}x{width} is too big")

    with pytest.raises(InputError, match="12000x12000 is too big"):
        decode_image(bomb, check)
    assert seen == [(12000, 12000)]
    with pytest.raises(InputError, match="decompression-bomb limit"):
        decode_image(bomb)  # over Pillow's limit even without a check, refused before decoding
    with pytest.raises(InputError, match="truncated or corrupt"):
        decode_image(png(40, 40)[:-30])
    with pytest.raises(InputError, match="not a PNG, JPEG"):
        decode_image(b"plain text, not an image")
    assert Item("k", problem="gone").key == ("k", None, None)
    with pytest.raises(InputError, match="gone"):
        Item("k", problem="gone").load()
