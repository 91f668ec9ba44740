"""`python -m electra_jax.main` after jax.distributed.initialize with explicit settings.

jax.distributed.initialize() reads only the coordinator address from the environment
(JAX_COORDINATOR_ADDRESS); the process count and id it auto-detects on Cloud TPU, SLURM, Open MPI
and Kubernetes only. gpu.sh uses this for a cluster without those: it passes all three here as
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. Arguments are main.py's.
"""
import os
import runpy

import jax

if __name__ == '__main__':
  jax.distributed.initialize(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                             num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                             process_id=int(os.environ['JAX_PROCESS_ID']))
  os.environ.pop('ELECTRA_JAX_DISTRIBUTED', None)  # initialized already: main.py must not again
  runpy.run_module('electra_jax.main', run_name='__main__', alter_sys=True)
