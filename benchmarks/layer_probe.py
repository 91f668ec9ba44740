r"""Frozen features, layer by layer: where does a pre-trained encoder hold what a task needs?

  python benchmarks/layer_probe.py --learning_workdir=/tmp/electra_learning \
      --runs=electra:3256,mlm:3565 --tasks=next,splice

For each pre-training run (WORKDIR/NAME, checkpoint STEP) and for the same encoder at its random
initialization ('none'), the transformer that fine-tuning starts from (ELECTRA's discriminator,
the masked LM's only one) reads each train and dev example of learning.py's tasks (WORKDIR/text,
encoded as fine-tuning encodes them: [CLS] A [SEP] (B [SEP]), 64 tokens, 128 for `next`), and a
logistic regression (standardized features, L2 strength by 5-fold cross-validation on train) is
fit on the frozen output of the embeddings (layer 0) and of each layer, pooled two ways: the
[CLS] token's vector, the mean over the example's tokens. Prints the dev accuracy (%) of each.
Fine-tuning changes the encoder; a probe asks what the encoder already holds in a form a linear
classifier can read.
"""
import json
import os
import re
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from sklearn import linear_model, model_selection, pipeline, preprocessing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from electra_jax import build_data, defaults, model as model_lib, tokenization  # pylint: disable=g-import-not-at-top,wrong-import-position
from electra_jax.finetune import features  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('learning_workdir', None, 'A learning.py workdir.', required=True)
_RUNS = flags.DEFINE_list('runs', ['electra:3256', 'mlm:3565'],
                          'NAME:STEP pre-training runs; the first one also gives the random '
                          "initialization's config ('none').")
_TASKS = flags.DEFINE_list('tasks', ['next', 'splice'], 'learning.py tasks (WORKDIR/text).')
_BATCH = 100
LENGTHS = {'next': 128}  # the others: 64, as learning.py fine-tunes them


def load(workdir: str, step: int):
  """A pre-training run's config, pre-trainer and parameters at `step` (as sentence_probe's)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(defaults.upgrade(json.load(f)))
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  params = ocp.StandardCheckpointer().restore(path)['params']
  return config, model_lib.make_pretrainer(config), params


def read_task(text_dir: str, task: str, split: str):
  with open(os.path.join(text_dir, f'{task}_{split}.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  if 'sentence1' in rows[0]:
    return [(r['sentence1'], r['sentence2']) for r in rows], [r['label'] for r in rows]
  return [(r['sentence'], None) for r in rows], [r['label'] for r in rows]


def encode(tokenizer, texts, length: int) -> dict:
  ids_a = tokenizer.encode_batch([a for a, _ in texts])
  ids_b = tokenizer.encode_batch([b for _, b in texts]) if texts[0][1] is not None else None
  return features.stack([features.pack(ids_a[i], ids_b[i] if ids_b else None, tokenizer, length)
                         for i in range(len(texts))])


def layer_outputs_fn(model):
  """ids, mask, segments -> [layers + 1, B, T, H]: the embeddings (projected to the
  transformer's width, as its first layer sees them) and each layer's output."""
  def is_wanted(module, method_name):
    return method_name == '__call__' and (
        module.name == 'embeddings' or module.name == 'embeddings_project' or
        re.fullmatch(r'layer_\d+', module.name or '') is not None)

  def outputs(params, ids, mask, segments):
    _, state = model.apply({'params': params}, ids, mask, segments,
                           method=model.discriminator_logits, deterministic=True,
                           capture_intermediates=is_wanted, mutable=['intermediates'])
    inter = state['intermediates']
    body = inter['discriminator']
    if 'embeddings_project' in body:
      first = body['embeddings_project']['__call__'][0].reshape(ids.shape + (-1,))
    else:
      first = inter['embeddings']['__call__'][0]
    layers = sorted((k for k in body if re.fullmatch(r'layer_\d+', k)), key=lambda k: int(k[6:]))
    return jnp.stack([first] + [body[k]['__call__'][0].reshape(ids.shape + (-1,))
                                for k in layers])

  return jax.jit(outputs)


def pooled_features(fn, params, arrays) -> dict:
  """{'cls': [layers + 1, N, H], 'mean': [layers + 1, N, H]} over all examples."""
  cls, mean = [], []
  for i in range(0, len(arrays['input_ids']), _BATCH):
    ids, mask, segments = (jnp.asarray(arrays[k][i:i + _BATCH])
                           for k in ('input_ids', 'input_mask', 'segment_ids'))
    hidden = fn(params, ids, mask, segments)
    weights = mask[None, :, :, None].astype(hidden.dtype)
    cls.append(np.asarray(hidden[:, :, 0]))
    mean.append(np.asarray((hidden * weights).sum(2) / weights.sum(2)))
  return {'cls': np.concatenate(cls, 1), 'mean': np.concatenate(mean, 1)}


def probe_accuracy(train_x, train_y, dev_x, dev_y) -> float:
  classifier = model_selection.GridSearchCV(
      pipeline.make_pipeline(preprocessing.StandardScaler(),
                             linear_model.LogisticRegression(max_iter=2000)),
      {'logisticregression__C': [1e-3, 1e-2, 1e-1, 1.0]}, cv=5)
  classifier.fit(train_x, train_y)
  return 100.0 * float(np.mean(classifier.predict(dev_x) == np.asarray(dev_y)))


def main(argv):
  del argv
  text_dir = os.path.join(_WORKDIR.value, 'text')
  runs = [run.split(':') for run in _RUNS.value]
  encoders = []  # (name, compiled layer-outputs function, params); one compile per encoder
  first_config = first_model = None
  for name, step in runs:
    config, model, params = load(os.path.join(_WORKDIR.value, name), int(step))
    encoders.append((f'{name}:{step}', layer_outputs_fn(model), params))
    if first_model is None:
      first_config, first_model = config, model
  encoders.append(('none', layer_outputs_fn(first_model),
                   model_lib.init_params(first_model, jax.random.key(first_config.seed))))
  tokenizer = tokenization.load_tokenizer(
      build_data.load_meta(first_config.data.data_dir).vocab_path)
  data = {}
  for task in _TASKS.value:
    length = LENGTHS.get(task, 64)
    data[task] = {}
    for split in ('train', 'dev'):
      texts, labels = read_task(text_dir, task, split)
      data[task][split] = (encode(tokenizer, texts, length), labels)
  print('dev accuracy (%) of a logistic regression on frozen features; columns: the embeddings '
        '(0), then each layer', flush=True)
  for task in _TASKS.value:
    print(f'\n{task}: {len(data[task]["train"][1])} train, {len(data[task]["dev"][1])} dev')
    for name, fn, params in encoders:
      train_f, dev_f = (pooled_features(fn, params, data[task][split][0])
                        for split in ('train', 'dev'))
      for pooling in ('cls', 'mean'):
        accuracies = [probe_accuracy(train_f[pooling][layer], data[task]['train'][1],
                                     dev_f[pooling][layer], data[task]['dev'][1])
                      for layer in range(train_f[pooling].shape[0])]
        print(f'  {name:14s} {pooling:4s} ' + ' '.join(f'{a:5.1f}' for a in accuracies),
              flush=True)


if __name__ == '__main__':
  app.run(main)
