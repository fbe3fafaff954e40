#!/usr/bin/env bash
# Parallel IDEAL variants at the default 50K-query budget on one GPU (a lent device machine).
# Results: $OUT/sweep_<name>.json (or benchmarks/results/ when OUT is unset).
set -u
out=${OUT:-benchmarks/results}
mkdir -p "$out"
py=${PY:-python3}
common="--device cuda --teacher /tmp/sweep_teacher.safetensors --set num_threads=1"
$py -c "import torch, yaml, tqdm; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
# The teacher is trained once, by a one-round run, then shared by all variants.
$py benchmarks/ideal_sweep.py --name warmup --out "$out/warmup.json" $common --set rounds=1 > /dev/null 2>&1
logs=${LOGS:-/tmp/sweep_logs}
mkdir -p "$logs"
run() { name=$1; shift; $py benchmarks/ideal_sweep.py --name "$name" --out "$out/sweep_$name.json" $common "$@" > "$logs/$name.log" 2>&1 & }
case "${SWEEP:-variants}" in
variants)
  run base
  run g5 --set generator.g_steps=5
  run b500e50 --set rounds=50 --set batch_size=500
  run per_sample --set generator.entropy_form=per_sample
  run convnet_student --set student.architecture=convnet
  run b500e50_2ep --set rounds=50 --set batch_size=500 --set distill.epochs=2
  run g20 --set generator.g_steps=20
  run balanced --set generator.target_sampling=balanced
  ;;
seeds)
  for seed in 0 1 2; do
    run default_s$seed --set seed=$seed
    run b500e50_s$seed --set seed=$seed --set rounds=50 --set batch_size=500
  done
  run distill_lr02 --set distill.lr=0.02
  run ngf48 --set generator.ngf=48
  ;;
coverage)
  for seed in 0 1 2; do
    run ngf32_g20_s$seed --set seed=$seed --set generator.ngf=32 --set generator.g_steps=20
    run g20_s$seed --set seed=$seed --set generator.g_steps=20
  done
  run ngf48_g15_s1 --set seed=1 --set generator.ngf=48 --set generator.g_steps=15
  run ngf48_g15_s2 --set seed=2 --set generator.ngf=48 --set generator.g_steps=15
  ;;
esac
wait
ls "$out"
