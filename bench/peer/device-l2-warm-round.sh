#!/usr/bin/env bash
# The fourth 2026-12-07 session's questions in one device call (~9.5 min on a fresh machine):
#   source .device/env.sh && bash bench/peer/device-l2-warm-round.sh
# 1. build, CUDA suite, replay (batch 1 and 64, context 128) with the defaults and TANDEM_L2_WARM_MB
#    16 / 24 / 8 (device-ab-round.sh)
# 2. the acceptance benchmark with --cuda-graphs (device-gpu-bench.sh) under the best setting of 1:
#    the split plan's effect on the engine at batch 1, and the L2 warm's
# then, while the call has time:
# 3. TANDEM_DECODE_GROUPED_TILES=1: CUDA suite, replay alone and with TANDEM_L2_WARM_MB=16
# 4. TANDEM_QKV_ONE_GEMM=1: CUDA suite, then the replay at batch 64 and 256 against the defaults
# 5. the attention tile-math change (bench/peer/attn-1c0a709.patch) in a patched copy of the tree:
#    build, CUDA suite, replay against step 1's defaults
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

# Seconds left of the call (LIMIT_S, default 585).
left() { echo $((${LIMIT_S:-585} - ($(date +%s) - began))); }

round ab "" $ab REPLAY_AB="- TANDEM_L2_WARM_MB=16 TANDEM_L2_WARM_MB=24 TANDEM_L2_WARM_MB=8"
# The best L2 warm setting at batch 1 (if it beats the defaults) for the parts below.
best=$(for f in defaults TANDEM_L2_WARM_MB_16 TANDEM_L2_WARM_MB_24 TANDEM_L2_WARM_MB_8; do
  ms=$(tar xzf "$R/ab.tgz" -O "./replay-$f.log" 2>/dev/null | awk '$1 == "all" && $2 == "ops" && $3 == 1 {print $4; exit}')
  [ -n "$ms" ] && echo "$ms $f"
done | sort -n | head -1 | awk '{print $2}')
warm=
case "$best" in TANDEM_L2_WARM_MB_*) warm="TANDEM_L2_WARM_MB=${best#TANDEM_L2_WARM_MB_}" ;; esac
echo "figure: best batch-1 replay setting: ${best:-none} (${warm:-defaults} for the acceptance run)"

if [ "$(left)" -gt 250 ]; then
  mkdir -p "$R/gb"
  env ${warm:+"$warm"} OUT="$R/gb" GPU_BENCH_BUDGET_S=$(($(left) - 100)) GPU_BENCH_DECODE_ARGS='--cuda-graphs' \
    GPU_BENCH_SERVE_ARGS='--cuda-graphs' bash bench/peer/device-gpu-bench.sh 2>&1 | tail -14
  (cd "$R/gb" && tar czf ../gb.tgz .) && rm -rf "$R/gb"
fi
[ "$(left)" -gt 60 ] && round grouped "grouped tiles: " $ab SKIP_BUILD=1 TANDEM_DECODE_GROUPED_TILES=1 REPLAY_AB="- TANDEM_L2_WARM_MB=16"
[ "$(left)" -gt 60 ] && round qkv "qkv one gemm: " $ab SKIP_BUILD=1 SKIP_REPLAY=1 TANDEM_QKV_ONE_GEMM=1 REPLAY_BATCHES=64,256 REPLAY_AB="- TANDEM_QKV_ONE_GEMM=1"
[ "$(left)" -gt 60 ] && round qkv-replay "" $ab SKIP_BUILD=1 SKIP_TESTS=1 REPLAY_BATCHES=64,256 REPLAY_AB="- TANDEM_QKV_ONE_GEMM=1"

# The patched copy: working files, then the patch; its own build/.
alt=/tmp/tandem-attn-alt
if [ "$(left)" -gt 60 ]; then
  rm -rf "$alt" && mkdir -p "$alt" && tar cf - --exclude=./build --exclude=./.device . | tar xf - -C "$alt"
  if (cd "$alt" && patch -p1 -s < bench/peer/attn-1c0a709.patch); then
    (cd "$alt" && round attn "attn patch: " $ab REPLAY_AB="-")
  else
    echo "figure: attn patch: did not apply"
  fi
fi
cd "$root"
ls "$R"
