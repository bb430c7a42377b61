"""The output folder of a batch job: Parquet shards committed whole, a job file, a lock; what resuming skips.

Layout: ``part-00000.parquet``, ``part-00001.parquet``, ... (one a shard, numbered in the job's order),
``_job.json`` (what the job computes: the model's SHA-256, the sources, the options that change rows) and
``.vitexport-batch.lock`` (held while a run writes, so two runs never share a folder).

- A shard is written to a staging folder beside it and renamed into place (`vitexport._util.files`): a stopped
  run (Ctrl-C, SIGTERM, a killed worker) leaves whole shards or none; staging folders a killed process left
  are removed by the next run.
- Each shard's Parquet footer carries the job's fingerprint, the shard's identity (its files, or its
  container's size and time and row range) and its row and error counts. Resuming skips a shard whose file
  is there with both unchanged, and runs the others again.
- A folder holding another job's output is refused unless ``force``, which removes that job's files (only
  files of this layout: nothing else is ever deleted). A folder with other files in it is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitexport._util.errors import OutputError, OutputExistsError, OutputPathError, one_line
from vitexport._util.files import atomic_file, write_text
from vitexport.serving.batch.sources import Shard

logger = logging.getLogger(__name__)

PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
STAGING_RE = re.compile(r"^\.part-\d{5,}\.parquet\..+\.tmp$")
JOB_FILE = "_job.json"
LOCK_FILE = ".vitexport-batch.lock"
META_KEY = b"vitexport.batch"
FORMAT = 1


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def job_fingerprint(job: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ShardInfo:
    """What a committed shard holds."""

    index: int
    rows: int
    failed: int


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("model_sha256") != new.get("model_sha256"):
        return "another model"
    if old.get("sources") != new.get("sources"):
        return "other sources"
    changed = [k for k in sorted(set(old.get("options", {})) | set(new.get("options", {})))
               if old.get("options", {}).get(k) != new.get("options", {}).get(k)]
    return f"other options ({', '.join(changed)})" if changed else "another version of this job's format"


class OutputFolder:
    """The folder a job writes; `open` before use, `close` after (releases the lock)."""

    def __init__(self, folder: str | os.PathLike[str], job: dict[str, Any], force: bool = False) -> None:
        self.folder = Path(folder)
        self.job = {"format": FORMAT, **job}
        self.fingerprint = job_fingerprint(self.job)
        self.force = force
        self._lock: int | None = None

    # -- opening ------------------------------------------------------------------------------------
    def open(self) -> OutputFolder:
        """Check and create the folder, take the lock, refuse or clear another job's output, write the job file."""
        self._check_path()
        self.folder.mkdir(exist_ok=True)
        self._take_lock()
        try:
            self._adopt()
        except BaseException:
            self.close()
            raise
        return self

    def _check_path(self) -> None:
        where = str(self.folder)
        try:
            info = os.lstat(self.folder)
        except FileNotFoundError:
            if not self.folder.parent.is_dir():
                raise OutputPathError(f"the folder above {where!r} does not exist; create it first") from None
            return
        if stat.S_ISLNK(info.st_mode):
            raise OutputExistsError(f"output {where!r} is a symbolic link; pass a folder path with -o")
        if not stat.S_ISDIR(info.st_mode):
            raise OutputExistsError(f"output {where!r} is a file; -o takes a folder (new, empty, or this job's)")

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        try:
            fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"cannot write to {str(self.folder)!r} ({exc.strerror}); choose a writable folder"
                              ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputExistsError(f"another `vitexport batch` is writing to {str(self.folder)!r}; wait for it "
                                    "to finish or choose another -o") from None
        self._lock = fd

    def _adopt(self) -> None:
        """Make the folder this job's: refuse what is not ours, clear another job's output with ``force``."""
        ours, foreign = [], []
        for entry in self.folder.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if STAGING_RE.match(entry.name) and entry.is_dir():  # left by a killed run: we hold the lock
                shutil.rmtree(entry, ignore_errors=True)
            elif PART_RE.match(entry.name) or entry.name == JOB_FILE:
                ours.append(entry)
            else:
                foreign.append(entry.name)
        if foreign:
            shown = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
            raise OutputExistsError(f"output folder {str(self.folder)!r} holds other files ({shown}); choose a new "
                                    "or empty folder")
        previous = self._read_job()
        same = previous is not None and previous.get("fingerprint") == self.fingerprint
        if previous is not None and not same and not self.force:
            raise OutputExistsError(f"output folder {str(self.folder)!r} holds the results of "
                                    f"{_difference(previous, self.job)}; pass --force to start over there, or "
                                    "choose another -o")
        if self.force:  # start over: this layout's files go, nothing else
            logger.info("removing %d files of a previous run from %s", len(ours), self.folder)
            for entry in ours:
                entry.unlink()
        if self.force or not same:
            write_text(self.folder / JOB_FILE, json.dumps({"fingerprint": self.fingerprint, **self.job}, indent=1),
                       force=True)

    def _read_job(self) -> dict[str, Any] | None:
        from vitexport._util.safejson import parse_json

        path = self.folder / JOB_FILE
        if not path.is_file():
            return None
        try:
            job = parse_json(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot read {str(path)!r} ({one_line(exc, 120)}); pass --force to start over") \
                from None
        return job if isinstance(job, dict) else {}

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None

    def __enter__(self) -> OutputFolder:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shards ---------------------------------------------------------------------------------------
    def done(self, shard: Shard) -> ShardInfo | None:
        """The committed shard's counts when its file is this job's and the shard's inputs are unchanged."""
        import pyarrow.parquet as pq

        path = self.folder / part_name(shard.index)
        if not path.is_file():
            return None
        try:
            meta = json.loads((pq.read_schema(path).metadata or {}).get(META_KEY, b"{}"))
        except (OSError, ValueError):
            return None  # unreadable: run it again, the new file replaces it
        if meta.get("job") != self.fingerprint or meta.get("identity") != shard.identity:
            return None
        return ShardInfo(shard.index, int(meta.get("rows", 0)), int(meta.get("failed", 0)))

    def commit(self, shard: Shard, table: Any) -> ShardInfo:
        """Write the shard's table atomically (the footer says whose it is); its counts."""
        import pyarrow.parquet as pq

        failed = table.num_rows - table.column("error").null_count
        info = ShardInfo(shard.index, table.num_rows, failed)
        meta = {"job": self.fingerprint, "identity": shard.identity, "shard": shard.index, "rows": info.rows,
                "failed": failed, "source": shard.describe()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta)})
        with atomic_file(self.folder / part_name(shard.index), force=True) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return info

    def remove_parts_from(self, count: int) -> list[str]:
        """Remove shards numbered ``count`` and up (the sources now have fewer); their names."""
        removed = []
        for entry in sorted(self.folder.iterdir()):
            m = PART_RE.match(entry.name)
            if m and int(m.group(1)) >= count:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                removed.append(entry.name)
        return removed


__all__ = ["JOB_FILE", "LOCK_FILE", "OutputFolder", "ShardInfo", "file_sha256", "job_fingerprint", "part_name"]
