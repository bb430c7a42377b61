#!/usr/bin/env bash
# Bring the onnxruntime-gpu wheel to a machine that can only receive ~60 MiB per transfer.
#
#   scripts/split_wheel.sh prepare              download the pinned cp312 wheel into .whl/ and split it
#                                               into .whl/parts/ (parts of at most PART_MIB MiB + a sha256 file)
#   scripts/split_wheel.sh download             only download it
#   scripts/split_wheel.sh split FILE OUTDIR [PART_BYTES]
#                                               split any file; writes OUTDIR/NAME.part-000... and OUTDIR/NAME.sha256
#   scripts/split_wheel.sh join PARTDIR OUTDIR  check every part, join them into OUTDIR/NAME, check the whole
#   scripts/split_wheel.sh stash DEST           (GPU machine) move the carried .whl/parts/* to DEST, check them
#   scripts/split_wheel.sh rehearse [PYTHON]    split, join, compare, pip install --target the joined wheel
#   scripts/split_wheel.sh plan [TIMEOUT_S]     print the GPU visit's `run` calls (command, carry) for .whl/parts/,
#                                               after checking that each call stays under the 64 MiB transfer limit
#
# Exit status: 0 ok, 1 a checksum mismatch or a missing/extra part, 2 usage or environment.
# The sha256 file is plain `sha256sum` output: one line for the whole file, one per part.
set -u -o pipefail

ORT_GPU_VERSION=1.31.1          # the one pin: CUDA 13 build (libcublas.so.13, libcudart.so.13, libcurand.so.10)
WHEEL=onnxruntime_gpu-${ORT_GPU_VERSION}-cp312-cp312-manylinux_2_28_x86_64.whl
WHEEL_SHA256=05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7  # PyPI's file, checked after download
PART_MIB=${PART_MIB:-55}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHL_DIR=${WHL_DIR:-$ROOT/.whl}  # git-ignored
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)

die() { echo "split_wheel: $2" >&2; exit "$1"; }

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

download() {
    mkdir -p "$WHL_DIR"
    if [ -f "$WHL_DIR/$WHEEL" ]; then
        echo "have $WHL_DIR/$WHEEL"
    else
        "${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${PLATFORMS[@]}" -d "$WHL_DIR" "onnxruntime-gpu==$ORT_GPU_VERSION" \
            || die 2 "pip download of onnxruntime-gpu==$ORT_GPU_VERSION failed"
        [ -f "$WHL_DIR/$WHEEL" ] || die 2 "pip saved something other than $WHEEL in $WHL_DIR"
    fi
    [ "$(hash_of "$WHL_DIR/$WHEEL")" = "$WHEEL_SHA256" ] || die 1 "$WHL_DIR/$WHEEL is not the pinned file (sha256); delete it"
}

split_file() {  # FILE OUTDIR [PART_BYTES]
    local file=$1 out=$2 bytes=${3:-$((PART_MIB * 1024 * 1024))}
    [ -f "$file" ] || die 2 "no such file: $file"
    [ "$bytes" -gt 0 ] 2>/dev/null || die 2 "part size must be a positive number of bytes, got '$bytes'"
    local name
    name=$(basename "$file")
    mkdir -p "$out"
    rm -f "$out/$name".part-* "$out/$name.sha256"
    split -b "$bytes" -d -a 3 "$file" "$out/$name.part-" || die 2 "split failed"
    {
        echo "$(hash_of "$file")  $name"
        for part in "$out/$name".part-*; do echo "$(hash_of "$part")  $(basename "$part")"; done
    } > "$out/$name.sha256.tmp" && mv "$out/$name.sha256.tmp" "$out/$name.sha256"
    local n
    n=$(($(wc -l < "$out/$name.sha256") - 1))
    echo "split $name ($(stat -c %s "$file") bytes) into $n parts of at most $bytes bytes in $out"
}

manifest_in() {  # PARTDIR -> the one *.sha256 file there
    local found=("$1"/*.sha256)
    [ -f "${found[0]}" ] || die 2 "no .sha256 file in $1 (carry it with the parts)"
    [ "${#found[@]}" -eq 1 ] || die 2 "several .sha256 files in $1: ${found[*]}"
    echo "${found[0]}"
}

check_parts() {  # PARTDIR MANIFEST [--present-only]: every listed part exists (unless --present-only) and matches
    local dir=$1 manifest=$2 present_only=${3:-} bad=0 name want part
    name=$(head -n1 "$manifest" | awk '{print $2}')
    while read -r want part; do
        [ "$part" = "$name" ] && continue
        if [ ! -f "$dir/$part" ]; then
            [ -n "$present_only" ] && { echo "  waiting $part"; continue; }
            echo "missing part: $part" >&2; bad=1; continue
        fi
        if [ "$(hash_of "$dir/$part")" != "$want" ]; then echo "corrupted part: $part (sha256 differs)" >&2; bad=1
        else echo "  ok      $part ($(stat -c %s "$dir/$part") bytes)"; fi
    done < "$manifest"
    for part in "$dir/$name".part-*; do
        [ -f "$part" ] || continue
        grep -q "  $(basename "$part")\$" "$manifest" || { echo "unexpected part: $(basename "$part")" >&2; bad=1; }
    done
    return $bad
}

join_parts() {  # PARTDIR OUTDIR
    local dir=$1 out=$2 manifest name want
    manifest=$(manifest_in "$dir") || exit 2
    name=$(head -n1 "$manifest" | awk '{print $2}')
    want=$(head -n1 "$manifest" | awk '{print $1}')
    if [ "$name" = "$WHEEL" ] && [ "$want" != "$WHEEL_SHA256" ]; then
        die 1 "$(basename "$manifest") names another sha256 for $WHEEL than the pinned one; split it again"
    fi
    check_parts "$dir" "$manifest" || die 1 "parts in $dir do not match $(basename "$manifest"); nothing joined"
    mkdir -p "$out"
    # shellcheck disable=SC2046  # part names carry no spaces; the manifest fixes their order
    cat $(awk -v n="$name" -v d="$dir" '$2 != n {print d "/" $2}' "$manifest") > "$out/$name.tmp" \
        || die 2 "could not write $out/$name.tmp"
    if [ "$(hash_of "$out/$name.tmp")" != "$want" ]; then
        rm -f "$out/$name.tmp"; die 1 "joined file's sha256 differs from $(basename "$manifest"); nothing written"
    fi
    mv "$out/$name.tmp" "$out/$name"
    echo "joined $out/$name ($(stat -c %s "$out/$name") bytes), sha256 $want ok"
}

stash() {  # DEST: on the GPU machine, move the carried parts out of the repository (they do not survive there)
    local dest=$1 src=$WHL_DIR/parts manifest
    mkdir -p "$dest"
    if compgen -G "$src/*" > /dev/null; then mv -f "$src"/* "$dest"/; fi
    manifest=$(manifest_in "$dest") || exit 2
    echo "in $dest:"
    check_parts "$dest" "$manifest" --present-only || die 1 "a part in $dest is damaged; carry it again"
}

rehearse() {  # [PYTHON]: the whole sequence on this machine
    local py=${1:-python3}
    download
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    split_file "$WHL_DIR/$WHEEL" "$tmp/parts"
    local biggest
    biggest=$(stat -c %s "$tmp/parts/$WHEEL".part-* | sort -n | tail -n1)
    [ "$biggest" -le $((PART_MIB * 1024 * 1024)) ] || die 1 "a part has $biggest bytes, over $PART_MIB MiB"
    join_parts "$tmp/parts" "$tmp/joined" || return 1
    cmp "$WHL_DIR/$WHEEL" "$tmp/joined/$WHEEL" || die 1 "joined wheel differs from the download"
    "$py" -m pip install -q --no-deps --no-index --no-compile --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" --target "$tmp/site" "$tmp/joined/$WHEEL" || die 1 "pip install failed"
    [ -f "$tmp/site/onnxruntime/capi/libonnxruntime_providers_cuda.so" ] || die 1 "installed tree lacks the CUDA provider"
    echo "rehearsal ok: $(ls "$tmp/parts" | grep -c part-) parts (largest $biggest bytes), join and sha256 equal," \
         "pip install --target gave $(ls "$tmp/site" | tr '\n' ' ')"
}

plan() {  # [TIMEOUT_S of the last call]: the run calls of docs/gpu-runbook.md, ready to paste
    local last_timeout=${1:-360} manifest tree part n=0 total size
    manifest=$(manifest_in "$WHL_DIR/parts") || exit 2
    check_parts "$WHL_DIR/parts" "$manifest" > /dev/null || die 1 "fix the parts first (scripts/split_wheel.sh prepare)"
    # what travels besides the carried paths: tracked files and untracked files git does not ignore
    tree=$(cd "$ROOT" && { git ls-files -z; git ls-files -z --others --exclude-standard; } \
           | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
    total=$(grep -c '\.part-' "$manifest")
    echo "working tree that travels with every call: $tree bytes"
    for part in $(awk '$2 ~ /\.part-/ {print $2}' "$manifest"); do
        n=$((n + 1))
        size=$(( tree + $(stat -c %s "$WHL_DIR/parts/$part") + $(stat -c %s "$manifest") ))
        [ "$size" -le $((64 * 1024 * 1024)) ] || die 1 "call $n would move $size bytes, over 64 MiB"
        local command="bash scripts/split_wheel.sh stash /tmp/ortgpu" timeout=90
        [ "$n" -eq 1 ] && command="nvidia-smi -L; $command" && timeout=120
        [ "$n" -eq "$total" ] && command="$command && bash scripts/gpu_check.sh \$OUT" && timeout=$last_timeout
        printf 'call %d/%d (%d MiB): command=%s\n    carry=[".whl/parts/%s", ".whl/parts/%s"] timeout_s=%d\n' \
            "$n" "$total" $((size / 1024 / 1024)) "$command" "$part" "$(basename "$manifest")" "$timeout"
    done
}

cmd=${1:-prepare}
shift || true
case $cmd in
    prepare) download && split_file "$WHL_DIR/$WHEEL" "$WHL_DIR/parts" ;;
    download) download ;;
    split) [ $# -ge 2 ] || die 2 "usage: split FILE OUTDIR [PART_BYTES]"; split_file "$@" ;;
    join) [ $# -eq 2 ] || die 2 "usage: join PARTDIR OUTDIR"; join_parts "$1" "$2" ;;
    stash) stash "${1:-/tmp/ortgpu}" ;;
    rehearse) rehearse "$@" ;;
    plan) plan "$@" ;;
    wheel-name) echo "$WHEEL" ;;
    -h|--help|help) sed -n '2,17p' "$0" ;;
    *) die 2 "unknown command '$cmd'; see scripts/split_wheel.sh --help" ;;
esac
