#!/usr/bin/env bash
# Train an imagen_jax stage on a Cloud TPU VM or pod slice through gcloud.
#
#   launch/tpu.sh create   # create the TPU (or reuse it if it exists)
#   launch/tpu.sh setup    # install the package on every worker
#   launch/tpu.sh preflight  # every host checks devices, workdir, data, text encoder; all agree
#   launch/tpu.sh train    # start training on all workers (in the background, logging to a file)
#   launch/tpu.sh supervise  # run training in the foreground until the run is done: a preempted
#                          # (Spot) TPU is recreated and set up again and the same command resumes
#   launch/tpu.sh logs     # follow worker 0's log
#   launch/tpu.sh stop     # stop training (SIGTERM: a checkpoint is saved first)
#   launch/tpu.sh delete   # delete the TPU
#
# Settings come from flags or environment variables (flags win); nothing is hard-coded:
#   --project / TPU_PROJECT       Google Cloud project
#   --zone / TPU_ZONE             e.g. us-central2-b
#   --name / TPU_NAME             TPU name, e.g. imagen-base
#   --type / TPU_TYPE             accelerator type, e.g. v4-256, v5p-128, v5litepod-64, v6e-64
#   --version / TPU_VERSION       TPU VM runtime (default: the one for the type: v2-v4
#                                 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite, v5p
#                                 v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
#   --config / TPU_CONFIG         e.g. configs/base64.py
#   --workdir / TPU_WORKDIR       gs://BUCKET/runs/NAME (checkpoints, metrics, TensorBoard)
#   --repo / TPU_REPO             what to pip-install on the workers (default: this repository's
#                                 origin URL); a git URL or a path on the workers
#   --spot / TPU_SPOT=1           create a Spot (preemptible) TPU; `supervise` resumes after each
#                                 preemption
#   --queued / TPU_QUEUED=1       create through a queued resource (waits for capacity)
#   --retry-seconds / TPU_RETRY_SECONDS   supervise: wait between attempts (default 60)
#   --dry-run                     print the gcloud commands instead of running them
# Anything after `--` is passed to `imagen-jax train` (e.g. -- --config.train.batch_size=1024).
set -euo pipefail

usage() { sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; }

action="${1:-}"
case "$action" in
  "") usage; exit 2 ;;
  -h|--help|help) usage; exit 0 ;;
esac
shift

project="${TPU_PROJECT:-}"
zone="${TPU_ZONE:-}"
name="${TPU_NAME:-}"
type="${TPU_TYPE:-}"
version="${TPU_VERSION:-}"
config="${TPU_CONFIG:-}"
workdir="${TPU_WORKDIR:-}"
repo="${TPU_REPO:-}"
spot="${TPU_SPOT:-0}"
queued="${TPU_QUEUED:-0}"
retry_seconds="${TPU_RETRY_SECONDS:-60}"
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
    --queued) queued=1; shift ;;
    --retry-seconds) retry_seconds="$2"; shift 2 ;;
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

# The TPU VM runtime of an accelerator type (Cloud TPU's software versions).
runtime_for() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    *) echo "no known runtime for --type $1; set --version" >&2; return 2 ;;
  esac
}

create() {
  need project zone name type
  [[ -n "$version" ]] || version="$(runtime_for "$type")"
  if [[ "$queued" == 1 ]]; then
    args=(gcloud compute tpus queued-resources create "$name" "--node-id=$name" "--zone=$zone"
          "--project=$project" "--accelerator-type=$type" "--runtime-version=$version")
  else
    args=("${gcloud_tpu[@]}" create "$name" "--zone=$zone" "--project=$project"
          "--accelerator-type=$type" "--version=$version")
  fi
  if [[ "$spot" == 1 ]]; then args+=(--spot); fi
  run "${args[@]}"
}

delete() {
  need project zone name
  if [[ "$queued" == 1 ]]; then
    run gcloud compute tpus queued-resources delete "$name" "--zone=$zone" "--project=$project" \
      --force --quiet
  else
    run "${gcloud_tpu[@]}" delete "$name" "--zone=$zone" "--project=$project" --quiet
  fi
}

# READY, CREATING, PREEMPTED, ... or nothing when the TPU does not exist.
state() {
  "${gcloud_tpu[@]}" describe "$name" "--zone=$zone" "--project=$project" \
    --format='value(state)' 2>/dev/null || true
}

setup() {
  need project zone name
  if [[ -z "$repo" ]]; then
    repo="$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || true)"
    [[ -n "$repo" ]] || { echo "set --repo (a git URL the workers can clone)" >&2; exit 2; }
  fi
  on_all_workers "set -e; python3 -m pip install -q --upgrade pip; \
rm -rf ~/imagen_jax && git clone -q $repo ~/imagen_jax && \
python3 -m pip install -q -e ~/imagen_jax'[tpu,gcs]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
}

train_command="cd ~/imagen_jax && imagen-jax train --config $config --workdir $workdir \
--config.distributed.initialize=true $overrides"

# Runs training in the foreground until `imagen-jax train` exits 0 on every worker (the run
# reached its last step). Exit 143 (stopped by SIGTERM or a preemption notice, checkpoint saved)
# or a lost connection means: wait, recreate a preempted TPU, set it up, run the same command
# again; it resumes from its checkpoint. Exit 2 (a configuration or input error) stops.
supervise() {
  need project zone name type config workdir
  local attempt=0 status
  while true; do
    attempt=$((attempt + 1))
    if [[ "$dry_run" == 0 ]]; then
      case "$(state)" in
        READY) ;;
        "") create; setup ;;
        PREEMPTED|TERMINATED|STOPPED) delete; create; setup ;;
        *) echo "TPU $name is $(state); waiting ${retry_seconds}s" >&2
           sleep "$retry_seconds"; continue ;;
      esac
    fi
    echo "attempt $attempt: training on every worker" >&2
    status=0
    on_all_workers "$train_command" || status=$?
    if [[ "$status" == 0 ]]; then
      echo "the run in $workdir is done" >&2
      return 0
    fi
    if [[ "$status" == 2 ]]; then
      echo "training stopped with a configuration or input error (see above)" >&2
      return 2
    fi
    [[ "$dry_run" == 0 ]] || return 0
    echo "training stopped (exit $status, e.g. a preemption); resuming in ${retry_seconds}s" >&2
    sleep "$retry_seconds"
  done
}

case "$action" in
  create)
    if [[ "$dry_run" == 0 && -n "$(state)" ]]; then
      echo "TPU $name exists in $zone: reusing it"
    else
      create
    fi
    ;;
  setup)
    setup
    ;;
  preflight)
    need project zone name config
    workdir_flag=""
    if [[ -n "$workdir" ]]; then workdir_flag="--workdir $workdir"; fi
    on_all_workers "cd ~/imagen_jax && imagen-jax preflight --config $config $workdir_flag \
--config.distributed.initialize=true $overrides"
    ;;
  train)
    need project zone name config workdir
    on_all_workers "nohup bash -c $(printf '%q' "$train_command") > $log_file 2>&1 &"
    ;;
  supervise)
    supervise
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
    delete
    ;;
  *)
    echo "unknown action: $action" >&2
    usage
    exit 2
    ;;
esac
