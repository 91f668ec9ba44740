r"""Ahead-of-time compilation of the train and eval steps for a TPU slice, on any host (no TPU).

  python -m electra_jax.main --mode=compile --config=configs/base.py --config.compile_topology=v5e-16

compiles exactly what a run on that slice executes (train.make_steps: the same mesh, shardings,
donation and gradient accumulation) for the compile-only TPU devices that libtpu describes
(`jax.experimental.topologies`; libtpu is the `tpu` extra, `pip install -e '.[tpu]'`), and reports
per-chip HBM and FLOPs from the compiled programs. No data is read: the shapes come from the config
(batch_size x max_seq_length int32 batches, model.vocab_size).

Slice names are the accelerator types of `gcloud compute tpus`: for v4 and v5p the number counts
TensorCores, two per chip (v4-8 = 4 chips, one JAX device per chip, "megacore"); for v5e
(also spelled v5litepod-N) and v6e it counts chips, one TensorCore each.
"""
import dataclasses
import itertools
import math
import os
import re
import time

import jax
import jax.numpy as jnp

from electra_jax import accelerators
from electra_jax import input_pipeline
from electra_jax import model as model_lib
from electra_jax import objective
from electra_jax import sharding
from electra_jax import train
from electra_jax.errors import UserError

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Generation:
  libtpu_name: str  # the topology prefix libtpu knows ('v5' is v5p)
  cores_per_chip: int  # TensorCores behind one JAX device; slice names count cores
  hbm_gib: int  # per chip
  chip_config: str  # 'megacore': both TensorCores of a chip are one JAX device


# HBM per chip from the Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4, /v5e,
# /v5p, /v6e): v4 32, v5e 16, v5p 95, v6e 32 "GB", which are GiB: the TPU compiler (libtpu 0.0.42)
# lets a program use 30.75 GiB of a v4 chip, 15.75 of a v5e, 95.74 of a v5p and 31.25 of a v6e
# (its out-of-memory message says so), and refuses larger ones.
GENERATIONS = {
    'v4': Generation('v4', 2, 32, 'megacore'),
    'v5p': Generation('v5', 2, 95, 'megacore'),
    'v5e': Generation('v5e', 1, 16, 'default'),
    'v6e': Generation('v6e', 1, 32, 'default'),
}
ALIASES = {'v5litepod': 'v5e'}
# v5e and v6e slices: a 2D torus of at most 16 x 16 chips.
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
              256: (16, 16)}
# v4 and v5p slices below one 4x4x4 cube; bigger ones are made of whole cubes (_cube_shape).
_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  name: str  # as given, e.g. 'v5e-16'
  generation: str  # key of GENERATIONS
  chips: int
  shape: tuple  # chips along each torus dim
  hbm_bytes: int  # per chip

  @property
  def accelerator_type(self) -> str:  # gcloud's name
    return ('v5litepod' if self.generation == 'v5e' else self.generation) + \
        f'-{self.chips * GENERATIONS[self.generation].cores_per_chip}'

  @property
  def topology_name(self) -> str:
    return f'{GENERATIONS[self.generation].libtpu_name}:{"x".join(map(str, self.shape))}'

  @property
  def topology_options(self) -> dict:
    """chip config, chips per host and wraparound links, as a Cloud TPU VM of this type has."""
    three_d = len(self.shape) == 3
    if three_d:
      host, wrap = (2, 2, 1), (self.chips >= 64,) * 3  # whole cubes are tori
    else:  # one host of 1 or 8 chips; bigger slices: hosts of 2x2 chips; wraparound at 16
      host = {1: (1, 1, 1), 4: (2, 2, 1), 8: (2, 4, 1)}.get(self.chips, (2, 2, 1))
      wrap = tuple(d == 16 for d in self.shape) + (False,)
    return dict(chip_config_name=GENERATIONS[self.generation].chip_config,
                chips_per_host_bounds=host, num_slices=1, wrap=wrap)


def _cube_shape(chips: int):
  """The most cube-like AxBxC (A <= B <= C, multiples of 4) of `chips`, as Cloud TPU builds them
  (v4-384 = 4x4x12, v5p-768 = 4x8x12, v5p-1152 = 4x12x12); None if there is none."""
  if chips % 64:
    return None
  best = None
  for a, b in itertools.combinations_with_replacement(range(4, chips + 1, 4), 2):
    c, rest = divmod(chips, a * b)
    if rest or c < b or c % 4:
      continue
    if best is None or (c, -a) < (best[2], -best[0]):
      best = (a, b, c)
  return best


def parse_slice(name: str) -> TpuSlice:
  """'v4-8', 'v5e-16' (or 'v5litepod-16'), 'v5p-128', 'v6e-256' -> TpuSlice."""
  match = re.fullmatch(r'(v4|v5p|v5e|v5litepod|v6e)-(\d+)', name.strip().lower())
  if not match:
    raise UserError(f'compile_topology {name!r} is not a TPU slice name like v4-8, v5e-16, v5p-128 '
                    'or v6e-64')
  generation = ALIASES.get(match.group(1), match.group(1))
  count = int(match.group(2))
  gen = GENERATIONS[generation]
  chips, odd = divmod(count, gen.cores_per_chip)
  shape = None
  if not odd:
    shape = (_SHAPES_3D.get(chips) or _cube_shape(chips)) if gen.cores_per_chip == 2 else \
        _SHAPES_2D.get(chips)
  if shape is None:
    sizes = ('8, 16, 32, 64, then multiples of 128 (TensorCores, 2 per chip)'
             if gen.cores_per_chip == 2 else ', '.join(map(str, _SHAPES_2D)) + ' (chips)')
    raise UserError(f'there is no {generation} slice {name!r}: {generation} slices have {sizes}')
  return TpuSlice(name, generation, chips, shape, gen.hbm_gib * GiB)


def topology_devices(tpu: TpuSlice) -> list:
  """The slice's compile-only TPU devices (libtpu; works on a host without TPUs)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  if not accelerators.tpu_attached():
    # Away from a TPU VM, libtpu cannot ask the VM's metadata server what it runs on and prints
    # errors about it at start; these two answer it (the topology compiled for is the one given).
    os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
    os.environ.setdefault('TPU_ACCELERATOR_TYPE', tpu.accelerator_type)
    # libtpu's lock file (/tmp/libtpu_lockfile) keeps a second process off the TPU chips; with
    # none here, it would only stop two compiles from running side by side.
    os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  try:
    topology = topologies.get_topology_desc(tpu.topology_name, platform='tpu',
                                            **tpu.topology_options)
  except RuntimeError as e:  # no libtpu: "JAX TPU support not installed"
    raise UserError(f'compiling for a TPU needs libtpu: pip install -e ".[tpu]" ({e})') from None
  return list(topology.devices)


def _memory(compiled) -> dict:
  """Per-chip HBM of one compiled program, in bytes.

  'sum': arguments + outputs + temporaries + code, outputs written into a donated argument's
  buffers (the new train state) counted once. 'peak': XLA's own estimate of the program's peak.
  They differ both ways (the peak is larger for small programs, where temp_size leaves memory
  out, even reading 0 for a v5e eval step; smaller for configs/base.py on v5e-16), so 'total',
  what must fit, is the larger.
  """
  m = compiled.memory_analysis()
  used = {'arguments': m.argument_size_in_bytes, 'outputs': m.output_size_in_bytes,
          'aliased': m.alias_size_in_bytes, 'temporaries': m.temp_size_in_bytes,
          'code': m.generated_code_size_in_bytes}
  used['sum'] = (used['arguments'] + used['outputs'] - used['aliased'] + used['temporaries'] +
                 used['code'])
  used['peak'] = getattr(m, 'peak_memory_in_bytes', 0)  # 0 where jaxlib does not report it
  used['total'] = max(used['sum'], used['peak'])
  return used


def _flops(stage) -> float:
  cost = stage.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0]
  return float(cost.get('flops', 0.0))


def _abstract_inputs(config, steps):
  batch = {k: jax.ShapeDtypeStruct((config.batch_size, config.max_seq_length), jnp.int32,
                                   sharding=steps.batch_sharding)
           for k in input_pipeline.FEATURES}
  key = jax.eval_shape(jax.random.key, 0)
  rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=steps.replicated)
  return {'train': (steps.abstract_state, batch, rng),
          'eval': (steps.abstract_state.params, batch, rng)}


def _loop_free_flops(config, special, max_predictions) -> dict:
  """FLOPs per step of the whole slice, for steps with loops (grad_accum_steps, scan_layers).

  XLA's cost analysis counts a loop body once, so these come from the same step without the
  loops (the same arithmetic), lowered for one CPU device: unoptimized HLO, within 1% of the
  compiled TPU program's count for configs/small.py (tiny test models: up to 25% more).
  """
  config = config.copy_and_resolve_references()
  config.grad_accum_steps, config.model.scan_layers, config.mesh_shape = 1, False, (1, 1, 1)
  config.model.kernels = model_lib.resolve_kernels(config.model, 'tpu')  # not the CPU's
  steps = train.make_steps(config, sharding.make_mesh((1, 1, 1), jax.devices('cpu')[:1]), special,
                           max_predictions)
  return {name: _flops(getattr(steps, name).lower(*args))
          for name, args in _abstract_inputs(config, steps).items()}


def _size(n: float) -> str:
  return f'{n / GiB:.2f} GiB' if n >= GiB / 10 else f'{n / (1 << 20):.1f} MiB'


def compile_steps(config, tpu: TpuSlice, log=lambda line: None) -> dict:
  """Compiles the train and eval steps of `config` for `tpu`; returns their HBM, FLOPs, times.

  Raises UserError when the mesh or the batch does not divide, or a step does not fit in HBM
  (the TPU compiler refuses it: see GENERATIONS). `log` gets progress lines.
  """
  devices = topology_devices(tpu)
  mesh = sharding.make_mesh(config.mesh_shape, devices)
  batch_devices = mesh.shape['data'] * mesh.shape['fsdp']
  train.check_config(config, batch_devices)  # no data here: train.check_data has nothing to check
  # Token ids are baked into the program as constants; their values change neither its memory
  # nor its FLOPs, so BERT's ([PAD] 0, [CLS] 101, [SEP] 102, [MASK] 103) stand in for the vocab's.
  special = objective.SpecialIds(0, 101, 102, 103)
  max_predictions = objective.max_predictions_per_seq(
      config.objective.mask_prob, config.max_seq_length, config.objective.max_predictions)
  steps = train.make_steps(config, mesh, special, max_predictions)
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(steps.abstract_state.params))
  hosts = len({d.process_index for d in devices})
  result = {'slice': tpu.name, 'topology': tpu.topology_name, 'chips': len(devices),
            'hosts': hosts, 'device_kind': devices[0].device_kind, 'mesh': dict(mesh.shape),
            'hbm_capacity': tpu.hbm_bytes, 'num_params': num_params,
            'kernels': model_lib.resolve_kernels(config.model, devices[0].platform),
            'attention': {name: model_lib.attention_path(
                model_lib.with_kernels(config.model, devices[0].platform), config.max_seq_length,
                dropout=name == 'train' and config.model.attention_dropout_rate > 0)
                          for name in ('train', 'eval')}}
  m = config.model
  log(f'{tpu.name}: {len(devices)} chip{"s" if len(devices) > 1 else ""} '
      f'({devices[0].device_kind}, topology {tpu.topology_name}, '
      f'{hosts} host{"s" if hosts > 1 else ""}), {_size(tpu.hbm_bytes)} HBM per chip')
  log('mesh: ' + ' x '.join(f'{k} {v}' for k, v in mesh.shape.items()) +
      f'; batch {config.batch_size} x {config.max_seq_length} '
      f'({config.batch_size // batch_devices} sequence'
      f'{"s" if config.batch_size // batch_devices > 1 else ""} per chip'
      + (f' in {config.grad_accum_steps} microbatches' if config.grad_accum_steps > 1 else '') +
      f'); {num_params / 1e6:.1f}M params; dtype {m.dtype}, remat {m.remat}, '
      f'scan_layers {m.scan_layers}, kernels {result["kernels"]}, attention '
      + ' / '.join(f'{v} ({k})' for k, v in result['attention'].items()))
  looped = {name for name, loops in (('train', config.grad_accum_steps > 1 or m.scan_layers),
                                      ('eval', m.scan_layers)) if loops}
  slice_flops = _loop_free_flops(config, special, max_predictions) if looped else {}
  for name, args in _abstract_inputs(config, steps).items():
    start = time.perf_counter()
    try:
      compiled = getattr(steps, name).lower(*args).compile()
    except jax.errors.JaxRuntimeError as e:
      if 'RESOURCE_EXHAUSTED' not in str(e):
        raise
      reason = str(e).splitlines()[0].replace('RESOURCE_EXHAUSTED: ', '').rstrip('. ')
      raise UserError(
          f'the {name} step does not fit in {tpu.name} HBM ({reason}); try '
          '--config.model.remat=True, --config.grad_accum_steps=N, an fsdp mesh '
          '(--config.mesh_shape="(1,-1,1)") or a bigger slice') from None
    seconds = time.perf_counter() - start
    memory = _memory(compiled)
    flops = slice_flops[name] if name in looped else _flops(compiled) * len(devices)
    result[name] = {'compile_seconds': seconds, 'memory': memory, 'flops': flops}
    log(f'{name} step: compiled in {seconds:.1f} s')
    log(f'  HBM per chip: arguments {_size(memory["arguments"])} + temporaries '
        f'{_size(memory["temporaries"])} + outputs {_size(memory["outputs"])} - outputs in donated '
        f'arguments {_size(memory["aliased"])} + code {_size(memory["code"])} = '
        f'{_size(memory["sum"])}; XLA\'s peak estimate {_size(memory["peak"])}: '
        f'{_size(memory["total"])} of {_size(tpu.hbm_bytes)} '
        f'({100 * memory["total"] / tpu.hbm_bytes:.1f}%)')
    log(f'  FLOPs per step: {flops:.3g} for the slice, {flops / len(devices):.3g} per chip' +
        (' (of the step without its loops: XLA counts a loop body once)' if name in looped
         else ''))
  return result


def run(config) -> dict:
  """--mode=compile: compiles for config.compile_topology and prints the report.

  Raises UserError (main.py: one `error:` line, exit status 1) when it does not fit.
  """
  if not config.compile_topology:
    raise UserError('--mode=compile needs --config.compile_topology=SLICE (e.g. v4-8, v5e-16)')
  tpu = parse_slice(config.compile_topology)
  result = compile_steps(config, tpu, log=lambda line: print(line, flush=True))
  for name in ('train', 'eval'):
    total = result[name]['memory']['total']
    if total > tpu.hbm_bytes:
      raise UserError(f'the {name} step needs {_size(total)} per chip, more than the '
                      f'{_size(tpu.hbm_bytes)} of a {tpu.generation} chip')
  print(f'fits: {tpu.name}, mesh {tuple(result["mesh"].values())}', flush=True)
  return result
