#!/usr/bin/env bash
# Whole-model bf16 logits parity on the GPU machine (issue 5, scope item 6), in one call of < 4 minutes:
#   source .device/env.sh && bash bench/peer/device-bf16-parity.sh
# Four random models:
#   qwen3b      Qwen2.5-3B's exact shapes (bench/peer/make_qwen_random.py --preset 3b: 36 layers, 16/2 heads of 128, tied)
#   headdim64   `tandem make-model --preset small --head-dim 64`: 8/2 heads of 64 on hidden 256 (explicit head_dim)
#   gqa7        bench/peer/make_odd_qwen.py: Qwen2.5-0.5B's head layout, 14 query / 2 KV heads of 64, hidden 896
#   untied      `tandem make-model --preset small --untied`: separate lm_head, 8/2 heads of 32
# Tandem's logits on --backend cuda (bench/peer/logits-runs.ts: one prefill, prefill + decode steps,
# packed batch) and transformers' in bf16 (sdpa) and fp32 (eager, TF32 off), run side by side,
# then compared (bench/peer/hf_logits_bf16.py) -> $OUT/parity-hf-logits-bf16.json.
# Knobs for a CPU smoke test: BACKEND=cpu PRESET_3B=tiny PYTHON=... SKIP_BUILD=1
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/bf16-parity-out}
work=${WORK:-/tmp/tandem-bf16-parity}
backend=${BACKEND:-cuda}
py=${PYTHON:-python3}
preset3b=${PRESET_3B:-3b}
mkdir -p "$out" && rm -rf "$work" && mkdir -p "$work/ours" "$work/hf"
began=$(date +%s)
tandem() { node --import tsx src/cli.ts "$@"; }
stamp() { echo "[$(($(date +%s) - began)) s] $*"; }
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ -n "$card" ] || card="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') (no GPU)"

# Prompts of 1 to 200 tokens (crossing 16-token block edges), ids below the 2048-token tokenizer.
"$py" - "$work/prompts.txt" <<'PY'
import random, sys
rng = random.Random(5)
with open(sys.argv[1], "w") as f:
    for n in (1, 7, 33, 120, 200):
        f.write(",".join(str(rng.randrange(0, 2048)) for _ in range(n)) + "\n")
PY

# Models (python on the GPU, node on the CPU) while the addon builds.
stamp "models + build"
timeout 120 "$py" bench/peer/make_qwen_random.py --preset "$preset3b" --out "$work/qwen3b" > "$out/bf16-make-3b.log" 2>&1 &
m3b=$!
(timeout 60 "$py" bench/peer/make_odd_qwen.py --out "$work/gqa7" --hidden 896 --heads 14 --kv-heads 2 --head-dim 64 --layers 4 --seed 21 \
  && timeout 60 bash -c "$(declare -f tandem); tandem make-model --preset small --seed 22 --head-dim 64 --out '$work/headdim64' \
  && tandem make-model --preset small --seed 23 --untied --out '$work/untied'") > "$out/bf16-make-small.log" 2>&1 &
msmall=$!
status=0
if [ -z "${SKIP_BUILD:-}" ]; then
  timeout 150 bash kernels/build.sh > "$out/bf16-build.log" 2>&1 || { echo "build failed:"; tail -20 "$out/bf16-build.log"; exit 1; }
fi
wait $msmall || { echo "small models failed:"; cat "$out/bf16-make-small.log"; status=1; }
wait $m3b || { echo "3b model failed:"; tail -5 "$out/bf16-make-3b.log"; status=1; }
cat "$out/bf16-make-small.log"
stamp "models ready"
variants=(gqa7 headdim64 untied qwen3b)

# transformers (dump) and Tandem side by side: the GPU holds both (3B: 12 + 6 GB and 6 GB).
hf_models=()
for v in "${variants[@]}"; do hf_models+=(--model "$v=$work/$v"); done
timeout 170 "$py" bench/peer/hf_logits_bf16.py dump "${hf_models[@]}" --prompts "$work/prompts.txt" --out "$work/hf" > "$out/bf16-hf.log" 2>&1 &
hf=$!
for v in "${variants[@]}"; do
  timeout 120 node --import tsx bench/peer/logits-runs.ts --model "$work/$v" --prompts "$work/prompts.txt" \
    --prefix "$work/ours/$v" --backend "$backend" 2>&1 | tail -5 || status=1
done
stamp "tandem done"
wait $hf || { echo "transformers dump failed:"; tail -20 "$out/bf16-hf.log"; exit 1; }
cat "$out/bf16-hf.log"
stamp "transformers done"
"$py" bench/peer/hf_logits_bf16.py compare $(printf -- '--model %s ' "${variants[@]}") --hf "$work/hf" --ours "$work/ours" \
  --prompts "$work/prompts.txt" --out "$out/parity-hf-logits-bf16.json" --card "$card (Tandem --backend $backend; transformers on the same device)" \
  --command "source .device/env.sh && bash bench/peer/device-bf16-parity.sh" || status=1
stamp "total"
exit $status
