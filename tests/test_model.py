"""The transformer: sizes of the reference configs, sharing/tying, dtypes, the two attention paths."""
import importlib.util
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from electra_jax import model as model_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def bert_params(vocab, emb, hidden, layers, ffn, max_pos=512, types=2):
  """Hand count of a BERT/ELECTRA encoder: embeddings (+ projection) + layers."""
  n = vocab * emb + max_pos * emb + types * emb + 2 * emb
  if emb != hidden:
    n += emb * hidden + hidden
  layer = 4 * (hidden * hidden + hidden) + hidden * ffn + ffn + ffn * hidden + hidden + 4 * hidden
  return n + layers * layer


@pytest.mark.parametrize('name,disc_total', [
    ('small', 13_549_057),  # HF google/electra-small-discriminator: 13.5M
    ('base', None), ('large', None)])
def test_reference_sizes(name, disc_total):
  config = load_config(name)
  m = config.model
  model = model_lib.make_pretrainer(config)
  shapes = jax.eval_shape(lambda r: model_lib.init_params(model, r), jax.random.key(0))
  disc = {k: shapes[k] for k in ('embeddings', 'discriminator', 'discriminator_predictions')}
  h = m.hidden_size
  expected_disc = bert_params(m.vocab_size, m.embedding_size, h, m.num_layers,
                              m.intermediate_size) + (h * h + h) + (h + 1)
  assert count(disc) == expected_disc
  if disc_total:
    assert count(disc) == disc_total
  g = model_lib.generator_size(m)
  assert g.hidden_size == round(h * m.generator_fraction) and g.num_heads == max(1, g.hidden_size // 64)
  gen_body = count(shapes['generator'])
  assert gen_body == bert_params(0, m.embedding_size, g.hidden_size, g.num_layers,
                                 g.intermediate_size, max_pos=0, types=0) - 2 * m.embedding_size
  # Generator head: dense(hidden -> emb), LayerNorm, output bias; no output matrix (tied).
  head = shapes['generator_predictions']
  assert set(head) == {'dense', 'LayerNorm', 'output_bias'}
  assert head['dense']['kernel'].shape == (g.hidden_size, m.embedding_size)
  assert head['output_bias'].shape == (m.vocab_size,)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))


@pytest.fixture(scope='module')
def tiny_setup():
  config = tiny_config()
  model = model_lib.make_pretrainer(config)
  params = model_lib.init_params(model, jax.random.key(0))
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(5, config.model.vocab_size, (2, 12)), jnp.int32)
  mask = jnp.asarray([[1] * 12, [1] * 7 + [0] * 5], jnp.int32)
  seg = jnp.asarray([[0] * 6 + [1] * 6, [0] * 12], jnp.int32)
  pos = jnp.asarray([[1, 3], [2, 4]], jnp.int32)
  return config, model, params, (ids, mask, seg, pos)


def test_embeddings_are_one_shared_table(tiny_setup):
  config, model, params, (ids, mask, seg, pos) = tiny_setup
  assert 'generator_embeddings' not in params
  assert 'embeddings' not in params['generator'] and 'embeddings' not in params['discriminator']
  gen = lambda p: model.apply({'params': p}, ids, mask, seg, pos, method='generator_logits')
  disc = lambda p: model.apply({'params': p}, ids, mask, seg, method='discriminator_logits')
  # Changing the one LayerNorm or word table changes both models; the generator's output layer is
  # that same table (the gradient of a logit w.r.t. the table has the head's hidden in its row).
  for leaf in (('embeddings', 'LayerNorm', 'bias'), ('embeddings', 'word_embeddings', 'embedding')):
    p2 = jax.tree.map(lambda x: x, params)
    node = p2
    for k in leaf[:-1]:
      node = node[k]
    node[leaf[-1]] = node[leaf[-1]] + jax.random.normal(jax.random.key(1), node[leaf[-1]].shape)
    assert not np.allclose(gen(p2), gen(params)) and not np.allclose(disc(p2), disc(params))
  grads = jax.grad(lambda p: gen(p)[0, 0, 7])(params)
  assert float(jnp.abs(grads['embeddings']['word_embeddings']['embedding'][7]).sum()) > 0


def test_untied_switches():
  # Untied generator embeddings are as wide as the generator (16), with no projection, and its
  # output layer is tied to them (the original); model.generator_embedding_size sets another width.
  config = tiny_config(**{'model.untied_generator_embeddings': True})
  params = model_lib.init_params(model_lib.make_pretrainer(config), jax.random.key(0))
  assert params['generator_embeddings']['word_embeddings']['embedding'].shape == (128, 16)
  assert params['embeddings']['word_embeddings']['embedding'].shape == (128, 24)
  assert 'embeddings_project' not in params['generator']
  assert 'embeddings_project' in params['discriminator']
  assert params['generator_predictions']['dense']['kernel'].shape == (16, 16)
  config = tiny_config(**{'model.untied_generator_embeddings': True,
                          'model.generator_embedding_size': 8})
  params = model_lib.init_params(model_lib.make_pretrainer(config), jax.random.key(0))
  assert params['generator_embeddings']['word_embeddings']['embedding'].shape == (128, 8)
  assert params['generator']['embeddings_project']['kernel'].shape == (8, 16)
  assert params['generator_predictions']['dense']['kernel'].shape == (16, 8)
  config = tiny_config(**{'model.untied_generator': False, 'model.generator_fraction': 1.0})
  params = model_lib.init_params(model_lib.make_pretrainer(config), jax.random.key(0))
  assert 'generator' not in params  # the generator IS the discriminator body
  with pytest.raises(ValueError, match='generator_fraction=1.0'):
    config = tiny_config(**{'model.untied_generator': False})
    model_lib.init_params(model_lib.make_pretrainer(config), jax.random.key(0))


def test_padding_does_not_change_real_tokens(tiny_setup):
  config, model, params, (ids, mask, seg, _) = tiny_setup
  disc = lambda i: model.apply({'params': params}, i, mask, seg, method='discriminator_logits')
  other = ids.at[1, 9].set(ids[1, 9] + 1)  # a padded position of row 1
  np.testing.assert_allclose(disc(other)[1, :7], disc(ids)[1, :7], atol=1e-6)


def test_explicit_attention_path_equals_fused(tiny_setup):
  config, _, params, (ids, mask, seg, pos) = tiny_setup
  config = tiny_config(**{'model.dropout_rate': 0.0, 'model.attention_dropout_rate': 1e-12})
  model = model_lib.make_pretrainer(config)
  explicit = dict(deterministic=False, rngs={'dropout': jax.random.key(0)})
  fused = model.apply({'params': params}, ids, mask, seg, method='discriminator_logits')
  dropped = model.apply({'params': params}, ids, mask, seg, method='discriminator_logits', **explicit)
  np.testing.assert_allclose(dropped[mask > 0], fused[mask > 0], atol=1e-5)
  # The generator (hidden 16) has one head: its explicit path drops the head axis.
  assert model_lib.generator_size(config.model).num_heads == 1
  fused = model.apply({'params': params}, ids, mask, seg, pos, method='generator_logits')
  dropped = model.apply({'params': params}, ids, mask, seg, pos, method='generator_logits',
                        **explicit)
  np.testing.assert_allclose(dropped, fused, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params(tiny_setup):
  _, model, params, (ids, mask, seg, pos) = tiny_setup
  config = tiny_config(**{'model.dtype': 'bfloat16'})
  bf16 = model_lib.make_pretrainer(config)
  p16 = model_lib.init_params(bf16, jax.random.key(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p16))
  out32 = model.apply({'params': params}, ids, mask, seg, method='discriminator_logits')
  out16 = bf16.apply({'params': params}, ids, mask, seg, method='discriminator_logits')
  assert out16.dtype == jnp.float32  # heads return float32 logits
  np.testing.assert_allclose(out16, out32, atol=0.05)
  logits16 = bf16.apply({'params': params}, ids, mask, seg, pos, method='generator_logits')
  assert logits16.dtype == jnp.float32 and logits16.shape == (2, 2, config.model.vocab_size)


def test_dropout_rate_scale_and_rng():
  """model.dropout (cheaper mask than nn.Dropout): drop rate, 1/(1-rate) scale, fresh mask per key."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Drop(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic):
      return model_lib.dropout(self, x, 0.1, deterministic)

  x = jnp.ones((3, 257, 129))  # odd sizes: the 16-bit draws are cut to x.size
  out = Drop().apply({}, x, False, rngs={'dropout': jax.random.key(0)})
  dropped = float(jnp.mean(out == 0))
  assert abs(dropped - 0.1) < 0.01
  np.testing.assert_allclose(out[out != 0], 1 / 0.9, rtol=1e-6)
  other = Drop().apply({}, x, False, rngs={'dropout': jax.random.key(1)})
  assert not np.array_equal(out == 0, other == 0)
  assert Drop().apply({}, x, True) is not None and np.array_equal(Drop().apply({}, x, True), x)


def test_threefry2x32_is_jax_threefry():
  """model.threefry2x32 (dropout's hash, plain ops) is bit-identical to jax's Threefry-2x32."""
  from jax.extend import random as extend_random  # pylint: disable=g-import-not-at-top
  key = jnp.array([123456789, 4000000000], jnp.uint32)
  x0 = jnp.arange(1000, dtype=jnp.uint32)
  x1 = x0 * jnp.uint32(2654435761) + jnp.uint32(7)
  y0, y1 = model_lib.threefry2x32(key, x0, x1)
  expected = extend_random.threefry_2x32(key, jnp.concatenate([x0, x1]))
  np.testing.assert_array_equal(jnp.concatenate([y0, y1]), expected)


def test_gelu_is_exact_erf_gelu():
  x = jnp.linspace(-10.0, 10.0, 20001)
  exact = np.asarray(x, np.float64) * 0.5 * (1 + np.vectorize(math.erf)(np.asarray(x, np.float64) / math.sqrt(2)))
  np.testing.assert_allclose(model_lib.gelu(x), exact, atol=2e-6)
  np.testing.assert_allclose(model_lib.gelu(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(model_lib.gelu))(x),
                             jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x),
                             atol=2e-6)


def test_layer_norm_and_gelu_gradients_equal_autodiff():
  x = jax.random.normal(jax.random.key(1), (6, 16)) * 3.0 + 1.0
  dy = jax.random.normal(jax.random.key(2), (6, 16))
  ours = model_lib.LayerNorm(epsilon=1e-12)
  flax_ln = nn.LayerNorm(epsilon=1e-12)
  params = {'params': {'scale': jax.random.normal(jax.random.key(3), (16,)),
                       'bias': jax.random.normal(jax.random.key(4), (16,))}}
  out, vjp = jax.vjp(lambda p, x: ours.apply(p, x), params, x)
  ref_out, ref_vjp = jax.vjp(lambda p, x: flax_ln.apply(p, x), params, x)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  for got, want in zip(jax.tree.leaves(vjp(dy)), jax.tree.leaves(ref_vjp(dy))):
    np.testing.assert_allclose(got, want, atol=1e-4)
  formula = lambda x: 0.5 * x * (1.0 + jax.lax.erf(x / jnp.sqrt(2.0)))
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(model_lib.gelu(x) * dy))(x),
                             jax.grad(lambda x: jnp.sum(formula(x) * dy))(x), atol=1e-5)


def test_tf1_truncated_normal_is_not_rescaled():
  """TF1's truncated_normal_initializer(0.02): redraws outside +-2 std and keeps stddev as the scale
  of the untruncated normal (real std 0.0176); jax's initializer would rescale to 0.02."""
  key = jax.random.key(3)
  init = model_lib.tf1_truncated_normal(0.02)
  values = init(key, (400, 500))
  np.testing.assert_array_equal(values, 0.02 * jax.random.truncated_normal(key, -2.0, 2.0,
                                                                           (400, 500)))
  assert float(jnp.max(jnp.abs(values))) <= 0.04
  assert abs(float(jnp.std(values)) - 0.02 * 0.87962566) < 2e-4  # std of N(0,1) cut at +-2


def test_initializers_follow_the_original():
  """truncated normal(0.02) for tables and transformer kernels; glorot uniform (tf.layers.dense's
  default) for embeddings_project and the discriminator's output layer; zeros/ones elsewhere."""
  config = tiny_config()
  flat = {'/'.join(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(
      model_lib.init_params(model_lib.make_pretrainer(config), jax.random.key(0)))[0]
          for k in [tuple(getattr(p, 'key', p) for p in k)]}
  glorot = [k for k in flat if 'embeddings_project/kernel' in k
            or k == 'discriminator_predictions/dense_prediction/kernel']
  assert len(glorot) == 3  # both models' projections (embedding 24 != hidden) and the head
  for name, value in flat.items():
    leaf = name.rsplit('/', 1)[-1]
    if name in glorot:
      limit = math.sqrt(6.0 / sum(value.shape))
      assert np.abs(value).max() <= limit and np.abs(value).max() > 0.5 * limit, name
    elif leaf in ('kernel', 'embedding'):
      assert np.abs(value).max() <= 0.04 and value.std() > 0.01, name
    elif leaf == 'scale':
      np.testing.assert_array_equal(value, 1.0)
    else:
      assert leaf in ('bias', 'output_bias'), name
      np.testing.assert_array_equal(value, 0.0)
  # model.initializer='normal': plain normal(0.02) everywhere (values beyond 2 std, head included).
  normal = model_lib.init_params(model_lib.make_pretrainer(
      tiny_config(**{'model.initializer': 'normal'})), jax.random.key(0))
  table = np.asarray(normal['embeddings']['word_embeddings']['embedding'])
  assert np.abs(table).max() > 0.04 and abs(table.std() - 0.02) < 1e-3
  head = np.asarray(normal['discriminator_predictions']['dense_prediction']['kernel'])
  assert np.abs(head).max() < 0.1


def _gdes_setup():
  from electra_jax import objective  # pylint: disable=g-import-not-at-top
  config = tiny_config(**{'model.embedding_sharing': 'gdes'})
  model = model_lib.make_pretrainer(config)
  params = model_lib.init_params(model, jax.random.key(0))
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 128, (4, 16)).astype(np.int32)
  ids[:, 0] = 2
  batch = {'input_ids': jnp.asarray(ids), 'input_mask': jnp.ones_like(ids),
           'segment_ids': jnp.zeros_like(ids)}
  losses = lambda p: objective.electra_loss(model_lib.networks(model), p, batch,
                                            jax.random.key(3), config.objective,
                                            objective.SpecialIds(0, 2, 3, 4), 3,
                                            deterministic=True)[1]
  return config, model, params, batch, losses


def test_gdes_routes_each_loss_to_its_own_tables():
  """gdes: the MLM loss gives E_delta (the discriminator's word/position tables) zero gradient,
  the discriminator loss the generator's tables zero gradient; 'shared' mixes both in one table."""
  config, _, params, _, losses = _gdes_setup()
  assert float(jnp.abs(params['embeddings']['word_embeddings']['embedding']).max()) == 0.0
  assert set(params['generator_embeddings']) == set(params['embeddings'])
  mlm = jax.grad(lambda p: losses(p)['mlm_loss'])(params)
  disc = jax.grad(lambda p: losses(p)['disc_loss'])(params)
  norm = lambda t: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t)))
  for table in ('word_embeddings', 'position_embeddings'):
    assert norm(mlm['embeddings'][table]) == 0.0 and norm(disc['embeddings'][table]) > 0.0
    assert norm(disc['generator_embeddings'][table]) == 0.0
    assert norm(mlm['generator_embeddings'][table]) > 0.0
  # The discriminator's token-type table and LayerNorm are its own (MLM gradient 0).
  assert norm(mlm['embeddings']) == 0.0 and norm(disc['generator_embeddings']) == 0.0
  shared = tiny_config()
  model = model_lib.make_pretrainer(shared)
  shared_params = model_lib.init_params(model, jax.random.key(0))
  from electra_jax import objective  # pylint: disable=g-import-not-at-top
  batch = _gdes_setup()[3]
  shared_losses = lambda p: objective.electra_loss(
      model_lib.networks(model), p, batch, jax.random.key(3), shared.objective,
      objective.SpecialIds(0, 2, 3, 4), 3, deterministic=True)[1]
  for loss in ('mlm_loss', 'disc_loss'):
    g = jax.grad(lambda p, loss=loss: shared_losses(p)[loss])(shared_params)
    assert norm(g['embeddings']['word_embeddings']) > 0.0


def test_gdes_export_is_a_plain_discriminator_with_the_summed_tables(tmp_path):
  from electra_jax import checkpoint  # pylint: disable=g-import-not-at-top
  config, model, params, batch, _ = _gdes_setup()
  # A trained E_delta is not zero: put random values in to see the sum.
  params = jax.tree.map(lambda x: x, params)
  for i, table in enumerate(('word_embeddings', 'position_embeddings')):
    shape = params['embeddings'][table]['embedding'].shape
    params['embeddings'][table]['embedding'] = 0.05 * jax.random.normal(jax.random.key(i), shape)
  checkpoint.export_pretrained(str(tmp_path), params, config, {})
  m, weights, _ = checkpoint.load_pretrained(str(tmp_path))
  disc = weights['discriminator']['embeddings']
  for table in ('word_embeddings', 'position_embeddings'):
    np.testing.assert_allclose(disc[table]['embedding'],
                               params['embeddings'][table]['embedding']
                               + params['generator_embeddings'][table]['embedding'], rtol=1e-6)
  plain = model_lib.ElectraPretrainer(m)
  args = (batch['input_ids'], batch['input_mask'], batch['segment_ids'])
  np.testing.assert_allclose(
      plain.apply({'params': weights['discriminator']}, *args, method='discriminator_logits'),
      model.apply({'params': params}, *args, method='discriminator_logits'), atol=1e-5)
  # The exported generator (own tables of embedding_size) reads back as a 'separate' model.
  assert m.generator_embedding_size == config.model.embedding_size
  separate = model_lib.ElectraPretrainer(model_lib.generator_embeddings_config(m))
  positions = np.array([[1, 2, 3]] * 4, np.int32)
  np.testing.assert_allclose(
      separate.apply({'params': weights['generator']}, *args, positions,
                     method='generator_logits'),
      model.apply({'params': params}, *args, positions, method='generator_logits'), atol=1e-5)
