#!/usr/bin/env bash
# Train an imagen_jax stage on a Cloud TPU VM or pod slice through gcloud.
#
#   launch/tpu.sh create   # create the TPU (or reuse it if it exists)
#   launch/tpu.sh setup    # install the package on every worker
#   launch/tpu.sh preflight  # every host prints its process, devices and mesh; all must agree
#   launch/tpu.sh train    # start training on all workers (in the background, logging to a file)
#   launch/tpu.sh logs     # follow worker 0's log
#   launch/tpu.sh stop     # stop training (SIGTERM: a checkpoint is saved first)
#   launch/tpu.sh delete   # delete the TPU
#
# Settings come from flags or environment variables (flags win); nothing is hard-coded:
#   --project / TPU_PROJECT       Google Cloud project
#   --zone / TPU_ZONE             e.g. us-central2-b
#   --name / TPU_NAME             TPU name, e.g. imagen-base
#   --type / TPU_TYPE             accelerator type, e.g. v4-256, v5p-128, v6e-64
#   --version / TPU_VERSION       TPU VM runtime (default: tpu-ubuntu2204-base)
#   --config / TPU_CONFIG         e.g. configs/base64.py
#   --workdir / TPU_WORKDIR       gs://BUCKET/runs/NAME (checkpoints, metrics, TensorBoard)
#   --repo / TPU_REPO             what to pip-install on the workers (default: this repository's
#                                 origin URL); a git URL or a path on the workers
#   --spot / TPU_SPOT=1           create a Spot (preemptible) TPU; training resumes after restarts
#   --dry-run                     print the gcloud commands instead of running them
# Anything after `--` is passed to `imagen-jax train` (e.g. -- --config.train.batch_size=1024).
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

action="${1:-}"
[[ -n "$action" ]] || { usage; exit 2; }
shift

project="${TPU_PROJECT:-}"
zone="${TPU_ZONE:-}"
name="${TPU_NAME:-}"
type="${TPU_TYPE:-}"
version="${TPU_VERSION:-tpu-ubuntu2204-base}"
config="${TPU_CONFIG:-}"
workdir="${TPU_WORKDIR:-}"
repo="${TPU_REPO:-}"
spot="${TPU_SPOT:-0}"
dry_run=0
extra=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) project="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --repo) repo="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see $0 --help)" >&2; exit 2 ;;
  esac
done

need() {
  local missing=()
  for var in "$@"; do
    [[ -n "${!var}" ]] || missing+=("$var")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "missing settings: ${missing[*]} (flags --${missing[*]// / --} or TPU_* variables)" >&2
    exit 2
  fi
}

# Prints the command (quoted so that it can be pasted) and runs it unless --dry-run.
run() {
  printf '%q ' "$@"
  printf '\n'
  if [[ "$dry_run" == 0 ]]; then
    "$@"
  fi
}

gcloud_tpu=(gcloud compute tpus tpu-vm)
on_all_workers() {
  run "${gcloud_tpu[@]}" ssh "$name" "--zone=$zone" "--project=$project" --worker=all \
    --command="$1"
}

# Expanded on the workers, not here.
# shellcheck disable=SC2016
log_file='$HOME/imagen-jax-train.log'
overrides=""
if [[ ${#extra[@]} -gt 0 ]]; then
  overrides="$(printf '%q ' "${extra[@]}")"
fi

case "$action" in
  create)
    need project zone name type
    args=("${gcloud_tpu[@]}" create "$name" "--zone=$zone" "--project=$project"
          "--accelerator-type=$type" "--version=$version")
    [[ "$spot" == 1 ]] && args+=(--spot)
    if [[ "$dry_run" == 0 ]] && "${gcloud_tpu[@]}" describe "$name" "--zone=$zone" \
        "--project=$project" >/dev/null 2>&1; then
      echo "TPU $name exists in $zone: reusing it"
    else
      run "${args[@]}"
    fi
    ;;
  setup)
    need project zone name
    if [[ -z "$repo" ]]; then
      repo="$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || true)"
      [[ -n "$repo" ]] || { echo "set --repo (a git URL the workers can clone)" >&2; exit 2; }
    fi
    on_all_workers "set -e; python3 -m pip install -q --upgrade pip; \
rm -rf ~/imagen_jax && git clone -q $repo ~/imagen_jax && \
python3 -m pip install -q -e ~/imagen_jax'[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
    ;;
  preflight)
    need project zone name config
    on_all_workers "cd ~/imagen_jax && imagen-jax preflight --config $config \
--config.distributed.initialize=true $overrides"
    ;;
  train)
    need project zone name config workdir
    on_all_workers "cd ~/imagen_jax && nohup imagen-jax train --config $config --workdir $workdir \
--config.distributed.initialize=true $overrides > $log_file 2>&1 &"
    ;;
  logs)
    need project zone name
    run "${gcloud_tpu[@]}" ssh "$name" "--zone=$zone" "--project=$project" --worker=0 \
      --command="tail -n 100 -f $log_file"
    ;;
  stop)
    need project zone name
    on_all_workers "pkill -TERM -f 'imagen-jax train' || true"
    ;;
  delete)
    need project zone name
    run "${gcloud_tpu[@]}" delete "$name" "--zone=$zone" "--project=$project" --quiet
    ;;
  *)
    echo "unknown action: $action" >&2
    usage
    exit 2
    ;;
esac
