#!/usr/bin/env bash
# The fourth 2026-12-07 session's questions in one device call (~8 min on a fresh machine):
#   source .device/env.sh && bash bench/peer/device-l2-warm-round.sh
# 1. build, CUDA suite, replay (batch 1 and 64, context 128) with the defaults, TANDEM_L2_WARM_MB
#    8 / 16 / 24 / 32 and the long-row gemv variants (device-ab-round.sh)
# 2. the acceptance benchmark with --cuda-graphs (device-gpu-bench.sh): the split plan's effect on
#    the engine at batch 1
# 3. TANDEM_QKV_ONE_GEMM=1: CUDA suite, then the replay at batch 64 and 256 against the defaults
# 4. the attention tile-math change (bench/peer/attn-1c0a709.patch) in a patched copy of the tree:
#    build, CUDA suite, replay against step 1's defaults
# Every figure is printed as it is measured ("figure:" lines); logs and JSON under $OUT, one
# archive per part.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
R=${OUT:-/tmp/l2-warm-round}
mkdir -p "$R"
figures() { grep --line-buffered -E '^(figure|card):|FAIL|not ok'; }
pack() { (cd "$R/$1" && tar czf "../$1.tgz" . ) && rm -rf "${R:?}/$1"; }

mkdir -p "$R/ab"
OUT=$R/ab SKIP_GRPO=1 SKIP_SERVE=1 REPLAY_AB="- TANDEM_L2_WARM_MB=8 TANDEM_L2_WARM_MB=16 TANDEM_L2_WARM_MB=24 TANDEM_L2_WARM_MB=32 TANDEM_GEMV_LONG_ROWS=8x4 TANDEM_GEMV_LONG_ROWS=4x8 TANDEM_GEMV_LONG_ROWS=2x8" \
  bash bench/peer/device-ab-round.sh 2>&1 | figures
[ -f "$R/ab/ab-round.tgz" ] && mv "$R/ab/ab-round.tgz" "$R/ab.tgz" && rm -rf "$R/ab"

mkdir -p "$R/gb"
OUT=$R/gb GPU_BENCH_BUDGET_S=200 GPU_BENCH_DECODE_ARGS='--cuda-graphs' GPU_BENCH_SERVE_ARGS='--cuda-graphs' \
  bash bench/peer/device-gpu-bench.sh 2>&1 | tail -14
pack gb

mkdir -p "$R/qkv"
OUT=$R/qkv TANDEM_QKV_ONE_GEMM=1 SKIP_BUILD=1 SKIP_REPLAY=1 SKIP_GRPO=1 SKIP_SERVE=1 bash bench/peer/device-ab-round.sh 2>&1 |
  sed 's/^figure: /figure: qkv one gemm: /' | figures
OUT=$R/qkv/replay SKIP_BUILD=1 SKIP_TESTS=1 SKIP_GRPO=1 SKIP_SERVE=1 REPLAY_BATCHES=64,256 REPLAY_AB="- TANDEM_QKV_ONE_GEMM=1" \
  bash bench/peer/device-ab-round.sh 2>&1 | figures
pack qkv

# The patched copy: tracked and working files, then the patch; its own build/.
alt=/tmp/tandem-attn-alt
rm -rf "$alt" && mkdir -p "$alt" && tar cf - --exclude=./build --exclude=./.device . | tar xf - -C "$alt"
if (cd "$alt" && patch -p1 -s < bench/peer/attn-1c0a709.patch); then
  mkdir -p "$R/attn"
  (cd "$alt" && OUT=$R/attn SKIP_GRPO=1 SKIP_SERVE=1 REPLAY_AB="- TANDEM_DECODE_EARLY_LOADS=0" bash bench/peer/device-ab-round.sh 2>&1 |
    sed 's/^figure: /figure: attn patch: /' | figures)
  [ -f "$R/attn/ab-round.tgz" ] && mv "$R/attn/ab-round.tgz" "$R/attn.tgz" && rm -rf "$R/attn"
else
  echo "figure: attn patch: did not apply"
fi
cd "$root"
ls "$R"
