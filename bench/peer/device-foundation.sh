#!/usr/bin/env bash
# The foundation issue's GPU-machine checks in one call:
#   source .device/env.sh && bash bench/peer/device-foundation.sh
# 1. logits parity vs transformers fp32 (bench/peer/parity.sh) -> bench/results/parity-hf-logits.json
# 2. tokenizer + chat template parity vs AutoTokenizer on a make-model dir and the embedded model
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp}
status=0
OUT_JSON="$out/parity-hf-logits.json" bash bench/peer/parity.sh 2>&1 | tee "$out/parity.log" || status=1
for m in /tmp/tandem-parity/qwen2_gqa models/tandem-small; do
  node --import tsx bench/peer/encode.ts "$m" > "$out/ours-tok.json" && python3 bench/peer/hf_tokenizer.py "$m" "$out/ours-tok.json" 2>&1 | tee -a "$out/tokenizer.log" || status=1
done
python3 -c "import transformers, torch; print('transformers', transformers.__version__, 'torch', torch.__version__)"
exit $status
