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

from conftest import run_train_steps, tiny_config
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
  """Rows of different real lengths (so per-token normalization matters), [CLS] first."""
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 128, (8, 16)).astype(np.int32)
  ids[:, 0] = 2
  mask = (np.arange(16)[None, :] < rng.integers(6, 17, (8, 1))).astype(np.int32)
  return {'input_ids': ids * mask, 'input_mask': mask, 'segment_ids': np.zeros_like(ids)}


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
