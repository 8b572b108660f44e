#!/usr/bin/env bash
# The committed benchmark baseline: `imagen-jax bench` for every config in configs/, written to
# benchmarks/baseline/<label>/. Run from the repository root:
#   benchmarks/baseline.sh cpu-2core          # label: the machine the figures come from
# Paper-size stages whose train state does not fit in this machine's memory are compiled (compile
# time, FLOPs, XLA's memory estimate) but not run; their JSON says so under "skipped".
set -euo pipefail
label=${1:?usage: benchmarks/baseline.sh LABEL}
out="benchmarks/baseline/$label"
mkdir -p "$out"
for stage in base sr1 sr2; do
  imagen-jax bench --config "configs/demo.py:$stage" --what train --batch-size 32 \
    --json "$out/demo_${stage}_train.json"
done
imagen-jax bench --config configs/demo.py --what sample --batch-size 8 --json "$out/demo_cascade_sample.json"
for config in base64 sr256 sr1024; do  # one device: one image a step
  XLA_FLAGS=--xla_force_host_platform_device_count=1 \
    imagen-jax bench --config "configs/$config.py" --what train --batch-size 1 --iters 1 \
    --json "$out/${config}_train.json"
done
