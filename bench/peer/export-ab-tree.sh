#!/usr/bin/env bash
# Writes the code of an older commit to ab-trees/REV (src, kernels, bin, package.json, tsconfig.json;
# git-ignored: carry ["ab-trees"] to the GPU machine with ".device") for
# bench/peer/device-serve-ab.sh's tree:REV setting. Remove it (rm -rf ab-trees) when done.
#   bash bench/peer/export-ab-tree.sh 20e71fb
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:?usage: export-ab-tree.sh REV}
dir="ab-trees/$rev"
rm -rf "$dir" && mkdir -p "$dir"
git archive "$rev" src kernels bin package.json tsconfig.json | tar -x -C "$dir"
du -sh "$dir"
