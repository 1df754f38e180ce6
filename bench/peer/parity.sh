#!/usr/bin/env bash
# Run on the GPU machine (it has torch + transformers):
#   source .device/env.sh && bash bench/peer/parity.sh
# Makes four random models with `tandem make-model` (GQA + tied, MHA + untied, Llama, Qwen3 with
# an explicit head_dim), writes our CPU logits for several prompts with `tandem logits`, and
# compares them with transformers' fp32 logits. Output: bench/results/parity-hf-logits.json
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${WORK:-/tmp/tandem-parity}
out=${OUT_JSON:-bench/results/parity-hf-logits.json}
rm -rf "$work" && mkdir -p "$work/npy"
tandem() { node --import tsx src/cli.ts "$@"; }

tandem make-model --preset small --seed 11 --kv-heads 2 --out "$work/qwen2_gqa"
tandem make-model --preset small --seed 12 --kv-heads 8 --untied --dtype f32 --out "$work/qwen2_untied"
tandem make-model --preset tiny --seed 13 --arch llama --kv-heads 1 --untied --out "$work/llama_mqa"
tandem make-model --preset tiny --seed 14 --arch qwen3 --head-dim 32 --out "$work/qwen3_headdim"

# Prompts: short, crossing a 16-token block edge, and long; ids drawn below every model's vocab.
python3 - "$work/prompts.txt" <<'PY'
import random, sys
rng = random.Random(7)
lens = [1, 5, 17, 40, 130]
with open(sys.argv[1], "w") as f:
    for n in lens:
        f.write(",".join(str(rng.randrange(0, 500)) for _ in range(n)) + "\n")
PY
models=()
for m in qwen2_gqa qwen2_untied llama_mqa qwen3_headdim; do
  i=0
  while IFS= read -r ids; do
    tandem logits --model "$work/$m" --ids "$ids" --out "$work/npy/$m.$i.npy"
    i=$((i + 1))
  done < "$work/prompts.txt"
  models+=(--model "$m=$work/$m")
done
python3 bench/peer/hf_logits.py "${models[@]}" --ours "$work/npy" --prompts "$work/prompts.txt" --out "$out" \
  --command "bash bench/peer/parity.sh"
