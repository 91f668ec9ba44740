"""Device mesh and shardings (jax.jit with NamedSharding; no pmap).

The mesh has named axes ('data', 'fsdp', 'tensor'); its shape is `config.mesh_shape` (-1 = all
remaining devices). The batch is split over 'data' x 'fsdp' (and replicated over 'tensor').

Parameters (and the optimizer state, which follows its parameter) are placed by `param_spec`:
- 'tensor' (Megatron-style): query/key/value/intermediate kernels (and biases) split on their
  output dim, attention_output/output kernels on their input dim, so a layer needs one reduction
  after attention and one after the FFN; the word embeddings split on the vocabulary (the tied
  generator output then gives vocab-sharded logits).
- 'fsdp': every parameter of at least `fsdp_min_size` elements is split on its largest dim that
  'tensor' left free and the 'fsdp' size divides; XLA gathers it where it is used.
A dim that doesn't divide stays whole. Sharding changes where values live, never the result: any
mesh computes the same step as one device, up to float reduction order.
"""
import functools
import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from electra_jax.errors import UserError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')
# Module names of model.TransformerLayer whose kernels split on the output dim / the input dim.
TENSOR_OUTPUT_SPLIT = ('query', 'key', 'value', 'intermediate')
TENSOR_INPUT_SPLIT = ('attention_output', 'output')
VOCAB_SPLIT = ('word_embeddings',)


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


def _names(path):
  """Dict/attribute names along a tree path (sequence indices dropped)."""
  names = []
  for key in path:
    name = getattr(key, 'key', getattr(key, 'name', None))
    if isinstance(name, str):
      names.append(name)
  return names


def param_spec(path, shape, mesh_shape: dict, fsdp_min_size: int = 4096) -> P:
  """PartitionSpec of one parameter (or optimizer-state leaf of the same path suffix and shape)."""
  spec = [None] * len(shape)
  names = _names(path)
  module, leaf = (names[-2], names[-1]) if len(names) >= 2 else (None, None)
  tensor = mesh_shape.get('tensor', 1)
  if tensor > 1 and shape:
    dim = None
    if module in TENSOR_OUTPUT_SPLIT and leaf in ('kernel', 'bias'):
      dim = len(shape) - 1
    elif module in TENSOR_INPUT_SPLIT and leaf == 'kernel' and len(shape) >= 2:
      dim = len(shape) - 2
    elif module in VOCAB_SPLIT and leaf == 'embedding':
      dim = 0
    if dim is not None and shape[dim] % tensor == 0:
      spec[dim] = 'tensor'
  fsdp = mesh_shape.get('fsdp', 1)
  if fsdp > 1 and math.prod(shape) >= fsdp_min_size:
    free = [d for d in range(len(shape)) if spec[d] is None and shape[d] % fsdp == 0]
    if free:
      spec[max(free, key=lambda d: (shape[d], -d))] = 'fsdp'  # largest; the first on ties
  while spec and spec[-1] is None:  # P('fsdp') rather than P('fsdp', None): the same placement
    spec.pop()
  return P(*spec)


def state_shardings(mesh: Mesh, abstract_tree, fsdp_min_size: int = 4096):
  """NamedShardings for a tree of params or a whole train state (from jax.eval_shape).

  Optimizer moments sit under paths ending like their parameter's, so they get its sharding;
  scalars (step, counts) are replicated.
  """
  mesh_shape = dict(mesh.shape)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, param_spec(path, x.shape, mesh_shape, fsdp_min_size)),
      abstract_tree)


def traced_in_mesh(mesh: Mesh, fn):
  """`fn`, traced with `mesh` as the context mesh: what model.splash_attention shard_maps its
  kernel over (XLA does not partition a Pallas call)."""
  @functools.wraps(fn)
  def in_mesh(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)
  return in_mesh


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
  """This process's numpy batch -> global jax.Arrays sharded over the batch axes.

  With several processes each passes its own rows (batch_size // process_count); the global batch
  is their concatenation in process order.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def initialize_distributed():
  """jax.distributed.initialize for a multi-process launch.

  On TPU pods, SLURM, Open MPI etc. JAX finds the coordinator itself; elsewhere set
  JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID.
  """
  num_processes = os.environ.get('JAX_NUM_PROCESSES')
  process_id = os.environ.get('JAX_PROCESS_ID')
  try:
    jax.distributed.initialize(
        num_processes=int(num_processes) if num_processes else None,
        process_id=int(process_id) if process_id else None)
  except ValueError as e:
    raise UserError(f'multi-process start failed ({e}); set JAX_COORDINATOR_ADDRESS, '
                    'JAX_NUM_PROCESSES and JAX_PROCESS_ID or launch under a supported cluster') from None


def gather_to_host(tree):
  """Fully replicated copy of a (possibly sharded, multi-process) tree, then numpy on every process.

  Every process must call it (it is a collective when the tree is sharded across processes).
  """
  arrays = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
  if not arrays or all(x.is_fully_replicated or x.is_fully_addressable for x in arrays):
    return jax.device_get(tree)
  mesh = next(x.sharding.mesh for x in arrays if hasattr(x.sharding, 'mesh'))
  return jax.device_get(jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree))
