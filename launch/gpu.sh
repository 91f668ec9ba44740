#!/usr/bin/env bash
# Pre-training on GPUs: one node with all its GPUs, or several nodes (one process per node), driven
# by the same configs/*.py files as everything else.
#
#   # one node, every visible GPU (one process; jax sees them all):
#   launch/gpu.sh --config=configs/base.py --workdir=/shared/electra_base [--config.key=value ...]
#
#   # several nodes: run the same command on each, with the same coordinator (node 0's address):
#   NUM_NODES=4 NODE_RANK=$i COORDINATOR=10.0.0.1:12345 \
#     launch/gpu.sh --config=configs/base.py --workdir=/shared/electra_base
#
#   # under SLURM (srun -N4 --ntasks-per-node=1 launch/gpu.sh ...), NUM_NODES, NODE_RANK and
#   # COORDINATOR default to SLURM_NNODES, SLURM_PROCID and the first host of SLURM_JOB_NODELIST.
#
# Multi-node sets ELECTRA_JAX_DISTRIBUTED=1 (main.py then calls sharding.initialize_distributed())
# and the variables it reads: JAX_COORDINATOR_ADDRESS (jax.distributed.initialize reads it itself),
# JAX_NUM_PROCESSES, JAX_PROCESS_ID (passed on by initialize_distributed: jax detects these two
# only on SLURM, Open MPI, Kubernetes and Cloud TPU).
# The workdir must be storage every node sees (NFS, gs://): orbax writes checkpoints from all
# processes. Build the data once first (`python -m electra_jax.main --mode=build_data ...` with
# --config.data.data_dir=SHARED_DIR, then pass the same data_dir here): with several processes
# train.py does not build it. GPUS=0,1 restricts the GPUs used (CUDA_VISIBLE_DEVICES).
# PYTHON picks the interpreter (default: python3; install with `pip install -e '.[gpu]'`).
#
# tests/test_launch.py runs it (alone, under srun and sbatch) against fakes that record arguments.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ $# -eq 0 || "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

# SLURM defaults for the multi-node settings.
if [[ -n "${SLURM_JOB_NODELIST:-}" && -z "${COORDINATOR:-}" ]]; then
  # All the names, then the first: `| head -n 1` would close the pipe early, and under pipefail
  # scontrol's SIGPIPE (a long node list) would end this script.
  hosts="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"
  COORDINATOR="${hosts%%$'\n'*}:${COORDINATOR_PORT:-12345}"
fi
NUM_NODES="${NUM_NODES:-${SLURM_NNODES:-1}}"
NODE_RANK="${NODE_RANK:-${SLURM_PROCID:-0}}"

if [[ -n "${GPUS:-}" ]]; then export CUDA_VISIBLE_DEVICES="$GPUS"; fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Let XLA take most of GPU memory up front (its default is 75%); the data pipeline's TensorFlow is
# kept off the GPUs by input_pipeline.py.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

if [[ "$NUM_NODES" -gt 1 ]]; then
  if [[ -z "${COORDINATOR:-}" ]]; then
    echo "error: NUM_NODES=$NUM_NODES needs COORDINATOR=HOST:PORT (node 0's address)" >&2
    exit 2
  fi
  if [[ "$NODE_RANK" -lt 0 || "$NODE_RANK" -ge "$NUM_NODES" ]]; then
    echo "error: NODE_RANK=$NODE_RANK is not in [0, $NUM_NODES)" >&2
    exit 2
  fi
  export ELECTRA_JAX_DISTRIBUTED=1
  export JAX_COORDINATOR_ADDRESS="$COORDINATOR"
  export JAX_NUM_PROCESSES="$NUM_NODES"
  export JAX_PROCESS_ID="$NODE_RANK"
  echo "node $NODE_RANK of $NUM_NODES, coordinator $COORDINATOR" >&2
fi

cd "$REPO_ROOT"
exec "$PYTHON" -m electra_jax.main "$@"
