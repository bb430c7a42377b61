"""Whole-process time of the commands a deploying user types first, and where the time goes.

Each command runs as its own process (``python -c "from vitexport.cli import main; main()" ...``, what
the ``vitexport`` console script does, or ``--exe`` for an installed script), ``--runs`` times,
interleaved round-robin so every command sees the same machine state; best and median wall time.
A bare ``python -c pass`` is timed in the same rounds as the floor. Then ``python -X importtime``
lists the slowest imports of each command, and ``predict`` is split into import / session /
inference phases in one process.

    python -m benchmarks.startup_bench            # 15 runs each (about a minute)
    python -m benchmarks.startup_bench --quick    # 3 runs each, smoke test
    python -m benchmarks.startup_bench --exe /tmp/serve-venv/bin/vitexport   # an installed console script
    python -m benchmarks.startup_bench --baseline b4b3603^   # also the package at a git revision, interleaved

``--baseline REV`` unpacks ``vitexport/`` at that revision (``git archive``) and times its ``--help`` and
``info`` in the same rounds (same interpreter, same installed packages, PYTHONPATH set to each tree), then
prints this checkout's time over the baseline's: "at least as fast as before" measured in one run.

Targets (issue 13): ``--help`` under 0.15 s, ``info model.onnx`` under 0.5 s; predict dominated by the session.
Without ``--model`` the digits sample is exported first (needs the export extra).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "samples" / "images" / "digit-4-28px.png"
PHASES = """
import time
t0 = time.perf_counter()
import onnxruntime
from PIL import Image
from vitexport.serving.predictor import Predictor
t1 = time.perf_counter()
p = Predictor({model!r}, provider={provider!r})
t2 = time.perf_counter()
p.predict(Image.open({image!r}))
t3 = time.perf_counter()
print(f"{{(t1 - t0) * 1e3:.1f}} {{(t2 - t1) * 1e3:.1f}} {{(t3 - t2) * 1e3:.1f}}")
"""


def _env(root: Path = ROOT) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def _cli(exe: str | None) -> list[str]:
    return [exe] if exe else [sys.executable, "-c", "from vitexport.cli import main; main()"]


def _time(cmd: list[str], root: Path = ROOT) -> float:
    start = time.perf_counter()
    # run in ``root``: `python -c` puts the current folder first on sys.path, before PYTHONPATH
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=_env(root), cwd=root)
    return time.perf_counter() - start


def _baseline(rev: str, folder: Path) -> Path:
    """The ``vitexport`` package at git revision ``rev``, unpacked under ``folder`` (returned: its parent)."""
    out = folder / "baseline"
    out.mkdir()
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "vitexport"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(out, filter="data")
    return out


def _export_sample(folder: Path) -> Path:
    out = folder / "digits-vit.onnx"
    subprocess.run([*_cli(None), "onnx", str(ROOT / "samples" / "digits-vit.pt"), "-o", str(out)], check=True,
                   stdout=subprocess.DEVNULL, env=_env())
    return out


def _commands(model: Path, exe: str | None) -> dict[str, list[str]]:
    cli = _cli(exe)
    return {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "vitexport --help": [*cli, "--help"],
        "vitexport info model.onnx": [*cli, "info", str(model)],
        "vitexport predict (cpu)": [*cli, "predict", str(model), str(IMAGE), "--provider", "cpu"],
        "vitexport predict (auto)": [*cli, "predict", str(model), str(IMAGE)],
    }


def _table(commands: dict[str, list[str]], runs: int, baseline: tuple[str, Path] | None = None) -> None:
    """Every command (and, with ``baseline``, --help and info of that tree too) once a round, ``runs`` rounds."""
    jobs = {name: (cmd, ROOT) for name, cmd in commands.items()}
    if baseline is not None:
        for name in ("vitexport --help", "vitexport info model.onnx"):
            jobs[f"{name} @ {baseline[0]}"] = (commands[name], baseline[1])
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(runs):
        for name, (cmd, root) in jobs.items():
            times[name].append(_time(cmd, root))
    width = max(32, *(len(n) for n in jobs))
    print(f"{'command':{width}s} {'best s':>8s} {'median s':>9s}   ({runs} interleaved runs each)")
    for name, values in times.items():
        print(f"{name:{width}s} {min(values):8.3f} {statistics.median(values):9.3f}")
    if baseline is not None:
        for name in ("vitexport --help", "vitexport info model.onnx"):
            now, then = times[name], times[f"{name} @ {baseline[0]}"]
            print(f"{name}: this checkout / {baseline[0]} = {min(now) / min(then):.2f} (best), "
                  f"{statistics.median(now) / statistics.median(then):.2f} (median)")


def _importtime(commands: dict[str, list[str]], top: int) -> None:
    for name in ("vitexport --help", "vitexport info model.onnx", "vitexport predict (cpu)"):
        cmd = commands[name]
        if cmd[0] != sys.executable:
            continue  # an installed console script: its interpreter is not ours to flag
        result = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], capture_output=True, text=True,
                                env=_env())
        rows = []
        for line in result.stderr.splitlines():
            if line.startswith("import time:") and "|" in line and "cumulative" not in line:
                _, cumulative, module = (part.strip() for part in line.split(":", 1)[1].split("|"))
                rows.append((int(cumulative), module))
        rows.sort(reverse=True)
        print(f"\n-X importtime, {name}: slowest imports (cumulative ms, nested ones included)")
        for us, module in rows[:top]:
            print(f"  {us / 1e3:8.1f}  {module}")


def _phases(model: Path, runs: int) -> None:
    print("\npredict in one process, ms (median of runs): import | Predictor (session) | one prediction")
    for provider in ("cpu", "auto"):
        code = PHASES.format(model=str(model), provider=provider, image=str(IMAGE))
        rows = []
        for _ in range(runs):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
            rows.append([float(v) for v in out.stdout.split()])
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"  provider {provider:5s} {med[0]:8.1f} {med[1]:8.1f} {med[2]:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported .onnx (default: export the digits sample)")
    parser.add_argument("--exe", help="an installed vitexport console script to time instead of this checkout")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--top", type=int, default=8, help="imports listed per command")
    parser.add_argument("--quick", action="store_true", help="3 runs, 4 imports: a smoke test")
    parser.add_argument("--baseline", metavar="REV", help="also time --help and info of the package at this git "
                                                          "revision, interleaved, and print the ratios")
    args = parser.parse_args()
    runs, top = (3, 4) if args.quick else (args.runs, args.top)
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or _export_sample(Path(folder))
        commands = _commands(model, args.exe)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; model {model.name}")
        baseline = (args.baseline, _baseline(args.baseline, Path(folder))) if args.baseline else None
        _table(commands, runs, baseline)
        _importtime(commands, top)
        _phases(model, runs)


if __name__ == "__main__":
    main()
