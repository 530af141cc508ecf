#!/usr/bin/env bash
# Train weights release 3 on one GPU (H100/H200) in ONE command that stays under the device
# tool's 10-minute limit; resumable: run the same command again on the same warm machine and
# every stage continues from its checkpoint (docs/training.md, "Release 3 on a GPU").
#
#   1. here (CPU machine), once:  bash bench/release3_gpu.sh prepare
#        downloads the three wheels the GPU image lacks into .whl/ and packs ~26 MB of training
#        images (validation images included) into .r3data/ (both git-ignored, both carried)
#   2. device tool:  run(command="bash bench/release3_gpu.sh", carry=[".whl", ".r3data"], timeout_s=600)
#        (or command="STAGE=tune INIT=archiver/weights bash bench/release3_gpu.sh": fine-tune the shipped model)
#        MINUTES (default 8) of training shared by the plan rd 62% / denoiser 12% / realism 26%,
#        plus ~1 minute of loading and evaluation; the model, log and curves come back in $OUT
#        (tiny.safetensors in 15 MB parts: cat tiny.safetensors.part* > tiny.safetensors)
#   3. here: python -m archiver_train.curves RUN --baseline ../shared/data/train, then the
#        validation and Kodak benches (docs/benchmarks.md)
#
# A CPU dry run (what tests/test_release3_gpu_script.py does):
#   DEVICE=cpu DATA=DIR RUN=DIR OUT=DIR EXTRA="--steps 2 --batch 2 --crop 64" bash bench/release3_gpu.sh
# If bfloat16 ever makes a loss non-finite (the run stops with "loss is not finite"), rerun with
# EXTRA=--no-amp: the stages resume from their last finite checkpoint in float32 (TF32).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = prepare ]; then
    exclude=$(git rev-parse --git-path info/exclude)
    for d in /.whl/ /.r3data/; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
    rm -rf .whl && mkdir -p .whl
    # the GPU image has torch, numpy, PIL, safetensors, click, einops, scipy, torch-geometric...
    # but not these (docs/training.md); pure-Python ones are py3 wheels, compressai is built for cp312
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 \
        -d .whl compressai==1.2.8 diffusers==0.42.1 pytorch-msssim==1.0.0 importlib_metadata
    rm -rf .r3data && "$PY" -m archiver_train.pack "${SOURCE:-../shared/data/train}" .r3data/train --max-mb "${PACK_MB:-26}"
    tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
    extra=$(du -sb .whl .r3data | awk '{s += $1} END {print s}')
    echo "travels: $(( (tracked + extra) / 1048576 )) MiB of the 64 MiB limit (repository $(( tracked / 1048576 )), wheels + data $(( extra / 1048576 )))"
    if [ $(( tracked + extra )) -gt $(( 64 * 1048576 )) ]; then
        # the three releases' weights are ~56 MiB of the repository's 63; training needs only the default one
        echo "over the limit: move packages/archiver-weights-archive out of the checkout for the device call" \
             "(and back afterwards), and/or rerun prepare with a smaller PACK_MB (14 fits with the releases set aside)"
    fi
    exit 0
fi

MINUTES=${MINUTES:-8}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.r3data/train}
RUN=${RUN:-checkpoints/release3-gpu}
RESULTS=${OUT:-$RUN/results}
EXTRA=${EXTRA:-}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/r3site .whl/*.whl
    export PYTHONPATH=/tmp/r3site:${PYTHONPATH:-}
fi
# the training package beside archiver (from the checkout, no install: `python -m archiver_train`)
export PYTHONPATH=$PWD:$PWD/packages/archiver-train:${PYTHONPATH:-}
mkdir -p "$RUN" "$RESULTS"
if [ "$DEVICE" != cpu ]; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; fi
start=$(date +%s)
status=0
# shellcheck disable=SC2086  # EXTRA is a list of options
# TRAIN_LIMIT_S (optional): a hard wall-clock cap, so that the copy below always runs inside the
# device tool's limit even when loading or evaluation takes longer than planned (SIGTERM: the
# stage in progress saves its checkpoint; the stages finished before it are already assembled)
limit=()
if [ -n "${TRAIN_LIMIT_S:-}" ]; then limit=(timeout -s TERM -k 30 "$TRAIN_LIMIT_S"); fi
# STAGE=tune INIT=archiver/weights: fine-tune the shipped model (rd-tune, fidelity) instead of training
# release 3 from scratch (docs/training.md, "Release 3.1")
init=()
if [ -n "${INIT:-}" ]; then init=(--init "$INIT"); fi
"${limit[@]}" "$PY" -m archiver_train "$DATA" --stage "${STAGE:-all}" "${init[@]}" --device "$DEVICE" --minutes "$MINUTES" \
    --out "$RUN" --resume --threads "${THREADS:-8}" $EXTRA || status=$?
echo "training: $(( $(date +%s) - start )) s wall, exit status $status"
# whatever the stages finished (the model is assembled after each) comes back, even after a failure
cp "$RUN/train.log" "$RESULTS/" 2>/dev/null || true
if [ -f "$RUN/tiny.safetensors" ]; then
    "$PY" -m archiver_train.curves "$RUN" --png "$RUN/curves.png" --json > "$RUN/curves.json" || true
    cp "$RUN/tiny.json" "$RUN"/curves.* "$RESULTS/" 2>/dev/null || true
    # files come back from the device in pieces of at most 16 MiB
    rm -f "$RESULTS"/tiny.safetensors.part*
    split -b 15000000 -d "$RUN/tiny.safetensors" "$RESULTS/tiny.safetensors.part"
    sha256sum "$RUN/tiny.safetensors" | tee "$RESULTS/tiny.safetensors.sha256"
fi
echo "done: $(( $(date +%s) - start )) s wall; results in $RESULTS"
exit $status
