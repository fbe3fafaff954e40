#!/usr/bin/env bash
# Parallel IDEAL variants at the default 50K-query budget on one GPU (a lent device machine).
# Results: $OUT/sweep_<name>.json (or benchmarks/results/ when OUT is unset).
set -u
out=${OUT:-benchmarks/results}
mkdir -p "$out"
py=${PY:-python3}
common="--device cuda --teacher $out/teacher.pt2 --set num_threads=1"
$py -c "import torch, yaml, tqdm; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
# The teacher is trained once, by a one-round run, then shared by all variants.
$py benchmarks/ideal_sweep.py --name warmup --out "$out/warmup.json" $common --set rounds=1 > "$out/warmup.log" 2>&1
run() { name=$1; shift; $py benchmarks/ideal_sweep.py --name "$name" --out "$out/sweep_$name.json" $common "$@" > "$out/$name.log" 2>&1 & }
run base
run g5 --set generator.g_steps=5
run b500e50 --set rounds=50 --set batch_size=500
run per_sample --set generator.entropy_form=per_sample
run convnet_student --set student.architecture=convnet
run b500e50_2ep --set rounds=50 --set batch_size=500 --set distill.epochs=2
run g20 --set generator.g_steps=20
run balanced --set generator.target_sampling=balanced
wait
tail -n 1 "$out"/*.log
