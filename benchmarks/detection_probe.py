r"""What does a pre-trained discriminator detect: which tokens were replaced, or where?

  python benchmarks/detection_probe.py --electra=/tmp/electra_learning/electra --step=3000 \
      --mlm=/tmp/electra_learning/mlm --mlm_step=3316 --temperatures=2,1 --batches=48

On held-out batches of the run's data, the run's own generator samples replacements at each
temperature and three detectors score every real token of the corrupted sequence:

  * the discriminator (its logit);
  * the best context-free detector: P(replaced | token id), counted on half of the tokens and
    scored on the other half (cross-fitted; learning_probe.token_only_auc), so it knows nothing
    but the token's identity;
  * with --mlm, a masked LM used as a detector: -log p(token | context), each position masked in
    turn (8 passes with every 8th position masked), on the same corrupted sequences.

For each it prints the AUC over all tokens and the within-token AUC: the AUC among occurrences
of the same token id, pooled over ids by their (replaced, original) pair counts. A detector that
reads only the token's identity scores 0.5 there, so the within-token AUC is what it gets from
context. benchmarks/README.md ("The core claim, measured", Diagnosis) has the measured numbers.
"""
import json
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from electra_jax import build_data, defaults, input_pipeline, model as model_lib, objective  # pylint: disable=g-import-not-at-top
from learning_probe import auc, token_only_auc  # pylint: disable=g-import-not-at-top

_ELECTRA = flags.DEFINE_string('electra', None, 'An ELECTRA pre-training workdir.', required=True)
_STEP = flags.DEFINE_integer('step', None, 'Its checkpoint step.', required=True)
_MLM = flags.DEFINE_string('mlm', '', 'Optional: a masked-LM pre-training workdir (MLM arm).')
_MLM_STEP = flags.DEFINE_integer('mlm_step', 0, 'Its checkpoint step.')
_TEMPERATURES = flags.DEFINE_list('temperatures', ['2', '1'], 'Sampling temperatures.')


def load(workdir: str, step: int):
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(defaults.upgrade(json.load(f)))  # an old one too
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  params = ocp.StandardCheckpointer().restore(path)['params']
  return config, model_lib.make_pretrainer(config), params


def within_token_auc(tokens, labels, scores) -> float:
  """AUC among occurrences of one token id, pooled over ids weighted by their pair counts."""
  order = np.argsort(tokens, kind='stable')
  bounds = np.flatnonzero(np.diff(tokens[order])) + 1
  num = den = 0.0
  for lab, score in zip(np.split(labels[order], bounds), np.split(scores[order], bounds)):
    pos = int(lab.sum())
    pairs = pos * (len(lab) - pos)
    if pairs:
      num += auc(lab, score) * pairs
      den += pairs
  return num / den


def main(argv):
  del argv
  config, model, params = load(_ELECTRA.value, _STEP.value)
  mlm = load(_MLM.value, _MLM_STEP.value) if _MLM.value else None
  meta = build_data.load_meta(config.data.data_dir)
  special = meta.special_ids()
  max_predictions = objective.max_predictions_per_seq(
      config.objective.mask_prob, config.max_seq_length, config.objective.max_predictions)
  batches = list(input_pipeline.eval_batches(config, meta))[:flags.FLAGS.batches]  # learning_probe's flag

  def corrupt_and_score(batch, rng, temperature):
    mask_rng, sample_rng = jax.random.split(rng)
    ids, input_mask, segment_ids = batch['input_ids'], batch['input_mask'], batch['segment_ids']
    masked = objective.mask_tokens(mask_rng, ids, input_mask, special, config.objective.mask_prob,
                                   max_predictions)
    logits = model.apply({'params': params}, masked.masked_ids, input_mask, segment_ids,
                         masked.masked_positions, method=model.generator_logits, deterministic=True)
    sampled = objective.sample_replacements(sample_rng, logits, temperature)
    corrupted, labels = objective.corrupt_inputs(ids, masked, sampled)
    disc = model.apply({'params': params}, corrupted, input_mask, segment_ids,
                       method=model.discriminator_logits, deterministic=True)
    surprise = jnp.zeros(ids.shape)
    if mlm is not None:
      _, mlm_model, mlm_params = mlm
      rows = jnp.arange(ids.shape[0])[:, None]
      for k in range(8):
        positions = jnp.broadcast_to(jnp.arange(k, ids.shape[1], 8)[None],
                                     (ids.shape[0], ids.shape[1] // 8))
        mlm_logits = mlm_model.apply(
            {'params': mlm_params}, corrupted.at[rows, positions].set(special.mask_id),
            input_mask, segment_ids, positions, method=mlm_model.generator_logits,
            deterministic=True)
        token = jnp.take_along_axis(corrupted, positions, axis=1)
        logp = jnp.take_along_axis(jax.nn.log_softmax(mlm_logits), token[..., None], -1)[..., 0]
        surprise = surprise.at[rows, positions].set(-logp)
    return corrupted, labels, disc, surprise

  step_fn = jax.jit(corrupt_and_score, static_argnums=2)
  for temperature in (float(t) for t in _TEMPERATURES.value):
    columns = [[], [], [], []]
    for i, batch in enumerate(batches):
      out = step_fn({k: jnp.asarray(v) for k, v in batch.items()}, jax.random.key(100 + i),
                    temperature)
      real = np.asarray(batch['input_mask']) > 0
      for column, value in zip(columns, out):
        column.append(np.asarray(value)[real])
    tokens, labels, disc, surprise = (np.concatenate(c) for c in columns)
    labels = labels.astype(np.int64)
    print(f'temperature {temperature:g}: {len(tokens)} real tokens of {len(batches)} held-out '
          f'batches, {labels.mean():.3f} replaced')
    print(f'  {"detector":36s} {"AUC":>6s} {"within-token AUC":>17s}')
    print(f'  {"discriminator":36s} {auc(labels, disc):6.3f} '
          f'{within_token_auc(tokens, labels, disc):17.3f}')
    print(f'  {"context-free (token id only)":36s} '
          f'{token_only_auc(tokens, labels, config.model.vocab_size):6.3f} {0.5:17.3f}')
    if mlm is not None:
      print(f'  {"masked LM, -log p(token | context)":36s} {auc(labels, surprise):6.3f} '
            f'{within_token_auc(tokens, labels, surprise):17.3f}')


if __name__ == '__main__':
  app.run(main)
