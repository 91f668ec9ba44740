#!/usr/bin/env bash
# Pre-training (or any electra_jax command) on a Cloud TPU VM or pod slice, driven by configs/*.py.
#
#   launch/tpu_vm.sh create                  # TPU VM (or, with QUEUED=1, a queued resource)
#   launch/tpu_vm.sh install                 # copy this checkout to every worker, pip install '.[tpu]'
#   launch/tpu_vm.sh train --config=configs/base.py --workdir=gs://BUCKET/electra_base [--config.x=y ...]
#   launch/tpu_vm.sh logs                    # follow worker 0's log (WORKER=N: worker N's)
#   launch/tpu_vm.sh stop                    # kill the training processes, keep the VM
#   launch/tpu_vm.sh delete                  # delete the VM (and the queued resource)
#   launch/tpu_vm.sh ssh [COMMAND]           # a command on all workers (WORKER=0 for one)
#
# `train` runs the same `python -m electra_jax.main ...` on every worker with
# ELECTRA_JAX_DISTRIBUTED=1, so main.py calls jax.distributed.initialize(), which finds the
# coordinator and the process ids from the TPU metadata. The workdir must be shared storage (gs://):
# every process writes its part of the orbax checkpoints there. Build the data once beforehand
# (`--mode=build_data`, here or on worker 0) into a gs:// data dir and pass --config.data.data_dir:
# with several processes train.py does not build it.
#
# `train` is idempotent: where the training process still runs it starts no second one, so after a
# preemption (recreate the VM, `install`, then the same `train` command) or any stop, the same
# command resumes from the latest checkpoint in the workdir.
#
# Settings (environment): NAME (electra-jax), ZONE (us-central2-b), ACCELERATOR (v4-8),
# VERSION (tpu-ubuntu2204-base), PROJECT (gcloud's default), QUEUED=1 to go through a queued resource,
# SPOT=1 for spot capacity, REMOTE_DIR (~/electra_jax on the workers), WORKER (all).
#
# tests/test_launch.py runs every command against a fake gcloud that records its arguments.
set -euo pipefail

NAME="${NAME:-electra-jax}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR="${ACCELERATOR:-v4-8}"
VERSION="${VERSION:-tpu-ubuntu2204-base}"
REMOTE_DIR="${REMOTE_DIR:-electra_jax}"  # relative to the remote home directory
WORKER="${WORKER:-all}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The remote directory as a word of the remote shell's command lines.
RDIR="$(printf '%q' "$REMOTE_DIR")"

# ${a[@]+"${a[@]}"}: an empty array expands to nothing, also under `set -u` in bash 3.2 (macOS).
project_flag=()
if [[ -n "${PROJECT:-}" ]]; then project_flag=(--project="$PROJECT"); fi

tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${project_flag[@]+"${project_flag[@]}"}; }

# Runs a shell command on $WORKER (default all) workers.
on_workers() {
  tpu ssh "$NAME" --worker="$WORKER" --command="$1"
}

# Quotes each argument for the remote shell.
quote_args() {
  local out=() a
  for a in "$@"; do out+=("$(printf '%q' "$a")"); done
  echo "${out[*]}"
}

cmd_create() {
  local spot=()
  if [[ -n "${SPOT:-}" ]]; then spot=(--spot); fi
  if [[ -n "${QUEUED:-}" ]]; then
    # A queued resource waits for capacity instead of failing when there is none now.
    gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION" ${spot[@]+"${spot[@]}"} \
      ${project_flag[@]+"${project_flag[@]}"}
    echo "queued; waiting for $NAME to become ACTIVE (Ctrl-C is safe, rerun 'create' to keep waiting)" >&2
    local state
    while true; do
      state="$(gcloud compute tpus queued-resources describe "$NAME" --zone="$ZONE" \
        ${project_flag[@]+"${project_flag[@]}"} --format='value(state.state)' 2>/dev/null || true)"
      echo "  $(date +%H:%M:%S) $state" >&2
      case "$state" in
        ACTIVE) break ;;
        FAILED|SUSPENDED) echo "error: queued resource $NAME is $state" >&2; exit 1 ;;
      esac
      sleep 30
    done
  else
    tpu create "$NAME" --accelerator-type="$ACCELERATOR" --version="$VERSION" ${spot[@]+"${spot[@]}"}
  fi
}

cmd_install() {
  # Copy the working tree (not the git history, a local virtualenv or build outputs) to every worker.
  local archive
  archive="$(mktemp -t electra_jax.XXXXXX.tar.gz)"
  tar -C "$REPO_ROOT" --exclude=.git --exclude=.venv --exclude=./workdirs --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.pytest_cache -czf "$archive" .
  tpu scp "$archive" "$NAME:electra_jax.tar.gz" --worker=all
  rm -f "$archive"
  on_workers "set -e; mkdir -p $RDIR && tar -xzf electra_jax.tar.gz -C $RDIR && \
    cd $RDIR && python3 -m pip install -q --upgrade pip && \
    python3 -m pip install -q -e '.[tpu]' && \
    python3 -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.devices()[0].device_kind)'"
}

cmd_train() {
  if [[ $# -eq 0 ]]; then
    echo "usage: $0 train --config=configs/X.py --workdir=gs://BUCKET/DIR [--config.key=value ...]" >&2
    exit 2
  fi
  local args
  args="$(quote_args "$@")"
  # nohup: training survives the ssh session; the same command (same config) on every worker.
  # A worker whose recorded process still runs electra_jax keeps it (train is idempotent).
  on_workers "cd $RDIR || exit 1
    if [ -f train.pid ] && grep -qs electra_jax.main /proc/\$(cat train.pid)/cmdline; then
      echo \"already running on \$(hostname) as pid \$(cat train.pid)\"; exit 0
    fi
    ELECTRA_JAX_DISTRIBUTED=1 TF_CPP_MIN_LOG_LEVEL=2 \\
      nohup python3 -m electra_jax.main $args > train.log 2>&1 < /dev/null &
    echo \$! > train.pid
    echo \"started on \$(hostname) as pid \$(cat train.pid)\""
}

cmd_logs() {
  local worker="${WORKER}"
  if [[ "$worker" == "all" ]]; then worker=0; fi
  tpu ssh "$NAME" --worker="$worker" --command="tail -n 100 -F $RDIR/train.log"
}

cmd_stop() {
  # By the pid `train` recorded. SIGTERM, then SIGKILL after 20 s: orbax writes each checkpoint to
  # a temporary directory and renames it when complete, so a killed run resumes from its last
  # complete one.
  on_workers "cd $RDIR || exit 0
    if [ -f train.pid ]; then
      pid=\$(cat train.pid)
      kill -TERM \$pid 2>/dev/null || true
      for i in \$(seq 20); do kill -0 \$pid 2>/dev/null || break; sleep 1; done
      kill -KILL \$pid 2>/dev/null || true
      rm -f train.pid
    fi"
}

cmd_delete() {
  if [[ -n "${QUEUED:-}" ]]; then
    gcloud compute tpus queued-resources delete "$NAME" --zone="$ZONE" --force --quiet \
      ${project_flag[@]+"${project_flag[@]}"}
  else
    tpu delete "$NAME" --quiet
  fi
}

cmd_ssh() {
  on_workers "${*:-hostname}"
}

main() {
  local sub="${1:-}"
  shift || true
  case "$sub" in
    create) cmd_create "$@" ;;
    install) cmd_install "$@" ;;
    train) cmd_train "$@" ;;
    logs) cmd_logs "$@" ;;
    stop) cmd_stop "$@" ;;
    delete) cmd_delete "$@" ;;
    ssh) cmd_ssh "$@" ;;
    *)
      sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
      exit 2 ;;
  esac
}

main "$@"
