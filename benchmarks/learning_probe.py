r"""What a pre-training run's discriminator learned, checkpoint by checkpoint.

  python benchmarks/learning_probe.py --workdir=PRETRAINING_WORKDIR [--batches=8]

For every checkpoint kept in WORKDIR/checkpoints (run with e.g. --config.checkpoint_every_steps=500
--config.keep_checkpoints=20 to see a curve), on the same held-out batches, masks and samples:
- gradient norms of the MLM loss and of disc_weight x the discriminator loss per layer group
  (embeddings, each discriminator/generator layer, heads): does the detection loss reach the
  lower layers, and how hard do the two losses pull on the shared embeddings?
- replaced-token detection by token frequency (the 100 most frequent tokens of the training data,
  the next 900, the rest): share replaced, AUC, recall and false-positive rate at 0.5;
- `token_only_auc`: the AUC of a detector that sees only the token itself (P(replaced | token
  id), counted on half of these batches' tokens and scored on the other half). A discriminator
  whose AUC does not beat it has learned which tokens the generator over-samples rather than
  whether a token fits its context.
Prints one JSON row per checkpoint and writes WORKDIR/probe.jsonl.
"""
import collections
import functools
import json
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_WORKDIR = flags.DEFINE_string('workdir', None, 'A pre-training workdir.')
_BATCHES = flags.DEFINE_integer('batches', 8, 'Held-out batches to measure on.')
_FREQUENCY_BATCHES = flags.DEFINE_integer('frequency_batches', 100,
                                          'Training batches to count token frequencies on.')
FREQUENCY_BUCKETS = ((0, 100, 'top-100'), (100, 1000, '100-1k'), (1000, None, '1k+'))


def auc(labels, scores) -> float:
  """Mann-Whitney AUC with ties counted half (nan when a class is missing)."""
  labels = np.asarray(labels, bool)
  scores = np.asarray(scores, np.float64)
  num_pos, num_neg = labels.sum(), (~labels).sum()
  if not num_pos or not num_neg:
    return float('nan')
  order = np.argsort(scores, kind='mergesort')
  _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
  ranks = np.empty(len(scores))
  ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
  return float((ranks[labels].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def token_only_auc(tokens, labels, vocab_size: int, smoothing: float = 5.0) -> float:
  """AUC of P(replaced | token id) alone, cross-fitted: the rate is counted on one half of the
  tokens and scored on the other (and the other way round), smoothed towards the overall rate, so
  that a token seen once cannot predict its own label."""
  half = np.arange(len(tokens)) % 2 == 0
  scores = np.empty(len(tokens))
  for fit, score in ((half, ~half), (~half, half)):
    replaced = np.bincount(tokens[fit], weights=labels[fit], minlength=vocab_size)
    total = np.bincount(tokens[fit], minlength=vocab_size)
    prior = labels[fit].mean()
    scores[score] = ((replaced + smoothing * prior) / (total + smoothing))[tokens[score]]
  return auc(labels, scores)


def group_norms(grads) -> dict:
  """Gradient norm per top-level module, and per layer inside the transformers."""
  norm = lambda t: float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(t))))
  out = {}
  for top, sub in grads.items():
    if isinstance(sub, dict) and any(k.startswith('layer_') for k in sub):
      out.update({f'{top}/{k}': norm(v) for k, v in sorted(sub.items())})
    else:
      out[top] = norm(sub)
  return {k: v for k, v in out.items() if v > 0}


def main(argv):
  del argv
  from electra_jax import build_data, checkpoint, defaults, input_pipeline, model as model_lib  # pylint: disable=g-import-not-at-top
  from electra_jax import objective, optim, train  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(_WORKDIR.value)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(defaults.upgrade(json.load(f)))  # an old one too
  meta = build_data.load_meta(config.data.data_dir or os.path.join(workdir, 'data'))
  special = meta.special_ids()
  o = config.objective
  max_predictions = objective.max_predictions_per_seq(o.mask_prob, config.max_seq_length,
                                                      o.max_predictions)
  model = model_lib.make_pretrainer(config)
  tx = optim.make_optimizer(config.optim, config.num_train_steps)
  abstract = jax.eval_shape(functools.partial(train.create_train_state, model, tx),
                            jax.random.key(0))

  counts = np.zeros(config.model.vocab_size, np.int64)
  batches = input_pipeline.train_batches(config, meta, 0)
  for _ in range(_FREQUENCY_BATCHES.value):
    batch = next(batches)
    np.add.at(counts, batch['input_ids'][batch['input_mask'] > 0], 1)
  rank = np.empty_like(counts)
  rank[np.argsort(-counts, kind='stable')] = np.arange(len(counts))
  held_out = list(input_pipeline.eval_batches(config, meta))[:_BATCHES.value]

  def aux_of(params, batch, rng):
    return objective.electra_loss(model_lib.networks(model), model_lib.apply_params(model, params),
                                  batch, rng, o, special, max_predictions, deterministic=True)[1]

  @jax.jit
  def measure(params, batch, rng):
    mlm = jax.grad(lambda p: o.gen_weight * aux_of(p, batch, rng)['mlm_loss'])(params)
    disc = (jax.grad(lambda p: o.disc_weight * aux_of(p, batch, rng)['disc_loss'])(params)
            if o.electra_objective else {})
    aux = aux_of(params, batch, rng)
    if not o.electra_objective:
      return mlm, disc, {}
    # The discriminator's input again (electra_loss draws the masks with the first of 4 keys).
    masked = objective.mask_tokens(jax.random.split(rng, 4)[0], batch['input_ids'],
                                   batch['input_mask'], special, o.mask_prob, max_predictions)
    seen, _ = objective.corrupt_inputs(batch['input_ids'], masked, aux['sampled_ids'])
    return mlm, disc, {'tokens': seen, 'labels': aux['disc_labels'], 'probs': aux['disc_probs']}

  manager = checkpoint.checkpoint_manager(workdir, config)
  rows = []
  for step in sorted(manager.all_steps()):
    params = manager.restore(step, args=ocp.args.StandardRestore(abstract)).params
    mlm_norms, disc_norms = collections.Counter(), collections.Counter()
    seen = []
    for i, batch in enumerate(held_out):
      batch = {k: jnp.asarray(v) for k, v in batch.items()}
      mlm, disc, detection = measure(params, batch, jax.random.key(1000 + i))
      mlm_norms.update({k: v / len(held_out) for k, v in group_norms(mlm).items()})
      disc_norms.update({k: v / len(held_out) for k, v in group_norms(disc).items()})
      if detection:
        real = np.asarray(batch['input_mask']) > 0
        seen.append([np.asarray(detection[k])[real] for k in ('tokens', 'labels', 'probs')])
    row = {'step': int(step), 'mlm_grad_norm': dict(mlm_norms), 'disc_grad_norm': dict(disc_norms)}
    if seen:
      tokens, labels, probs = (np.concatenate(x) for x in zip(*seen))
      row['auc'] = auc(labels, probs)
      row['token_only_auc'] = token_only_auc(tokens, labels, len(counts))
      row['by_frequency'] = {}
      for low, high, name in FREQUENCY_BUCKETS:
        inside = (rank[tokens] >= low) & ((rank[tokens] < high) if high else True)
        positive, predicted = labels[inside] > 0, probs[inside] > 0.5
        row['by_frequency'][name] = {
            'tokens': int(inside.sum()), 'replaced': float(positive.mean()),
            'auc': auc(positive, probs[inside]),
            'recall': float((predicted & positive).sum() / max(positive.sum(), 1)),
            'false_positive_rate': float((predicted & ~positive).sum() / max((~positive).sum(), 1))}
    rows.append(row)
    print(json.dumps(row), flush=True)
  manager.close()
  with open(os.path.join(workdir, 'probe.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)
