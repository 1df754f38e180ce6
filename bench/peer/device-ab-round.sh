#!/usr/bin/env bash
# One device call of A/B runs for the questions bench/NOTES.md leaves open, within one call's 600 s
# (SKIP_* splits it over calls on a warm machine):
#   source .device/env.sh && bash bench/peer/device-ab-round.sh
# 0. The CUDA suite (test/backend/cuda.test.ts, test/engine/cuda-graphs.test.ts, test/backend/cuda-training.test.ts,
#    then test/server/cuda-responsive.test.ts alone) first: kernel
#    changes since the last GPU run must pass before figures count.
# 1. The decode graph replayed (bench/decode-replay.ts, batch REPLAY_BATCHES (default 1,64), context REPLAY_CONTEXT
#    (default 128)) once per setting
#    in REPLAY_AB (default: the defaults, then TANDEM_GEMV_LONG_ROWS 8x4 / 4x8 / 4x2 / 2x8, the
#    down projection's packs in flight x warps per row against 4x4; 2026-12-07's round tried
#    TANDEM_DECODE_EARLY_LOADS=0, min split keys 128 / 256 and TANDEM_SHORT_CONTEXT_GRAPHS=256).
# 2. GRPO steps (256-token prompts, 6 x 200 tokens, r 32, 3 steps) with eager rollouts once per
#    setting in GRPO_AB (default: the defaults), then with --cuda-graphs once per setting in
#    GRPO_GRAPHS_AB (default: the defaults, TANDEM_LORA_FUSED_ADD=0).
# 3. `tandem serve --cuda-graphs` under bench/serve.ts with 64 clients once per setting in SERVE_AB
#    (default: the defaults).
# A setting is "-" (the defaults) or VAR=VALUE[,VAR=VALUE...]. SKIP_TESTS=1 / SKIP_REPLAY=1 /
# SKIP_GRPO=1 / SKIP_EAGER_GRPO=1 / SKIP_SERVE=1 / SKIP_BUILD=1 leave parts out. A table of every figure at the end; under $OUT every
# log and JSON in one archive (ab-round.tgz).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ab-round-out}
mkdir -p "$out"
model=${GPU_BENCH_MODEL_DIR:-/tmp/tandem-qwen2.5-3b-random}
port=${AB_PORT:-8124}
# shellcheck source=bench/peer/step.sh
source bench/peer/step.sh
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
# (No commit here: the device machine's copy of .git can lag the working tree it runs; round-results.py takes --commit.)
echo "card: $card  date: $(date -u +%F)"
# SKIP_BUILD=1: a later call on the same warm machine reuses the addon the first one built.
if [ "${SKIP_BUILD:-0}" != 1 ] && ! step build 150 bash kernels/build.sh; then tail -20 "$out/build.log"; exit 1; fi
table=()
# A figure goes into the final table and is printed at once (a call cut off at its limit still shows it).
figure() { table+=("$1"); echo "figure: $1"; }
# The model is made while the suite runs (CPU and GPU work side by side).
maker=
if [ ! -f "$model/.complete" ]; then
  ( python3 bench/peer/make_qwen_random.py --preset 3b --out "$model" && touch "$model/.complete" ) >"$out/make-model.log" 2>&1 &
  maker=$!
fi
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step cuda-tests 210 node --import tsx --test --test-reporter=spec test/backend/cuda.test.ts test/engine/cuda-graphs.test.ts \
    test/backend/cuda-training.test.ts
  figure "cuda suite: $(grep -E '^ℹ (pass|fail) ' "$out/cuda-tests.log" | tr '\n' ' ')"
  sed -n '/failing tests:/,$p' "$out/cuda-tests.log" | grep -v "^\s*at " | head -30
  # The serve-level GPU test alone (it times /health while the GPU is saturated).
  if [ "${SKIP_RESPONSIVE:-0}" != 1 ]; then
    step responsive 120 node --import tsx --test --test-reporter=spec test/server/cuda-responsive.test.ts
    figure "cuda responsive: $(grep -E '^ℹ (pass|fail) ' "$out/responsive.log" | tr '\n' ' ')"
    grep -E "health|budget|not ok" "$out/responsive.log" | head -8
  fi
fi
[ -n "$maker" ] && wait "$maker"
[ -f "$model/.complete" ] || { echo "model not made:"; tail -5 "$out/make-model.log"; exit 1; }

# The environment of a setting ("-" or VAR=VALUE,VAR=VALUE) as arguments for env.
# A comma starts a new variable only before NAME=, so a value may hold commas (TANDEM_SHORT_CONTEXT_GRAPHS=128,256).
settingEnv() { [ "$1" = - ] && return; sed 's/,\([A-Za-z_][A-Za-z0-9_]*=\)/\n\1/g' <<<"$1"; }
# A setting as a file-name tag.
tagOf() { [ "$1" = - ] && { echo defaults; return; }; tr -c 'A-Za-z0-9\n' '_' <<<"$1"; }

if [ "${SKIP_REPLAY:-0}" != 1 ]; then
  for s in ${REPLAY_AB:-- TANDEM_GEMV_LONG_ROWS=8x4 TANDEM_GEMV_LONG_ROWS=4x8 TANDEM_GEMV_LONG_ROWS=4x2 TANDEM_GEMV_LONG_ROWS=2x8}; do
    tag=$(tagOf "$s")
    # A setting run again (the defaults first and last) keeps both runs: replay-TAG-2.json, ...
    if [ -e "$out/replay-$tag.json" ]; then
      k=2
      while [ -e "$out/replay-$tag-$k.json" ]; do k=$((k + 1)); done
      tag="$tag-$k"
    fi
    mapfile -t envs < <(settingEnv "$s")
    step "replay-$tag" 60 env ${envs[@]+"${envs[@]}"} node --import tsx bench/decode-replay.ts --model "$model" \
      --batch "${REPLAY_BATCHES:-1,64}" --context "${REPLAY_CONTEXT:-128}" --card "$card" --out "$out/replay-$tag.json"
    while read -r _ _ batch ms plus _; do
      figure "$(printf 'replay, %-36s batch %-3s %8s ms (+sample+wait %s)' "$s" "$batch" "$ms" "$plus")"
    done < <(grep -E "^all ops" "$out/replay-$tag.log")
  done
fi

if [ "${SKIP_GRPO:-0}" != 1 ]; then
  if [ "${SKIP_EAGER_GRPO:-0}" != 1 ]; then
    for s in ${GRPO_AB:--}; do
      tag=$(tagOf "$s")
      mapfile -t envs < <(settingEnv "$s")
      step "grpo-$tag" 90 env ${envs[@]+"${envs[@]}"} node --import tsx bench/grpo-step.ts --model "$model" --backend cuda --steps 3 \
        --generations 6 --completion-tokens 200 --prompt-tokens 256 --rank 32 --micro-batch 6 --card "$card" --out "$out/grpo-$tag.json"
      figure "grpo eager, $s: $(grep -E '^mean of steps' "$out/grpo-$tag.log" || echo 'no result')"
    done
  fi
  # With graphs: the defaults, then the LoRA expand as product + axpy (linearAdd's A/B).
  for s in ${GRPO_GRAPHS_AB:-- TANDEM_LORA_FUSED_ADD=0}; do
    tag=$(tagOf "$s")
    mapfile -t envs < <(settingEnv "$s")
    step "grpo-graphs-$tag" 90 env ${envs[@]+"${envs[@]}"} node --import tsx bench/grpo-step.ts --model "$model" --backend cuda \
      --cuda-graphs --steps 3 --generations 6 --completion-tokens 200 --prompt-tokens 256 --rank 32 --micro-batch 6 --card "$card" \
      --out "$out/grpo-graphs-$tag.json"
    figure "grpo --cuda-graphs, $s: $(grep -E '^mean of steps' "$out/grpo-graphs-$tag.log" || echo 'no result')"
  done
fi

health() {
  python3 -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2).status == 200 else 1)" 2>/dev/null
}
if [ "${SKIP_SERVE:-0}" != 1 ]; then
  for s in ${SERVE_AB:--}; do
    tag=$(tagOf "$s")
    mapfile -t envs < <(settingEnv "$s")
    env ${envs[@]+"${envs[@]}"} node --import tsx src/cli.ts serve --backend cuda --cuda-graphs --model "$model" --port "$port" \
      --shutdown-grace-seconds 1 >"$out/server-$tag.log" 2>&1 &
    server=$!
    t0=$(date +%s)
    until health; do
      if ! kill -0 "$server" 2>/dev/null || [ $(($(date +%s) - t0)) -ge 120 ]; then break; fi
      sleep 1
    done
    if health; then
      step "serve-$tag" 60 node --import tsx bench/serve.ts --base-url "http://127.0.0.1:$port" --concurrency 64 --num-prompts 256 \
        --input-len 128 --output-len 128 --card "$card (tandem serve --backend cuda --cuda-graphs, $s)" --out "$out/serve-$tag.json"
      figure "serve c64, $s: $(grep -E 'output_throughput|median_ttft_ms|p99_ttft_ms|median_tpot_ms' "$out/serve-$tag.log" | awk '{printf "%s %s; ", $1, $2}')"
    else
      figure "serve c64, $s: server not ready (see server-$tag.log)"
    fi
    kill -TERM "$server" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$server" 2>/dev/null || break; sleep 1; done
    kill -KILL "$server" 2>/dev/null
    wait "$server" 2>/dev/null
  done
fi

printf '%s\n' "${summary[@]}"
echo "== figures"
printf '%s\n' "${table[@]}"
# The device returns at most 8 files from $OUT: pack every log and JSON into one archive.
if [ -n "${OUT:-}" ]; then
  tar czf /tmp/ab-round.tgz -C "$out" . && rm -rf "${out:?}"/* && mv /tmp/ab-round.tgz "$out/ab-round.tgz"
fi
