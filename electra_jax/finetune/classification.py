"""Sentence(-pair) classification and regression: GLUE and custom tasks.

Data sources:
- GLUE TSV files as distributed (`download_glue_data.py`): DATA_DIR/<Task>/{train,dev,test}.tsv, the
  folder named like the original (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI) or in lower
  case, or DATA_DIR itself. Columns are read by header name (CoLA's train/dev have no header: label in
  column 1, sentence in column 3). MNLI: dev_matched/dev_mismatched, test_matched/test_mismatched.
- TFDS `glue/<config>` already prepared in `tfds_data_dir` (nothing is downloaded): used when the
  TSV files are absent, or always with data_dir='tfds'.
- Custom: TSV/CSV (with a header) or JSONL files with one text column or a pair and a label column;
  labels from the data (sorted) or a labels file (one per line); regression with custom.regression.
"""
import csv
import dataclasses
import json
import sys

import numpy as np

from electra_jax import paths
from electra_jax.errors import UserError
from electra_jax.finetune import features
from electra_jax.finetune import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class GlueTask:
  name: str
  folder: str          # the GLUE download's folder name
  text_a: str
  text_b: str | None
  label: str
  labels: tuple | None  # None: regression
  metrics: tuple
  epochs: float = 3.0
  dev_splits: tuple = ('dev',)
  test_splits: tuple = ('test',)
  test_id: str = 'index'
  tfds_name: str = ''
  tfds_text: tuple = ()


GLUE = {t.name: t for t in [
    GlueTask('cola', 'CoLA', 'sentence', None, 'label', ('0', '1'), ('mcc',),
             tfds_name='cola', tfds_text=('sentence',)),
    GlueTask('sst', 'SST-2', 'sentence', None, 'label', ('0', '1'), ('accuracy',),
             tfds_name='sst2', tfds_text=('sentence',)),
    GlueTask('mrpc', 'MRPC', '#1 String', '#2 String', 'Quality', ('0', '1'), ('accuracy', 'f1'),
             tfds_name='mrpc', tfds_text=('sentence1', 'sentence2')),
    GlueTask('sts', 'STS-B', 'sentence1', 'sentence2', 'score', None, ('pearson', 'spearman'),
             epochs=10.0, tfds_name='stsb', tfds_text=('sentence1', 'sentence2')),
    GlueTask('qqp', 'QQP', 'question1', 'question2', 'is_duplicate', ('0', '1'), ('accuracy', 'f1'),
             test_id='id', tfds_name='qqp', tfds_text=('question1', 'question2')),
    GlueTask('mnli', 'MNLI', 'sentence1', 'sentence2', 'gold_label',
             ('contradiction', 'entailment', 'neutral'), ('accuracy',),
             dev_splits=('dev_matched', 'dev_mismatched'),
             test_splits=('test_matched', 'test_mismatched'),
             tfds_name='mnli', tfds_text=('premise', 'hypothesis')),
    GlueTask('qnli', 'QNLI', 'question', 'sentence', 'label', ('entailment', 'not_entailment'),
             ('accuracy',), tfds_name='qnli', tfds_text=('question', 'sentence')),
    GlueTask('rte', 'RTE', 'sentence1', 'sentence2', 'label', ('entailment', 'not_entailment'),
             ('accuracy',), epochs=10.0, tfds_name='rte', tfds_text=('sentence1', 'sentence2')),
    GlueTask('wnli', 'WNLI', 'sentence1', 'sentence2', 'label', ('0', '1'), ('accuracy',),
             tfds_name='wnli', tfds_text=('sentence1', 'sentence2')),
]}
ALIASES = {'sst-2': 'sst', 'sst2': 'sst', 'sts-b': 'sts', 'stsb': 'sts'}
SUBMISSION_FILES = {('cola', 'test'): 'CoLA.tsv', ('sst', 'test'): 'SST-2.tsv',
                    ('mrpc', 'test'): 'MRPC.tsv', ('sts', 'test'): 'STS-B.tsv',
                    ('qqp', 'test'): 'QQP.tsv', ('mnli', 'test_matched'): 'MNLI-m.tsv',
                    ('mnli', 'test_mismatched'): 'MNLI-mm.tsv', ('qnli', 'test'): 'QNLI.tsv',
                    ('rte', 'test'): 'RTE.tsv', ('wnli', 'test'): 'WNLI.tsv',
                    ('mnli', 'diagnostic'): 'AX.tsv'}
SWAP_AUGMENTED = ('mrpc', 'sts')
# F1 is of the positive class: label index 1 (GLUE's '1'; the 2nd of a custom task's labels).
METRICS = {'accuracy': metrics_lib.accuracy, 'f1': metrics_lib.f1_binary,
           'mcc': metrics_lib.matthews_corrcoef, 'pearson': metrics_lib.pearson,
           'spearman': metrics_lib.spearman}  # the original also trains these on (B, A)


def glue_task(name: str) -> GlueTask | None:
  return GLUE.get(ALIASES.get(name.lower(), name.lower()))


# ---- Reading.

def _read_tsv(path):
  csv.field_size_limit(sys.maxsize)
  with paths.open(path, encoding='utf-8-sig', newline='') as f:  # utf-8-sig: MRPC starts with a BOM
    return list(csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE))


def _glue_dir(data_dir, task: GlueTask):
  for folder in (task.folder, task.name, task.folder.lower()):
    if paths.isdir(paths.join(data_dir, folder)):
      return paths.join(data_dir, folder)
  return data_dir


def glue_tsv_path(task: GlueTask, data_dir: str, split: str) -> str:
  if split == 'diagnostic':  # GLUE's AX set, predicted by the MNLI model
    return paths.join(data_dir, 'diagnostic', 'diagnostic.tsv')
  return paths.join(_glue_dir(data_dir, task), f'{split}.tsv')


def read_glue_tsv(task: GlueTask, data_dir: str, split: str) -> list[dict]:
  """Examples {'id', 'text_a', 'text_b', 'label'} of one split file; test labels are None."""
  path = glue_tsv_path(task, data_dir, split)
  if not paths.exists(path):
    raise UserError(f'{task.name} needs {path} (GLUE TSV layout: DATA_DIR/{task.folder}/'
                    f'{split}.tsv); set --config.data_dir')
  rows = _read_tsv(path)
  is_test = split.startswith('test') or split == 'diagnostic'
  if task.name == 'cola' and not is_test:  # no header: source, label, original label, sentence
    header, body = {'label': 1, 'sentence': 3}, rows
  else:
    header, body = {name: i for i, name in enumerate(rows[0])}, rows[1:]
  wanted = [task.text_a] + ([task.text_b] if task.text_b else []) + (
      [task.test_id] if is_test else [task.label])
  missing = [c for c in wanted if c not in header]
  if missing:
    raise UserError(f'{path} has no column {missing[0]!r} (columns: {", ".join(map(str, header))})')
  examples, skipped = [], []
  first_line = 1 if task.name == 'cola' and not is_test else 2
  for i, row in enumerate(body):
    if len(row) <= max(header[c] for c in wanted):
      skipped.append((first_line + i, len(row)))  # QQP's train file has a few: the original too
      continue
    examples.append({
        'id': row[header[task.test_id]] if is_test else str(i),
        'text_a': row[header[task.text_a]],
        'text_b': row[header[task.text_b]] if task.text_b else None,
        'label': None if is_test else row[header[task.label]]})
  if skipped:
    print(f'{path}: skipped {len(skipped)} malformed row(s) (the first: line {skipped[0][0]}, '
          f'{skipped[0][1]} fields, {max(header[c] for c in wanted) + 1} needed)', flush=True)
  return examples


def read_glue_tfds(task: GlueTask, split: str, tfds_data_dir: str | None) -> list[dict]:
  """The same examples from a prepared TFDS `glue/<config>` (never downloads)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(f'glue/{task.tfds_name}', data_dir=tfds_data_dir or None)
  tfds_split = split.replace('dev', 'validation')
  try:
    dataset = builder.as_dataset(split=tfds_split)
  except Exception as e:  # pylint: disable=broad-except  (not prepared: tfds raises AssertionError)
    raise UserError(f'TFDS glue/{task.tfds_name} is not prepared in {builder.data_dir} '
                    f'({type(e).__name__}); prepare it or use the GLUE TSV files') from None
  names = builder.info.features['label'].names if task.labels else None
  examples = []
  for row in tfds.as_numpy(dataset):
    text = [row[k].decode('utf-8') for k in task.tfds_text]
    label = row['label']
    if split.startswith('test') or (names and label < 0):
      label = None
    elif names:  # word labels by name (MNLI's order differs from ours); '0'/'1' by index
      label = names[label] if task.labels[0] not in ('0', '1') else str(int(label))
    else:
      label = str(float(label))
    examples.append({'id': str(int(row['idx'])), 'text_a': text[0],
                     'text_b': text[1] if len(text) > 1 else None, 'label': label})
  return examples


def _read_table(path: str, delimiter: str):
  """(header, [(line number, row dict)]) of a TSV or CSV file with a header row.

  TSV fields are not quoted (as GLUE's files: a '"' is text); CSV follows the usual quoting. Every
  row must have as many fields as the header: one that doesn't is a UserError naming file and line
  (a stray quote in a CSV swallows the lines up to the next one, a short row would lose its label).
  """
  csv.field_size_limit(sys.maxsize)
  quoting = csv.QUOTE_NONE if delimiter == '\t' else csv.QUOTE_MINIMAL
  rows = []
  with paths.open(path, encoding='utf-8-sig', newline='') as f:  # utf-8-sig: a BOM is not a column
    reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
    header = next(reader, [])
    start = reader.line_num + 1
    for row in reader:
      if row:  # blank lines are skipped
        if len(row) != len(header):
          raise UserError(f'{path} line {start}: {len(row)} field(s), but the header has '
                          f'{len(header)} ({", ".join(header)})')
        rows.append((start, dict(zip(header, row))))
      start = reader.line_num + 1
  return header, rows


def _read_jsonl(path: str):
  rows = []
  with paths.open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError as e:
        raise UserError(f'{path} line {number}: not valid JSON ({e.msg} at column {e.pos + 1})') \
            from None
      if not isinstance(record, dict):
        raise UserError(f'{path} line {number}: not a JSON object')
      rows.append((number, record))
  return rows


def read_custom_file(path: str, text_a: str, text_b: str, label: str,
                     need_label: bool = False) -> list[dict]:
  """TSV / CSV with a header row, or JSONL (one object per line). Without `need_label` a file
  without the label column is a test file (its labels are None)."""
  if not paths.isfile(path):
    raise UserError(f'custom data file {path} does not exist')
  try:
    if path.endswith('.jsonl') or path.endswith('.json'):
      rows = _read_jsonl(path)
      columns = set().union(*(r.keys() for _, r in rows)) if rows else set()
    elif path.endswith('.csv') or path.endswith('.tsv'):
      header, rows = _read_table(path, ',' if path.endswith('.csv') else '\t')
      columns = set(header)
    else:
      raise UserError(f'custom data file {path}: use .tsv, .csv or .jsonl')
  except UnicodeDecodeError as e:
    raise UserError(f'custom data file {path} is not UTF-8 text (byte offset {e.start})') from None
  if not rows:
    raise UserError(f'custom data file {path} has no examples')
  has_labels = need_label or label in columns
  examples = []
  for line, record in rows:
    for column in [text_a] + ([text_b] if text_b else []) + ([label] if has_labels else []):
      if column not in record:
        raise UserError(f'{path} line {line} has no column {column!r} (it has '
                        f'{", ".join(map(str, record))}); set --config.custom.'
                        + {text_a: 'text_a', text_b: 'text_b', label: 'label'}[column])
    value = record[label] if has_labels else None
    if has_labels and (value is None or str(value).strip() == ''):
      raise UserError(f'{path} line {line}: the label ({label!r}) is empty')
    examples.append({'id': str(record.get('id', len(examples))), 'text_a': str(record[text_a]),
                     'text_b': str(record[text_b]) if text_b else None,
                     'label': None if value is None else str(value),
                     'where': f'{path} line {line}'})
  return examples


# ---- The task object the loop uses.

class ClassificationTask:
  """Examples of each split encoded once; evaluation and GLUE-format test predictions.

  Attributes the loop reads: name, head ('classification' | 'regression'), num_outputs, epochs,
  train (arrays), eval_sets {split: arrays} (the first one selects the best checkpoint),
  test_sets {split: arrays}.
  """

  def __init__(self, config, tokenizer):
    self.config = config
    name = config.task.lower()
    glue = glue_task(name)
    splits = {}
    if glue is not None:
      self.name, self.glue = glue.name, glue
      use_tfds = config.data_dir == 'tfds' or (
          not paths.exists(paths.join(_glue_dir(config.data_dir, glue), 'train.tsv'))
          and bool(config.tfds_data_dir))
      read = ((lambda s: read_glue_tfds(glue, s, config.tfds_data_dir)) if use_tfds
              else (lambda s: read_glue_tsv(glue, config.data_dir, s)))
      splits['train'] = read('train')
      for s in glue.dev_splits:
        splits[s] = read(s)
      test_splits = glue.test_splits + (('diagnostic',) if glue.name == 'mnli' else ())
      for s in test_splits if config.predict_test else ():
        tsv = glue_tsv_path(glue, config.data_dir, s)
        if s == 'diagnostic' and paths.exists(tsv):
          splits[s] = read_glue_tsv(glue, config.data_dir, s)
        elif s != 'diagnostic' and (use_tfds or paths.exists(tsv)):
          splits[s] = read(s)
        elif s != 'diagnostic':
          print(f'{glue_tsv_path(glue, config.data_dir, s)} does not exist: no {s} predictions',
                flush=True)
      regression = glue.labels is None
      labels = glue.labels
      self.metric_names = glue.metrics
      self.epochs = glue.epochs
      self.dev_splits = glue.dev_splits
      self.test_splits = tuple(s for s in test_splits if s in splits)
    else:
      self.name, self.glue = config.custom.name or name, None
      c = config.custom
      if not c.train_file:
        raise UserError(f'unknown task {config.task!r}: use a GLUE task ({", ".join(GLUE)}), '
                        'chunk, ner, squad1, squad2, mrqa, or task=custom with '
                        '--config.custom.train_file')
      read = lambda p, need_label=True: read_custom_file(p, c.text_a, c.text_b, c.label,
                                                           need_label)
      splits['train'] = read(c.train_file)
      self.dev_splits = ('dev',) if c.dev_file else ()
      self.test_splits = ('test',) if c.test_file and config.predict_test else ()
      if c.dev_file:
        splits['dev'] = read(c.dev_file)
      if self.test_splits:
        splits['test'] = read(c.test_file, need_label=False)
      regression = c.regression
      if regression:
        labels = None
      elif c.labels_file:
        try:
          with paths.open(c.labels_file, encoding='utf-8') as f:
            labels = tuple(l.strip() for l in f if l.strip())
        except (*paths.error_types(), UnicodeDecodeError) as e:
          raise UserError(f'cannot read custom.labels_file {c.labels_file}: '
                          f'{getattr(e, "strerror", None) or e}') from None
      else:
        labels = tuple(sorted({e['label'] for e in splits['train'] if e['label'] is not None}))
      self.metric_names = tuple(m for m in c.metrics.split(',') if m) or (
          ('pearson', 'spearman') if regression else
          ('accuracy', 'f1') if len(labels) == 2 else ('accuracy',))
      self.epochs = 3.0
    unknown = [m for m in self.metric_names if m not in METRICS]
    if unknown:
      raise UserError(f'unknown metric {unknown[0]!r}; use {", ".join(METRICS)}')
    self.head = 'regression' if regression else 'classification'
    self.labels = labels
    self.num_outputs = 1 if regression else len(labels)
    if not regression and len(labels) < 2:
      raise UserError(f'task {self.name} has {len(labels)} label(s) {labels}; need at least 2')
    self.examples = splits
    if self.name in SWAP_AUGMENTED and config.swap_augment:
      splits['train'] = splits['train'] + [
          dict(e, text_b=e['text_a'], text_a=e['text_b']) for e in splits['train']]
    self.train = self._encode(splits['train'], tokenizer, 'train')
    self.eval_sets = {s: self._encode(splits[s], tokenizer, s) for s in self.dev_splits}
    self.test_sets = {s: self._encode(splits[s], tokenizer, s, test=True) for s in self.test_splits}

  def _label_value(self, example, split, i):
    label, where = example['label'], example.get('where', f'{self.name} {split} example {i}')
    if label is None:
      raise UserError(f'{where} has no label')
    if self.head == 'regression':
      try:
        return np.float32(float(label))
      except ValueError:
        raise UserError(f'{where}: label {label!r} is not a number (regression)') from None
    if label not in self.labels:
      source = (f' in {self.config.custom.labels_file}' if self.glue is None and
                self.config.custom.labels_file else '')
      raise UserError(f'{where}: label {label!r} is not one of the labels{source} '
                      f'({", ".join(self.labels)})')
    return np.int32(self.labels.index(label))

  def _encode(self, examples, tokenizer, split, test=False):
    if not examples:
      raise UserError(f'{self.name}: the {split} split has no examples')
    ids_a = tokenizer.encode_batch([e['text_a'] for e in examples])
    pair = examples[0]['text_b'] is not None
    ids_b = tokenizer.encode_batch([e['text_b'] or '' for e in examples]) if pair else None
    rows = []
    for i, e in enumerate(examples):
      row = features.pack(ids_a[i], ids_b[i] if pair else None, tokenizer,
                          self.config.max_seq_length)
      row['label'] = (np.float32(0) if self.head == 'regression' else np.int32(0)) if test else \
          self._label_value(e, split, i)
      rows.append(row)
    return features.stack(rows)

  def evaluate(self, split: str, predictions: dict) -> dict:
    """Metrics (percent) of one eval split; 'score' is their mean (the GLUE convention)."""
    labels = self.eval_sets[split]['label']
    predicted = predictions['prediction']
    result = {name: METRICS[name](labels, predicted) for name in self.metric_names}
    result['score'] = float(np.mean([result[m] for m in self.metric_names]))
    return result

  def write_predictions(self, split: str, predictions: dict, directory: str) -> str:
    """GLUE submission format: 'index<TAB>prediction' with the label string (a float for STS-B)."""
    name = SUBMISSION_FILES.get((self.name, split), f'{self.name}_{split}.tsv')
    path = paths.join(directory, name)
    paths.makedirs(directory)
    with paths.open(path, 'w', encoding='utf-8') as f:
      f.write('index\tprediction\n')
      for example, value in zip(self.examples[split], predictions['prediction']):
        shown = f'{float(value):.3f}' if self.head == 'regression' else self.labels[int(value)]
        f.write(f'{example["id"]}\t{shown}\n')
    return path
