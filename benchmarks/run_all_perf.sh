#!/usr/bin/env bash
# Every CPU performance benchmark of issue 14, one after the other, into one results folder:
#   benchmarks/run_all_perf.sh [--quick] [OUT_DIR]      (default OUT_DIR: benchmarks/results)
# Run it on a quiet machine (load average below ~1.3 on 2 cores; each script records the load before and
# after). Budget on the project's 2-core machine: about 15 minutes in all; --quick is a smoke test (~4 min).
# Results: perf.{json,md} (table + README rows, peak), ort_tuning.{json,md}, int8.{json,md},
# scaling.{json,md,png}, profile.{json,md}, and run_all.log with each step's wall time.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
QUICK=""
if [[ "${1:-}" == "--quick" ]]; then QUICK="--quick"; shift; fi
OUT="$(realpath -m "${1:-$HERE/results}")"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export PYTHONPATH="$(dirname "$HERE")${PYTHONPATH:+:$PYTHONPATH}"
cd "$(dirname "$HERE")"  # the repository root: benchmarks run as modules
: > "$OUT/run_all.log"
step() {
  local name="$1"; shift
  local t0=$SECONDS
  echo "== $name (load: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/run_all.log"
  "$PY" "$@" $QUICK --out-dir "$OUT" 2>&1 | tee -a "$OUT/run_all.log"
  echo "== $name took $((SECONDS - t0)) s" | tee -a "$OUT/run_all.log"
}
step perf -m benchmarks.perf
step ort_tuning -m benchmarks.ort_tuning
step int8 -m benchmarks.int8_bench
step scaling -m benchmarks.scaling
step profile -m benchmarks.profile_ops
echo "all done in $SECONDS s; results in $OUT" | tee -a "$OUT/run_all.log"
