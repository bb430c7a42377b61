#!/usr/bin/env bash
# The CUDA check in one command, from the repository root (docs/gpu-runbook.md):
#
#   bash scripts/gpu_check.sh OUTDIR [gpu_check.py options: --parts DIR --limit-s S --only STEPS --dry-run ...]
#
# scripts/gpu_check.py does the work and bounds itself (--limit-s, default 300 s); this wrapper adds a
# hard stop 45 s later in case something hangs past its own timeouts. PYTHON picks the interpreter
# (default python3: on the GPU machine, the one that holds torch). Exit: 0 all steps ok, 1 some failed.
set -u
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR [options]}
shift
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
LIMIT=300
prev=""
for arg in "$@"; do  # the hard stop follows --limit-s
    case $arg in --limit-s=*) LIMIT=${arg#*=} ;; esac
    [ "$prev" = "--limit-s" ] && LIMIT=$arg
    prev=$arg
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: the check runs from the repository root (python -m scripts.gpu_check)
cd "$ROOT" || exit 2
export PYTHONUNBUFFERED=1
timeout -k 10 "$(( ${LIMIT%.*} + 45 ))" "$PY" -m scripts.gpu_check "$OUT" "$@"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    printf '\n**gpu_check.py was stopped by the hard limit (%s s); the tables above are what it had.**\n' \
        "$(( ${LIMIT%.*} + 45 ))" >> "$OUT/summary.md"
fi
exit "$rc"
