"""Sharding rules and meshes: every (data, fsdp, tensor) mesh computes the one-device step, params
really are split, and a 2-process run (jax.distributed over local CPU processes) matches 1 process."""
import functools
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import ragged_batch, run_train_steps, tiny_config
from electra_jax import model as model_lib
from electra_jax import optim
from electra_jax import sharding
from electra_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH_SHAPES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8), (1, 8, 1), (4, 1, 2)]


def sharded_config(mesh_shape=(1, 1, 1)):
  # Hidden 32 / generator 16 / FFN 64 / vocab 128 / embedding 24 all divide by 8; a low FSDP
  # threshold so the tiny kernels get split too.
  # One layer and two steps keep the 7 compiles short.
  return tiny_config(mesh_shape=mesh_shape, fsdp_min_size=64, num_train_steps=100,
                     **{'model.num_layers': 1})


def make_batch():
  return ragged_batch(min_len=6)


@functools.lru_cache(maxsize=None)
def one_device_result():
  _, params, metrics, losses = run_train_steps(sharded_config(), make_batch(), num_steps=2)
  return params, metrics, losses


def same_spec(a, b):
  trim = lambda s: tuple(s)[:max([i + 1 for i, x in enumerate(s) if x is not None], default=0)]
  return trim(a) == trim(b)


def abstract_state(config):
  model = model_lib.make_pretrainer(config)
  tx = optim.make_optimizer(config.optim, 100)
  return jax.eval_shape(functools.partial(train.create_train_state, model, tx), jax.random.key(0))


def test_param_specs_follow_the_rules():
  mesh_shape = {'data': 1, 'fsdp': 2, 'tensor': 2}
  state = abstract_state(sharded_config())
  specs = jax.tree_util.tree_map_with_path(
      lambda path, x: sharding.param_spec(path, x.shape, mesh_shape, 64), state)
  layer = specs.params['discriminator']['layer_0']
  assert layer['query']['kernel'] == P('fsdp', 'tensor')  # [32 in, 32 out]: out on tensor
  assert layer['query']['bias'] == P('tensor')
  assert layer['intermediate']['kernel'] == P('fsdp', 'tensor')
  assert layer['attention_output']['kernel'] == P('tensor', 'fsdp')  # in on tensor
  assert layer['output']['kernel'] == P('tensor', 'fsdp')
  assert layer['output']['bias'] == P()  # small: replicated
  assert layer['attention_LayerNorm']['scale'] == P()
  assert specs.params['embeddings']['word_embeddings']['embedding'] == P('tensor', 'fsdp')
  assert specs.step == P()
  # Adam's moments follow their parameter.
  adam = [s for s in specs.opt_state if hasattr(s, 'mu')][0]
  assert adam.mu['discriminator']['layer_0']['query']['kernel'] == P('fsdp', 'tensor')
  assert adam.nu['embeddings']['word_embeddings']['embedding'] == P('tensor', 'fsdp')
  # A dim the axis doesn't divide stays whole; below the threshold nothing is split over fsdp.
  assert sharding.param_spec((), (30, 7), {'fsdp': 4, 'tensor': 1}, 1) == P()
  assert sharding.param_spec((), (64, 64), {'fsdp': 4, 'tensor': 1}, 10**6) == P()


@pytest.mark.parametrize('mesh_shape', MESH_SHAPES)
def test_mesh_step_equals_one_device(mesh_shape):
  params1, metrics1, losses1 = one_device_result()
  state, params, metrics, losses = run_train_steps(sharded_config(mesh_shape), make_batch(),
                                                   num_steps=2)
  loss_diff = max(abs(a - b) for a, b in zip(losses, losses1))
  param_diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                                                params, params1)))
  print(f'mesh {mesh_shape}: max |loss diff| {loss_diff:.2e}, max |param diff| {param_diff:.2e}')
  np.testing.assert_allclose(losses, losses1, rtol=1e-5)
  for k in ('mlm_loss', 'disc_loss', 'disc_auc', 'grad_norm'):
    np.testing.assert_allclose(metrics[k], metrics1[k], rtol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, params1)

  # The parameters (and Adam's moments) really are split as the rules say.
  data, fsdp, tensor = mesh_shape
  axis_size = {'data': data, 'fsdp': fsdp, 'tensor': tensor, None: 1}
  layer = state.params['discriminator']['layer_0']
  expected = {  # (module, spec): the rules on these shapes, written out
      'query': P('fsdp' if fsdp > 1 else None, 'tensor') if tensor > 1 else P(
          'fsdp' if fsdp > 1 else None),
      'output': P('tensor', 'fsdp' if fsdp > 1 else None) if tensor > 1 else P(
          'fsdp' if fsdp > 1 else None)}
  for name, spec in expected.items():
    kernel = layer[name]['kernel']
    assert same_spec(kernel.sharding.spec, spec), (name, kernel.sharding.spec)
    shard = tuple(n // axis_size[a] for n, a in zip(kernel.shape, tuple(spec) + (None,) * 2))
    assert kernel.addressable_shards[0].data.shape == shard, name
  adam = [s for s in state.opt_state if hasattr(s, 'mu')][0]
  assert adam.mu['discriminator']['layer_0']['query']['kernel'].sharding == \
      layer['query']['kernel'].sharding
  embedding = state.params['embeddings']['word_embeddings']['embedding']
  if tensor > 1:  # the vocabulary dim on 'tensor'
    assert embedding.sharding.spec[0] == 'tensor'
    assert embedding.addressable_shards[0].data.shape[0] == 128 // tensor


TWO_PROCESS_CONFIG = '''
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config

def get_config():
  c = tiny_config(vocab_size={vocab_size}, mesh_shape=(1, 2, 2), fsdp_min_size=64,
                  num_train_steps=3, eval_every_steps=3, eval_steps=1, checkpoint_every_steps=3,
                  **{{'model.num_layers': 1}})
  c.data.update({data!r})
  return c
'''


def tiny_pretraining_data(tmp_path):
  """Two train shards (one per process) of a tiny WordPiece corpus."""
  from electra_jax import build_data  # pylint: disable=g-import-not-at-top
  words = 'the a cat dog sat ran on under mat log big small and it was happy sad'.split()
  vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.'] + words
  rng = np.random.default_rng(0)
  docs = ['\n'.join(' '.join(rng.choice(words, 9)) + '.' for _ in range(4)) for _ in range(40)]
  (tmp_path / 'corpus.txt').write_text('\n\n'.join(docs) + '\n')
  (tmp_path / 'vocab.txt').write_text('\n'.join(vocab) + '\n')
  config = tiny_config(vocab_size=len(vocab))
  config.data.update(corpus=str(tmp_path / 'corpus.txt'), vocab=str(tmp_path / 'vocab.txt'),
                     data_dir=str(tmp_path / 'data'), num_shards=2, num_processes=1,
                     eval_fraction=0.1, shuffle_buffer=64)
  build_data.build_pretraining_data(config, str(tmp_path))
  return config


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
  """`main` in 2 CPU processes x 2 devices (jax.distributed, gloo collectives), mesh (1, 2, 2):
  each process reads its own shard; the losses equal one device fed the same global batches;
  only process 0 logs; the checkpoint and the export are written."""
  import json  # pylint: disable=g-import-not-at-top
  from electra_jax import build_data, input_pipeline, objective  # pylint: disable=g-import-not-at-top
  data_config = tiny_pretraining_data(tmp_path)
  config_file = tmp_path / 'two_process_config.py'
  config_file.write_text(TWO_PROCESS_CONFIG.format(
      tests=os.path.join(ROOT, 'tests'), vocab_size=data_config.model.vocab_size,
      data=data_config.data.to_dict()))
  workdir = tmp_path / 'work'
  port = free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', ELECTRA_JAX_DISTRIBUTED='1',
               JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2',
               JAX_PROCESS_ID=str(i), XLA_FLAGS='--xla_force_host_platform_device_count=2 '
               '--xla_backend_optimization_level=0')
    log = open(tmp_path / f'process_{i}.log', 'w')
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'electra_jax.main', f'--config={config_file}',
         f'--workdir={workdir}'], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  try:
    codes = [p.wait(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  logs = [(tmp_path / f'process_{i}.log').read_text() for i in range(2)]
  assert codes == [0, 0], logs[0][-3000:] + '\n----\n' + logs[1][-3000:]
  assert 'electra_jax:' in logs[0] and 'electra_jax:' not in logs[1]  # process 0 logs
  with open(workdir / 'metrics.jsonl') as f:
    rows = [json.loads(l) for l in f]
  losses = [r['loss'] for r in rows if r['kind'] == 'train']
  assert len(losses) == 3
  assert (workdir / 'checkpoints' / '3').is_dir()
  assert (workdir / 'pretrained' / 'discriminator.msgpack').exists()

  # One device, fed each step the two processes' local batches concatenated.
  config = tiny_config(vocab_size=data_config.model.vocab_size, num_train_steps=3,
                       **{'model.num_layers': 1})
  config.data.update(data_config.data.to_dict())
  meta = build_data.load_meta(config.data.data_dir)
  local = [input_pipeline.train_batches(config, meta, 0, i, 2) for i in range(2)]
  batches = []
  for _ in range(3):
    parts = [next(it) for it in local]
    batches.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
  init_rng, step_rng, _ = jax.random.split(jax.random.key(config.seed), 3)
  _, _, _, expected = run_train_steps(
      config, batches, init_rng=init_rng, step_rng=step_rng,
      special=(meta.pad_id, meta.cls_id, meta.sep_id, meta.mask_id),
      max_predictions=objective.max_predictions_per_seq(config.objective.mask_prob,
                                                        config.max_seq_length))
  print(f'2 processes: losses {losses}, one device {expected}')
  np.testing.assert_allclose(losses, expected, rtol=1e-5)

  # This process (8 devices) resumes the 2-process checkpoint on another mesh, sharded.
  config.update(mesh_shape=(2, 2, 2), fsdp_min_size=64, num_train_steps=4, eval_steps=1)
  result = train.train_and_evaluate(config, str(workdir))
  assert result['step'] == 4
  with open(workdir / 'metrics.jsonl') as f:
    assert [json.loads(l)['step'] for l in f if '"train"' in l] == [1, 2, 3, 4]
