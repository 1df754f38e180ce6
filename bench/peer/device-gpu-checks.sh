#!/usr/bin/env bash
# GPU-machine checks of this session, in one call:
#   source .device/env.sh && bash bench/peer/device-gpu-checks.sh
# 1. build the CUDA addon and run the backend conformance suite on the card -> $OUT/cuda-conformance.txt
# 2. LoRA adapters both ways with peft -> $OUT/lora-peft.txt
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp}
status=0
{ bash kernels/build.sh && node --import tsx --test --test-reporter=spec test/backend/cuda.test.ts; } > "$out/cuda-conformance.txt" 2>&1 || status=1
tail -12 "$out/cuda-conformance.txt"

work=/tmp/tandem-lora && rm -rf "$work" && mkdir -p "$work"
(
  set -e
  node --import tsx src/cli.ts make-model --preset tiny --seed 21 --out "$work/model"
  scale=$(node --import tsx bench/peer/adapter-io.ts save "$work/model" "$work/ours")
  echo "== Tandem -> peft (scale $scale)"
  python3 bench/peer/peft_adapter.py check --model "$work/model" --adapter "$work/ours" --scale "$scale"
  echo "== peft -> Tandem"
  python3 bench/peer/peft_adapter.py make --model "$work/model" --out "$work/theirs" --targets q_proj,v_proj,down_proj
  node --import tsx bench/peer/adapter-io.ts load "$work/model" "$work/theirs" "$work/theirs.expect.json"
  python3 -c "import peft, transformers, torch; print('peft', peft.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
  nvidia-smi --query-gpu=name --format=csv,noheader
) > "$out/lora-peft.txt" 2>&1 || status=1
cat "$out/lora-peft.txt" | grep -v Loading
exit $status
