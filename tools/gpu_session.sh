#!/usr/bin/env bash
# The CUDA half of albert-onnx, proven on a GPU host that has no network and takes files in pieces (docs/gpu.md).
#
#   here (the CPU machine):   bash tools/gpu_session.sh stage
#   there (the GPU host), one call per piece, back to back while the host stays warm:
#                             bash tools/gpu_session.sh receive            (each call carries one .gpu/parts/part-*)
#                             bash tools/gpu_session.sh receive test       (the last piece, with .gpu/shared)
#                             bash tools/gpu_session.sh bench
#
# stage:   downloads onnxruntime-gpu for the host's Python (3.12) and CUDA 13, checks its sha256 against PyPI's,
#          splits it into pieces that fit one call's carry, and copies ../shared's vocabulary and STS-B beside them.
# receive: copies the carried piece into $STAGE (outside the repository copy, kept while the host is warm) and
#          says which pieces are still to come; a piece missing before it (a host gone cold) is an error.
# test:    installs the wheel into $STAGE/site, checks that a CUDA session comes up, exports the test folders on the
#          host (so the fp16 gate runs with real fp16 arithmetic on CUDA and the manifest names the GPU), runs the
#          CUDA tests; logs to $OUT.
# bench:   python -m benchmarks --device cuda --quick, and which attention kernel each sdpa_kernel setting ran.
#
# Variables: OUT (the device tool sets it; default ./gpu-out), STAGE (default /tmp/albert-gpu), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
WHEEL_SHA256=05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7  # PyPI's, read 2026-12-05
WHEEL_BYTES=255569273
PIECE_BYTES=$((50 * 1024 * 1024))  # five pieces; one call carries at most 64 MiB with the repository copy
CARRY_BYTES=$((60 * 1024 * 1024))  # what stage lets one call carry: 4 MiB left for files the session adds
PIECES=$(( (WHEEL_BYTES + PIECE_BYTES - 1) / PIECE_BYTES ))
LOCAL=.gpu           # git-ignored
STAGE=${STAGE:-/tmp/albert-gpu}
OUT=${OUT:-$PWD/gpu-out}
PYTHON=${PYTHON:-python3}

say() { printf '[gpu_session] %s\n' "$*"; }
die() { printf '[gpu_session] error: %s\n' "$*" >&2; exit 2; }

# part-aa, part-ab, ... as split names them
piece_name() { local letters=abcdefghijklmnopqrstuvwxyz; printf 'part-%s%s' "${letters:$(($1 / 26)):1}" "${letters:$(($1 % 26)):1}"; }

tree_bytes() {  # what the device tool sends besides the carry: tracked and untracked files git does not ignore
    git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

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
    split -b "$PIECE_BYTES" "$LOCAL/wheel/$WHEEL" "$LOCAL/parts/part-"
    rm -rf "$LOCAL/shared/models/albert-base-v2" "$LOCAL/shared/data/stsbenchmark"
    cp -r ../shared/models/albert-base-v2 "$LOCAL/shared/models/"
    cp -r ../shared/data/stsbenchmark "$LOCAL/shared/data/"
    local tree shared last index name load
    tree=$(tree_bytes)
    shared=$(du -sb "$LOCAL/shared" | cut -f1)
    last=$((PIECES - 1))
    say "staged $PIECES pieces of $WHEEL and $shared bytes of ../shared; the repository copy is $tree bytes. Device calls, back to back:"
    for index in $(seq 0 "$last"); do
        name=$(piece_name "$index")
        [ -f "$LOCAL/parts/$name" ] || die "split did not write $LOCAL/parts/$name"
        load=$((tree + $(stat -c %s "$LOCAL/parts/$name") + (index == last ? shared : 0)))
        [ "$load" -le "$CARRY_BYTES" ] || die "the call carrying $name would send $load bytes, over $CARRY_BYTES: make the repository copy smaller"
        if [ "$index" -lt "$last" ]; then
            say "  carry [\"$LOCAL/parts/$name\"]  command: bash tools/gpu_session.sh receive   ($load bytes)"
        else
            say "  carry [\"$LOCAL/parts/$name\", \"$LOCAL/shared\"]  command: bash tools/gpu_session.sh receive test   ($load bytes)"
        fi
    done
    say "  (no carry)  command: bash tools/gpu_session.sh bench"
}

receive() {
    mkdir -p "$STAGE/parts"
    local carried=0 part index name missing="" have=""
    for part in "$LOCAL"/parts/part-*; do
        [ -f "$part" ] || continue
        cp "$part" "$STAGE/parts/" && carried=$((carried + 1))
    done
    if [ -d "$LOCAL/shared" ]; then
        rm -rf "$STAGE/shared" && cp -r "$LOCAL/shared" "$STAGE/shared"
    fi
    [ "$carried" -gt 0 ] || die "this call carried no piece: name one $LOCAL/parts/part-* in carry"
    for index in $(seq 0 $((PIECES - 1))); do
        name=$(piece_name "$index")
        if [ -f "$STAGE/parts/$name" ]; then
            [ -z "$missing" ] || die "$STAGE/parts has $name but not$missing (the host went cold?): carry the pieces again from part-aa"
            have="$have $name"
        else
            missing="$missing $name"
        fi
    done
    say "received $carried piece(s); $STAGE/parts holds:$have${missing:+; still to come:$missing}"
}

# The wheel installed once per warm host into $STAGE/site; the CUDA libraries of the host's nvidia-* packages where
# onnxruntime.preload_dlls() looks for them (beside onnxruntime); the export step importable as albert_onnx_export;
# ../shared where the tests and benchmarks look for it.
setup() {
    if [ "$(cat "$STAGE/site/.installed" 2>/dev/null)" != "$WHEEL_SHA256" ]; then
        [ -d "$STAGE/parts" ] || die "no pieces in $STAGE/parts: run 'receive' with each piece carried (the host went cold?)"
        cat "$STAGE"/parts/part-* > "$STAGE/$WHEEL"
        echo "$WHEEL_SHA256  $STAGE/$WHEEL" | sha256sum -c --quiet - \
            || die "the pieces in $STAGE/parts do not make $WHEEL (one missing or twice?): $(cd "$STAGE/parts" && ls | tr '\n' ' ')"
        rm -rf "$STAGE/site"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$STAGE/site" "$STAGE/$WHEEL"
        echo "$WHEEL_SHA256" > "$STAGE/site/.installed"
    fi
    # --target puts onnxruntime outside the site-packages holding torch's nvidia-* packages; preload_dlls() looks in
    # onnxruntime's own site folder (nvidia/cu13/lib, nvidia/cudnn/lib), so the host's nvidia folder is linked there
    local nvidia
    nvidia=$(cd / && "$PYTHON" -c 'import nvidia, os; print(next((os.path.realpath(p) for p in nvidia.__path__ if os.path.isdir(os.path.join(p, "cu13", "lib"))), ""))' 2>/dev/null || true)
    if [ -n "$nvidia" ]; then
        ln -sfn "$nvidia" "$STAGE/site/nvidia"
    else
        say "no nvidia/cu13 package found for $PYTHON: CUDA libraries must come from the system's library path"
    fi
    mkdir -p "$STAGE/pkg" "$OUT"
    ln -sfn "$PWD/export" "$STAGE/pkg/albert_onnx_export"
    [ -d "$STAGE/shared" ] || die "$STAGE/shared is missing: carry $LOCAL/shared with the last piece"
    if [ -L ../shared ] || [ ! -e ../shared ]; then
        ln -sfn "$STAGE/shared" ../shared  # a link left by an earlier STAGE is re-pointed; a real folder is kept
    fi
    export PYTHONPATH="$STAGE/site:$STAGE/pkg:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
}

facts() {  # recorded, not judged: a missing nvidia-smi or package must not stop the run
    {
        date -u +%FT%TZ
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "nvidia-smi failed"
        "$PYTHON" - <<'EOF' || echo "the version listing failed"
import importlib.metadata as md, platform
import onnxruntime as ort
from albert_onnx.hardware import onnxruntime_package
print("python", platform.python_version(), "|", *onnxruntime_package(), "from", ort.__file__)
print("providers", ort.get_available_providers())
for name in ("torch", "transformers", "onnx", "tokenizers", "numpy", "nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cuda-runtime"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
EOF
    } 2>&1 | tee "$OUT/facts.txt"
}

cuda_check() {  # one CUDA session from a process without torch (as the runtime runs), or stop before the export
    "$PYTHON" - <<'EOF' 2>&1 | tee -a "$OUT/facts.txt"
import sys
import onnxruntime as ort
from albert_onnx.int8_kernel import PROBE_FILE  # any small graph will do
from albert_onnx.session import preload_cuda_libraries
print("preload_dlls said:", preload_cuda_libraries() or "nothing")
session = ort.InferenceSession(str(PROBE_FILE), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
if session.get_providers()[0] != "CUDAExecutionProvider":
    sys.exit(f"NO CUDA SESSION: it came up on {session.get_providers()}; see ONNX Runtime's lines above")
print("a CUDA session came up:", session.get_providers())
EOF
}

test_cuda() {
    setup
    facts
    cuda_check
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
    "$PYTHON" -m benchmarks --device cuda --quick --out "$STAGE/bench" 2>&1 | tee "$OUT/bench.log"
    cp "$STAGE"/bench/results.json "$STAGE"/bench/results.md "$STAGE"/bench/*.png "$OUT/"
    # which attention kernel each sdpa_kernel setting really ran: ONNX Runtime says so once per process with this
    # variable set (its lines name the kernel); the first lines of each are kept
    local tuning
    for tuning in default $("$PYTHON" -c 'from benchmarks.engines import TUNINGS; print(*(n for n, t in TUNINGS.items() if "provider_options" in t))'); do
        echo "== $tuning"
        ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO=1 "$PYTHON" - "$STAGE/bench/work/albert-onnx" "$tuning" <<'EOF' 2>&1 | head -n 12 || true
import sys
from albert_onnx import AlbertEmbedder
from benchmarks.engines import TUNINGS
embedder = AlbertEmbedder.from_pretrained(sys.argv[1], device="cuda", **TUNINGS.get(sys.argv[2], {}))
embedder.encode(["A man is playing a guitar."])
EOF
    done > "$OUT/attention-kernels.txt"
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
