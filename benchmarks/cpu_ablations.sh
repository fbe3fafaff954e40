#!/usr/bin/env bash
# IDEAL ablations on Fashion-MNIST at a fixed query budget, on this CPU: each variant is
# `compare.py --methods ideal ideal_redistilled` with parameter overrides, one process per
# variant and seed, JOBS at a time with one torch thread each; then one merged report per variant
# and the table benchmarks/results/ablations.md (summarize_ablations.py).
#
#   SEEDS="0 1" JOBS=2 bash benchmarks/cpu_ablations.sh            # all variants
#   VARIANTS="continued_g5" SEEDS=0 bash benchmarks/cpu_ablations.sh
#
# The unmodified default is the `ideal` row of compare_fashion_mnist (same teacher, same Q).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PY:-python}
queries=${QUERIES:-10000}
out=benchmarks/results/ablations
declare -A overrides=(
  [continued_g20]="--set generator.reinitialize=false"
  [continued_g5]="--set generator.reinitialize=false --set generator.g_steps=5"
  [fresh_g5]="--set generator.g_steps=5"
  [entropy_w0]="--set generator.entropy_weight=0"
  [entropy_w1]="--set generator.entropy_weight=1"
  [entropy_w20]="--set generator.entropy_weight=20"
)
variants=${VARIANTS:-continued_g5 fresh_g5 continued_g20 entropy_w0 entropy_w1 entropy_w20}
mkdir -p "$out/logs"
$py benchmarks/compare.py --dataset fashion_mnist --prepare-teacher > /dev/null 2>&1
for seed in ${SEEDS:-0 1 2}; do
  for variant in $variants; do
    echo "$variant $seed"
  done
done | xargs -P "${JOBS:-2}" -L 1 bash -c '
  variant=$0 seed=$1
  '"$(declare -p overrides)"'
  '"$py"' benchmarks/compare.py --dataset fashion_mnist --queries '"$queries"' --seeds "$seed" \
    --methods ideal ideal_redistilled --threads 1 ${overrides[$variant]} \
    --out-dir '"$out"'/$variant/seed$seed > '"$out"'/logs/${variant}_seed$seed.log 2>&1 \
    && echo "done $variant seed $seed" || echo "FAILED $variant seed $seed (see '"$out"'/logs)"'
for variant in $variants; do
  parts=$(ls -d "$out/$variant"/seed* 2>/dev/null || true)
  [ -n "$parts" ] && $py benchmarks/compare.py --dataset fashion_mnist --merge $parts --out-dir "$out/$variant" > /dev/null
done
$py benchmarks/summarize_ablations.py
