"""--mode=compile: slice names, and the real train/eval steps compiled for a TPU slice on this CPU
host (libtpu's compile-only devices; skipped where libtpu is not installed)."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import tiny_config
from electra_jax import compile_tpu
from electra_jax import objective
from electra_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                  reason='libtpu not installed (pip install -e ".[tpu]")')


@pytest.mark.parametrize('name,chips,topology', [
    ('v4-8', 4, 'v4:2x2x1'), ('v4-32', 16, 'v4:2x2x4'), ('v4-256', 128, 'v4:4x4x8'),
    ('v4-384', 192, 'v4:4x4x12'), ('v4-4096', 2048, 'v4:8x16x16'), ('v5p-8', 4, 'v5:2x2x1'),
    ('v5p-768', 384, 'v5:4x8x12'), ('v5p-1152', 576, 'v5:4x12x12'), ('v5e-1', 1, 'v5e:1x1'),
    ('v5e-16', 16, 'v5e:4x4'), ('v5litepod-128', 128, 'v5e:8x16'), ('v6e-8', 8, 'v6e:2x4'),
    ('V6E-256', 256, 'v6e:16x16')])
def test_slice_names(name, chips, topology):
  tpu = compile_tpu.parse_slice(name)
  assert (tpu.chips, tpu.topology_name) == (chips, topology)


@pytest.mark.parametrize('name,expected', [
    ('v4-12', 'there is no v4 slice'), ('v4-200', 'multiples of 128'),
    ('v5e-12', '1, 4, 8, 16, 32, 64, 128, 256 (chips)'), ('v5p-9', 'no v5p slice'),
    ('tpu-8', 'not a TPU slice name'), ('v5e', 'not a TPU slice name')])
def test_bad_slice_names(name, expected):
  with pytest.raises(UserError, match=re.escape(expected)):
    compile_tpu.parse_slice(name)


@needs_libtpu
def test_tiny_config_compiles_for_a_tpu_slice():
  # fsdp over the slice's 4 chips, every parameter of 256+ elements split. A 32768-word
  # vocabulary makes the embeddings most of the state, so its quarter per chip stands out from
  # the TPU's padding of the small leaves (biases, LayerNorms: 4 KB each at least).
  config = tiny_config(vocab_size=32768, mesh_shape=(1, -1, 1), fsdp_min_size=256)
  lines = []
  result = compile_tpu.compile_steps(config, compile_tpu.parse_slice('v5e-4'), log=lines.append)
  assert (result['chips'], result['device_kind']) == (4, 'TPU v5 lite')
  assert result['mesh'] == {'data': 1, 'fsdp': 4, 'tensor': 1}
  assert result['kernels'] == 'stock'  # model.kernels 'auto' for the TPU, not this CPU host
  # model.attention 'auto' is splash on TPU, but sequences of 16 are not a multiple of its tile;
  # the training step drops attention probabilities (rate 0.1): the explicit einsums.
  assert result['attention'] == {'train': 'explicit', 'eval': 'xla'}
  assert 'mesh: data 1 x fsdp 4 x tensor 1; batch 8 x 16 (2 sequences per chip)' in lines[1]
  state_bytes = 3 * 4 * result['num_params']  # float32 params and 2 Adam moments
  train_memory = result['train']['memory']
  assert 0.25 * state_bytes < train_memory['arguments'] < 0.4 * state_bytes, train_memory
  # The new state is written into the donated old one.
  assert train_memory['aliased'] > 0.9 * train_memory['arguments'], train_memory
  assert result['eval']['memory']['arguments'] < 0.4 * state_bytes / 3  # params only, split
  assert result['train']['memory']['total'] < result['hbm_capacity']
  # FLOPs: the per-chip cost of the compiled SPMD program x 4 chips is the whole step's, which
  # the unpartitioned step lowered for the CPU counts too: unoptimized, so with work that the
  # compiler drops (eval: 0.75x here; 1.00x for configs/small.py), but far from 4x or 1/4.
  reference = compile_tpu._loop_free_flops(  # pylint: disable=protected-access
      config, objective.SpecialIds(0, 101, 102, 103), max_predictions=3)
  for name in ('train', 'eval'):
    assert 0.6 < result[name]['flops'] / reference[name] < 1.5, (name, result[name], reference)
  assert result['train']['flops'] > 2.5 * result['eval']['flops']  # backward ~ 2x forward


@needs_libtpu
def test_a_step_that_does_not_fit_is_one_error():
  # A 2M x 1024 embedding: 8 GB of params, 24 GB with the Adam moments: more than a v5e chip.
  config = tiny_config(vocab_size=2_000_000, **{'model.embedding_size': 1024})
  with pytest.raises(UserError, match=r'the train step does not fit in v5e-1 HBM \(.*exceeds '
                                      r'available HBM'):
    compile_tpu.compile_steps(config, compile_tpu.parse_slice('v5e-1'))


@needs_libtpu
@pytest.mark.parametrize('flags,expected', [
    (['--config.mesh_shape=(3,-1,1)'], 'error: mesh_shape (3, -1, 1) does not fit the 4 devices'),
    (['--config.batch_size=30'], 'error: batch_size 30 is not divisible by the 4 devices'),
])
def test_command_line_error_is_one_line(flags, expected):
  out = subprocess.run(
      [sys.executable, '-m', 'electra_jax.main', '--mode=compile', '--config=configs/demo.py',
       '--config.compile_topology=v5e-4', *flags], cwd=ROOT, capture_output=True, text=True,
      timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 1, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1].startswith(expected), out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
