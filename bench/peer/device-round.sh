#!/usr/bin/env bash
# One device call for a change of defaults, the parts in ROUND_PARTS order (default
# "suite replay split trace gb gbbest optin grpo"), each only while the call has time for it (LIMIT_S seconds from
# the start, default 585):
#   source .device/env.sh && LIMIT_S=420 bash bench/peer/device-round.sh
#   suite   build, CUDA suite (and the random 3B model, made meanwhile)         device-ab-round.sh
#   replay  the decode graph replayed at REPLAY_BATCHES (default 1) once per setting in
#           ROUND_REPLAY_AB (default: the defaults, short-context graphs for 128 and 256 tokens, one warp
#           per row in the few-row products, the one-wave norm + q/k/v product (opt-in), the defaults again)
#   split   the same at context 160 (the acceptance run's contexts reach 161: past 128 keys the
#           decode attention takes a second split and a merge kernel), defaults against
#           short-context graphs for 128 and 256 tokens (2 splits planned instead of 64)
#   trace   a kernel-trace build (build/trace/, TANDEM_CUDA_TRACE=1) and one traced replay at batch 1
#           and 64 (bench/decode-replay.ts --trace): per kernel kind, its share of the critical path
#   gb      the acceptance benchmark with --cuda-graphs                         device-gpu-bench.sh
#   gbbest  the same under the replay part's fastest setting (opt-in part)
#   optin   the CUDA suite with the opt-in and off-by-switch kernels (one-wave norm + q/k/v, one block per KV
#           head, two warps per row in few-row products) and short-context graphs for 128 and 256 tokens
#   engine  (not in the default list) bench/gpu-decode.ts at ENGINE_BATCHES (default 1) once per setting of
#           ROUND_ENGINE_AB (default "- TANDEM_GEMV_FEW_ROWS=1"), the settings interleaved, twice
#   serve   (not in the default list) bench/peer/device-serve-ab.sh: serve c64 per setting of SERVE_AB
#   grpo    GRPO steps with --cuda-graphs once per setting of ROUND_GRPO_AB (default: the defaults only)
# A later call on the same warm machine leaves "suite" out (the addon and the model are kept).
# Every figure is printed as it is measured ("figure:" lines); logs and JSON under $OUT, one archive
# per part (the device returns at most 8 files).
# Back here: python3 bench/peer/round-results.py FILES_AT --tag runN --commit C writes the
# bench/results JSON files from the archives.
set -uo pipefail
cd "$(dirname "$0")/../.."
began=$(date +%s)
R=${OUT:-/tmp/device-round}
mkdir -p "$R"
left() { echo $((${LIMIT_S:-585} - ($(date +%s) - began))); }
figures() { sed -u "s/^figure: /figure: $1/" | grep --line-buffered -E '^(figure|card):|FAIL|not ok'; }
# device-ab-round.sh into $R/NAME, its archive as $R/NAME.tgz.
round() {
  local name=$1 tag=$2
  shift 2
  mkdir -p "$R/$name"
  env OUT="$R/$name" "$@" bash bench/peer/device-ab-round.sh 2>&1 | figures "$tag"
  [ -f "$R/$name/ab-round.tgz" ] && mv "$R/$name/ab-round.tgz" "$R/$name.tgz" && rm -rf "${R:?}/$name"
}
# The replay part's settings (gbbest picks among them).
replay_ab=${ROUND_REPLAY_AB:-- TANDEM_SHORT_CONTEXT_GRAPHS=128,256 TANDEM_GEMV_FEW_ROWS=1 TANDEM_GEMV_NORM_ONE_WAVE=1 -}
for part in ${ROUND_PARTS:-suite replay split trace gb gbbest optin grpo}; do
  case $part in
    suite) round suite "" SKIP_REPLAY=1 SKIP_GRPO=1 SKIP_SERVE=1 ;;
    replay)
      [ "$(left)" -gt 90 ] && round replay "" SKIP_BUILD=1 SKIP_TESTS=1 SKIP_GRPO=1 SKIP_SERVE=1 REPLAY_BATCHES="${REPLAY_BATCHES:-1}" \
        REPLAY_AB="$replay_ab" ;;
    split)
      [ "$(left)" -gt 90 ] && round split "context 160: " SKIP_BUILD=1 SKIP_TESTS=1 SKIP_GRPO=1 SKIP_SERVE=1 REPLAY_BATCHES=1 \
        REPLAY_CONTEXT=160 REPLAY_AB="- TANDEM_SHORT_CONTEXT_GRAPHS=128,256" ;;
    trace)
      if [ "$(left)" -gt 150 ]; then
        mkdir -p "$R/trace"
        if TANDEM_CUDA_TRACE=1 timeout 150 bash kernels/build.sh >"$R/trace/build.log" 2>&1; then
          TANDEM_CUDA_ADDON="$PWD/build/trace/tandem_cuda.node" timeout 120 node --import tsx bench/decode-replay.ts \
            --model "${GPU_BENCH_MODEL_DIR:-/tmp/tandem-qwen2.5-3b-random}" --batch 1,64 --context 128 --trace \
            --card "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" --out "$R/trace/trace.json" 2>&1 |
            tee "$R/trace/trace.log" | tail -24
        else
          echo "trace build failed:"; tail -5 "$R/trace/build.log"
        fi
        (cd "$R/trace" && tar czf ../trace.tgz .) && rm -rf "$R/trace"
      fi ;;
    gb)
      if [ "$(left)" -gt 150 ]; then
        mkdir -p "$R/gb"
        OUT="$R/gb" GPU_BENCH_SKIP_BUILD=1 GPU_BENCH_BUDGET_S=$(($(left) - 30)) GPU_BENCH_DECODE_ARGS='--cuda-graphs' GPU_BENCH_SERVE_ARGS='--cuda-graphs' \
          bash bench/peer/device-gpu-bench.sh 2>&1 | tail -16
        (cd "$R/gb" && tar czf ../gb.tgz .) && rm -rf "$R/gb"
      fi ;;
    # The acceptance benchmark under the replay part's fastest setting at batch 1 (the defaults
    # when they win), so a winner's engine figures come from the same call.
    gbbest)
      best=$(python3 - "$R/replay.tgz" $replay_ab <<'PY'
import json, re, sys, tarfile
archive, settings = sys.argv[1], sys.argv[2:]
runs = {}  # setting -> its batch-1 figures (replay-TAG.json, and replay-TAG-2.json ... for a repeat)
with tarfile.open(archive) as tar:
    names = tar.getnames()
    for s in dict.fromkeys(settings):
        tag = "defaults" if s == "-" else re.sub(r"[^A-Za-z0-9]", "_", s)
        for name in names:
            if re.fullmatch(r"(\./)?replay-%s(-\d+)?\.json" % re.escape(tag), name):
                d = json.load(tar.extractfile(name))
                runs.setdefault(s, []).extend(r["value"] for r in d["results"] if r["name"] == "replay_b1_ms_per_step")
means = {s: sum(v) / len(v) for s, v in runs.items() if v}
if means:
    print(min(means, key=means.get))
PY
)
      echo "gbbest: fastest replayed setting: ${best:-none}"
      if [ -n "$best" ] && [ "$(left)" -gt 110 ]; then
        mkdir -p "$R/gbbest"
        envs=()
        if [ "$best" != - ]; then
          echo "$best" >"$R/gbbest/setting.txt"
          mapfile -t envs < <(sed 's/,\([A-Za-z_][A-Za-z0-9_]*=\)/\n\1/g' <<<"$best")
        fi
        env ${envs[@]+"${envs[@]}"} OUT="$R/gbbest" GPU_BENCH_SKIP_BUILD=1 GPU_BENCH_BUDGET_S=$(($(left) - 30)) GPU_BENCH_DECODE_ARGS='--cuda-graphs' \
          GPU_BENCH_SERVE_ARGS='--cuda-graphs' bash bench/peer/device-gpu-bench.sh 2>&1 | tail -16
        (cd "$R/gbbest" && tar czf ../gbbest.tgz .) && rm -rf "$R/gbbest"
      fi ;;
    # An opt-in kernel only runs under its switch: the suite with it.
    optin) [ "$(left)" -gt 100 ] && round optin "opt-in kernels: " SKIP_BUILD=1 SKIP_RESPONSIVE=1 SKIP_REPLAY=1 SKIP_GRPO=1 SKIP_SERVE=1 TANDEM_GEMV_NORM_ONE_WAVE=1 TANDEM_DECODE_Q_SPLIT=1 TANDEM_SHORT_CONTEXT_GRAPHS=128,256 TANDEM_GEMV_FEW_ROWS=1 ;;
    # The engine (bench/gpu-decode.ts: scheduling, sampling, graphs) per setting, the settings
    # interleaved twice: what a change of default does to the acceptance figure, without HF and serve.
    engine)
      if [ "$(left)" -gt 90 ]; then
        mkdir -p "$R/engine"
        card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
        for run in 1 2; do
          for s in ${ROUND_ENGINE_AB:-- TANDEM_GEMV_FEW_ROWS=1}; do
            [ "$(left)" -gt 45 ] || break 2
            tag=$([ "$s" = - ] && echo defaults || sed 's/[^A-Za-z0-9]/_/g' <<<"$s")
            envs=()
            [ "$s" = - ] || mapfile -t envs < <(sed 's/,\([A-Za-z_][A-Za-z0-9_]*=\)/\n\1/g' <<<"$s")
            env ${envs[@]+"${envs[@]}"} timeout 90 node --import tsx bench/gpu-decode.ts --model "${GPU_BENCH_MODEL_DIR:-/tmp/tandem-qwen2.5-3b-random}" \
              --batch "${ENGINE_BATCHES:-1}" --cuda-graphs --card "$card" --out "$R/engine/engine-$tag-$run.json" >"$R/engine/engine-$tag-$run.log" 2>&1
            python3 - "$R/engine/engine-$tag-$run.json" "$s" "$run" <<'PY' || echo "figure: engine $s run $run: no results"
import json, re, sys
d = json.load(open(sys.argv[1]))["results"]
ms = "  ".join("b%s %.3f ms" % (re.search(r"_b(\d+)_", r["name"]).group(1), r["value"]) for r in d if re.fullmatch(r"decode_b\d+_ms_per_step", r["name"]))
print("figure: engine %-36s run %s: %s" % (sys.argv[2], sys.argv[3], ms))
PY
          done
        done
        (cd "$R/engine" && tar czf ../engine.tgz .) && rm -rf "$R/engine"
      fi ;;
    # Serving per setting (bench/peer/device-serve-ab.sh: SERVE_AB, SERVE_RUNS; tree:REV settings
    # need ab-trees/ carried).
    serve)
      if [ "$(left)" -gt 120 ]; then
        mkdir -p "$R/serve"
        OUT="$R/serve" LIMIT_S=$(($(left) - 20)) bash bench/peer/device-serve-ab.sh 2>&1 | grep --line-buffered -E '^(figure|card):|failed|not ready'
        [ -f "$R/serve/serve-ab.tgz" ] && mv "$R/serve/serve-ab.tgz" "$R/serve.tgz" && rm -rf "$R/serve"
      fi ;;
    # GRPO steps with --cuda-graphs once per setting of ROUND_GRPO_AB (default: the defaults only).
    grpo) [ "$(left)" -gt 100 ] && round grpo "" SKIP_BUILD=1 SKIP_TESTS=1 SKIP_REPLAY=1 SKIP_SERVE=1 GRPO_AB=- GRPO_GRAPHS_AB="${ROUND_GRPO_AB:--}" SKIP_EAGER_GRPO=1 ;;
    *) echo "device-round: unknown part '$part' (suite, replay, split, trace, gb, gbbest, optin, engine, serve, grpo)"; exit 2 ;;
  esac
done
ls "$R"
