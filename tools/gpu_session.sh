#!/usr/bin/env bash
# The CUDA half of albert-onnx, proven on a GPU host that has no network and takes files in pieces (docs/gpu.md).
#
#   here (the CPU machine):   bash tools/gpu_session.sh stage
#   there (the GPU host), one call per piece, back to back while the host stays warm:
#                             bash tools/gpu_session.sh receive            (each call carries one .gpu/parts/part-*)
#                             bash tools/gpu_session.sh receive test       (the last part, with .gpu/shared)
#                             bash tools/gpu_session.sh bench
#
# stage:   downloads onnxruntime-gpu for the host's Python (3.12) and CUDA 13, checks its sha256 against PyPI's,
#          splits it into pieces that fit one call's carry, and copies ../shared's vocabulary and STS-B beside them.
# receive: moves the carried pieces into $STAGE (outside the repository copy, kept while the host is warm).
# test:    installs the wheel into $STAGE/site, exports the test folders on the host (so the fp16 gate runs with
#          real fp16 arithmetic on CUDA and the manifest records the GPU), runs the CUDA tests; logs to $OUT.
# bench:   python -m benchmarks --device cuda --quick; results.json, results.md and the plot to $OUT.
#
# Variables: OUT (the device tool sets it; default ./gpu-out), STAGE (default /tmp/albert-gpu), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
WHEEL_SHA256=05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7  # PyPI's, read 2026-12-05
PIECE=62M            # one call carries at most 64 MiB with the repository copy (under 1 MB)
LOCAL=.gpu           # git-ignored
STAGE=${STAGE:-/tmp/albert-gpu}
OUT=${OUT:-$PWD/gpu-out}
PYTHON=${PYTHON:-python3}

say() { printf '[gpu_session] %s\n' "$*"; }
die() { printf '[gpu_session] error: %s\n' "$*" >&2; exit 2; }

stage() {
    [ -f ../shared/models/albert-base-v2/spiece.model ] && [ -f ../shared/data/stsbenchmark/sts-dev.csv ] \
        || die "../shared (albert-base-v2 vocabulary, STS-B) is not beside the project"
    mkdir -p "$LOCAL/wheel" "$LOCAL/parts" "$LOCAL/shared/models" "$LOCAL/shared/data"
    if [ ! -f "$LOCAL/wheel/$WHEEL" ]; then
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 -d "$LOCAL/wheel" onnxruntime-gpu==1.31.1
    fi
    echo "$WHEEL_SHA256  $LOCAL/wheel/$WHEEL" | sha256sum -c --quiet - || die "$LOCAL/wheel/$WHEEL is not PyPI's file: delete it and stage again"
    rm -f "$LOCAL"/parts/part-*
    split -b "$PIECE" "$LOCAL/wheel/$WHEEL" "$LOCAL/parts/part-"
    rm -rf "$LOCAL/shared/models/albert-base-v2" "$LOCAL/shared/data/stsbenchmark"
    cp -r ../shared/models/albert-base-v2 "$LOCAL/shared/models/"
    cp -r ../shared/data/stsbenchmark "$LOCAL/shared/data/"
    local parts=("$LOCAL"/parts/part-*)
    say "staged ${#parts[@]} pieces of $WHEEL and $(du -sh "$LOCAL/shared" | cut -f1) of ../shared. Device calls, back to back:"
    local last=$(( ${#parts[@]} - 1 ))
    for index in "${!parts[@]}"; do
        if [ "$index" -lt "$last" ]; then
            say "  carry [\"${parts[$index]}\"]  command: bash tools/gpu_session.sh receive"
        else
            say "  carry [\"${parts[$index]}\", \"$LOCAL/shared\"]  command: bash tools/gpu_session.sh receive test"
        fi
    done
    say "  (no carry)  command: bash tools/gpu_session.sh bench"
}

receive() {
    mkdir -p "$STAGE/parts"
    local moved=0 part
    for part in "$LOCAL"/parts/part-*; do
        [ -f "$part" ] || continue
        cp "$part" "$STAGE/parts/" && moved=$((moved + 1))
    done
    if [ -d "$LOCAL/shared" ]; then
        rm -rf "$STAGE/shared" && cp -r "$LOCAL/shared" "$STAGE/shared"
    fi
    say "received $moved piece(s); $STAGE/parts holds: $(cd "$STAGE/parts" && ls | tr '\n' ' ')"
}

# The wheel installed once per warm host into $STAGE/site; the export step importable as albert_onnx_export;
# ../shared where the tests and benchmarks look for it.
setup() {
    if [ ! -f "$STAGE/site/.installed" ]; then
        [ -d "$STAGE/parts" ] || die "no pieces in $STAGE/parts: run 'receive' with each piece carried (the host went cold?)"
        cat "$STAGE"/parts/part-* > "$STAGE/$WHEEL"
        echo "$WHEEL_SHA256  $STAGE/$WHEEL" | sha256sum -c --quiet - \
            || die "the pieces in $STAGE/parts do not make $WHEEL (one missing or twice?): $(cd "$STAGE/parts" && ls | tr '\n' ' ')"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$STAGE/site" "$STAGE/$WHEEL"
        touch "$STAGE/site/.installed"
    fi
    mkdir -p "$STAGE/pkg" "$OUT"
    ln -sfn "$PWD/export" "$STAGE/pkg/albert_onnx_export"
    [ -d "$STAGE/shared" ] || die "$STAGE/shared is missing: carry .gpu/shared with the last piece"
    [ -e ../shared ] || ln -sfn "$STAGE/shared" ../shared
    export PYTHONPATH="$STAGE/site:$STAGE/pkg:$PWD" PYTHONUNBUFFERED=1
}

facts() {
    {
        date -u +%FT%TZ
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "nvidia-smi failed"
        "$PYTHON" - <<'EOF'
import importlib.metadata as md, platform
import onnxruntime as ort
ort.preload_dlls()
print("python", platform.python_version(), "| onnxruntime", ort.__version__, "from", ort.__file__)
print("providers", ort.get_available_providers())
for name in ("torch", "transformers", "onnx", "tokenizers", "numpy", "nvidia-cudnn-cu13", "nvidia-cublas"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
EOF
    } 2>&1 | tee "$OUT/facts.txt"
}

test_cuda() {
    setup
    facts
    set -o pipefail
    # exported here, so each manifest's fp16 record is a real CUDA validation naming this GPU; a rerun on the warm
    # host keeps the folders (delete $STAGE/folders to export again)
    if [ ! -f "$STAGE/folders/base/manifest.json" ] || [ ! -f "$STAGE/folders/tiny/manifest.json" ]; then
        "$PYTHON" -m tests.export_test_folders "$STAGE/folders" 2>&1 | tee "$OUT/export.log"
    fi
    cp "$STAGE/folders/base/manifest.json" "$OUT/manifest-base.json"
    cp "$STAGE/folders/tiny/manifest.json" "$OUT/manifest-tiny.json"
    ALBERT_ONNX_REQUIRE_CUDA=1 ALBERT_ONNX_TEST_FOLDERS="$STAGE/folders" \
        "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda -rA --tb=short tests/runtime 2>&1 | tee "$OUT/test-cuda.log"
}

bench() {
    setup
    set -o pipefail
    "$PYTHON" -m benchmarks --device cuda --quick --out "$STAGE/bench" 2>&1 | tee "$OUT/bench.log"
    cp "$STAGE"/bench/results.json "$STAGE"/bench/results.md "$STAGE"/bench/*.png "$OUT/"
}

[ $# -gt 0 ] || die "usage: bash tools/gpu_session.sh stage | receive [test] | test | bench"
for verb in "$@"; do
    case "$verb" in
        stage) stage ;;
        receive) receive ;;
        test) test_cuda ;;
        bench) bench ;;
        *) die "unknown verb '$verb': stage, receive, test or bench" ;;
    esac
done
