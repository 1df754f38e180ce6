#!/usr/bin/env bash
# The fourth 2026-12-07 session's questions in one device call (~9.5 min on a fresh machine):
#   source .device/env.sh && bash bench/peer/device-l2-warm-round.sh
# 1. build, CUDA suite, replay (batch 1 and 64, context 128) with the defaults, TANDEM_L2_WARM_MB
#    8 / 16 / 24 and the long-row gemv variants 8x4 / 4x8 (device-ab-round.sh)
# 2. TANDEM_DECODE_GROUPED_TILES=1: CUDA suite, replay alone and with TANDEM_L2_WARM_MB=16
# 3. TANDEM_QKV_ONE_GEMM=1: CUDA suite, then the replay at batch 64 and 256 against the defaults
# 4. the attention tile-math change (bench/peer/attn-1c0a709.patch) in a patched copy of the tree:
#    build, CUDA suite, replay against step 1's defaults
# 5. with what is left of the call, the acceptance benchmark with --cuda-graphs
#    (device-gpu-bench.sh): the split plan's effect on the engine at batch 1
# Every figure is printed as it is measured ("figure:" lines); logs and JSON under $OUT, one
# archive per part.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
began=$(date +%s)
R=${OUT:-/tmp/l2-warm-round}
mkdir -p "$R"
figures() { sed -u "s/^figure: /figure: $1/" | grep --line-buffered -E '^(figure|card):|FAIL|not ok'; }
# device-ab-round.sh into $R/NAME, its archive as $R/NAME.tgz.
round() {
  local name=$1 tag=$2
  shift 2
  mkdir -p "$R/$name"
  env OUT="$R/$name" "$@" bash bench/peer/device-ab-round.sh 2>&1 | figures "$tag"
  [ -f "$R/$name/ab-round.tgz" ] && mv "$R/$name/ab-round.tgz" "$R/$name.tgz" && rm -rf "${R:?}/$name"
}
ab="SKIP_GRPO=1 SKIP_SERVE=1"

round ab "" $ab REPLAY_AB="- TANDEM_L2_WARM_MB=8 TANDEM_L2_WARM_MB=16 TANDEM_L2_WARM_MB=24 TANDEM_GEMV_LONG_ROWS=8x4 TANDEM_GEMV_LONG_ROWS=4x8"
round grouped "grouped tiles: " $ab SKIP_BUILD=1 TANDEM_DECODE_GROUPED_TILES=1 REPLAY_AB="- TANDEM_L2_WARM_MB=16"
round qkv "qkv one gemm: " $ab SKIP_BUILD=1 SKIP_REPLAY=1 TANDEM_QKV_ONE_GEMM=1
round qkv-replay "" $ab SKIP_BUILD=1 SKIP_TESTS=1 REPLAY_BATCHES=64,256 REPLAY_AB="- TANDEM_QKV_ONE_GEMM=1"

# The patched copy: working files, then the patch; its own build/.
alt=/tmp/tandem-attn-alt
rm -rf "$alt" && mkdir -p "$alt" && tar cf - --exclude=./build --exclude=./.device . | tar xf - -C "$alt"
if (cd "$alt" && patch -p1 -s < bench/peer/attn-1c0a709.patch); then
  (cd "$alt" && R=$R && round attn "attn patch: " $ab REPLAY_AB="-")
else
  echo "figure: attn patch: did not apply"
fi
cd "$root"

left=$((585 - ($(date +%s) - began)))
if [ "$left" -gt 90 ]; then
  mkdir -p "$R/gb"
  OUT=$R/gb GPU_BENCH_BUDGET_S=$left GPU_BENCH_DECODE_ARGS='--cuda-graphs' GPU_BENCH_SERVE_ARGS='--cuda-graphs' \
    bash bench/peer/device-gpu-bench.sh 2>&1 | tail -14
  (cd "$R/gb" && tar czf ../gb.tgz .) && rm -rf "$R/gb"
else
  echo "figure: acceptance benchmark skipped: ${left}s left"
fi
ls "$R"
