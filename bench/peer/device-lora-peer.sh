#!/usr/bin/env bash
# LoRA gradients and logits, Tandem vs peft, in one call on the GPU machine (it has torch,
# transformers and peft):
#   source .device/env.sh && bash bench/peer/device-lora-peer.sh
# Tandem runs on its CPU backend (fp32); torch runs on the GPU in fp32 with TF32 off
# (PEER_DEVICE=cpu runs it on the CPU instead). Three variants:
#   qwen2_tiny_gqa_tied     tiny preset, GQA 4/2, tied head, qkv bias, r=4 alpha=8 on all seven projections
#   qwen2_tiny_untied_mha   tiny preset, MHA 4/4, untied head, qkv bias, f32 checkpoint, r=8 alpha=16, all seven
#   qwen2_small_rslora      small preset, GQA 8/2, r=16 alpha=32 rsLoRA on q, v, o, down only
# Output: $OUT/lora-peft-grads.json (-> bench/results/) and $OUT/lora-peer.log. Exit status 1 on
# any error of 1e-4 or more.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp}
work=${WORK:-/tmp/tandem-lora-peer}
device=${PEER_DEVICE:-$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
rm -rf "$work" && mkdir -p "$work"
tandem() { node --import tsx src/cli.ts "$@"; }

export PYTHONUNBUFFERED=1
status=0
variants=()
run_variant() {
  local name=$1 make_args=$2 lora_args=$3 seed=$4
  local w="$work/$name"
  tandem make-model $make_args --seed "$seed" --out "$w/model" &&
    node --import tsx bench/peer/lora-grads.ts tandem --model "$w/model" --work "$w" $lora_args --seed "$seed" &&
    python3 bench/peer/peft_grads.py make --model "$w/model" --like "$w/tandem-adapter" --out "$w/peft-adapter" --seed "$seed" &&
    node --import tsx bench/peer/lora-grads.ts logits --model "$w/model" --adapter "$w/peft-adapter" --batch "$w/batch.json" \
      --out "$w/peft-adapter-tandem-logits.safetensors" &&
    variants+=(--variant "$name=$w/model:$w")
}
{
  run_variant qwen2_tiny_gqa_tied "--preset tiny" "--rank 4 --alpha 8" 41 || status=1
  run_variant qwen2_tiny_untied_mha "--preset tiny --kv-heads 4 --untied --dtype f32" "--rank 8 --alpha 16" 42 || status=1
  run_variant qwen2_small_rslora "--preset small" "--rank 16 --alpha 32 --rslora --targets q_proj,v_proj,o_proj,down_proj" 43 || status=1
  python3 bench/peer/peft_grads.py compare "${variants[@]}" --device "$device" --out "$out/lora-peft-grads.json" \
    --command "source .device/env.sh && bash bench/peer/device-lora-peer.sh" || status=1
  python3 -c "import peft, transformers, torch; print('peft', peft.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
  exit $status
} 2>&1 | grep -v 'Loading weights' | tee "$out/lora-peer.log"
exit "${PIPESTATUS[0]}"
