"""The ELECTRA objective on tiny inputs: exact values and statistics (reference, steps 1-8)."""
import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conftest import fixed_uniform, tiny_config
from electra_jax import model as model_lib
from electra_jax import objective

PAD, CLS, SEP, MASK = 0, 2, 3, 4
SPECIAL = objective.SpecialIds(pad_id=PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK)


def test_max_predictions_matches_reference():
  assert objective.max_predictions_per_seq(0.15, 128) == 19
  assert objective.max_predictions_per_seq(0.25, 512) == 130
  assert objective.max_predictions_per_seq(0.15, 128, override=7) == 7


def _random_batch(rng, batch, seq_len, vocab=100):
  """[CLS] words [SEP] words [SEP] pad... with random real lengths."""
  ids = np.zeros((batch, seq_len), np.int32)
  lengths = rng.integers(4, seq_len + 1, size=batch)
  for b, n in enumerate(lengths):
    ids[b, :n] = rng.integers(10, vocab, size=n)
    ids[b, 0] = CLS
    ids[b, n - 1] = SEP
    ids[b, n // 2] = SEP
  return jnp.asarray(ids), jnp.asarray((ids != PAD).astype(np.int32))


def test_mask_tokens_exact_counts_and_positions():
  ids = jnp.array([[CLS, 11, 12, 13, 14, SEP, PAD, PAD],
                   [CLS, 21, SEP, PAD, PAD, PAD, PAD, PAD],
                   [CLS, SEP, PAD, PAD, PAD, PAD, PAD, PAD]], jnp.int32)
  mask = (ids != PAD).astype(jnp.int32)
  out = objective.mask_tokens(jax.random.key(0), ids, mask, SPECIAL, mask_prob=0.5,
                              max_predictions=4)
  w = np.asarray(out.masked_lm_weights)
  # Row 0: round(6 * 0.5) = 3. Row 1: round(1.5) = 2 but only one candidate. Row 2: none.
  np.testing.assert_array_equal(w.sum(1), [3, 1, 0])
  pos = np.asarray(out.masked_positions)
  for b in range(3):
    used = pos[b][w[b] > 0]
    assert len(set(used)) == len(used)  # without replacement
    assert all(int(ids[b, p]) not in (PAD, CLS, SEP, MASK) for p in used)
    np.testing.assert_array_equal(np.asarray(out.masked_lm_ids)[b][w[b] > 0], ids[b, used])
    assert (pos[b][w[b] == 0] == 0).all() and (np.asarray(out.masked_lm_ids)[b][w[b] == 0] == 0).all()
  # Unchosen positions are untouched; chosen ones are [MASK] or kept.
  masked = np.asarray(out.masked_ids)
  chosen = np.zeros(ids.shape, bool)
  for b in range(3):
    chosen[b, pos[b][w[b] > 0]] = True
  np.testing.assert_array_equal(masked[~chosen], np.asarray(ids)[~chosen])
  assert np.isin(masked[chosen], [MASK] + list(np.asarray(ids)[chosen])).all()


def test_mask_tokens_at_least_one_and_cap():
  ids = jnp.array([[CLS, 11, 12, SEP] + [PAD] * 4, [CLS] + list(range(11, 17)) + [SEP]], jnp.int32)
  mask = (ids != PAD).astype(jnp.int32)
  out = objective.mask_tokens(jax.random.key(1), ids, mask, SPECIAL, 0.15, max_predictions=1)
  # Row 0: round(4 * 0.15) = 1 (max(1, 0.6->1)); row 1: round(1.2) = 1, capped at 1 anyway.
  np.testing.assert_array_equal(np.asarray(out.masked_lm_weights).sum(1), [1, 1])
  out = objective.mask_tokens(jax.random.key(1), ids[:1, :3], mask[:1, :3], SPECIAL, 0.15, 3)
  # 3 real tokens * 0.15 = 0.45 rounds to 0, but at least one is predicted.
  assert float(out.masked_lm_weights.sum()) == 1


def test_mask_tokens_statistics_85_15_and_counts():
  rng = np.random.default_rng(0)
  ids, mask = _random_batch(rng, 512, 64)
  out = jax.jit(objective.mask_tokens, static_argnums=(3, 4, 5))(
      jax.random.key(3), ids, mask, SPECIAL, 0.15, objective.max_predictions_per_seq(0.15, 64))
  w = np.asarray(out.masked_lm_weights) > 0
  expected = np.clip(np.round(np.asarray(mask).sum(1) * 0.15), 1, 9)
  np.testing.assert_array_equal(w.sum(1), expected)
  pos = np.asarray(out.masked_positions)
  at_pos = np.take_along_axis(np.asarray(out.masked_ids), pos, 1)[w]
  frac_mask = np.mean(at_pos == MASK)
  n = w.sum()
  assert abs(frac_mask - 0.85) < 4 * math.sqrt(0.85 * 0.15 / n), (frac_mask, n)
  # The 15% keep their own token: no random replacement.
  np.testing.assert_array_equal(at_pos[at_pos != MASK], np.asarray(out.masked_lm_ids)[w][at_pos != MASK])


def test_masked_lm_loss_exact():
  logits = jnp.array([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
  ids = jnp.array([[0, 2]])
  loss, per = objective.masked_lm_loss(logits, ids, jnp.array([[1.0, 0.0]]))
  expected0 = -(2.0 - math.log(math.exp(2) + 2))
  np.testing.assert_allclose(per[0, 0], expected0, rtol=1e-6)
  np.testing.assert_allclose(per[0, 1], -(0.0 - math.log(math.e + 2)), rtol=1e-6)
  np.testing.assert_allclose(loss, expected0 / (1 + 1e-6), rtol=1e-6)


@pytest.mark.parametrize('method', ['inverse_cdf', 'gumbel'])
def test_sample_replacements_distribution_and_disallow(method):
  logits = jnp.log(jnp.array([0.1, 0.2, 0.7]))[None, None, :].repeat(20000, axis=1)
  sample = lambda *a, **k: np.asarray(objective.sample_replacements(*a, method=method, **k))
  s = sample(jax.random.key(0), logits)
  np.testing.assert_allclose(np.bincount(s[0], minlength=3) / s.size, [0.1, 0.2, 0.7], atol=0.015)
  # Temperature 0.5 squares and renormalizes the probabilities.
  s = sample(jax.random.key(1), logits, temperature=0.5)
  p = np.array([0.01, 0.04, 0.49]) / 0.54
  np.testing.assert_allclose(np.bincount(s[0], minlength=3) / s.size, p, atol=0.015)
  # disallow_correct never samples the original token, even when it is the likely one.
  s = sample(jax.random.key(2), logits, disallow_ids=jnp.full((1, 20000), 2))
  assert not (s == 2).any()
  np.testing.assert_allclose(np.mean(s == 1), 2 / 3, atol=0.015)


@pytest.mark.parametrize('vocab', [5, 128, 300, 1000])
def test_inverse_cdf_sampler_matches_softmax(vocab):
  """Chi-square goodness of fit against softmax(logits) over vocabularies that are smaller than,
  equal to and not a multiple of the 128-id block; zero-probability ids are never drawn."""
  n = 100_000
  logits = 2.0 * jax.random.normal(jax.random.key(vocab), (vocab,))
  logits = logits.at[::7].set(-jnp.inf)  # p = 0, also at id 0 and inside blocks
  p = np.asarray(jax.nn.softmax(logits), np.float64)
  s = np.asarray(objective.sample_replacements(jax.random.key(1), jnp.tile(logits, (1, n, 1))))
  counts = np.bincount(s.ravel(), minlength=vocab)
  assert counts[p == 0].sum() == 0
  expected = n * p[p > 0]
  chi2 = float(np.sum((counts[p > 0] - expected) ** 2 / expected))
  dof = int((p > 0).sum()) - 1
  # Mean dof, sd sqrt(2 dof): 5 sd above the mean fails a wrong sampler, never a right one here.
  assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


def test_inverse_cdf_sampler_edges():
  # A single possible id (all others -inf), a peaked row, and the first/last id of the vocabulary.
  vocab = 300
  one_hot = lambda i: jnp.full((vocab,), -jnp.inf).at[i].set(0.0)
  logits = jnp.stack([one_hot(0), one_hot(vocab - 1), one_hot(128), one_hot(255)])[None]
  for seed in range(5):
    s = objective.sample_replacements(jax.random.key(seed), jnp.repeat(logits, 50, axis=1))
    np.testing.assert_array_equal(np.asarray(s).reshape(4, 50),
                                  np.repeat([[0], [vocab - 1], [128], [255]], 50, axis=1))
  # Uniforms at the extremes of [0, 1) map to the first and the last id with p > 0.
  logits = jnp.zeros((1, 1, vocab)).at[..., 0].set(-jnp.inf).at[..., -1].set(-jnp.inf)
  for u, expected in ((0.0, 1), (np.nextafter(np.float32(1), np.float32(0)), vocab - 2)):
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(jax.random, 'uniform', lambda rng, shape, dtype=jnp.float32: jnp.full(shape, u))
      assert int(objective.sample_replacements(jax.random.key(0), logits)[0, 0]) == expected


def test_sampler_option_is_checked():
  with pytest.raises(ValueError, match='inverse_cdf'):
    objective.sample_replacements(jax.random.key(0), jnp.zeros((1, 1, 3)), method='topk')


def test_softmax_cross_entropy_value_and_gradient():
  logits = 4.0 * jax.random.normal(jax.random.key(0), (3, 5, 50))
  labels = jax.random.randint(jax.random.key(1), (3, 5), 0, 50)
  weights = jax.random.uniform(jax.random.key(2), (3, 5))
  reference = lambda x: jnp.sum(
      -jnp.take_along_axis(jax.nn.log_softmax(x), labels[..., None], -1)[..., 0] * weights)
  ours = lambda x: jnp.sum(objective.softmax_cross_entropy(x, labels) * weights)
  np.testing.assert_allclose(ours(logits), reference(logits), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits), atol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(ours))(logits), jax.grad(reference)(logits),
                             atol=1e-6)
  # Large logits don't overflow.
  big = jnp.array([[1000.0, 0.0, -1000.0]])
  np.testing.assert_allclose(objective.softmax_cross_entropy(big, jnp.array([1])), [1000.0])


def test_corrupt_inputs_and_labels_exact():
  ids = jnp.array([[CLS, 11, 12, 13, SEP, PAD]])
  masked = objective.MaskedInputs(
      masked_ids=jnp.array([[CLS, MASK, 12, MASK, SEP, PAD]]),
      masked_positions=jnp.array([[1, 3, 2, 0]]),
      masked_lm_ids=jnp.array([[11, 13, 12, 0]]),
      masked_lm_weights=jnp.array([[1.0, 1.0, 1.0, 0.0]]))
  # Slot 1 samples the original token back: it counts as "original" (label 0).
  corrupted, labels = objective.corrupt_inputs(ids, masked, jnp.array([[50, 13, 60, 99]]))
  np.testing.assert_array_equal(corrupted, [[CLS, 50, 60, 13, SEP, PAD]])
  np.testing.assert_array_equal(labels, [[0, 1, 1, 0, 0, 0]])


def test_discriminator_loss_exact_over_real_tokens():
  logits = jnp.array([[1.5, -0.5, 2.0, 9.0]])
  labels = jnp.array([[1, 0, 0, 1]])
  mask = jnp.array([[1, 1, 1, 0]])
  loss, _ = objective.discriminator_loss(logits, labels, mask)
  sig = lambda x: 1 / (1 + math.exp(-x))
  terms = [-math.log(sig(1.5)), -math.log(1 - sig(-0.5)), -math.log(1 - sig(2.0))]
  np.testing.assert_allclose(loss, sum(terms) / (3 + 1e-6), rtol=1e-6)


def test_binary_auc_matches_sklearn_with_ties_and_weights():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 500)
  scores = np.round(rng.random(500) + 0.3 * labels, 1)  # many ties
  weights = (rng.random(500) > 0.2).astype(np.float32)
  keep = weights > 0
  expected = roc_auc_score(labels[keep], scores[keep])
  np.testing.assert_allclose(objective.binary_auc(labels, scores, weights), expected, rtol=1e-6)
  assert float(objective.binary_auc(np.ones(4), np.arange(4.0), np.ones(4))) == 0.5


@pytest.fixture(scope='module')
def tiny_model():
  config = tiny_config()
  model = model_lib.make_pretrainer(config)
  params = model_lib.init_params(model, jax.random.key(0))
  ids, mask = _random_batch(np.random.default_rng(1), 4, 16, vocab=config.model.vocab_size)
  batch = {'input_ids': ids, 'input_mask': mask, 'segment_ids': jnp.zeros_like(ids)}
  return config, model, params, batch


def _loss(config, model, params, batch, counts=None, **objective_overrides):
  o = config.objective.copy_and_resolve_references()
  for k, v in objective_overrides.items():
    o[k] = v
  return objective.electra_loss(model_lib.networks(model), params, batch, jax.random.key(5), o,
                                SPECIAL, 3, deterministic=True, counts=counts)


def test_total_loss_is_gen_plus_50_disc(tiny_model):
  config, model, params, batch = tiny_model
  loss, aux = _loss(config, model, params, batch)
  np.testing.assert_allclose(loss, aux['mlm_loss'] + 50.0 * aux['disc_loss'], rtol=1e-6)
  # Labels are exactly "sampled id differs from the original".
  assert set(np.unique(aux['disc_labels'])) <= {0, 1}
  w = np.asarray(aux['mlm_weights']) > 0
  n_replaced = np.sum((np.asarray(aux['sampled_ids']) != np.asarray(aux['mlm_targets'])) & w)
  assert n_replaced == np.asarray(aux['disc_labels']).sum()


def test_mlm_correct_is_argmax_equals_target(tiny_model):
  config, model, params, batch = tiny_model
  _, aux = _loss(config, model, params, batch)
  masked = objective.mask_tokens(jax.random.split(jax.random.key(5), 4)[0], batch['input_ids'],
                                 batch['input_mask'], SPECIAL, config.objective.mask_prob, 3)
  logits = model.apply({'params': params}, masked.masked_ids, batch['input_mask'],
                       batch['segment_ids'], masked.masked_positions, method='generator_logits')
  np.testing.assert_array_equal(aux['mlm_correct'],
                                np.argmax(np.asarray(logits), -1) == np.asarray(masked.masked_lm_ids))
  # And the accuracy metric counts exactly those, over the used slots.
  sums = objective.pretraining_metrics(aux)
  w = np.asarray(aux['mlm_weights'])
  np.testing.assert_allclose(sums['mlm_accuracy_sum'], np.sum(np.asarray(aux['mlm_correct']) * w))


def test_generator_gets_gradient_only_from_mlm(tiny_model):
  config, model, params, batch = tiny_model
  grads = jax.grad(lambda p: _loss(config, model, p, batch, gen_weight=0.0)[0])(params)
  for name in ('generator', 'generator_predictions'):
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads[name])), name
  assert float(jnp.abs(grads['discriminator']['layer_0']['query']['kernel']).max()) > 0
  grads = jax.grad(lambda p: _loss(config, model, p, batch)[0])(params)
  assert float(jnp.abs(grads['generator']['layer_0']['query']['kernel']).max()) > 0


def test_uniform_generator_and_plain_mlm(tiny_model):
  config, model, params, batch = tiny_model
  _, aux = _loss(config, model, params, batch, uniform_generator=True)
  np.testing.assert_allclose(aux['mlm_loss'], math.log(config.model.vocab_size), rtol=1e-5)
  assert not np.asarray(aux['mlm_correct']).any()  # constant logits predict nothing
  loss, aux = _loss(config, model, params, batch, electra_objective=False)
  assert 'disc_loss' not in aux
  np.testing.assert_allclose(loss, aux['mlm_loss'])


def test_loss_counts_are_the_default_denominators(tiny_model):
  """A batch's own counts, passed explicitly, change nothing: the same loss and aux, bit for bit.
  They don't depend on the masking's random draw."""
  config, model, params, batch = tiny_model
  counts = objective.loss_counts(batch, SPECIAL, config.objective.mask_prob, 3)
  for seed in range(3):
    masked = objective.mask_tokens(jax.random.key(seed), batch['input_ids'], batch['input_mask'],
                                   SPECIAL, config.objective.mask_prob, 3)
    assert float(counts.masked_slots) == float(jnp.sum(masked.masked_lm_weights))
  assert float(counts.real_tokens) == float(jnp.sum(batch['input_mask']))
  for overrides in ({}, {'electra_objective': False}):
    default, default_aux = _loss(config, model, params, batch, **overrides)
    explicit, explicit_aux = _loss(config, model, params, batch, counts, **overrides)
    np.testing.assert_array_equal(explicit, default)
    assert explicit_aux.keys() == default_aux.keys()
    for k in default_aux:
      np.testing.assert_array_equal(explicit_aux[k], default_aux[k], err_msg=k)


def test_microbatch_losses_with_the_whole_batch_counts_add_up(tiny_model):
  """Gradient accumulation's loss: each microbatch divided by the whole batch's counts. With draws
  that repeat on every row (a microbatch then masks and samples its rows as the whole batch does),
  the microbatches' losses and gradients add up to the whole batch's."""
  config, model, params, batch = tiny_model
  counts = objective.loss_counts(batch, SPECIAL, config.objective.mask_prob, 3)
  # jit: eager, the three value-and-grads took ~50 s on 2 CPU cores; compiled, a few seconds each.
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda p, rows, c: _loss(config, model, p, rows, c)[0]))
  with mock.patch.object(jax.random, 'uniform', fixed_uniform):
    whole, whole_grads = value_and_grad(params, batch, None)
    parts = [value_and_grad(params, {k: v[rows] for k, v in batch.items()}, counts)
             for rows in (slice(0, 1), slice(1, 4))]
  np.testing.assert_allclose(parts[0][0] + parts[1][0], whole, rtol=1e-6)
  jax.tree.map(lambda a, b, w: np.testing.assert_allclose(a + b, w, rtol=1e-4, atol=1e-7),
               parts[0][1], parts[1][1], whole_grads)
