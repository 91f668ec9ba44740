"""The original's AdamW (no bias correction), schedule, decay mask and clipping, by hand."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import tiny_config
from electra_jax import model as model_lib
from electra_jax import optim


def _optim_config(**kw):
  o = tiny_config().optim
  o.learning_rate, o.warmup_steps, o.weight_decay, o.clip_norm = 0.1, 2, 0.0, 0.0
  for k, v in kw.items():
    o[k] = v
  return o


def test_electra_schedule_warmup_overlaps_decay():
  lr = optim.learning_rate_schedule(_optim_config(learning_rate=1.0, warmup_steps=10), 100)
  np.testing.assert_allclose([lr(s) for s in (0, 5, 10, 50, 100, 150)],
                             [0.0, 0.5 * 0.95, 0.9, 0.5, 0.0, 0.0], atol=1e-7)
  lr = optim.learning_rate_schedule(
      _optim_config(learning_rate=1.0, warmup_steps=10, schedule='warmup_linear'), 110)
  np.testing.assert_allclose([lr(s) for s in (0, 5, 10, 60, 110)], [0, 0.5, 1.0, 0.5, 0.0],
                             atol=1e-7)


def test_adam_without_bias_correction_by_hand():
  o = _optim_config(warmup_steps=0, weight_decay=0.5)
  tx = optim.make_optimizer(o, num_train_steps=1000)
  params = {'w': {'kernel': jnp.array([1.0, -2.0])}, 'b': {'bias': jnp.array([0.5])}}
  state = tx.init(params)
  m = {k: 0.0 for k in ('k0', 'k1', 'b')}
  v = dict(m)
  p = {'k0': 1.0, 'k1': -2.0, 'b': 0.5}
  for step, g in enumerate([(0.3, -0.1, 2.0), (0.2, 0.4, -1.0)]):
    grads = {'w': {'kernel': jnp.array(g[:2])}, 'b': {'bias': jnp.array(g[2:])}}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    lr = 0.1 * (1 - step / 1000)
    for name, gi in zip(('k0', 'k1', 'b'), g):
      m[name] = 0.9 * m[name] + 0.1 * gi
      v[name] = 0.999 * v[name] + 0.001 * gi * gi
      update = m[name] / (math.sqrt(v[name]) + 1e-6)
      if name != 'b':  # decay on kernels, not on biases
        update += 0.5 * p[name]
      p[name] -= lr * update
    np.testing.assert_allclose(params['w']['kernel'], [p['k0'], p['k1']], rtol=1e-5)
    np.testing.assert_allclose(params['b']['bias'], [p['b']], rtol=1e-5)


def test_bias_correction_option_is_textbook_adam():
  o = _optim_config(warmup_steps=0, bias_correction=True)
  tx = optim.make_optimizer(o, num_train_steps=10**9)
  params = {'kernel': jnp.array([1.0])}
  updates, _ = tx.update({'kernel': jnp.array([0.3])}, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], [-0.1 * 0.3 / (0.3 + 1e-6)], rtol=1e-5)


def test_global_norm_clipping():
  o = _optim_config(warmup_steps=0, clip_norm=1.0, bias_correction=True)
  tx = optim.make_optimizer(o, num_train_steps=10**9)
  params = {'kernel': jnp.zeros(2)}
  # With Adam the first step is sign-like; check clipping on the moments instead.
  _, state = tx.update({'kernel': jnp.array([3.0, 4.0])}, tx.init(params), params)
  mu = jax.tree.leaves([s for s in state if isinstance(s, optax.ScaleByAdamState)][0].mu)[0]
  np.testing.assert_allclose(mu, 0.1 * np.array([0.6, 0.8]), rtol=1e-6)


def test_weight_decay_mask_excludes_layernorm_and_biases():
  config = tiny_config()
  params = model_lib.init_params(model_lib.make_pretrainer(config), jax.random.key(0))
  mask = optim.weight_decay_mask(params)
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert flat["['embeddings']['word_embeddings']['embedding']"]
  assert flat["['discriminator']['layer_0']['query']['kernel']"]
  assert not flat["['discriminator']['layer_0']['query']['bias']"]
  assert not flat["['embeddings']['LayerNorm']['scale']"]
  assert not flat["['generator_predictions']['output_bias']"]
  assert not flat["['discriminator']['layer_1']['output_LayerNorm']['bias']"]


def test_lamb_by_hand():
  """optim.name='lamb': the global-norm clip, then Adam with bias correction, weight decay on
  kernels only, and each leaf's update scaled by ||param|| / ||update|| (optax.lamb's trust ratio)."""
  o = _optim_config(name='lamb', warmup_steps=0, weight_decay=0.1, clip_norm=1.0,
                    learning_rate=0.01, eps=1e-6)
  tx = optim.make_optimizer(o, num_train_steps=10**9)  # the linear decay is negligible here
  params = {'w': {'kernel': jnp.array([1.0, -2.0])}, 'b': {'bias': jnp.array([0.5, 0.25])}}
  state = tx.init(params)
  p = {'w': np.array([1.0, -2.0]), 'b': np.array([0.5, 0.25])}
  m = {k: np.zeros(2) for k in p}
  v = {k: np.zeros(2) for k in p}
  for t, g in enumerate([{'w': [3.0, -1.0], 'b': [2.0, 0.0]},  # norm 3.87 > 1: clipped
                         {'w': [0.2, 0.1], 'b': [-0.1, 0.3]}], start=1):  # norm 0.39: not
    grads = {'w': {'kernel': jnp.array(g['w'])}, 'b': {'bias': jnp.array(g['b'])}}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    norm = math.sqrt(sum(x * x for k in g for x in g[k]))
    scale = min(1.0, 1.0 / norm)
    for k in p:
      gk = np.array(g[k]) * scale
      m[k] = 0.9 * m[k] + 0.1 * gk
      v[k] = 0.999 * v[k] + 0.001 * gk * gk
      u = (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-6)
      if k == 'w':
        u = u + 0.1 * p[k]
      trust = np.linalg.norm(p[k]) / np.linalg.norm(u)
      p[k] = p[k] - 0.01 * trust * u
    np.testing.assert_allclose(params['w']['kernel'], p['w'], rtol=1e-5)
    np.testing.assert_allclose(params['b']['bias'], p['b'], rtol=1e-5)


def test_base_lamb_config_is_base_with_the_large_batch_recipe():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, 'configs', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config().to_dict()

  lamb, base = load('base_lamb'), load('base')
  assert lamb['optim']['name'] == 'lamb' and lamb['optim']['learning_rate'] == 6e-3
  assert (lamb['batch_size'], lamb['max_seq_length'], lamb['num_train_steps'],
          lamb['optim']['warmup_steps']) == (67_584, 128, 10_000, 2_000)
  for key in ('batch_size', 'max_seq_length', 'num_train_steps'):
    del lamb[key], base[key]
  for key in ('name', 'learning_rate', 'warmup_steps'):
    del lamb['optim'][key], base['optim'][key]
  assert lamb == base
