"""Run CLI commands on hostile inputs in a child process with a memory limit and a timeout.

A regression on these inputs crashes (SIGSEGV), hangs or eats memory: in-process it would take
the test run (or the machine) with it. Here every batch of commands runs in one fresh
interpreter under ``RLIMIT_DATA`` (heap and anonymous memory; torch's CUDA libraries map more
address space than a 3 GB ``RLIMIT_AS`` would allow just to import it) and a timeout, so a
regression fails the test with what happened.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEMORY_BYTES = 3 * 1024**3

_DRIVER = r"""
import json, sys
from click.testing import CliRunner
from vitexport.cli import cli
results = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(cli, args)
    results.append({"code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr})
print("\n@@RESULTS@@" + json.dumps(results))
"""


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def one_line_error(self, code: int, *fragments: str) -> None:
        """Exit ``code``, exactly one line on stderr starting with ``Error:``, no traceback, the fragments in it."""
        assert self.code == code, (self.code, self.stderr, self.stdout[-500:])
        assert self.stderr.startswith("Error: ") and self.stderr.count("\n") == 1, self.stderr
        assert "Traceback" not in self.stderr + self.stdout
        for fragment in fragments:
            assert fragment in self.stderr, (fragment, self.stderr)


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_cli(*cases: list[str], timeout: float = 180, cwd: Path | None = None) -> list[Outcome]:
    """Each case's outcome, the cases run one after the other in one limited child interpreter."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([list(map(str, c)) for c in cases])],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=_limit, env=env, cwd=cwd)
    assert proc.returncode == 0 and "@@RESULTS@@" in proc.stdout, (proc.returncode, proc.stderr[-3000:])
    return [Outcome(**r) for r in json.loads(proc.stdout.split("@@RESULTS@@")[-1])]


_MEASURED = r"""
import json, sys, time
from click.testing import CliRunner
from vitexport.cli import cli
start = time.perf_counter()
r = CliRunner().invoke(cli, json.loads(sys.argv[1]))
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("\n@@RESULTS@@" + json.dumps({"code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                                   "peak_bytes": peak, "seconds": seconds}))
"""


def run_cli_measured(args: list[str], timeout: float = 180) -> tuple[Outcome, int, float]:
    """One command in a fresh limited child: its outcome, the child's peak RSS in bytes (VmHWM: interpreter and
    imports included; Linux) and the command's wall time in seconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _MEASURED, json.dumps(list(map(str, args)))], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=_limit, env=env)
    assert proc.returncode == 0 and "@@RESULTS@@" in proc.stdout, (proc.returncode, proc.stderr[-3000:])
    found = json.loads(proc.stdout.split("@@RESULTS@@")[-1])
    peak, seconds = found.pop("peak_bytes"), found.pop("seconds")
    return Outcome(**found), peak, seconds


__all__ = ["MEMORY_BYTES", "Outcome", "run_cli", "run_cli_measured"]
