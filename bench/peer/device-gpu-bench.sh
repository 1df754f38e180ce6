#!/usr/bin/env bash
# The CUDA backend's acceptance benchmark (issue 5) in one device call, within 9 minutes:
#   source .device/env.sh && bash bench/peer/device-gpu-bench.sh
# 1. build the addon (kernels/build.sh)
# 2. a random-weight Qwen2.5-3B-shaped model in /tmp (bench/peer/make_qwen_random.py)
# 3. the card's copy bandwidth and bf16 GEMM rate, and Hugging Face generate at batch 1 and 64
#    (bench/peer/hf_generate.py)                                    -> $OUT/gpu-peer-hf.json
# 4. Tandem decode at batch 1/64/256 against those floors (bench/gpu-decode.ts) -> $OUT/gpu-decode.json
# 5. `tandem serve --backend cuda` under bench/serve.ts, 64 concurrent clients -> $OUT/gpu-serve-c64.json
# then a table of the acceptance ratios ($OUT/gpu-summary.txt). Every phase runs under a timeout
# cut from one budget (GPU_BENCH_BUDGET_S, default 510 s), so the call ends in time whatever hangs.
#
# Knobs (defaults are the acceptance run; the CPU smoke test sets the first three):
#   GPU_BENCH_BACKEND=cuda  GPU_BENCH_PRESET=3b  PYTHON=python3  GPU_BENCH_MODEL_DIR=/tmp/tandem-qwen2.5-3b-random
#   GPU_BENCH_BATCHES=1,64,256  GPU_BENCH_STEPS=128  GPU_BENCH_HF_TOKENS=64
#   GPU_BENCH_SERVE_PROMPTS=256  GPU_BENCH_SERVE_IN=128  GPU_BENCH_SERVE_OUT=128  GPU_BENCH_SERVE_ARGS="" (extra serve flags)
#   GPU_BENCH_DECODE_ARGS="" (extra bench/gpu-decode.ts flags, e.g. --cuda-graphs)
#   GPU_BENCH_SKIP_BUILD=1 (keep the addon an earlier call built on this warm machine)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$out"
backend=${GPU_BENCH_BACKEND:-cuda}
preset=${GPU_BENCH_PRESET:-3b}
py=${PYTHON:-python3}
model=${GPU_BENCH_MODEL_DIR:-/tmp/tandem-qwen2.5-${preset}-random}
batches=${GPU_BENCH_BATCHES:-1,64,256}
steps=${GPU_BENCH_STEPS:-128}
hf_tokens=${GPU_BENCH_HF_TOKENS:-64}
serve_prompts=${GPU_BENCH_SERVE_PROMPTS:-256}
serve_in=${GPU_BENCH_SERVE_IN:-128}
serve_out=${GPU_BENCH_SERVE_OUT:-128}
port=${GPU_BENCH_PORT:-8123}
budget=${GPU_BENCH_BUDGET_S:-510}
began=$(date +%s)
status=0
phases=()

card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
GPU_BENCH_HOST="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
export GPU_BENCH_HOST
[ -n "$card" ] || card="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') (no GPU)"

# Seconds a phase may take: its cap, or what is left of the budget after reserving `keep` seconds
# for the phases after it, whichever is smaller (at least 10).
allow() {
  local cap=$1 keep=$2 left
  left=$((budget - ($(date +%s) - began) - keep))
  [ "$left" -lt "$cap" ] && cap=$left
  [ "$cap" -lt 10 ] && cap=10
  echo "$cap"
}

# run_phase NAME CAP KEEP CMD...: run CMD under a timeout, note its time and outcome.
run_phase() {
  local name=$1 limit t0 rc
  limit=$(allow "$2" "$3")
  shift 3
  echo "== $name (limit ${limit} s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  phases+=("$name $(($(date +%s) - t0)) s$([ $rc = 0 ] || echo " (exit $rc$([ $rc = 124 ] && echo ', timed out'))")")
  [ $rc = 0 ] || status=1
  return $rc
}

if [ "$backend" = cuda ] && ! { [ "${GPU_BENCH_SKIP_BUILD:-0}" = 1 ] && [ -f build/tandem_cuda.node ]; }; then
  run_phase build 150 300 bash -c "bash kernels/build.sh > '$out/gpu-build.log' 2>&1; rc=\$?; tail -3 '$out/gpu-build.log'; exit \$rc"
fi

if [ -f "$model/.complete" ]; then
  echo "== model: reusing $model"
else
  run_phase make-model 120 240 bash -c "'$py' bench/peer/make_qwen_random.py --preset '$preset' --out '$model' 2> '$out/gpu-make-model.log' \
    && touch '$model/.complete' || { tail -5 '$out/gpu-make-model.log'; exit 1; }"
fi

rm -f "$out/gpu-peer-hf.json" "$out/gpu-decode.json" "$out/gpu-serve-c64.json"
run_phase hf-peer 120 180 bash -c "'$py' bench/peer/hf_generate.py --model '$model' --batch 1,64 --new-tokens '$hf_tokens' \
  --card '$card' --out '$out/gpu-peer-hf.json' > '$out/gpu-peer-hf.log' 2>&1; rc=\$?; grep -E '^(card|hf generate)' '$out/gpu-peer-hf.log'; exit \$rc"

peer_args=()
[ -f "$out/gpu-peer-hf.json" ] && peer_args=(--peer "$out/gpu-peer-hf.json")
decode_limit=$(allow 150 100)
run_phase tandem-decode 150 100 node --import tsx bench/gpu-decode.ts --model "$model" --backend "$backend" \
  --batch "$batches" --steps "$steps" ${peer_args[@]+"${peer_args[@]}"} --card "$card" --deadline-s $((decode_limit * 2 / 3)) \
  --out "$out/gpu-decode.json" ${GPU_BENCH_DECODE_ARGS:-}

# Serving: start the server, wait until /health answers 200, drive it, stop it.
serve_log="$out/gpu-serve-server.log"
# shellcheck disable=SC2086 # GPU_BENCH_SERVE_ARGS is a list of flags
node --import tsx src/cli.ts serve --backend "$backend" --model "$model" --port "$port" --shutdown-grace-seconds 1 \
  ${GPU_BENCH_SERVE_ARGS:-} > "$serve_log" 2>&1 &
server=$!
health() {
  "$py" -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2).status == 200 else 1)" 2>/dev/null
}
t0=$(date +%s)
wait_limit=$(allow 120 60)
until health; do
  if ! kill -0 "$server" 2>/dev/null || [ $(($(date +%s) - t0)) -ge "$wait_limit" ]; then break; fi
  sleep 1
done
if health; then
  phases+=("serve-load $(($(date +%s) - t0)) s")
  run_phase serve-c64 90 10 node --import tsx bench/serve.ts --base-url "http://127.0.0.1:$port" --concurrency 64 \
    --num-prompts "$serve_prompts" --input-len "$serve_in" --output-len "$serve_out" --card "$card (tandem serve --backend $backend)" \
    --out "$out/gpu-serve-c64.json"
else
  phases+=("serve-load $(($(date +%s) - t0)) s (not ready)")
  status=1
  echo "tandem serve did not become ready; its log ends:"
  tail -15 "$serve_log"
fi
kill -TERM "$server" 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$server" 2>/dev/null || break; sleep 1; done
kill -KILL "$server" 2>/dev/null
wait "$server" 2>/dev/null

# The acceptance table, from the JSON files alone.
"$py" - "$out" "$(IFS='|'; echo "${phases[*]}")" <<'EOF' | tee "$out/gpu-summary.txt"
import json, os, sys
out, phases = sys.argv[1], [p for p in sys.argv[2].split("|") if p]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            doc = json.load(f)
        return doc, {r["name"]: r for r in doc["results"]}
    except (OSError, ValueError, KeyError):
        return None, {}
dec_doc, dec = load("gpu-decode.json")
hf_doc, hf = load("gpu-peer-hf.json")
srv_doc, srv = load("gpu-serve-c64.json")
head = dec_doc or hf_doc or srv_doc or {}
print(f"\ncard: {head.get('card', '?')}   date: {head.get('date', '?')}")
knobs = " ".join(f"{k}='{os.environ[k]}'" for k in ("GPU_BENCH_DECODE_ARGS", "GPU_BENCH_SERVE_ARGS") if os.environ.get(k))
print(f"command: source .device/env.sh && {knobs + ' ' if knobs else ''}bash bench/peer/device-gpu-bench.sh")
if "copy_bandwidth" in hf:
    print(f"floors from: copy {hf['copy_bandwidth']['value']} GB/s, bf16 GEMM {hf['gemm_bf16_8192']['value']} TFLOP/s")
# The host matters too: serving and transformers' batch-1 generate are bound by it.
print(f"host: {os.environ.get('GPU_BENCH_HOST', '?')}")
if dec_doc:
    print(f"model: {dec_doc['floors']['weight_bytes_per_step'] / 1e9:.3f} GB of weights read per step ({dec_doc['config']['weight_dtype']})")
print(f"{'figure':<34}{'Tandem':>10}{'floor':>10}{'% floor':>9}{'HF':>9}{'x HF':>7}  target")
targets = {1: ">=80% floor, >=20x HF", 64: ">=5x HF"}
for b in (dec_doc or {}).get("config", {}).get("batch", []):
    r = dec.get(f"decode_b{b}_tokens_per_s")
    if not r:
        continue
    floor, peer = r.get("floor"), r.get("peer")
    pct = f"{100 * r['value'] / floor:.1f}%" if floor else "-"
    x = f"{r['value'] / peer:.1f}x" if peer else "-"
    floor_s = f"{floor:.1f}" if floor else "-"
    peer_s = f"{peer:.1f}" if peer else "-"
    label = f"decode batch {b} (tokens/s)"
    print(f"{label:<34}{r['value']:>10.1f}{floor_s:>10}{pct:>9}{peer_s:>9}{x:>7}  {targets.get(b, '')}")
    ms = dec.get(f"decode_b{b}_ms_per_step")
    if ms:
        ms_floor = f"{ms['floor']:.3f}" if "floor" in ms else "-"
        print(f"{'  ms/step':<34}{ms['value']:>10.3f}{ms_floor:>10}")
if "decode_b1_forward_only_tokens_per_s" in dec:
    print(f"{'batch 1 without the engine':<34}{dec['decode_b1_forward_only_tokens_per_s']['value']:>10.1f}")
if srv:
    c = srv_doc["config"]
    print(f"serve, {c['concurrency']} clients, {c['num_prompts']} prompts of {c['input_len']} -> {c['output_len']} tokens: "
          f"{srv['completed']['value']} done, {srv['failed']['value']} failed")
    for k, label in [("output_throughput", "output tokens/s"), ("total_token_throughput", "total tokens/s"),
                     ("median_ttft_ms", "median TTFT ms"), ("p99_ttft_ms", "p99 TTFT ms"), ("median_tpot_ms", "median TPOT ms"),
                     ("median_itl_ms", "median ITL ms"), ("p99_itl_ms", "p99 ITL ms")]:
        if k in srv:
            print(f"  {label:<32}{srv[k]['value']:>10}")
if hf_doc and hf_doc.get("error"):
    print(f"HF peer error: {hf_doc['error']}")
print("phases: " + ", ".join(phases))
EOF
echo "total $(($(date +%s) - began)) s; files: $(cd "$out" && ls gpu-*.json 2>/dev/null | tr '\n' ' ')"
exit $status
