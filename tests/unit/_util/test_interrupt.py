"""Stopping signals (vitexport._util.interrupt): they never unwind through native frames, remove every staging and
scratch folder, and never leave half of a multi-file output. Each case runs in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.limited import ROOT

PRELUDE = """
import ctypes, os, signal, sys
from pathlib import Path
from vitexport._util.files import staged_output
from vitexport._util.interrupt import scratch_folder, signals_as_exit
out = Path(sys.argv[1])
"""


def _child(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    (tmp_path / "out").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(script), str(tmp_path / "out" / "m.onnx")], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_signal_inside_a_native_callback_stops_the_command(tmp_path: Path, signum: int) -> None:
    """The signal lands while Python runs inside a C callback (libc qsort calling a Python comparator), as it does
    inside pybind11 module imports and torch callbacks. An exception raised there cannot unwind: ctypes swallows it
    (and C++ aborts or crashes), so the old raise-in-handler design went on and wrote the output."""
    result = _child(tmp_path, f"""
        with signals_as_exit(), staged_output(out) as stage, scratch_folder("scratch-", out.parent) as scratch:
            stage.file.write_text("model")
            (scratch / "part").write_text("part")
            CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))

            def compare(a, b):
                os.kill(os.getpid(), {int(signum)})
                for _ in range(1000):  # the handler runs at one of these bytecodes, inside the callback
                    pass
                return a[0] - b[0]

            values = (ctypes.c_int * 2)(2, 1)
            ctypes.CDLL(None).qsort(values, 2, ctypes.sizeof(ctypes.c_int), CMP(compare))
            print("went on after the signal")
            stage.commit()
    """)
    assert result.returncode == 128 + signum, (result.returncode, result.stderr)
    assert "went on" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"Error: stopped by {signal.Signals(signum).name}; nothing was written or replaced"]
    assert list((tmp_path / "out").iterdir()) == []


def test_signal_during_a_commit_waits_for_the_last_rename(tmp_path: Path) -> None:
    """SIGTERM between the data file's rename and the model's: the model is moved too, never left half."""
    result = _child(tmp_path, """
        real_replace = os.replace

        def replace(src, dst):
            real_replace(src, dst)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass

        os.replace = replace
        with signals_as_exit(), staged_output(out) as stage:
            stage.file.write_text("model")
            (stage.folder / "m.onnx.data").write_text("weights")
            stage.commit()
            print("went on after the commit")
    """)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "went on" not in result.stdout
    assert result.stderr.strip() == "Error: stopped by SIGTERM; the output in progress was completed first"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.onnx", "m.onnx.data"]


def test_handlers_come_back_and_nothing_is_registered_after_the_block(tmp_path: Path) -> None:
    result = _child(tmp_path, """
        from vitexport._util import interrupt
        before = {s: signal.getsignal(s) for s in interrupt.HANDLED}
        with signals_as_exit(), staged_output(out) as stage:
            stage.file.write_text("model")
            stage.commit()
            assert interrupt._REMOVE, "the staging folder is registered while it exists"
        assert {s: signal.getsignal(s) for s in interrupt.HANDLED} == before
        assert not interrupt._REMOVE
        os.kill(os.getpid(), signal.SIGTERM)  # default disposition again: killed by the signal
        print("not reached")
    """)
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m.onnx"]


def test_signal_while_the_staging_folder_is_made_removes_it(tmp_path: Path) -> None:
    """SIGTERM right after mkdtemp, before the folder is registered: held, then the folder is removed, and the line
    says nothing was written (what a test polling for the folder's appearance hits)."""
    result = _child(tmp_path, """
        import tempfile
        real_mkdtemp = tempfile.mkdtemp

        def mkdtemp(*args, **kwargs):
            folder = real_mkdtemp(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            return folder

        tempfile.mkdtemp = mkdtemp
        with signals_as_exit(), staged_output(out) as stage:
            print("went on after the signal")
    """)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "went on" not in result.stdout
    assert result.stderr.strip() == "Error: stopped by SIGTERM; nothing was written or replaced"
    assert list((tmp_path / "out").iterdir()) == []
