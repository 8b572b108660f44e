#!/usr/bin/env bash
# Train an imagen_jax stage on GPUs: one node with all its GPUs, or several nodes.
#
#   launch/gpu.sh train --config configs/sr256.py --workdir runs/sr256
#   launch/gpu.sh preflight --config configs/sr256.py     # print devices and mesh on every node
#
# One node: every visible GPU joins the mesh (limit with CUDA_VISIBLE_DEVICES).
# Several nodes: start the same command on every node with
#   COORDINATOR_ADDRESS=host0:12345  NUM_NODES=4  NODE_RANK=0..3
# (under SLURM, srun sets what jax.distributed needs and these can be left out).
# Options: --config FILE, --workdir DIR, --dry-run (print the command), then `--` and any
# --config.a.b=value overrides, e.g. -- --config.mesh.fsdp=8 --config.train.batch_size=256.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

action="${1:-}"
case "$action" in
  "") usage; exit 2 ;;
  -h|--help|help) usage; exit 0 ;;
esac
shift
config=""
workdir=""
dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see $0 --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$config" ]] || { echo "--config is required" >&2; exit 2; }

distributed=()
if [[ -n "${COORDINATOR_ADDRESS:-}" ]]; then
  : "${NUM_NODES:?set NUM_NODES with COORDINATOR_ADDRESS}"
  : "${NODE_RANK:?set NODE_RANK with COORDINATOR_ADDRESS}"
  distributed=(--config.distributed.initialize=true
               "--config.distributed.coordinator_address=$COORDINATOR_ADDRESS"
               "--config.distributed.num_processes=$NUM_NODES"
               "--config.distributed.process_id=$NODE_RANK")
elif [[ -n "${SLURM_JOB_ID:-}" && "${SLURM_NTASKS:-1}" -gt 1 ]]; then
  distributed=(--config.distributed.initialize=true)  # jax detects the SLURM cluster
fi

# Overlap collectives with compute (XLA's latency-hiding scheduler).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"

case "$action" in
  train)
    [[ -n "$workdir" ]] || { echo "--workdir is required" >&2; exit 2; }
    cmd=(imagen-jax train --config "$config" --workdir "$workdir" "${distributed[@]}" "${extra[@]}")
    ;;
  preflight)
    cmd=(imagen-jax preflight --config "$config" "${distributed[@]}" "${extra[@]}")
    ;;
  *) echo "unknown action: $action" >&2; usage; exit 2 ;;
esac

printf 'XLA_FLAGS=%q ' "$XLA_FLAGS"
printf '%q ' "${cmd[@]}"
printf '\n'
if [[ "$dry_run" == 0 ]]; then
  exec "${cmd[@]}"
fi
