"""The ELECTRA objective: masking, generator sampling, losses and metrics (reference, steps 1-8).

One pre-training step reads top to bottom in `electra_loss`:
  mask_tokens -> generator MLM loss at masked positions -> sample_replacements (float32, no
  gradient) -> corrupt_inputs / labels -> discriminator loss over real tokens ->
  loss = gen_weight * mlm + disc_weight * disc.
"""
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax


class SpecialIds(NamedTuple):
  pad_id: int
  cls_id: int
  sep_id: int
  mask_id: int


class MaskedInputs(NamedTuple):
  masked_ids: jax.Array        # [B, T] input ids with 85% of the chosen positions set to [MASK]
  masked_positions: jax.Array  # [B, P] chosen positions (0 in unused slots)
  masked_lm_ids: jax.Array     # [B, P] original ids at those positions (0 in unused slots)
  masked_lm_weights: jax.Array  # [B, P] 1.0 for used slots


def max_predictions_per_seq(mask_prob: float, seq_len: int, override: int = 0) -> int:
  """Reference: int((mask_prob + 0.005) * seq_len), 19 at 0.15 and 128."""
  return override if override > 0 else int((mask_prob + 0.005) * seq_len)


def mask_tokens(rng, input_ids, input_mask, special: SpecialIds, mask_prob: float,
                max_predictions: int) -> MaskedInputs:
  """Chooses n = max(1, min(P, round(n_real * mask_prob))) positions per sequence among real tokens
  that are not [CLS]/[SEP]/[MASK]/padding; 85% of them become [MASK], 15% keep their token (no
  random-token replacement, unlike BERT).

  Positions are drawn uniformly without replacement (Gumbel top-k); the original samples with
  replacement, so rarely predicts a position twice and masks fewer than n tokens.
  """
  pos_rng, keep_rng = jax.random.split(rng)
  candidates = ((input_mask > 0) & (input_ids != special.pad_id) & (input_ids != special.cls_id)
                & (input_ids != special.sep_id) & (input_ids != special.mask_id))
  scores = jnp.where(candidates, jax.random.uniform(pos_rng, input_ids.shape), -1.0)
  top_scores, positions = jax.lax.top_k(scores, max_predictions)  # best-scored candidates first
  num_real = jnp.sum(input_mask, axis=-1).astype(jnp.float32)
  # jnp.round rounds half to even, like the original's tf.round.
  num_to_predict = jnp.clip(jnp.round(num_real * mask_prob).astype(jnp.int32), 1, max_predictions)
  slot = jnp.arange(max_predictions)[None, :]
  used = (slot < num_to_predict[:, None]) & (top_scores >= 0.0)  # never more than the candidates
  positions = jnp.where(used, positions, 0).astype(jnp.int32)
  masked_lm_ids = jnp.where(used, jnp.take_along_axis(input_ids, positions, axis=1), 0)
  to_mask_token = used & (jax.random.uniform(keep_rng, used.shape) < 0.85)
  batch_idx = jnp.arange(input_ids.shape[0])[:, None]
  is_masked = jnp.zeros(input_ids.shape, bool).at[batch_idx, positions].max(to_mask_token)
  masked_ids = jnp.where(is_masked, special.mask_id, input_ids)
  return MaskedInputs(masked_ids, positions, masked_lm_ids.astype(input_ids.dtype),
                      used.astype(jnp.float32))


def masked_lm_loss(logits, masked_lm_ids, weights, stock: bool = False, count=None):
  """Cross-entropy averaged over the used masked slots. Returns (loss, per-slot losses).

  `stock` (model.kernels 'stock'): optax's cross-entropy instead of the custom-VJP one below.
  `count`: the number of slots to average over; default the used slots here, sum(weights)."""
  cross_entropy = (optax.softmax_cross_entropy_with_integer_labels if stock
                   else softmax_cross_entropy)
  per_slot = cross_entropy(logits.astype(jnp.float32), masked_lm_ids)
  count = jnp.sum(weights) if count is None else count
  return jnp.sum(per_slot * weights) / (count + 1e-6), per_slot


@jax.custom_vjp
def softmax_cross_entropy(logits, labels):
  """-log softmax(logits)[labels] over the last axis: logsumexp(logits) - logits[labels].

  Same values and gradient as -take_along_axis(log_softmax(logits), labels), with a hand-written
  backward pass, softmax(logits) - one_hot(labels), in one elementwise pass over [B, P, V]: autodiff
  of the gather builds a zero [B, P, V] array and scatters into it, and keeps log_softmax in memory
  (a small gain for the whole step on CPU, measured in benchmarks/README.md).
  """
  return _softmax_cross_entropy_fwd(logits, labels)[0]


def _softmax_cross_entropy_fwd(logits, labels):
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  log_sum_exp = jnp.log(jnp.sum(jnp.exp(logits - row_max), axis=-1)) + row_max[..., 0]
  target = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  return log_sum_exp - target, (logits, labels, log_sum_exp)


def _softmax_cross_entropy_bwd(residuals, g):
  logits, labels, log_sum_exp = residuals
  one_hot = labels[..., None] == jnp.arange(logits.shape[-1])
  grad = g[..., None] * (jnp.exp(logits - log_sum_exp[..., None]) - one_hot)
  return grad, None


softmax_cross_entropy.defvjp(_softmax_cross_entropy_fwd, _softmax_cross_entropy_bwd)


def sample_replacements(rng, logits, temperature: float = 1.0, disallow_ids=None,
                        method: str = 'inverse_cdf'):
  """Samples ids [B, P] from softmax(logits / temperature), in float32, without gradient.

  `disallow_ids` [B, P] (the original ids, for `disallow_correct`) gets its logit lowered by 1000,
  as the original does. `method`:
    'gumbel'       the original's way: argmax(logits + Gumbel noise), one random draw, a hash and
                   two logs per vocabulary entry;
    'inverse_cdf'  the same distribution from ONE uniform per slot (`_inverse_cdf_sample`), the
                   default: far cheaper on CPU than a Gumbel draw per vocabulary entry (measured
                   in benchmarks/README.md).
  """
  logits = jax.lax.stop_gradient(logits).astype(jnp.float32) / temperature
  if disallow_ids is not None:
    vocab = jnp.arange(logits.shape[-1])
    logits = logits - 1000.0 * (vocab == disallow_ids[..., None])
  if method == 'gumbel':
    uniform = jax.random.uniform(rng, logits.shape, jnp.float32)
    gumbel = -jnp.log(-jnp.log(uniform + 1e-9) + 1e-9)
    return jnp.argmax(logits + gumbel, axis=-1).astype(jnp.int32)
  if method == 'inverse_cdf':
    return _inverse_cdf_sample(rng, logits)
  raise ValueError(f"objective.sampler must be 'inverse_cdf' or 'gumbel', got {method!r}")


def _inverse_cdf_sample(rng, logits, block: int = 128):
  """The first id whose cumulative probability exceeds u ~ U[0, 1), searched in two levels.

  p = exp(logits - max) (unnormalized); the vocabulary is cut into blocks of `block` ids: u x total
  picks a block by the running sum of block sums, then an id inside it by the running sum of its
  entries: two short running sums instead of one over 30522 entries, so less float32 rounding.
  An id with p = 0 is never returned (ties of `<=` skip it). Tested by chi-square against softmax.
  """
  vocab = logits.shape[-1]
  num_blocks = -(-vocab // block)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  padded = jnp.pad(logits, [(0, 0)] * (logits.ndim - 1) + [(0, num_blocks * block - vocab)],
                   constant_values=-jnp.inf)
  block_sums = jnp.sum(jnp.exp(padded - row_max).reshape(logits.shape[:-1] + (num_blocks, block)),
                       axis=-1)
  block_ends = jnp.cumsum(block_sums, axis=-1)
  target = jax.random.uniform(rng, logits.shape[:-1] + (1,), jnp.float32) * block_ends[..., -1:]
  # The chosen block is the first whose end exceeds the target; the min() guards rounding at the top.
  last_nonempty = jnp.max(jnp.where(block_sums > 0, jnp.arange(num_blocks), 0), axis=-1)
  chosen = jnp.minimum(jnp.sum(block_ends <= target, axis=-1), last_nonempty)
  block_start = jnp.take_along_axis(block_ends - block_sums, chosen[..., None], axis=-1)
  offset = jnp.maximum(target - block_start, 0.0)  # >= 0: leading p = 0 entries are skipped
  ids = chosen[..., None] * block + jnp.arange(block)
  probs = jnp.where(ids < vocab,
                    jnp.exp(jnp.take_along_axis(logits, jnp.minimum(ids, vocab - 1), axis=-1)
                            - row_max), 0.0)
  last_positive = jnp.max(jnp.where(probs > 0, jnp.arange(block), 0), axis=-1)
  inside = jnp.minimum(jnp.sum(jnp.cumsum(probs, axis=-1) <= offset, axis=-1), last_positive)
  return (chosen * block + inside).astype(jnp.int32)


def corrupt_inputs(input_ids, masked: MaskedInputs, sampled_ids):
  """Original ids with the samples scattered into the used masked slots.

  Returns (corrupted_ids, labels); label 1 = the token differs from the original ("replaced"),
  so a sample equal to the original token counts as original.
  """
  batch_idx = jnp.arange(input_ids.shape[0])[:, None]
  # Unused slots point past the end and are dropped, so they can't clash with a used slot.
  targets = jnp.where(masked.masked_lm_weights > 0, masked.masked_positions, input_ids.shape[1])
  corrupted = input_ids.at[batch_idx, targets].set(sampled_ids.astype(input_ids.dtype), mode='drop')
  return corrupted, (corrupted != input_ids).astype(jnp.int32)


def discriminator_loss(logits, labels, input_mask, count=None):
  """Sigmoid cross-entropy over every real token, averaged over the batch's real tokens (or over
  `count` tokens)."""
  weights = input_mask.astype(jnp.float32)
  labels = labels.astype(jnp.float32)
  logits = logits.astype(jnp.float32)
  # log(1 + e^x) - x*y, the stable form of sigmoid cross-entropy.
  per_token = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  count = jnp.sum(weights) if count is None else count
  return jnp.sum(per_token * weights) / (count + 1e-6), per_token


def binary_auc(labels, scores, weights):
  """ROC AUC of `scores` for binary `labels` over entries with weight > 0; ties count half.

  Exact (Mann-Whitney U) rather than the original's 200-threshold approximation. Returns 0.5 when a
  class is absent.
  """
  labels, scores, weights = (jnp.ravel(jnp.asarray(a)) for a in (labels, scores, weights))
  scores = scores.astype(jnp.float32)
  is_pos = (weights > 0) & (labels > 0)
  is_neg = (weights > 0) & (labels <= 0)
  neg_sorted = jnp.sort(jnp.where(is_neg, scores, jnp.inf))
  below = jnp.searchsorted(neg_sorted, scores, side='left')
  at_or_below = jnp.searchsorted(neg_sorted, scores, side='right')
  wins = jnp.sum(jnp.where(is_pos, below + 0.5 * (at_or_below - below), 0.0))
  n_pos, n_neg = jnp.sum(is_pos), jnp.sum(is_neg)
  return jnp.where((n_pos > 0) & (n_neg > 0), wins / jnp.maximum(n_pos * n_neg, 1), 0.5)


class LossCounts(NamedTuple):
  """What the two losses are averaged over."""
  masked_slots: jax.Array  # used masked slots (the MLM loss)
  real_tokens: jax.Array  # real tokens (the discriminator loss)


def loss_counts(batch, special: SpecialIds, mask_prob: float, max_predictions: int) -> LossCounts:
  """The counts of `batch`, known before any model call: the number of slots `mask_tokens` uses in
  a sequence depends on its tokens only, not on the random draw (so any key gives it)."""
  masked = mask_tokens(jax.random.key(0), batch['input_ids'], batch['input_mask'], special,
                       mask_prob, max_predictions)
  return LossCounts(jnp.sum(masked.masked_lm_weights),
                    jnp.sum(batch['input_mask'].astype(jnp.float32)))


def electra_loss(networks, params, batch, rng, objective_config, special: SpecialIds,
                 max_predictions: int, deterministic: bool = False,
                 counts: Optional[LossCounts] = None):
  """The pre-training loss of one batch and everything the metrics need.

  `networks`: the generator and discriminator as functions of `params` (`model.networks` of an
  ElectraPretrainer). `counts`: what the two losses are averaged over, by default this batch's own
  (`loss_counts(batch)`); a microbatch of gradient accumulation gets the whole batch's, so that the
  microbatches' losses add up to the whole batch's. Returns (loss, aux) with aux a dict of
  per-batch arrays (see `pretraining_metrics`).
  """
  o = objective_config
  mlm_count, disc_count = (None, None) if counts is None else counts
  mask_rng, gen_rng, sample_rng, disc_rng = jax.random.split(rng, 4)
  ids, input_mask, segment_ids = batch['input_ids'], batch['input_mask'], batch['segment_ids']

  # 1. Masking (dynamic, on device).
  masked = mask_tokens(mask_rng, ids, input_mask, special, o.mask_prob, max_predictions)

  # 2. Generator: masked-LM logits at the masked positions only.
  if o.uniform_generator:
    mlm_logits = jnp.zeros(masked.masked_lm_ids.shape + (networks.vocab_size,), jnp.float32)
  else:
    mlm_logits = networks.generator(params, masked.masked_ids, input_mask, segment_ids,
                                    masked.masked_positions, gen_rng, deterministic=deterministic)
  mlm_loss, mlm_per_slot = masked_lm_loss(mlm_logits, masked.masked_lm_ids,
                                          masked.masked_lm_weights, networks.stock_kernels,
                                          mlm_count)
  # Correct = the target has the largest logit: argmax == target without an argmax over [B, P, V],
  # whose (value, index) reduction XLA's CPU backend runs far slower than a max (measured in
  # benchmarks/README.md). Exact ties (a tie counts as correct) only happen for constant logits:
  # the uniform generator predicts nothing, so it gets accuracy 0.
  target_logit = jnp.take_along_axis(mlm_logits, masked.masked_lm_ids[..., None], axis=-1)[..., 0]
  mlm_correct = (target_logit >= jnp.max(mlm_logits, axis=-1)) & (not o.uniform_generator)
  aux = dict(mlm_loss=mlm_loss, mlm_per_slot=mlm_per_slot, mlm_weights=masked.masked_lm_weights,
             mlm_targets=masked.masked_lm_ids, mlm_correct=mlm_correct)
  loss = o.gen_weight * mlm_loss
  if not o.electra_objective:
    return loss, aux

  # 3-4. Sample replacements and build the discriminator's input.
  sampled = sample_replacements(sample_rng, mlm_logits, o.temperature,
                                masked.masked_lm_ids if o.disallow_correct else None,
                                method=o.sampler)
  corrupted, labels = corrupt_inputs(ids, masked, sampled)

  # 5. Discriminator over every real token.
  disc_logits = networks.discriminator(params, corrupted, input_mask, segment_ids, disc_rng,
                                       deterministic=deterministic)
  disc_loss, disc_per_token = discriminator_loss(disc_logits, labels, input_mask,
                                                 disc_count)

  # 6. Gradient reaches the generator only through mlm_loss: `sampled` is stop_gradient'ed.
  loss = loss + o.disc_weight * disc_loss
  aux.update(disc_loss=disc_loss, disc_per_token=disc_per_token, disc_labels=labels,
             disc_probs=jax.nn.sigmoid(disc_logits), disc_weights=input_mask.astype(jnp.float32),
             sampled_ids=sampled)
  return loss, aux


def auc_inputs(aux) -> dict:
  """What the discriminator's AUC is computed from (per token; empty for the MLM-only objective).
  The AUC is not a sum over batches, so steps hand these on instead of a metric."""
  return {k: aux[k] for k in ('disc_labels', 'disc_probs', 'disc_weights') if k in aux}


def pretraining_metrics(aux):
  """Weighted sums for the reference's metrics (8): divide `*_sum` by the matching `*_count`.

  Sums (not means) so that eval can add them over batches before dividing.
  """
  w = aux['mlm_weights']
  m = dict(mlm_count=jnp.sum(w),
           mlm_loss_sum=jnp.sum(aux['mlm_per_slot'] * w),
           mlm_accuracy_sum=jnp.sum(aux['mlm_correct'] * w))
  if 'disc_loss' in aux:
    dw = aux['disc_weights']
    labels = aux['disc_labels']
    preds = (aux['disc_probs'] > 0.5).astype(jnp.int32)
    m.update(
        sampled_accuracy_sum=jnp.sum((aux['sampled_ids'] == aux['mlm_targets']) * w),
        disc_count=jnp.sum(dw),
        disc_loss_sum=jnp.sum(aux['disc_per_token'] * dw),
        disc_accuracy_sum=jnp.sum((preds == labels) * dw),
        disc_true_positives=jnp.sum(preds * labels * dw),
        disc_predicted_positives=jnp.sum(preds * dw),
        disc_positives=jnp.sum(labels * dw))
  return m


def summarize_metrics(sums):
  """Turns the (summed) output of `pretraining_metrics` into the reported means (jnp or numpy)."""
  div = lambda a, b: a / jnp.maximum(b, 1e-9)
  out = dict(mlm_loss=div(sums['mlm_loss_sum'], sums['mlm_count']),
             mlm_accuracy=div(sums['mlm_accuracy_sum'], sums['mlm_count']))
  if 'disc_count' in sums:
    out.update(
        sampled_accuracy=div(sums['sampled_accuracy_sum'], sums['mlm_count']),
        disc_loss=div(sums['disc_loss_sum'], sums['disc_count']),
        disc_accuracy=div(sums['disc_accuracy_sum'], sums['disc_count']),
        disc_precision=div(sums['disc_true_positives'], sums['disc_predicted_positives']),
        disc_recall=div(sums['disc_true_positives'], sums['disc_positives']),
        disc_replaced_fraction=div(sums['disc_positives'], sums['disc_count']))
  return out
