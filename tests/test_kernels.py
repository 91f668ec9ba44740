"""model.kernels: the CPU-tuned kernels and the stock flax/jax/optax ops compute the same model.

Same params, batch and rng with dropout off: same pre-training loss and gradients, same
fine-tuning outputs; the stock dropout is nn.Dropout's.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from electra_jax import model as model_lib
from electra_jax import objective
from electra_jax.finetune import model as ft_model

SPECIAL = objective.SpecialIds(pad_id=0, cls_id=2, sep_id=3, mask_id=4)


def test_auto_follows_the_platform():
  config = tiny_config()
  assert config.model.kernels == 'auto'
  assert [model_lib.resolve_kernels(config.model, p) for p in ('cpu', 'gpu', 'tpu')] == \
      ['cpu', 'stock', 'stock']
  assert model_lib.resolve_kernels(config.model) == 'cpu'  # the tests run on CPU
  del config.model['kernels']  # configs from before the switch: auto
  assert model_lib.resolve_kernels(config.model, 'tpu') == 'stock'
  for fixed in ('cpu', 'stock'):
    c = tiny_config(**{'model.kernels': fixed})
    assert model_lib.resolve_kernels(c.model, 'tpu') == model_lib.resolve_kernels(c.model) == fixed
  # Resolved once, when the model is built: for the step's platform, not this host's.
  assert model_lib.make_pretrainer(tiny_config(), platform='tpu').model_config.kernels == 'stock'
  assert model_lib.make_pretrainer(tiny_config()).model_config.kernels == 'cpu'
  with pytest.raises(ValueError, match='model.kernels'):
    model_lib.resolve_kernels(tiny_config(**{'model.kernels': 'gpu'}).model)


def _models(**overrides):
  return [model_lib.make_pretrainer(tiny_config(**{'model.kernels': k, **overrides}))
          for k in ('cpu', 'stock')]


def test_same_parameter_tree():
  """Checkpoints, exports and conversion don't depend on the kernels."""
  cpu, stock = (jax.jit(lambda r, m=m: model_lib.init_params(m, r))(jax.random.key(0))
                for m in _models())
  assert jax.tree.structure(cpu) == jax.tree.structure(stock)
  jax.tree.map(np.testing.assert_array_equal, cpu, stock)


def _batch():
  rng = np.random.default_rng(1)
  ids = rng.integers(5, 128, (4, 16)).astype(np.int32)
  ids[:, 0] = SPECIAL.cls_id
  mask = (np.arange(16)[None, :] < np.array([[16], [12], [9], [6]])).astype(np.int32)
  return {'input_ids': jnp.asarray(ids * mask), 'input_mask': jnp.asarray(mask),
          'segment_ids': jnp.asarray(np.zeros_like(ids))}


def _assert_trees_close(got, want):
  """Every leaf within 1e-5 of the leaf's largest entry (float32 rounding, not a formula). Leaves
  that are zero but for rounding (the attention key bias: softmax ignores a constant per query;
  its gradient is ~1e-12) are held to 1e-9 of the tree's largest entry instead."""
  largest = max(float(np.max(np.abs(w))) for w in jax.tree.leaves(want))
  for path, g, w in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got),
                        jax.tree.leaves(want)):
    scale = max(float(np.max(np.abs(w))), 1e-4 * largest)
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path[0]))


def _loss_and_grad(model, params, batch, objective_config, max_predictions):
  """The pre-training loss (with aux) and its gradient, through the training path."""
  loss = lambda p: objective.electra_loss(model_lib.networks(model), p, batch, jax.random.key(5),
                                          objective_config, SPECIAL, max_predictions,
                                          deterministic=False)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


@pytest.mark.parametrize('electra_objective', [True, False])
def test_same_pretraining_loss_and_gradients(electra_objective):
  # Dropout off, but through the training path: attention dropout 1e-12 keeps every probability
  # (scale 1.0 in float32), so the explicit attention (and the generator's one head, the 'cpu'
  # kernels' special case) runs, as in training with the reference's attention dropout.
  overrides = {'model.dropout_rate': 0.0, 'model.attention_dropout_rate': 1e-12,
               'objective.electra_objective': electra_objective}
  models = _models(**overrides)
  assert model_lib.generator_size(models[0].model_config).num_heads == 1
  params = model_lib.init_params(models[0], jax.random.key(0))
  batch = _batch()
  o = tiny_config(**overrides).objective

  (cpu_loss, cpu_aux), cpu_grads = _loss_and_grad(models[0], params, batch, o, 3)
  (stock_loss, stock_aux), stock_grads = _loss_and_grad(models[1], params, batch, o, 3)
  np.testing.assert_allclose(stock_loss, cpu_loss, rtol=1e-5)
  np.testing.assert_allclose(stock_aux['mlm_loss'], cpu_aux['mlm_loss'], rtol=1e-5)
  if electra_objective:
    np.testing.assert_array_equal(stock_aux['sampled_ids'], cpu_aux['sampled_ids'])
    np.testing.assert_allclose(stock_aux['disc_loss'], cpu_aux['disc_loss'], rtol=1e-5)
  else:
    assert 'disc_loss' not in stock_aux and not np.any(stock_grads['discriminator_predictions']
                                                       ['dense']['kernel'])
  _assert_trees_close(stock_grads, cpu_grads)


def test_same_finetuning_outputs_and_gradients():
  batch = _batch()
  segment_ids = (jnp.arange(16)[None, :] >= 4).astype(jnp.int32) * batch['input_mask']
  args = (batch['input_ids'], batch['input_mask'], segment_ids)
  outputs, grads = [], []
  for kernels in ('cpu', 'stock'):
    c = tiny_config(**{'model.kernels': kernels}).model
    qa = ft_model.FinetuneModel(c, 'qa')  # GELU in its joint end head and answerability head
    classifier = ft_model.FinetuneModel(c, 'classification', num_outputs=3)
    if kernels == 'cpu':
      qa_params = qa.init(jax.random.key(0), *args)['params']
      cls_params = classifier.init(jax.random.key(1), *args)['params']
    outputs.append((qa.apply({'params': qa_params}, *args),
                    classifier.apply({'params': cls_params}, *args)))
    loss = lambda p, m=classifier: jnp.sum(
        m.apply({'params': p}, *args)['logits'] * jnp.arange(3.0))
    grads.append(jax.grad(loss)(cls_params))
  _assert_trees_close(outputs[1], outputs[0])
  _assert_trees_close(grads[1], grads[0])


class _Drop(nn.Module):
  stock: bool

  @nn.compact
  def __call__(self, x):
    return model_lib.dropout(self, x, 0.1, deterministic=False, stock=self.stock)


def test_stock_dropout_is_nn_dropout():
  x = jnp.ones((3, 257, 129))
  rngs = {'dropout': jax.random.key(0)}
  out = _Drop(stock=True).apply({}, x, rngs=rngs)
  np.testing.assert_array_equal(out, nn.Dropout(0.1).apply({}, x, False, rngs=rngs))
  assert abs(float(jnp.mean(out == 0)) - 0.1) < 0.01  # keep rate 0.9
  np.testing.assert_allclose(out[out != 0], 1 / 0.9, rtol=1e-6)  # inverted: scaled by 1/0.9
  # Different masks from the 'cpu' kernels' hash, at the same rate.
  hashed = _Drop(stock=False).apply({}, x, rngs=rngs)
  assert not np.array_equal(out == 0, hashed == 0)
  assert abs(float(jnp.mean(hashed == 0)) - 0.1) < 0.01


# ---- model.attention: the TPU splash-attention kernel, run by Pallas's interpreter on CPU.

def test_attention_auto_follows_the_platform():
  m = tiny_config().model
  assert m.attention == 'auto'
  assert [model_lib.resolve_attention(m, p) for p in ('cpu', 'gpu', 'tpu')] == \
      ['xla', 'xla', 'splash']
  splash = tiny_config(**{'model.attention': 'splash'}).model
  assert model_lib.resolve_attention(splash, 'tpu') == 'splash'
  assert model_lib.resolve_attention(splash) == 'splash_interpret'  # not on this CPU host
  assert model_lib.make_pretrainer(tiny_config(), platform='tpu').model_config.attention == 'splash'
  assert model_lib.make_pretrainer(tiny_config()).model_config.attention == 'xla'
  paths = [model_lib.attention_path(model_lib.with_kernels(m, 'tpu'), seq_len, dropout)
           for seq_len, dropout in ((128, False), (512, False), (64, False), (128, True))]
  assert paths == ['splash', 'splash', 'xla', 'explicit']
  with pytest.raises(ValueError, match='model.attention'):
    model_lib.resolve_attention(tiny_config(**{'model.attention': 'flash'}).model)


def _qkv_and_mask(batch=4, seq_len=128, heads=2, head_dim=16):
  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(rng.normal(size=(batch, seq_len, heads, head_dim)), jnp.float32)
             for _ in range(3))
  lengths = np.array([seq_len, 100, 37, 5, 128, 64, 1, 90])[:batch]
  mask = jnp.asarray(np.arange(seq_len)[None, :] < lengths[:, None])[:, None, None, :]
  return q, k, v, mask


def _real(x, mask):
  """Real-token rows only (padding rows attend differently and are read by nothing)."""
  return np.asarray(x)[np.asarray(mask[:, 0, 0])]


def test_splash_attention_equals_xla_attention_and_its_gradients():
  q, k, v, mask = _qkv_and_mask()
  weight = mask[:, 0, 0, :, None, None]  # a loss of the real rows only, as every loss here
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * weight * jnp.cos(jnp.arange(16.0)))
  splash = lambda q, k, v: model_lib.splash_attention(q, k, v, mask, interpret=True)
  xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(_real(jax.jit(splash)(q, k, v), mask),
                             _real(xla(q, k, v), mask), atol=2e-6)
  got = jax.jit(jax.grad(loss(splash), argnums=(0, 1, 2)))(q, k, v)
  want = jax.grad(loss(xla), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=2e-6)


@pytest.mark.parametrize('mesh_shape', [(2, 2, 2)])
def test_splash_attention_runs_per_shard_of_the_mesh(mesh_shape):
  """Batch over data x fsdp, heads over tensor (a Pallas call is not partitioned by XLA)."""
  from electra_jax import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(mesh_shape)
  q, k, v, mask = _qkv_and_mask(batch=8)
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(('data', 'fsdp')))
  fn = sharding.traced_in_mesh(
      mesh, lambda q, k, v, mask: model_lib.splash_attention(q, k, v, mask, interpret=True))
  got = jax.jit(fn, in_shardings=(spec,) * 4)(q, k, v, mask)
  want = jax.nn.dot_product_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(_real(got, mask), _real(want, mask), atol=2e-6)


def test_splash_model_same_pretraining_loss_and_gradients():
  """The whole pre-training loss through the model at seq 128 (the kernel's tile): attention
  'splash' (interpreted here) against 'xla', dropout off."""
  overrides = {'model.dropout_rate': 0.0, 'model.attention_dropout_rate': 0.0,
               'model.max_position_embeddings': 128, 'max_seq_length': 128,
               'model.num_layers': 1}
  models = [model_lib.make_pretrainer(tiny_config(**{'model.attention': a, **overrides}))
            for a in ('xla', 'splash')]
  assert models[1].model_config.attention == 'splash_interpret'
  params = model_lib.init_params(models[0], jax.random.key(0))
  rng = np.random.default_rng(1)
  ids = rng.integers(5, 128, (2, 128)).astype(np.int32)
  ids[:, 0] = SPECIAL.cls_id
  mask = (np.arange(128)[None, :] < np.array([[128], [70]])).astype(np.int32)
  batch = {'input_ids': jnp.asarray(ids * mask), 'input_mask': jnp.asarray(mask),
           'segment_ids': jnp.zeros_like(jnp.asarray(ids))}
  o = tiny_config().objective

  (xla_loss, _), xla_grads = _loss_and_grad(models[0], params, batch, o, 20)
  (splash_loss, _), splash_grads = _loss_and_grad(models[1], params, batch, o, 20)
  np.testing.assert_allclose(splash_loss, xla_loss, rtol=1e-5)
  _assert_trees_close(splash_grads, xla_grads)
