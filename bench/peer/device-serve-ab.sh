#!/usr/bin/env bash
# Serving A/B on the GPU machine: one `tandem serve --backend cuda` per setting, and bench/serve.ts
# (64 clients, 256 requests of 128 + 128 tokens, as the acceptance run) SERVE_RUNS times against
# each (default 2: a 4-second run varies between calls; run N sends the prompts of seed N, so no run
# finds another's prompts in the prefix cache), one server start per setting (a 3B model
# loads in ~30 s).
#   source .device/env.sh && SERVE_AB="- TANDEM_DECODE_Q_SPLIT=1 tree:20e71fb" bash bench/peer/device-serve-ab.sh
# A setting is "-" (the defaults), VAR=value[,VAR2=value2] (environment for the server), or
# tree:NAME: the tree ab-trees/NAME (bench/peer/export-ab-tree.sh REV writes it here; git-ignored,
# so the call carries it: carry [".device", "ab-trees"]) with its own addon build, to compare with an older commit.
# Each run's JSON (with the server's engine steps by kind) and the server logs go to $OUT; a
# "figure:" line per run. Knobs: SERVE_RUNS, SERVE_ARGS (default --cuda-graphs), GPU_BENCH_MODEL_DIR,
# SERVE_PROMPTS / SERVE_IN / SERVE_OUT, LIMIT_S (default 540: no run starts after it), SERVE_BACKEND (cuda;
# cpu for a smoke run here: SERVE_BACKEND=cpu SERVE_ARGS=' ' GPU_BENCH_MODEL_DIR=models/tandem-small).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
began=$(date +%s)
out=${OUT:-/tmp/serve-ab}
mkdir -p "$out"
model=${GPU_BENCH_MODEL_DIR:-/tmp/tandem-qwen2.5-3b-random}
runs=${SERVE_RUNS:-2}
port=8124
left() { echo $((${LIMIT_S:-540} - ($(date +%s) - began))); }
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "card: ${card:-?}  date: $(date -u +%F)"

backend=${SERVE_BACKEND:-cuda}
[ "$backend" != cuda ] || [ -f build/tandem_cuda.node ] || bash kernels/build.sh >"$out/build.log" 2>&1 || { echo "build failed"; tail -5 "$out/build.log"; exit 1; }
if [ ! -f "$model/.complete" ] && [ ! -f "$model/config.json" ]; then
  python3 bench/peer/make_qwen_random.py --preset 3b --out "$model" 2>"$out/make-model.log" && touch "$model/.complete" ||
    { echo "model failed"; tail -5 "$out/make-model.log"; exit 1; }
fi
for s in ${SERVE_AB:--}; do
  case $s in
    tree:*)
      dir="ab-trees/${s#tree:}"
      [ -d "$dir/src" ] || { echo "no $dir (bench/peer/export-ab-tree.sh REV)"; exit 2; }
      ln -sfn "$root/node_modules" "$dir/node_modules"
      if [ "$backend" = cuda ] && [ ! -f "$dir/build/tandem_cuda.node" ]; then
        (cd "$dir" && bash kernels/build.sh >"$out/build-${s#tree:}.log" 2>&1) || { echo "build of $dir failed"; tail -5 "$out/build-${s#tree:}.log"; exit 1; }
      fi ;;
  esac
done

# serve_setting SETTING: a server under the setting, SERVE_RUNS bench runs, the server stopped.
serve_setting() {
  local s=$1 dir=$root tag envs=() run
  tag=$([ "$s" = - ] && echo defaults || sed 's/[^A-Za-z0-9]/_/g' <<<"$s")
  case $s in
    -) ;;
    tree:*) dir="$root/ab-trees/${s#tree:}" ;;
    *) mapfile -t envs < <(sed 's/,\([A-Za-z_][A-Za-z0-9_]*=\)/\n\1/g' <<<"$s") ;;
  esac
  # shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
  (cd "$dir" && exec env ${envs[@]+"${envs[@]}"} node --import tsx src/cli.ts serve --backend "$backend" --model "$model" --port $port \
    --shutdown-grace-seconds 1 ${SERVE_ARGS:---cuda-graphs}) >"$out/server-$tag.log" 2>&1 &
  local server=$! t0
  t0=$(date +%s)
  until python3 -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2).status == 200 else 1)" 2>/dev/null; do
    if ! kill -0 $server 2>/dev/null || [ $(($(date +%s) - t0)) -ge 120 ]; then
      echo "figure: serve $s: server not ready"; tail -5 "$out/server-$tag.log"; kill -KILL $server 2>/dev/null; return
    fi
    sleep 1
  done
  for run in $(seq 1 "$runs"); do
    [ "$(left)" -gt 30 ] || { echo "out of time before $s run $run"; break; }
    timeout 120 node --import tsx bench/serve.ts --base-url "http://127.0.0.1:$port" --concurrency 64 --num-prompts "${SERVE_PROMPTS:-256}" \
      --input-len "${SERVE_IN:-128}" --output-len "${SERVE_OUT:-128}" --seed "$run" --card "${card:-$(hostname) (no GPU)}" \
      --out "$out/serve-$tag-$run.json" >"$out/serve-$tag-$run.txt" 2>&1
    python3 - "$out/serve-$tag-$run.json" "$s" "$run" <<'PY' || echo "figure: serve $s run $run: no results"
import json, sys
d = {r["name"]: r["value"] for r in json.load(open(sys.argv[1]))["results"]}
steps = " ".join(f"{k[13:]} {int(d[k])} x {d['engine_step_mean_ms_' + k[13:]]:.2f} ms" for k in d if k.startswith("engine_steps_"))
print(f"figure: serve {sys.argv[2]:<28} run {sys.argv[3]}: {d['output_throughput']:8.1f} out tok/s  TTFT {d['median_ttft_ms']:6.1f}  "
      f"TPOT {d['median_tpot_ms']:5.2f}  {d['duration']:.2f} s; steps: {steps}")
PY
  done
  grep -m1 "captured .* decode graphs" "$out/server-$tag.log" | sed "s/^/figure: serve $s: /"
  kill -TERM $server 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 $server 2>/dev/null || break; sleep 1; done
  kill -KILL $server 2>/dev/null
  wait $server 2>/dev/null
}

for s in ${SERVE_AB:--}; do
  [ "$(left)" -gt 60 ] || { echo "out of time before $s"; break; }
  serve_setting "$s"
done
(cd "$out" && tar czf serve-ab.tgz ./*.json ./*.txt ./*.log 2>/dev/null)
