"""Device mesh and shardings (jax.jit with NamedSharding; no pmap).

The mesh has named axes ('data', 'fsdp', 'tensor'); its shape is `config.mesh_shape` (-1 = all
remaining devices). The batch is split over 'data' x 'fsdp'; parameters and optimizer state are
replicated for now.
"""
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from electra_jax.errors import UserError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')


def make_mesh(mesh_shape=(-1, 1, 1), devices=None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = list(mesh_shape)
  if len(shape) != len(MESH_AXES) or shape.count(-1) > 1:
    raise UserError(f'mesh_shape must have {len(MESH_AXES)} entries {MESH_AXES} with at most one -1, '
                    f'got {tuple(mesh_shape)}')
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    shape[shape.index(-1)] = len(devices) // known
  elif known < len(devices):  # an explicit smaller mesh uses the first devices (debugging, tests)
    devices = devices[:known]
  if math.prod(shape) != len(devices):
    raise UserError(f'mesh_shape {tuple(mesh_shape)} does not fit the {len(devices)} devices')
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
  """This process's numpy batch -> global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
