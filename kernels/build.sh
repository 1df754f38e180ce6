#!/usr/bin/env bash
# Builds the CUDA backend's native addon, build/tandem_cuda.node, from kernels/*.cu (nvcc) and
# kernels/binding*.cpp (the Node-API binding), linked against cuBLASLt with the CUDA runtime static.
# Plain bash on purpose: the GPU machine has nvcc but no npm or node-gyp.
#
#   bash kernels/build.sh                              sm_90 (H100 / H200)
#   TANDEM_CUDA_ARCHS="90 89 80" bash kernels/build.sh  release: one cubin per arch + PTX of the newest
#
# Environment: CUDA_HOME (default: from nvcc, else /usr/local/cuda), NVCC, CXX (default g++),
# NAPI_INCLUDE (default node_modules/node-api-headers/include), TANDEM_CUDA_NO_CUBLAS=1 (build
# without cuBLASLt: every linear runs a slow fallback kernel; for machines without cuBLAS),
# TANDEM_CUDA_TRACE=1 (kernels record a block timeline, kernels/trace.h: the addon goes to
# build/trace/tandem_cuda.node, beside the plain one; load it with TANDEM_CUDA_ADDON=that path).
# Where there is no nvcc or no CUDA, it prints one line saying why and exits 0.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

skip() {
  echo "CUDA backend skipped: $1"
  exit 0
}

NVCC=${NVCC:-$(command -v nvcc || true)}
if [ -z "$NVCC" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then NVCC=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc; fi
[ -n "$NVCC" ] || skip "nvcc not found"
if [ -z "${CUDA_HOME:-}" ]; then
  CUDA_HOME=$(cd "$(dirname "$(readlink -f "$NVCC")")/.." && pwd)
  # nvcc may be a wrapper script outside the toolkit
  [ -f "$CUDA_HOME/include/cuda_runtime.h" ] || CUDA_HOME=/usr/local/cuda
fi
[ -f "$CUDA_HOME/include/cuda_runtime.h" ] || skip "CUDA headers not found under $CUDA_HOME/include"

cuda_lib=""
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME"/targets/*/lib; do
  if [ -e "$d/libcudart_static.a" ] || [ -e "$d/libcudart.so" ]; then cuda_lib=$d; break; fi
done
[ -n "$cuda_lib" ] || skip "the CUDA runtime library was not found under $CUDA_HOME"

defines=()
includes=()
libs=()
rpaths=("$cuda_lib")
# TANDEM_CUDA_TRACE=1: kernels record a block timeline (kernels/trace.h; bench/decode-replay.ts --trace).
out_dir=build
if [ "${TANDEM_CUDA_TRACE:-0}" = 1 ]; then
  out_dir=build/trace
  defines+=(-DTANDEM_TRACE)
  echo "note: building with the kernel trace (TANDEM_CUDA_TRACE=1): every kernel block records two timestamps"
fi
if [ "${TANDEM_CUDA_NO_CUBLAS:-0}" = 1 ]; then
  defines+=(-DTANDEM_NO_CUBLASLT)
  echo "warning: building without cuBLASLt (TANDEM_CUDA_NO_CUBLAS=1): linear uses a slow fallback kernel"
else
  # cuBLAS ships with the toolkit, or as pip's nvidia-cublas (nvidia/cu13/{include,lib}).
  cublas_inc=""
  for d in ${CUBLAS_HOME:+"$CUBLAS_HOME/include"} "$CUDA_HOME/include" "$CUDA_HOME"/targets/*/include /usr/include \
           /opt/*/.venv/lib/python3*/site-packages/nvidia/cu1[0-9]/include /usr/local/lib/python3*/dist-packages/nvidia/cu1[0-9]/include; do
    if [ -f "$d/cublasLt.h" ]; then cublas_inc=$d; break; fi
  done
  [ -n "$cublas_inc" ] || skip "cuBLAS headers (cublasLt.h) not found under $CUDA_HOME (TANDEM_CUDA_NO_CUBLAS=1 builds with a slow fallback GEMM)"
  cublas_lib=""
  for d in ${CUBLAS_HOME:+"$CUBLAS_HOME/lib64" "$CUBLAS_HOME/lib"} "$cuda_lib" "$(dirname "$cublas_inc")/lib64" "$(dirname "$cublas_inc")/lib" /usr/lib/x86_64-linux-gnu; do
    if ls "$d"/libcublasLt.so* >/dev/null 2>&1; then cublas_lib=$d; break; fi
  done
  [ -n "$cublas_lib" ] || skip "cuBLAS headers found in $cublas_inc but no libcublasLt.so beside them or in $cuda_lib"
  includes+=(-I"$cublas_inc")
  for name in cublasLt cublas; do
    if [ -e "$cublas_lib/lib$name.so" ]; then
      libs+=(-l"$name")
    else
      versioned=$(cd "$cublas_lib" && ls lib"$name".so.* 2>/dev/null | sort | head -1)
      [ -n "$versioned" ] && libs+=(-l:"$versioned")
    fi
  done
  libs=(-L"$cublas_lib" "${libs[@]}")
  [ "$cublas_lib" = "$cuda_lib" ] || rpaths+=("$cublas_lib")
fi

NAPI_INCLUDE=${NAPI_INCLUDE:-}
if [ -z "$NAPI_INCLUDE" ]; then
  if [ -f node_modules/node-api-headers/include/node_api.h ]; then
    NAPI_INCLUDE=node_modules/node-api-headers/include
  elif command -v node >/dev/null; then
    NAPI_INCLUDE=$(node -p "require('node-api-headers').include_dir" 2>/dev/null || true)
  fi
fi
if [ -z "$NAPI_INCLUDE" ] || [ ! -f "$NAPI_INCLUDE/node_api.h" ]; then
  echo "CUDA backend build failed: Node-API headers not found (run npm install, or set NAPI_INCLUDE)" >&2
  exit 1
fi

archs=${TANDEM_CUDA_ARCHS:-90}
gencode=()
newest=0
for a in $archs; do
  gencode+=("-gencode=arch=compute_$a,code=sm_$a")
  if [ "$a" -gt "$newest" ]; then newest=$a; fi
done
if [ "$(echo "$archs" | wc -w)" -gt 1 ]; then gencode+=("-gencode=arch=compute_$newest,code=compute_$newest"); fi

CXX=${CXX:-g++}
obj=$out_dir/obj
mkdir -p "$obj"
start=$(date +%s)
nvcc_flags=(-std=c++17 -O3 -Xcompiler -fPIC,-fvisibility=hidden -Ikernels "${includes[@]}" "${defines[@]}" "${gencode[@]}")

# Compile every .cu in parallel; report every failure, not just the first.
pids=()
names=()
for src in kernels/*.cu; do
  name=$(basename "$src" .cu)
  "$NVCC" "${nvcc_flags[@]}" -c "$src" -o "$obj/$name.o" >"$obj/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
done
# The Node-API binding: binding.cpp (memory, copies, init) and one binding-*.cpp per op family.
for src in kernels/*.cpp; do
  name=$(basename "$src" .cpp)
  "$CXX" -std=c++17 -O2 -Wall -fPIC -fvisibility=hidden -DNAPI_VERSION=8 -I"$NAPI_INCLUDE" -I"$CUDA_HOME/include" \
    -Ikernels -c "$src" -o "$obj/$name.o" >"$obj/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "CUDA backend build failed: ${names[$i]}" >&2
    cat "$obj/${names[$i]}.log" >&2
    failed=1
  elif [ -s "$obj/${names[$i]}.log" ]; then
    cat "$obj/${names[$i]}.log" >&2
  fi
done
[ "$failed" = 0 ] || exit 1

objects=()
for name in "${names[@]}"; do objects+=("$obj/$name.o"); done
# N-API symbols stay undefined here and resolve against the node binary at load time.
rpath_flags=()
for d in "${rpaths[@]}"; do rpath_flags+=(-Xlinker -rpath="$d"); done
"$NVCC" -shared "${gencode[@]}" -o "$out_dir/tandem_cuda.node" "${objects[@]}" -L"$cuda_lib" "${libs[@]}" "${rpath_flags[@]}"
echo "built $out_dir/tandem_cuda.node (sm: $archs, $(basename "$NVCC") $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), $(($(date +%s) - start)) s)"
