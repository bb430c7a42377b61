"""Helpers for the `vitexport batch` tests: held-out digit folders with bad files, `predict --json` on the same
files, the rows of an output folder, the batch actors of a Ray cluster (`vitexport.serving.batch.cluster`)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from PIL import Image

from samples.digits_data import held_out
from tests.helpers.serving import VITEXPORT, ProcessTree, env

BAD_FILES = {"bad/text.png": b"this is not a PNG", "bad/empty.jpg": b"", "bad/cut.png": None}


def digit_folder(folder: Path, counts: dict[int, int]) -> list[str]:
    """Held-out digits rendered at each size (``{size: how many}``), as PNG files in a folder per size, and a
    ``bad/`` folder of files that are not images; returns the good paths in the batch walk's order."""
    paths = []
    for size, count in sorted(counts.items()):
        images, _ = held_out(size)
        sub = folder / f"{size:03d}px"
        sub.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images[:count]):
            path = sub / f"{i:04d}.png"
            Image.fromarray(img, mode="L").save(path)
            paths.append(str(path))
    (folder / "bad").mkdir(exist_ok=True)
    for name, data in BAD_FILES.items():
        (folder / name).write_bytes(data if data is not None else Path(paths[0]).read_bytes()[:60])  # header, no pixels
    (folder / "README.txt").write_text("not an image: ignored by a folder walk")
    return paths


def predict_json(model: Path, paths: list[str], top_k: int = 5) -> list[dict]:
    """`vitexport predict --json` on ``paths`` (one process)."""
    out = subprocess.run([*VITEXPORT, "predict", str(model), *paths, "--json", "--top-k", str(top_k), "--provider",
                          "cpu"], env=env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def rows(output: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(output).to_pylist()


def assert_rows_equal_predict(got: list[dict], want: list[dict]) -> None:
    """Row for row: the same path, size, top-k indices and labels; scores equal to float32 rounding."""
    assert [r["path"] for r in got] == [w["path"] for w in want]
    for r, w in zip(got, want, strict=True):
        assert r["error"] is None and [r["height"], r["width"]] == w["size"], r
        assert [(t["index"], t["label"]) for t in r["top_k"]] == [(t["index"], t["label"]) for t in w["top_k"]], r
        assert max(abs(a["score"] - b["score"]) for a, b in zip(r["top_k"], w["top_k"], strict=True)) < 1e-5, r


def batch(*args: str, timeout: float = 600, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`vitexport batch ARGS` in a child process."""
    return subprocess.run([*VITEXPORT, "batch", *args], env={**env(), **(extra_env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def actor_pids(trees: list[ProcessTree]) -> dict[int, int]:
    """{pid: index of the tree} of the living batch actors (Ray titles them ``ray::MapWorker(...ShardActor...)``)."""
    found = {}
    for n, tree in enumerate(trees):
        for pid in tree.snapshot():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::MapWorker") and b"ShardActor" in title:
                found[pid] = n
    return found


def wait_for(predicate, timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def parts(output: Path) -> list[str]:
    return sorted(p.name for p in output.glob("part-*.parquet")) if output.is_dir() else []


def staging(output: Path) -> list[str]:
    return sorted(p.name for p in output.iterdir() if p.name.startswith(".part-")) if output.is_dir() else []


__all__ = ["BAD_FILES", "actor_pids", "assert_rows_equal_predict", "batch", "digit_folder", "parts",
           "predict_json", "rows", "staging", "wait_for"]
