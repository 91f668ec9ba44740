"""Raw text -> vocabulary -> sharded TFRecords of pre-training examples, as the original ELECTRA builder.

Input text has one sentence per line and a blank line between documents. The steps:
1. The documents are dealt out: each goes to eval with probability `data.eval_fraction` (at least one
   when there are two or more), and the k-th train (eval) document goes to text shard k % num_shards.
2. Without a given vocabulary a SentencePiece model is trained on the train text shards.
3. Worker processes turn each text shard into a TFRecord shard (shard_writer.py, packing.py). Each shard
   has its own seeded packing draws, so the output depends on (corpus, vocab, builder_seed, num_shards)
   and not on the number of processes.
4. `meta.json` is written last, atomically: a directory without it never counts as built.

Usage: python -m electra_jax.build_data --config=configs/demo.py --workdir=DIR [--config.data.corpus=...]
"""
from concurrent import futures
import dataclasses
import json
import multiprocessing
import os
import random
import sys
import tempfile

from absl import logging

from electra_jax import corpus as corpus_lib
from electra_jax import demo_corpus
from electra_jax import errors
from electra_jax import paths
from electra_jax import shard_writer
from electra_jax import tokenization
from electra_jax import workdir_lock
from electra_jax.errors import UserError

META_FILE = 'meta.json'
BUILD_LOCK_FILE = 'build.lock'  # held while a build writes into the data dir
# Bump when the builder's output changes, so older data is rebuilt rather than reused.
FORMAT_VERSION = 1
_TMP_DIR = 'tmp-text-shards'
_SPM_PREFIX = 'spm'


def shard_name(split: str, index: int, count: int) -> str:
  return f'{split}-{index:05d}-of-{count:05d}.tfrecord'


def num_eval_shards(num_shards: int, eval_fraction: float) -> int:
  """About as many examples per eval shard as per train shard, and at least one eval shard."""
  return max(1, round(num_shards * eval_fraction))


# ---------------------------------------------------------------------------------------------------
# Step 1: deal the documents out to text shards.


@dataclasses.dataclass
class _TextShards:
  train_paths: list[str]
  eval_paths: list[str]
  num_train_documents: int = 0
  num_eval_documents: int = 0


class _BufferedFiles:
  """Appends text to many files without keeping them all open (1000 shards would exceed the limit)."""

  _FLUSH_BYTES = 64 << 20

  def __init__(self, file_paths: list[str]):
    self._paths = file_paths
    self._buffers = [[] for _ in file_paths]
    self._buffered_bytes = 0
    for path in file_paths:
      paths.open(path, 'w', encoding='utf-8').close()

  def write(self, index: int, text: str):
    self._buffers[index].append(text)
    self._buffered_bytes += len(text)
    if self._buffered_bytes > self._FLUSH_BYTES:
      self.flush()

  def flush(self):
    for path, buffer in zip(self._paths, self._buffers):
      if buffer:
        with paths.open(path, 'a', encoding='utf-8') as f:
          f.write(''.join(buffer))
        buffer.clear()
    self._buffered_bytes = 0


def _deal_documents(documents, tmp_dir: str, num_train: int, num_eval: int, eval_fraction: float,
                    seed: int) -> _TextShards:
  """Writes each document to a train or eval text shard; see the module docstring for the rule."""
  shards = _TextShards(
      train_paths=[paths.join(tmp_dir, f'train-{i:05d}.txt') for i in range(num_train)],
      eval_paths=[paths.join(tmp_dir, f'eval-{i:05d}.txt') for i in range(num_eval)])
  files = {'train': _BufferedFiles(shards.train_paths), 'eval': _BufferedFiles(shards.eval_paths)}
  shard_counts = {'train': num_train, 'eval': num_eval}
  counts = {'train': 0, 'eval': 0}

  def write(document, split):
    files[split].write(counts[split] % shard_counts[split], '\n'.join(document) + '\n\n')
    counts[split] += 1

  rng = random.Random(seed)
  # The latest document waits, so that it can become the one eval (or train) document if none was drawn.
  pending, pending_split = None, None
  for document in documents:
    if pending is not None:
      write(pending, pending_split)
    pending, pending_split = document, ('eval' if rng.random() < eval_fraction else 'train')
  if pending is not None:
    if counts['train'] + counts['eval'] == 0:
      pending_split = 'train'  # a single document: the build will report too few eval examples
    elif counts['eval'] == 0:
      pending_split = 'eval'
    elif counts['train'] == 0:
      pending_split = 'train'
    write(pending, pending_split)
  files['train'].flush()
  files['eval'].flush()
  shards.num_train_documents, shards.num_eval_documents = counts['train'], counts['eval']
  return shards


# ---------------------------------------------------------------------------------------------------
# Steps 2-4.


def _check_config(config):
  if config.max_seq_length < 5:
    raise UserError(f'max_seq_length must be at least 5, got {config.max_seq_length}')
  if config.data.num_shards < 1 or config.data.num_processes < 1:
    raise UserError('data.num_shards and data.num_processes must be at least 1')
  if not 0.0 <= config.data.eval_fraction < 1.0:
    raise UserError(f'data.eval_fraction must be in [0, 1), got {config.data.eval_fraction}')


def config_settings(config) -> dict:
  """The settings the shards depend on that the config alone says (no file is read)."""
  return {
      'format_version': FORMAT_VERSION,
      'corpus': config.data.corpus.strip(),
      'tfds_text_key': config.data.tfds_text_key if config.data.corpus.strip().startswith('tfds:')
                       else '',
      'vocab': config.data.vocab,
      'vocab_size': config.model.vocab_size,
      'do_lower_case': config.data.do_lower_case,
      'max_seq_length': config.max_seq_length,
      'builder_seed': config.data.builder_seed,
      'num_shards': config.data.num_shards,
      'eval_fraction': config.data.eval_fraction,
  }


def _settings(config, corpus: corpus_lib.Corpus) -> dict:
  """What the shards depend on; a complete build with the same settings is reused."""
  vocab = config.data.vocab
  return dict(
      config_settings(config),
      corpus_fingerprint=json.loads(json.dumps(corpus.fingerprint)),
      vocab_fingerprint=(corpus_lib.file_fingerprint(vocab) if vocab and paths.isfile(vocab)
                         else []))


def _changes(old: dict, new: dict) -> str:
  """'max_seq_length 128 -> 64, ...' for the settings that differ."""
  names = {'corpus_fingerprint': 'corpus files (size or time)', 'vocab_fingerprint':
           'vocabulary file (size or time)'}
  return ', '.join(
      f'{names[k]} changed' if k in names else f'{k} {old.get(k)!r} -> {new.get(k)!r}'
      for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))


def _remove_stale_outputs(data_dir: str, keep: str):
  """Deletes what an earlier (possibly killed) build left; meta.json first, so nothing looks complete.

  `keep` (the given vocabulary, which may be an earlier build's spm.model) is never deleted.
  """
  meta_path = paths.join(data_dir, META_FILE)
  if paths.exists(meta_path):
    paths.remove(meta_path)
  for pattern in ('train-*-of-*.tfrecord*', 'eval-*-of-*.tfrecord*', f'{_SPM_PREFIX}.model',
                  f'{_SPM_PREFIX}.vocab', f'{META_FILE}.tmp*', f'{corpus_lib.DEMO_CORPUS_FILE}.tmp-*'):
    for path in paths.glob(paths.join(data_dir, pattern)):
      if not keep or not paths.samefile(path, keep):
        paths.remove(path)
  paths.rmtree(paths.join(data_dir, _TMP_DIR))


def _relative_to(path: str, data_dir: str) -> str:
  """`path` relative to `data_dir` when inside it (the directory can then be moved), else absolute."""
  path, data_dir = paths.abspath(path), paths.abspath(data_dir)
  return paths.basename(path) if paths.dirname(path) == data_dir else path


def _write_meta(data_dir: str, meta: dict):
  path = paths.join(data_dir, META_FILE)
  tmp_path = f'{path}.tmp{os.getpid()}'
  with paths.open(tmp_path, 'w') as f:
    json.dump(meta, f, indent=2, sort_keys=True)
    f.flush()
    paths.fsync(f)
  paths.replace(tmp_path, path)


def _run_tasks(tasks: list, num_processes: int) -> list[int]:
  """Runs shard_writer.write_shard on each task; in worker processes when there are several."""
  num_processes = min(num_processes, len(tasks))
  if num_processes <= 1:
    return [shard_writer.write_shard(task) for task in tasks]
  # 'spawn': TensorFlow (which the workers use) is not fork-safe. An executor rather than a Pool: a
  # worker that dies (e.g. out of memory) fails the build instead of hanging it.
  context = multiprocessing.get_context('spawn')
  try:
    with futures.ProcessPoolExecutor(num_processes, mp_context=context) as executor:
      return list(executor.map(shard_writer.write_shard, tasks))
  except futures.process.BrokenProcessPool as e:
    raise UserError(f'a builder worker process died (out of memory?); try fewer with '
                    f'--config.data.num_processes={max(1, num_processes // 2)}') from e


def _matching_meta(data_dir: str, settings: dict):
  """The complete earlier build in `data_dir` with these settings, or None."""
  try:
    meta = load_meta(data_dir)
  except UserError:
    return None
  return meta if meta.settings == settings else None


def build_pretraining_data(config, workdir: str) -> str:
  """Builds (or reuses) the pre-training shards that `config` asks for; returns their directory.

  The directory is `config.data.data_dir`, or WORKDIR/data when that is ''.
  """
  _check_config(config)
  data_dir = paths.abspath(config.data.data_dir or paths.join(workdir, 'data'))
  paths.make_writable_dir(data_dir, 'data dir')
  corpus = corpus_lib.resolve(config.data.corpus, data_dir)
  given_tokenizer = None
  if config.data.vocab:
    given_tokenizer = tokenization.load_tokenizer(config.data.vocab, config.data.do_lower_case)
    errors.check_vocab_size(given_tokenizer.path, given_tokenizer.vocab_size,
                            config.model.vocab_size)

  settings = _settings(config, corpus)
  meta = _matching_meta(data_dir, settings)
  if meta is None:
    fd = workdir_lock.acquire(data_dir, 'data dir', name=BUILD_LOCK_FILE)  # one builder at a time
    try:
      meta = _matching_meta(data_dir, settings)  # another builder may have just finished it
      if meta is None:
        _rebuild(config, data_dir, corpus, given_tokenizer, settings)
        return data_dir
    finally:
      workdir_lock.release(fd)
  logging.info('Reusing the pre-training data in %s (%d train / %d eval examples).', data_dir,
               meta.num_train_examples, meta.num_eval_examples)
  return data_dir


def _rebuild(config, data_dir: str, corpus, given_tokenizer, settings: dict):
  """Builds over what is in `data_dir`, unless it is a complete build that the user named."""
  try:
    other = load_meta(data_dir).settings
  except UserError:
    other = None  # nothing complete there (or a killed build's leftovers): build
  if other is not None and config.data.data_dir:  # it may be shared by other runs: never deleted
    raise UserError(f'data.data_dir {data_dir} holds data built with other settings '
                    f'({_changes(other, settings)}); use another data.data_dir, or delete its '
                    f'{META_FILE} to rebuild it there')
  if other is not None:  # the workdir's own data dir
    logging.warning('Rebuilding the pre-training data in %s: its settings changed (%s).',
                    data_dir, _changes(other, settings))
  _build(config, data_dir, corpus, given_tokenizer, settings)


def _build(config, data_dir: str, corpus, given_tokenizer, settings: dict):
  logging.info('Building pre-training data from %s into %s.', corpus.description, data_dir)
  _remove_stale_outputs(data_dir, keep=config.data.vocab)
  if not corpus.spec:
    demo_corpus.write_demo_corpus(corpus.files[0])
  if paths.is_url(data_dir):  # only this host's builder and workers read the text shards
    tmp_dir = tempfile.mkdtemp(prefix='electra_jax-text-shards-')
  else:
    tmp_dir = paths.join(data_dir, _TMP_DIR)
    os.makedirs(tmp_dir)
  try:
    num_train, num_eval = config.data.num_shards, num_eval_shards(
        config.data.num_shards, config.data.eval_fraction)
    text_shards = _deal_documents(
        corpus_lib.documents(corpus, config.data.tfds_text_key), tmp_dir, num_train, num_eval,
        config.data.eval_fraction, config.data.builder_seed)
    if text_shards.num_train_documents + text_shards.num_eval_documents == 0:
      raise UserError(f'corpus {corpus.description} contains no text')

    if given_tokenizer:
      tokenizer = given_tokenizer
    else:
      logging.info('Training a SentencePiece vocabulary of %d pieces.', config.model.vocab_size)
      model_path = tokenization.train_sentencepiece(
          text_shards.train_paths, paths.join(data_dir, _SPM_PREFIX), config.model.vocab_size,
          config.data.do_lower_case)
      tokenizer = tokenization.load_tokenizer(model_path)
      errors.check_vocab_size(tokenizer.path, tokenizer.vocab_size, config.model.vocab_size)

    tasks, names = [], []
    for split, text_paths in (('train', text_shards.train_paths), ('eval', text_shards.eval_paths)):
      for i, text_path in enumerate(text_paths):
        name = shard_name(split, i, len(text_paths))
        names.append(name)
        tasks.append(shard_writer.ShardTask(
            text_path=text_path, output_path=paths.join(data_dir, name),
            vocab_path=paths.abspath(tokenizer.path), do_lower_case=config.data.do_lower_case,
            max_seq_length=config.max_seq_length,
            rng_seed=f'{config.data.builder_seed}-{name}'))
    logging.info('Writing %d shards with %d processes.', len(tasks), config.data.num_processes)
    counts = dict(zip(names, _run_tasks(tasks, config.data.num_processes)))
  finally:
    paths.rmtree(tmp_dir)

  train_counts = {n: c for n, c in counts.items() if n.startswith('train-')}
  eval_counts = {n: c for n, c in counts.items() if n.startswith('eval-')}
  num_train_examples, num_eval_examples = sum(train_counts.values()), sum(eval_counts.values())
  if num_train_examples == 0 or num_eval_examples == 0:
    raise UserError(
        f'corpus {corpus.description} gives too few examples ({num_train_examples} train, '
        f'{num_eval_examples} eval from {text_shards.num_train_documents} + '
        f'{text_shards.num_eval_documents} documents; documents are separated by blank lines, '
        'sentences by line breaks); use a larger corpus or a larger --config.data.eval_fraction')

  meta = {
      'max_seq_length': config.max_seq_length,
      'vocab_path': _relative_to(tokenizer.path, data_dir),
      'vocab_kind': tokenizer.kind,
      'vocab_size': tokenizer.vocab_size,
      'do_lower_case': config.data.do_lower_case,
      'pad_id': tokenizer.pad_id,
      'unk_id': tokenizer.unk_id,
      'cls_id': tokenizer.cls_id,
      'sep_id': tokenizer.sep_id,
      'mask_id': tokenizer.mask_id,
      'train_files': sorted(train_counts),
      'eval_files': sorted(eval_counts),
      'train_examples_per_file': train_counts,
      'eval_examples_per_file': eval_counts,
      'num_train_examples': num_train_examples,
      'num_eval_examples': num_eval_examples,
      'num_train_documents': text_shards.num_train_documents,
      'num_eval_documents': text_shards.num_eval_documents,
      'corpus': corpus.description,
      'builder_seed': config.data.builder_seed,
      'settings': settings,
  }
  _write_meta(data_dir, meta)
  logging.info('Wrote %d train and %d eval examples to %s.', num_train_examples, num_eval_examples,
               data_dir)


@dataclasses.dataclass(frozen=True)
class DataMeta:
  """A complete build's meta.json, as `load_meta` reads it; its paths absolute.

  `vocab_path`, the files and the keys of the examples-per-file maps are resolved against
  `data_dir` (meta.json holds them relative to it, so the folder can be moved).
  """
  data_dir: str
  max_seq_length: int
  vocab_path: str
  vocab_kind: str  # 'wordpiece' or 'sentencepiece'
  vocab_size: int
  do_lower_case: bool
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  train_files: tuple[str, ...]
  eval_files: tuple[str, ...]
  train_examples_per_file: dict[str, int]
  eval_examples_per_file: dict[str, int]
  num_train_examples: int
  num_eval_examples: int
  corpus: str  # its description
  builder_seed: int
  settings: dict  # what the shards depend on (a build with the same settings is reused)
  num_train_documents: int | None = None
  num_eval_documents: int | None = None

  def special_ids(self):
    """The ids the pre-training objective needs (objective.SpecialIds)."""
    from electra_jax import objective  # pylint: disable=g-import-not-at-top  (JAX: not for builders)
    return objective.SpecialIds(self.pad_id, self.cls_id, self.sep_id, self.mask_id)

  def vocab_info(self) -> dict:
    """The 'vocab' entry of pretrained/config.json (tokenization.VOCAB_INFO_KEYS)."""
    return {key: getattr(self, key) for key in tokenization.VOCAB_INFO_KEYS}


_META_FIELDS = frozenset(f.name for f in dataclasses.fields(DataMeta)) - {'data_dir'}
_META_KEYS = tuple(f.name for f in dataclasses.fields(DataMeta)  # what a complete meta.json has
                   if f.default is dataclasses.MISSING and f.name != 'data_dir')


def load_meta(data_dir: str) -> DataMeta:
  """Reads DATA_DIR/meta.json of a complete build (UserError if there is none)."""
  data_dir = paths.abspath(data_dir)
  path = paths.join(data_dir, META_FILE)
  incomplete = UserError(
      f'{data_dir} has no complete pre-training data ({META_FILE}); run build_data first '
      "(--mode=build_data, or main.run('train', config, workdir), which builds, then trains)")
  try:
    with paths.open(path) as f:
      meta = json.load(f)
  except (*paths.error_types(), ValueError) as e:
    raise incomplete from e
  if not isinstance(meta, dict) or any(key not in meta for key in _META_KEYS):
    raise incomplete

  def resolve(p):
    return paths.join(data_dir, p)

  values = {k: v for k, v in meta.items() if k in _META_FIELDS}  # unknown keys: ignored
  values['vocab_path'] = resolve(meta['vocab_path'])
  for split in ('train', 'eval'):
    values[f'{split}_files'] = tuple(resolve(p) for p in meta[f'{split}_files'])
    values[f'{split}_examples_per_file'] = {
        resolve(p): n for p, n in meta[f'{split}_examples_per_file'].items()}
  loaded = DataMeta(data_dir=data_dir, **values)
  if not all(paths.isfile(p) for p in loaded.train_files + loaded.eval_files):
    raise incomplete
  return loaded


def _main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  flags_values = flags.FLAGS
  try:
    data_dir = build_pretraining_data(flags_values.config, flags_values.workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  print(data_dir)


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file (e.g. configs/demo.py).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Work directory; the data goes to WORKDIR/data by default.')
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(_main)
