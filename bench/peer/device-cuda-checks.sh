#!/usr/bin/env bash
# The CUDA backend's correctness checks in one device call (about 3 minutes):
#   source .device/env.sh && bash bench/peer/device-cuda-checks.sh
# build -> conformance suite on cuda (inference + training ops) -> CUDA-only tests (mixed dtypes,
# memory budget, bf16 model vs the CPU) -> /health responsiveness under load -> training-op timings
# -> a few GRPO steps of the real trainer on the GPU. Logs and a summary go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/cuda-checks-out}
mkdir -p "$out"
# shellcheck source=bench/peer/step.sh
source bench/peer/step.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
if ! step build 120 bash kernels/build.sh; then tail -40 "$out/build.log"; exit 1; fi
tail -1 "$out/build.log"
step cuda-tests 170 node --import tsx --test --test-reporter=spec test/backend/cuda.test.ts test/backend/cuda-training.test.ts
grep -E "^ℹ (tests|pass|fail|skipped)" "$out/cuda-tests.log"
sed -n '/failing tests:/,$p' "$out/cuda-tests.log" | grep -v "^\s*at " | head -60
step responsive 90 node --import tsx --test --test-reporter=spec test/server/cuda-responsive.test.ts
grep -E "^ℹ (pass|fail)|^# |health" "$out/responsive.log" | head -12
step train-ops 60 node --import tsx bench/train-ops.ts
tail -15 "$out/train-ops.log"
node --import tsx src/cli.ts make-model --preset small --out /tmp/m-small >/dev/null 2>&1
step grpo-step 70 node --import tsx bench/grpo-step.ts --model /tmp/m-small --backend cuda --steps 3 --generations 6 --completion-tokens 64 --rank 8
tail -8 "$out/grpo-step.log"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
