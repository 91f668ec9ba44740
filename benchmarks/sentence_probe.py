r"""Without fine-tuning: do pre-trained models tell a sentence as written from a corrupted one?

  python benchmarks/sentence_probe.py --learning_workdir=/tmp/electra_learning \
      --runs=electra:3256,mlm:3565

On the dev sentences of learning.py's single-sentence tasks (WORKDIR/text, benchmarks/tasks.py),
each pre-training run (WORKDIR/NAME, checkpoint STEP) scores every sentence three ways:

  * its masked LM (an ELECTRA run's generator, or the masked-LM arm): the pseudo-log-likelihood,
    -log p(token | context) summed over the tokens, each token masked in turn (8 passes, every 8th
    position masked);
  * an ELECTRA run's discriminator: its largest logit over the tokens ("most likely replaced"),
    and its summed replaced probabilities (for splice, their mean per token).

order: each dev sentence as written against itself with two adjacent words swapped
(tasks.swap_adjacent_words, seed 0): how often the swapped one scores as less likely (higher
surprise, higher replaced probability) than its original. Both have the same tokens, so nothing
here can come from which tokens a sentence has; 0.5 is no knowledge of word order.
splice: the AUC with which each score (per token, for the masked LM) tells the spliced dev
sentences from those as written; 0.5 is chance.
"""
import json
import os
import random
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
from learning_probe import auc  # pylint: disable=g-import-not-at-top,wrong-import-position
import tasks  # pylint: disable=g-import-not-at-top,wrong-import-position
from electra_jax import build_data, defaults, model as model_lib, tokenization  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('learning_workdir', None, 'A learning.py workdir.', required=True)
_RUNS = flags.DEFINE_list('runs', ['electra:3256', 'mlm:3565'], 'NAME:STEP pre-training runs.')
_BATCH = 100


def load(workdir: str, step: int):
  """A pre-training run's config, pre-trainer and parameters at `step` (as detection_probe's;
  copied, since importing that script would bring its required flags)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(defaults.upgrade(json.load(f)))
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  params = ocp.StandardCheckpointer().restore(path)['params']
  return config, model_lib.make_pretrainer(config), params


def encode(tokenizer, texts, length):
  """[CLS] text [SEP] ids, padded; the input mask; and the mask of the text's own tokens."""
  ids = np.full((len(texts), length), tokenizer.pad_id, np.int32)
  for i, text in enumerate(texts):
    row = [tokenizer.cls_id] + tokenizer.encode(text)[:length - 2] + [tokenizer.sep_id]
    ids[i, :len(row)] = row
  mask = (ids != tokenizer.pad_id).astype(np.int32)
  inner = mask.copy()
  inner[:, 0] = 0
  inner[np.arange(len(texts)), mask.sum(1) - 1] = 0
  return ids, mask, inner


def scores_fn(config, model, params, mask_id, length):
  electra = config.objective.electra_objective

  def scores(ids, mask):
    segments = jnp.zeros_like(ids)
    rows = jnp.arange(ids.shape[0])[:, None]
    surprise = jnp.zeros(ids.shape)
    for k in range(8):
      positions = jnp.broadcast_to(jnp.arange(k, length, 8)[None], (ids.shape[0], length // 8))
      logits = model.apply({'params': params}, ids.at[rows, positions].set(mask_id), mask,
                           segments, positions, method=model.generator_logits, deterministic=True)
      token = jnp.take_along_axis(ids, positions, axis=1)
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits), token[..., None], -1)[..., 0]
      surprise = surprise.at[rows, positions].set(-logp)
    disc = (model.apply({'params': params}, ids, mask, segments,
                        method=model.discriminator_logits, deterministic=True)
            if electra else jnp.zeros(ids.shape))
    return surprise, disc

  return jax.jit(scores)


def score_texts(fn, tokenizer, texts, length):
  """Per text: summed and per-token surprise, the discriminator's largest logit and summed
  probability, over the text's own tokens (not [CLS] and [SEP])."""
  ids, mask, inner = encode(tokenizer, texts, length)
  surprise, disc = (np.concatenate(parts) for parts in zip(
      *[fn(ids[i:i + _BATCH], mask[i:i + _BATCH]) for i in range(0, len(ids), _BATCH)]))
  num_tokens = inner.sum(1)
  pll = (surprise * inner).sum(1)
  disc_sum = (np.asarray(jax.nn.sigmoid(disc)) * inner).sum(1)
  return {'pll': pll, 'pll_per_token': pll / num_tokens,
          'disc_max': np.where(inner > 0, disc, -np.inf).max(1),
          'disc_sum': disc_sum, 'disc_mean': disc_sum / num_tokens}


def main(argv):
  del argv
  text_dir = os.path.join(_WORKDIR.value, 'text')
  with open(os.path.join(text_dir, 'order_dev.jsonl')) as f:
    originals = [r['sentence'] for r in map(json.loads, f) if r['label'] == '1']
  rng = random.Random(0)
  swapped = [tasks.swap_adjacent_words(s, rng) for s in originals]
  with open(os.path.join(text_dir, 'splice_dev.jsonl')) as f:
    splice_rows = [json.loads(line) for line in f]
  spliced = np.array([r['label'] == '0' for r in splice_rows])
  print(f'order: {len(originals)} dev sentences as written against two adjacent words swapped, '
        'how often the swapped one scores as less likely; splice: AUC of spliced against as '
        f'written over {len(splice_rows)} dev sentences', flush=True)
  for run in _RUNS.value:
    name, step = run.split(':')
    config, model, params = load(os.path.join(_WORKDIR.value, name), int(step))
    tokenizer = tokenization.load_tokenizer(build_data.load_meta(config.data.data_dir).vocab_path)
    length = config.max_seq_length
    fn = scores_fn(config, model, params, tokenizer.mask_id, length)
    original, swap = (score_texts(fn, tokenizer, texts, length) for texts in (originals, swapped))
    splice = score_texts(fn, tokenizer, [r['sentence'] for r in splice_rows], length)
    names = (('masked LM pseudo-log-likelihood', 'pll', 'pll_per_token'),) + (
        (('discriminator, largest logit', 'disc_max', 'disc_max'),
         ('discriminator, summed (mean) probability', 'disc_sum', 'disc_mean'))
        if config.objective.electra_objective else ())
    for label, key, splice_key in names:
      print(f'  {name} step {step}: {label:41s} order {np.mean(swap[key] > original[key]):.3f}  '
            f'splice AUC {auc(spliced, splice[splice_key]):.3f}', flush=True)


if __name__ == '__main__':
  app.run(main)
