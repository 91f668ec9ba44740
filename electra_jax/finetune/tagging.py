"""Sequence tagging on CoNLL-format files (CoNLL-2000 chunking, CoNLL-2003 NER), entity-level F1.

Files: DATA_DIR/{train,dev[,test]}.txt or DATA_DIR/<task>/... One token per line, columns separated
by whitespace, the word first and the tag in `tagging.label_column` (default the last); a blank
line ends a sentence; '-DOCSTART-' lines are skipped. CoNLL-2000 ships only train and test: give
the held-out file as dev.txt. Tags may be BIO, IOB1 or BIOES (metrics.conlleval reads them all).

With tagging.scheme='bioes' (default, as the original for chunking) the model is trained on BIOES
tags made from the chunks of the file's tags; its predictions are turned back into the file's scheme
(BIO, or BIOES when the file has S-/E- tags) for the metrics and the written files.

Each word is tokenized on its own; its tag is predicted at its first sub-token (the others are not
trained on). Words past max_seq_length - 2 sub-tokens are predicted 'O' (the whole gold sentence
still counts, so truncation costs recall).
"""

import numpy as np

from electra_jax import paths
from electra_jax.errors import UserError
from electra_jax.finetune import features
from electra_jax.finetune import metrics as metrics_lib


def read_conll(path: str, label_column: int = -1) -> list[tuple[list, list]]:
  """-> [(words, tags)] per sentence."""
  if not paths.exists(path):
    raise UserError(f'tagging data file {path} does not exist')
  sentences, words, tags = [], [], []
  with paths.open(path, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      fields = line.split()
      if not fields or fields[0] == '-DOCSTART-':
        if words:
          sentences.append((words, tags))
        words, tags = [], []
        continue
      if len(fields) < 2:
        raise UserError(f'{path} line {n}: expected "word ... tag", got {line.strip()!r}')
      words.append(fields[0])
      tags.append(fields[label_column])
  if words:
    sentences.append((words, tags))
  return sentences


def _retag(tags, bioes: bool) -> list[str]:
  """The same chunks (as conlleval reads them) written as BIOES or as BIO."""
  out = ['O'] * len(tags)
  for start, end, kind in metrics_lib.chunks(tags):
    for i in range(start, end + 1):
      out[i] = f'I-{kind}'
    out[start] = f'B-{kind}'
    if bioes:
      out[end] = f'E-{kind}' if end > start else f'S-{kind}'
  return out


def to_bioes(tags):
  return _retag(tags, bioes=True)


def to_bio(tags):
  return _retag(tags, bioes=False)


def _data_file(config, split):
  for directory in (paths.join(config.data_dir, config.task), config.data_dir):
    path = paths.join(directory, f'{split}.txt')
    if paths.exists(path):
      return path
  return None


class TaggingTask:
  head = 'tagging'
  epochs = 3.0

  def __init__(self, config, tokenizer):
    self.config, self.name = config, config.task.lower()
    splits = {}
    for split in ('train', 'dev', 'test'):
      path = _data_file(config, split)
      if path and (split != 'test' or config.predict_test):
        splits[split] = read_conll(path, config.tagging.label_column)
    for split in ('train', 'dev'):
      if split not in splits:
        raise UserError(f'{self.name} needs {split}.txt in {config.data_dir} (or '
                        f'{config.data_dir}/{self.name}); CoNLL-2000 has no dev set: use its test '
                        'file or a held-out part of train as dev.txt')
    self.sentences = splits
    if config.tagging.scheme not in ('bioes', 'file'):
      raise UserError("tagging.scheme must be 'bioes' or 'file'")
    self.bioes = config.tagging.scheme == 'bioes'
    self.file_is_bioes = any(t[:2] in ('S-', 'E-') for _, tags in splits['train'] for t in tags)
    self.labels = sorted({t for sentences in splits.values() for _, tags in sentences
                          for t in self._train_tags(tags)})
    self.num_outputs = len(self.labels)
    self.word_positions = {}
    self.train = self._encode('train', tokenizer)
    self.eval_sets = {'dev': self._encode('dev', tokenizer)}
    self.test_sets = {'test': self._encode('test', tokenizer)} if 'test' in splits else {}

  def _train_tags(self, tags):
    return to_bioes(tags) if self.bioes else tags

  def _encode(self, split, tokenizer):
    max_tokens = self.config.max_seq_length - 2
    index = {t: i for i, t in enumerate(self.labels)}
    rows, positions = [], []
    for words, tags in self.sentences[split]:
      tags = self._train_tags(tags)
      pieces = tokenizer.encode_batch(words)
      ids, labels, weights, first = [tokenizer.cls_id], [0], [0.0], []
      for word_pieces, tag in zip(pieces, tags):
        word_pieces = word_pieces or [tokenizer.unk_id]  # a word the normalizer erases entirely
        if len(ids) - 1 + len(word_pieces) > max_tokens:
          first.append(-1)  # truncated: predicted 'O'
          continue
        first.append(len(ids))
        ids += word_pieces
        labels += [index[tag]] + [0] * (len(word_pieces) - 1)
        weights += [1.0] + [0.0] * (len(word_pieces) - 1)
      ids.append(tokenizer.sep_id)
      labels.append(0)
      weights.append(0.0)
      row = features.pad(ids, [0] * len(ids), tokenizer.pad_id, self.config.max_seq_length)
      n = self.config.max_seq_length
      row['labels'] = np.zeros(n, np.int32)
      row['labels'][:len(labels)] = labels
      row['label_weights'] = np.zeros(n, np.float32)
      row['label_weights'][:len(weights)] = weights
      rows.append(row)
      positions.append(first)
    if not rows:
      raise UserError(f'{self.name}: the {split} file has no sentences')
    self.word_positions[split] = positions
    return features.stack(rows)

  def predicted_tags(self, split, predictions) -> list[list[str]]:
    """Each sentence's predicted tags, in the scheme of the data files."""
    sentences = []
    for row, first in zip(predictions['prediction'], self.word_positions[split]):
      tags = [self.labels[int(row[p])] if p >= 0 else 'O' for p in first]
      if self.bioes:
        tags = to_bioes(tags) if self.file_is_bioes else to_bio(tags)
      sentences.append(tags)
    return sentences

  def evaluate(self, split: str, predictions: dict) -> dict:
    predicted = self.predicted_tags(split, predictions)
    gold = [tags for _, tags in self.sentences[split]]
    result = metrics_lib.conlleval(gold, predicted)
    flat_gold = [t for s in gold for t in s]
    flat_predicted = [t for s in predicted for t in s]
    result['token_accuracy'] = metrics_lib.accuracy(flat_gold, flat_predicted)
    result['score'] = result['f1']
    return result

  def write_predictions(self, split: str, predictions: dict, directory: str) -> str:
    """conlleval input: 'word gold predicted' per line, a blank line between sentences."""
    paths.makedirs(directory)
    path = paths.join(directory, f'{self.name}_{split}.txt')
    with paths.open(path, 'w', encoding='utf-8') as f:
      for (words, gold), predicted in zip(self.sentences[split],
                                          self.predicted_tags(split, predictions)):
        f.writelines(f'{w} {g} {p}\n' for w, g, p in zip(words, gold, predicted))
        f.write('\n')
    return path

  def write_eval_predictions(self, split, predictions, directory) -> list:
    return [self.write_predictions(split, predictions, directory)]
